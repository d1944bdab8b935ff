//! The checkpoint manifest: the commit record of one checkpoint.

use serde::{Deserialize, Serialize};

/// Identifies a checkpoint; strictly increasing within a checkpoint store.
pub type CheckpointId = u64;

/// The manifest format version this crate writes. Manifests with a newer version are skipped on
/// restore (they were written by a newer Sluice).
pub const MANIFEST_VERSION: u32 = 1;

/// Why a checkpoint was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Taken on the checkpoint interval.
    Periodic,
    /// Taken when the pipeline stopped.
    Final,
    /// Exported on request into its own store, to start another run from.
    Savepoint,
}

/// The commit record of one checkpoint: which parts make it up. A checkpoint is complete only when
/// its manifest exists and every part it lists is present.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Format version, [`MANIFEST_VERSION`] when written by this crate.
    pub version: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The checkpoint id; must match the checkpoint directory the manifest is stored in.
    pub checkpoint: CheckpointId,
    /// Why the checkpoint was taken.
    pub kind: CheckpointKind,
    /// Wall-clock time the checkpoint was started, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The number of workers that took part.
    pub workers: usize,
    /// All sources had ended: there is nothing left to read after restoring this checkpoint.
    pub finished: bool,
    /// One entry per stateful operator and worker.
    pub parts: Vec<PartEntry>,
    /// Time from starting the checkpoint to all parts being durable, in milliseconds.
    pub duration_ms: u64,
}

/// One part of a checkpoint: the state of one operator on one worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PartEntry {
    /// The pipeline node (operator) the state belongs to.
    pub node: String,
    /// The worker index.
    pub worker: usize,
    /// Object path relative to the store root, as returned by
    /// [`CheckpointStore::put_part`](crate::CheckpointStore::put_part).
    pub path: String,
    /// Size of the part in bytes.
    pub bytes: u64,
    /// Time taken to serialize and write the part, in milliseconds.
    pub duration_ms: u64,
    /// Time the operator waited for barrier alignment, in milliseconds.
    pub alignment_ms: u64,
}
