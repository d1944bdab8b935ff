//! The timely operators behind pipeline nodes, one file per operator. These are the only place
//! that touches timely's operator API.

pub(crate) mod checkpoint;
pub(crate) mod dead_letters;
pub(crate) mod key_by;
pub(crate) mod process;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod stateful;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use timely::progress::frontier::MutableAntichain;

use crate::error::Error;

/// The least time any of `frontiers` may still deliver; `None` once all inputs have ended.
pub(crate) fn frontier_min(frontiers: &[MutableAntichain<u64>]) -> Option<u64> {
    frontiers.iter().filter_map(|frontier| frontier.frontier().iter().min().copied()).min()
}

/// The first failure of a run, shared by all workers of a process; later failures are dropped
/// (they are usually consequences of the first).
#[derive(Debug, Clone, Default)]
pub(crate) struct Failure {
    first: Arc<Mutex<Option<Error>>>,
    /// Set with `first`; read lock-free on every batch.
    failed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Failure {
    /// A failure slot `first` (shared with whoever watches the run) and the run's stop flag.
    pub(crate) fn new(first: Arc<Mutex<Option<Error>>>, stop: Arc<AtomicBool>) -> Self {
        Self { first, failed: Arc::default(), stop }
    }

    /// Records `error` for node `node` and asks every source to stop.
    pub(crate) fn record(&self, node: &str, error: Error) {
        tracing::debug!(node, error = %error.report(), "pipeline node failed");
        if let Ok(mut first) = self.first.lock()
            && first.is_none()
        {
            *first = Some(error.context(format!("node \"{node}\"")));
        }
        self.failed.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn take(&self) -> Option<Error> {
        self.first.lock().ok().and_then(|mut first| first.take())
    }
}
