//! Part uploads that do not stop the worker: the bytes go to the object store on the I/O
//! runtime while the node keeps a capability at the checkpoint's epoch; the worker is woken
//! when an upload ends and the node then reports the part and releases the capability.
//! A part is either in memory or spilled to a local file, which is streamed to the store and
//! then deleted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::scheduling::SyncActivator;

use super::CheckpointRun;
use super::report::PartReport;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::operators::Failure;

/// A node's output for part reports.
pub(crate) type PartsOutput = OutputBuilder<u64, CapacityContainerBuilder<Batch>>;

type Slot = Arc<Mutex<Option<std::result::Result<sluice_state::PartRef, String>>>>;

struct Pending {
    checkpoint: u64,
    capability: Capability<u64>,
    started: Instant,
    alignment: Duration,
    finished: bool,
    slot: Slot,
}

/// The bytes of a part to upload.
pub(crate) enum PartBody {
    /// In memory.
    Bytes(Vec<u8>),
    /// In a local file, deleted once uploaded (or not).
    File(PathBuf),
}

impl From<Vec<u8>> for PartBody {
    fn from(bytes: Vec<u8>) -> Self {
        PartBody::Bytes(bytes)
    }
}

/// The uploads of one node on one worker.
pub(crate) struct Uploads {
    run: Arc<CheckpointRun>,
    node: String,
    worker: usize,
    activator: Arc<SyncActivator>,
    pending: Vec<Pending>,
}

impl Uploads {
    pub(crate) fn new(run: Arc<CheckpointRun>, node: &str, worker: usize, activator: SyncActivator) -> Self {
        Self { run, node: node.to_owned(), worker, activator: Arc::new(activator), pending: Vec::new() }
    }

    /// Starts uploading `body` as this node's part of `checkpoint`, holding `capability`
    /// (on the parts output, at the checkpoint's epoch) until it is durable.
    pub(crate) fn start(
        &mut self,
        checkpoint: u64,
        body: impl Into<PartBody>,
        capability: Capability<u64>,
        alignment: Duration,
        finished: bool,
    ) {
        let slot: Slot = Arc::default();
        let (store, node, worker) = (self.run.store.clone(), self.node.clone(), self.worker);
        let (done, activator) = (slot.clone(), self.activator.clone());
        let body = body.into();
        self.run.io.spawn(async move {
            let result = match body {
                PartBody::Bytes(bytes) => store.put_part(checkpoint, &node, worker, bytes.into()).await,
                PartBody::File(file) => {
                    let result = store.put_part_file(checkpoint, &node, worker, &file).await;
                    // Scratch: the store has the part now, or the checkpoint fails anyway.
                    let _ = std::fs::remove_file(&file);
                    result
                }
            };
            let result = result.map_err(|e| e.to_string());
            if let Ok(mut slot) = done.lock() {
                *slot = Some(result);
            }
            // The worker may have shut down already; then nobody needs waking.
            let _ = activator.activate();
        });
        self.pending.push(Pending {
            checkpoint,
            capability,
            started: Instant::now(),
            alignment,
            finished,
            slot,
        });
    }

    /// Whether uploads are still running.
    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends a report for every upload that ended since the last call to `output` (the node's
    /// parts output), releasing its capability; records a failed upload as the node's failure.
    pub(crate) fn report_finished(&mut self, output: &mut PartsOutput, failure: &Failure) {
        match self.finished() {
            Ok(done) => {
                let mut output = output.activate();
                for (capability, report) in done {
                    output.session(&capability).give_container(&mut report.to_batch());
                }
            }
            Err(error) => failure.record(&self.node, error),
        }
    }

    /// The uploads that ended since the last call, with the capability to report each under.
    fn finished(&mut self) -> Result<Vec<(Capability<u64>, PartReport)>> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.pending.len() {
            let outcome = self.pending[index].slot.lock().ok().and_then(|mut slot| slot.take());
            let Some(outcome) = outcome else {
                index += 1;
                continue;
            };
            let pending = self.pending.remove(index);
            let part = outcome.map_err(|message| {
                Error::user(format!(
                    "writing the part of checkpoint {} to {}: {message}",
                    pending.checkpoint,
                    self.run.store.location()
                ))
            })?;
            let report = PartReport {
                checkpoint: pending.checkpoint,
                node: self.node.clone(),
                worker: self.worker as u64,
                path: part.path,
                bytes: part.bytes,
                duration_ms: pending.started.elapsed().as_millis() as u64,
                alignment_ms: pending.alignment.as_millis() as u64,
                finished: pending.finished,
            };
            done.push((pending.capability, report));
        }
        Ok(done)
    }
}
