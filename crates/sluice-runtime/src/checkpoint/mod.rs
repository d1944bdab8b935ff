//! Checkpoints in the runtime: which epochs end a checkpoint, what each node saves, how parts
//! are uploaded without stopping the worker, and how a run resumes from a manifest.
//!
//! The protocol, in timely terms: checkpoint boundaries are epochs `b` with
//! `(b + 1) % interval_epochs == 0`. When a node's input frontier passes `b`, its state covers
//! exactly the epochs up to `b`; it serializes that state, uploads it as one part, and holds a
//! capability at `b` on its parts output until the upload is durable. A stateful processor
//! writes its part chunk by chunk ([`part`]); with the RocksDB backend the part goes to a local
//! spill file, streamed to the store in a multipart upload, and a restore streams it back, so
//! state larger than memory can be checkpointed and restored. A coordinator on worker
//! 0 sees its frontier pass `b` only when every node on every worker has reported its part;
//! it then writes the manifest (create-only), and broadcasts "checkpoint N complete" so sinks
//! commit. When the pipeline stops or its bounded sources end, every node saves a final part
//! and the final checkpoint commits everything. Storage and the pure completeness and garbage
//! rules live in `sluice-state`.

pub mod part;
pub(crate) mod report;
pub mod restore;
pub(crate) mod upload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_state::{CheckpointId, CheckpointStore, Manifest, StoreOptions};

pub use restore::Restored;

/// Added to a run's first checkpoint id to get the id of its final checkpoint, which every
/// node must agree on without knowing how many periodic checkpoints came before.
pub const FINAL_OFFSET: u64 = 1 << 32;

/// Where a run resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The latest complete checkpoint in the checkpoint location, if any.
    Latest,
    /// The savepoint at this location (a directory or `s3://` URL).
    Savepoint(String),
    /// Nothing: start fresh even if checkpoints exist.
    Nothing,
}

/// Checkpointing settings of a run.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Directory or `s3://bucket/prefix` for checkpoints.
    pub location: String,
    /// Endpoint and credentials for `s3://` locations.
    pub store: StoreOptions,
    /// Time between checkpoints; rounded to whole epochs.
    pub interval: Duration,
    /// Complete checkpoints to keep.
    pub retain: usize,
    /// Where to resume from.
    pub restore: RestoreFrom,
    /// When set, the final checkpoint of a stopped run is also exported as a savepoint here.
    pub savepoint: Option<String>,
}

/// Which epochs end a checkpoint, and the checkpoint ids of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Epochs per checkpoint.
    pub interval_epochs: u64,
    /// Ids of this run are greater than this.
    pub base: CheckpointId,
}

impl Schedule {
    /// The checkpoint that epoch `epoch` ends, if it is a boundary.
    pub fn boundary(&self, epoch: u64) -> Option<CheckpointId> {
        (epoch + 1)
            .is_multiple_of(self.interval_epochs)
            .then(|| self.base + (epoch + 1) / self.interval_epochs)
    }

    /// The boundaries among epochs `from..to`, with their checkpoint ids, in order.
    pub fn boundaries(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, CheckpointId)> + '_ {
        let k = self.interval_epochs;
        // The first epoch >= from with (epoch + 1) % k == 0.
        let first = (from + 1).div_ceil(k) * k - 1;
        (first..to).step_by(k as usize).filter_map(move |epoch| self.boundary(epoch).map(|id| (epoch, id)))
    }

    /// The id of this run's final checkpoint.
    pub fn final_id(&self) -> CheckpointId {
        self.base + FINAL_OFFSET
    }
}

/// Everything nodes of one run share about checkpoints.
pub(crate) struct CheckpointRun {
    pub(crate) pipeline: String,
    pub(crate) store: CheckpointStore,
    pub(crate) schedule: Schedule,
    pub(crate) retain: usize,
    pub(crate) io: tokio::runtime::Handle,
    pub(crate) restored: Option<Restored>,
    pub(crate) savepoint: Option<CheckpointStore>,
    pub(crate) history: Arc<Mutex<Vec<Manifest>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_every_interval_epochs() {
        let schedule = Schedule { interval_epochs: 5, base: 10 };
        assert_eq!(schedule.boundary(3), None);
        assert_eq!(schedule.boundary(4), Some(11));
        assert_eq!(schedule.boundary(9), Some(12));
        assert_eq!(schedule.boundaries(0, 4).collect::<Vec<_>>(), vec![]);
        assert_eq!(schedule.boundaries(0, 5).collect::<Vec<_>>(), vec![(4, 11)]);
        assert_eq!(schedule.boundaries(4, 15).collect::<Vec<_>>(), vec![(4, 11), (9, 12), (14, 13)]);
        assert_eq!(schedule.boundaries(5, 9).collect::<Vec<_>>(), vec![]);
        let every = Schedule { interval_epochs: 1, base: 0 };
        assert_eq!(every.boundaries(2, 5).collect::<Vec<_>>(), vec![(2, 3), (3, 4), (4, 5)]);
        assert!(schedule.final_id() > schedule.base + 1_000_000);
    }
}
