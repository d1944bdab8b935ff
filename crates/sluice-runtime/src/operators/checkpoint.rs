//! The checkpoint coordinator and committer.
//!
//! The coordinator runs on worker 0 and receives every node's part reports. When its input
//! frontier passes a checkpoint's epoch, every part of that checkpoint has been reported (a
//! node holds its capability at the epoch until its part is durable), so it checks the parts
//! are complete, writes the manifest, exports a savepoint if asked, and broadcasts "committed".
//! The committer on every worker then lets that worker's sink writers commit.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;

use sluice_state::{CheckpointKind, MANIFEST_VERSION, Manifest, PartEntry};

use super::Failure;
use super::sink::SharedWriter;
use crate::batch::Batch;
use crate::checkpoint::CheckpointRun;
use crate::checkpoint::report::{PartReport, committed_batch, committed_ids};
use crate::error::Error;
use crate::exchange::keyed_pact;

type Outcome = Arc<Mutex<Option<Result<Manifest, String>>>>;

/// Reports of one checkpoint gathered so far.
struct Gathering {
    capability: Capability<u64>,
    reports: Vec<PartReport>,
    first_report: Instant,
}

/// Builds the coordinator over `parts` (every node's part reports); `expected` lists the
/// (node, worker) pairs that must report for a checkpoint to be complete, `sources` the source
/// nodes. Returns the stream of "committed" notices, broadcast to every worker.
pub(crate) fn coordinator<'scope>(
    parts: Stream<'scope, u64, Batch>,
    expected: Vec<(String, usize)>,
    sources: Vec<String>,
    run: Arc<CheckpointRun>,
    failure: Failure,
) -> Stream<'scope, u64, Batch> {
    let scope: Scope<'scope, u64> = parts.scope();
    let mut builder = OperatorBuilder::new("CheckpointCoordinator".to_owned(), scope);
    let address = builder.operator_info().address;
    let activator = Arc::new(scope.worker().sync_activator_for(address.to_vec()));
    let mut input = builder.new_input(parts, keyed_pact());
    builder.set_notify_for(0, FrontierInterest::Always);
    let (output, committed) = builder.new_output::<Batch>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output);
    let workers = scope.peers();
    builder.build_reschedule(move |_capabilities| {
        let mut gathering: BTreeMap<u64, Gathering> = BTreeMap::new();
        let mut writing: Vec<(u64, Capability<u64>, Outcome)> = Vec::new();
        move |frontiers| {
            input.for_each(|capability, data| {
                let Some(records) = data.take() else { return };
                let Some(cap) = capability.retain_least(0) else { return };
                match PartReport::from_batch(&records) {
                    Ok(reports) => {
                        for report in reports {
                            let entry = gathering.entry(report.checkpoint).or_insert_with(|| Gathering {
                                capability: cap.clone(),
                                reports: Vec::new(),
                                first_report: Instant::now(),
                            });
                            if cap.time() < entry.capability.time() {
                                entry.capability = cap.clone();
                            }
                            entry.reports.push(report);
                        }
                    }
                    Err(error) => failure.record("checkpoint coordinator", error),
                }
            });
            let frontier = frontiers[0].frontier().iter().min().copied();
            let final_id = run.schedule.final_id();
            let ready: Vec<u64> = gathering
                .iter()
                .filter(|(id, gathered)| match frontier {
                    // Periodic parts are all reported at one epoch; the final ones only
                    // when every node has ended.
                    Some(frontier) => **id != final_id && *gathered.capability.time() < frontier,
                    None => true,
                })
                .map(|(id, _)| *id)
                .collect();
            for id in ready {
                let Some(gathered) = gathering.remove(&id) else { continue };
                if failure.has_failed() {
                    continue;
                }
                let parts: Vec<PartEntry> = gathered
                    .reports
                    .iter()
                    .map(|report| PartEntry {
                        node: report.node.clone(),
                        worker: report.worker as usize,
                        path: report.path.clone(),
                        bytes: report.bytes,
                        duration_ms: report.duration_ms,
                        alignment_ms: report.alignment_ms,
                    })
                    .collect();
                if let Err(missing) = sluice_state::protocol::is_complete(&expected, &parts) {
                    let message = format!("checkpoint {id} is incomplete and was not committed: {missing:?}");
                    if id == final_id {
                        failure.record("checkpoint coordinator", Error::internal(message));
                    } else {
                        tracing::warn!("{message}");
                    }
                    continue;
                }
                let is_final = id == final_id;
                let slowest =
                    gathered.reports.iter().map(|r| r.duration_ms + r.alignment_ms).max().unwrap_or(0);
                let manifest = Manifest {
                    version: MANIFEST_VERSION,
                    pipeline: run.pipeline.clone(),
                    checkpoint: id,
                    kind: if is_final { CheckpointKind::Final } else { CheckpointKind::Periodic },
                    created_at_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                    workers,
                    finished: is_final && sources_finished(&gathered.reports, &sources),
                    parts,
                    duration_ms: slowest + gathered.first_report.elapsed().as_millis() as u64,
                };
                let outcome: Outcome = Arc::default();
                let (done, wake, run) = (outcome.clone(), activator.clone(), run.clone());
                run.io.clone().spawn(async move {
                    let result = commit(run, manifest, is_final).await;
                    if let Ok(mut slot) = done.lock() {
                        *slot = Some(result);
                    }
                    let _ = wake.activate();
                });
                writing.push((id, gathered.capability, outcome));
            }
            let mut index = 0;
            while index < writing.len() {
                let outcome = writing[index].2.lock().ok().and_then(|mut slot| slot.take());
                let Some(outcome) = outcome else {
                    index += 1;
                    continue;
                };
                let (id, capability, _) = writing.remove(index);
                match outcome {
                    Ok(manifest) => {
                        if let Ok(mut history) = run.history.lock() {
                            history.push(manifest);
                        }
                        output
                            .activate()
                            .session(&capability)
                            .give_container(&mut committed_batch(id, workers));
                    }
                    Err(message) => {
                        let error = Error::user(format!("writing checkpoint {id}: {message}"));
                        if id == final_id {
                            failure.record("checkpoint coordinator", error);
                        } else {
                            tracing::warn!("{}", error.report());
                        }
                    }
                }
            }
            !writing.is_empty() || !gathering.is_empty()
        }
    });
    committed
}

/// Whether every source part says its reader had read everything.
fn sources_finished(reports: &[PartReport], sources: &[String]) -> bool {
    let mut source_reports = reports.iter().filter(|report| sources.contains(&report.node)).peekable();
    source_reports.peek().is_some() && source_reports.all(|report| report.finished)
}

/// Writes the manifest, exports the savepoint of a final checkpoint if asked, and collects
/// garbage. Returns the manifest once the checkpoint may be committed.
async fn commit(run: Arc<CheckpointRun>, manifest: Manifest, is_final: bool) -> Result<Manifest, String> {
    let store = run.store.clone();
    store.commit_manifest(&manifest).await.map_err(|error| error.to_string())?;
    if is_final && let Some(target) = run.savepoint.clone() {
        store
            .export_savepoint(&manifest, &target)
            .await
            .map_err(|error| format!("exporting savepoint to {}: {error}", target.location()))?;
        tracing::info!(location = target.location(), "savepoint written");
    }
    let in_flight_from = manifest.checkpoint + 1;
    if let Err(error) = store.collect_garbage(run.retain, in_flight_from).await {
        tracing::warn!(%error, "deleting old checkpoints failed; will retry after the next one");
    }
    Ok(manifest)
}

/// Builds the committer of one worker: commits `writers` when a checkpoint completes, records
/// the checkpoint in `newest` (which the worker's sources read), and finishes the writers when
/// the coordinator ends.
pub(crate) fn committer(
    committed: Stream<'_, u64, Batch>,
    writers: Vec<(String, SharedWriter)>,
    newest: Rc<Cell<Option<u64>>>,
    failure: Failure,
) {
    let scope = committed.scope();
    let mut builder = OperatorBuilder::new("CheckpointCommitter".to_owned(), scope);
    // The notices are broadcast: routing by destination copies them to every worker.
    let mut input = builder.new_input(committed, keyed_pact());
    builder.set_notify_for(0, FrontierInterest::Always);
    builder.build_reschedule(move |_capabilities| {
        let mut writers = writers;
        move |frontiers| {
            input.for_each(|_capability, data| {
                let Some(records) = data.take() else { return };
                for id in committed_ids(&records) {
                    newest.set(newest.get().max(Some(id)));
                    for (name, writer) in &writers {
                        if let Some(sink) = writer.borrow_mut().as_mut()
                            && let Err(error) = sink.commit(id)
                        {
                            failure.record(name, error.context(format!("committing checkpoint {id}")));
                        }
                    }
                }
            });
            if frontiers[0].frontier().is_empty() {
                for (name, writer) in writers.drain(..) {
                    if let Some(mut sink) = writer.borrow_mut().take()
                        && !failure.has_failed()
                        && let Err(error) = sink.finish()
                    {
                        failure.record(&name, error);
                    }
                }
            }
            !writers.is_empty()
        }
    });
}
