//! The pipeline spec: the YAML model users write, parsed and checked for structure.
//!
//! Owns: the spec types, YAML parsing with every error reported at once, structural validation
//! (unknown keys, dangling inputs, cycles), and [`Diagnostic`], the one error report type every
//! validation step uses. Checks that need a connector or SQL live with those, and report
//! through [`Diagnostic`] too.
//!
//! May depend on: serde and a YAML parser only; no Arrow, no runtime.
//!
//! Entry point: [`parse`] turns YAML text into a [`Pipeline`] or the full list of
//! [`Diagnostic`]s. Modules:
//! - `model`: the spec types ([`Pipeline`], [`SourceSpec`], [`ProcessorSpec`], [`SinkSpec`], ...);
//! - [`data_type`]: [`DataType`], the column types a source's `schema` may name;
//! - `parse`: the YAML walk that reports every problem at once;
//! - `connection`: connection profiles named by nodes, resolved by the control plane;
//! - `graph`: dependency order and cycles among processors (pure functions over names);
//! - [`diagnostic`]: the error report type.

mod connection;
pub mod data_type;
pub mod diagnostic;
mod duration;
mod graph;
mod model;
mod parse;

pub use connection::{Connection, connections_used, resolve_connections};
pub use data_type::DataType;
pub use diagnostic::{Diagnostic, Location, closest};
pub use duration::{parse_duration, parse_watermark_sql};
pub use model::{
    CheckpointSpec, DEFAULT_CHECKPOINT_INTERVAL_MS, DEFAULT_CHECKPOINTS_RETAINED, DEFAULT_EPOCH_MS,
    DeadLetterSinkSpec, DeadLetterSpec, EPOCH_MS_RANGE, FieldSpec, InputRef, LookupSpec,
    MIN_CHECKPOINT_INTERVAL_MS, NodeKind, OnErrorSpec, Pipeline, ProcessorSpec, SinkSpec, SourceSpec,
    StateBackendKind, StateSpec, WatermarkSpec,
};
pub use parse::{parse, parse_partial};
