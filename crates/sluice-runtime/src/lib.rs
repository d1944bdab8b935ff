//! Sluice's streaming runtime: executes a pipeline graph of sources, processors and sinks on
//! timely-dataflow, with records travelling as Arrow `RecordBatch`es.
//!
//! Owns: the connector and processor contracts ([`connector`], [`processor`]), the pipeline
//! graph ([`graph`]), the batch container and keyed exchange, the operators (one file each,
//! private), dead letters, per-operator metrics, and the run loop ([`execute`]). Knows nothing
//! about YAML, SQL or any particular connector: those plug in through the traits.
//!
//! Epochs are timely timestamps: a source stamps everything it reads during one epoch (a
//! configurable stretch of wall-clock time) with the same `u64`, and runs at most a few epochs
//! ahead of the slowest sink.
//!
//! Event time travels in band: sources announce watermarks as marks between batches, and
//! every operator merges them (see [`watermark`]). Checkpoints are aligned on epochs (see
//! [`checkpoint`]).
//!
//! May depend on: timely (pinned exactly, never exposed in the public API), arrow, tokio (for
//! checkpoint I/O), and `sluice-state` (checkpoint storage). Must not depend on other Sluice
//! crates.

pub mod batch;
pub mod checkpoint;
pub mod connector;
pub mod dead_letter;
pub mod error;
pub mod exchange;
pub mod execute;
pub mod graph;
pub mod metrics;
mod operators;
pub mod processor;
pub mod watermark;

pub use error::{Error, ErrorKind, Result};
pub use execute::{RunOptions, RunReport, Runtime, Topology};
