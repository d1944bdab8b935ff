//! Sluice's checkpoint state: where checkpoints are stored and how to decide which of them count,
//! and where operators keep keyed state while they run ([`keyed`]: memory or RocksDB).
//!
//! Owns: the checkpoint manifest format ([`Manifest`]), the object layout of a checkpoint store
//! ([`layout`]), the pure checkpoint protocol ([`protocol`]: which checkpoint is complete, which one
//! to restore, what may be garbage-collected, who wins a race to commit) and the storage edge
//! ([`CheckpointStore`]: a local directory or an S3-compatible bucket, through `object_store`).
//!
//! May depend on: `object_store`, `rocksdb`, serde. Must not depend on other Sluice crates; the runtime
//! depends on this crate, never the other way round.
//!
//! # How a checkpoint is written
//!
//! 1. Every stateful operator on every worker writes its state as one *part* with
//!    [`CheckpointStore::put_part`], or [`CheckpointStore::put_part_file`] for a part spilled to
//!    a local file (state larger than memory). Parts larger than [`MULTIPART_CHUNK`] go up in a
//!    multipart upload, and parts can be read back as a stream
//!    ([`CheckpointStore::get_part_stream`], [`CheckpointStore::part_reader`]), so a part's size
//!    is never bounded by memory. Part paths contain a random nonce of the writing store handle
//!    (one per [`CheckpointStore::open`]), so two runs never write the same object.
//! 2. When every part is durable (checked with [`protocol::is_complete`]), one worker calls
//!    [`CheckpointStore::commit_manifest`]. The manifest is the commit record: a checkpoint without
//!    a valid manifest does not exist as far as restore is concerned.
//! 3. Only after `commit_manifest` returned `Ok` may sinks commit the output of that checkpoint.
//!    `Err(Error::Conflict)` means another writer owns that checkpoint id: do not commit output.
//!
//! # What is guaranteed
//!
//! * A manifest is written in one put, so readers see all of it or nothing. A manifest that does
//!   not parse anyway (hand-edited, damaged disk) is ignored, as is a manifest whose parts are
//!   missing or shorter/longer than recorded; restore falls back to the next older checkpoint.
//! * At most one writer gets `Ok` from `commit_manifest` for a checkpoint id, and the manifest in
//!   storage is that writer's. This holds on every store with read-after-write and list-after-write
//!   consistency (local file systems, AWS S3, s3s-fs, MinIO), including stores that implement
//!   create-only puts (`If-None-Match: *`) as a non-atomic check-then-write, such as s3s-fs 0.14.1:
//!   before the create-only put, each writer registers a *claim* object under the checkpoint
//!   and then lists the claims; it proceeds only if its own claim is the only one
//!   ([`protocol::claim_outcome`]). Racing writers can all lose a round; they withdraw their claims
//!   and retry after a random back-off (three rounds in all), so one usually wins, and if none does
//!   the checkpoint simply does not complete. Two never both win. The create-only put stays as a
//!   second line of defence against writers that arrive after the winner finished. The guarantee
//!   does not hold if claims are deleted by hand, or by a garbage collector of *another* run that
//!   considers the id old (`collect_garbage` only touches ids below its `in_flight_from` that are
//!   older than the newest complete checkpoint, which restore would never pick anyway).
//! * A manifest only references parts inside its own checkpoint directory
//!   ([`protocol::validate_manifest`]), so a stale writer's parts are never restored as part of
//!   another writer's checkpoint, and deleting one checkpoint never breaks another.
//! * Garbage collection keeps the newest `retain` (at least one) restorable checkpoints, deletes
//!   older ones, deletes incomplete checkpoints older than the newest restorable one, deletes
//!   objects inside kept checkpoints that their manifest does not reference (a stale writer's parts,
//!   claims), and never touches ids at or above `in_flight_from`.
//!
//! Not guaranteed: fencing of a stale writer's *sinks*. A stale writer whose manifest wins an id
//! that the current run abandoned (or never reached) may commit its own output; sinks need their
//! own fencing (e.g. transactional ids) for that.

mod error;
pub mod keyed;
pub mod layout;
mod manifest;
pub mod protocol;
mod store;
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use keyed::{KeyedStore, StateBackend};
pub use manifest::{CheckpointId, CheckpointKind, MANIFEST_VERSION, Manifest, PartEntry};
pub use store::{
    CheckpointStore, GcReport, MULTIPART_CHUNK, PartReader, PartRef, StoreOptions, s3_bucket_store,
};
