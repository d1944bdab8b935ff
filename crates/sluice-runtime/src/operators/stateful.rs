//! The operator for stateful processors. Batches wait until their epoch can be processed in
//! order; watermark marks are merged and turned into `on_watermark` calls; at each checkpoint
//! boundary the processor's state is snapshotted exactly between the epochs it covers and the
//! ones after, and uploaded without blocking the worker.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;

use super::{Failure, frontier_min};
use crate::batch::Batch;
use crate::checkpoint::CheckpointRun;
use crate::checkpoint::part::ProcessorPartWriter;
use crate::checkpoint::restore::ProcessorRestore;
use crate::checkpoint::upload::{PartBody, Uploads};
use crate::error::{Error, Result};
use crate::metrics::OperatorMetrics;
use crate::processor::{EventTime, Processor, ProcessorContext};
use crate::watermark::WatermarkTracker;

/// How much of a spilled part is buffered before it is written to the file.
const SPILL_BUFFER: usize = 1024 * 1024;

/// What a stateful node needs besides its processor.
pub(crate) struct StatefulSetup {
    pub(crate) name: String,
    /// Upstream workers sending marks, per input.
    pub(crate) senders: Vec<usize>,
    pub(crate) context: ProcessorContext,
    pub(crate) checkpoints: Option<Arc<CheckpointRun>>,
    pub(crate) restore: Option<ProcessorRestore>,
}

/// One epoch's input, waiting to be processed in order.
#[derive(Default)]
struct Pending {
    batches: Vec<(usize, Batch)>,
    arrived: Option<Instant>,
}

/// Builds the operator; returns its data stream and its stream of part reports.
pub(crate) fn stateful<'scope, P>(
    scope: Scope<'scope, u64>,
    setup: StatefulSetup,
    inputs: Vec<Stream<'scope, u64, Batch>>,
    pact: impl Fn() -> P,
    mut processor: Box<dyn Processor>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> (Stream<'scope, u64, Batch>, Stream<'scope, u64, Batch>)
where
    P: ParallelizationContract<u64, Batch>,
{
    let StatefulSetup { name, senders, context, checkpoints, restore } = setup;
    let worker = scope.index();
    let peers = scope.peers();
    let mut builder = OperatorBuilder::new(format!("Stateful({name})"), scope);
    let address = builder.operator_info().address;
    let sync_activator = scope.worker().sync_activator_for(address.to_vec());
    let mut handles: Vec<_> = inputs.into_iter().map(|input| builder.new_input(input, pact())).collect();
    for input in 0..handles.len() {
        builder.set_notify_for(input, FrontierInterest::Always);
    }
    let (output, stream) = builder.new_output::<Batch>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output);
    let (parts_output, parts) = builder.new_output::<Batch>();
    let mut parts_output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(parts_output);
    let mut uploads =
        checkpoints.as_ref().map(|run| Uploads::new(run.clone(), &name, worker, sync_activator));
    let schedule = checkpoints.as_ref().map(|run| run.schedule);
    builder.build_reschedule(move |mut capabilities| {
        let mut parts_base = capabilities.pop();
        let mut base = capabilities.pop();
        let spill = checkpoints.as_ref().and_then(|_| context.state.spill_dir());
        let opened = processor.open(context).and_then(|()| match (&restore, &checkpoints) {
            (Some(restore), Some(run)) => restore.feed(&mut *processor, worker, peers, &run.io),
            _ => Ok(None),
        });
        let opened = opened.and_then(|watermark| prepare_spill(spill.as_deref()).map(|()| watermark));
        let restored_watermark = opened.as_ref().ok().copied().flatten();
        if let Err(error) = opened {
            failure.record(&name, error.context("opening or restoring state"));
        }
        let mut tracker = WatermarkTracker::new(senders, restored_watermark);
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        // Every epoch before this one has been processed completely.
        let mut done_through = 0u64;
        // An epoch processed while still open: `end_of_epoch` is owed once it closes.
        let mut open_epoch: Option<u64> = None;
        let mut results: Vec<RecordBatch> = Vec::new();
        let mut reported_state = 0u64;
        move |frontiers| {
            let busy = Instant::now();
            if let Some(uploads) = uploads.as_mut() {
                uploads.report_finished(&mut parts_output, &failure);
            }
            for (index, input) in handles.iter_mut().enumerate() {
                input.for_each(|capability, data| {
                    if failure.has_failed() {
                        return;
                    }
                    let Some(&time) = capability.least() else { return };
                    let entry = pending.entry(time).or_default();
                    entry.arrived.get_or_insert_with(Instant::now);
                    entry.batches.push((index, std::mem::take(data)));
                });
            }
            let (Some(base_cap), Some(parts_cap)) = (base.as_mut(), parts_base.as_mut()) else {
                return uploads.as_ref().is_some_and(Uploads::is_busy);
            };
            let frontier = frontier_min(frontiers);
            let limit = frontier.unwrap_or(u64::MAX);
            let mut output = output.activate();
            let mut step = || -> Result<()> {
                if failure.has_failed() {
                    pending.clear();
                    return Ok(());
                }
                let boundaries: Vec<(u64, u64)> = match (schedule, frontier) {
                    (Some(schedule), Some(frontier)) => schedule.boundaries(done_through, frontier).collect(),
                    _ => Vec::new(),
                };
                let mut boundaries = boundaries.into_iter().peekable();
                while let Some(entry) = pending.first_entry() {
                    let time = *entry.key();
                    if time > limit {
                        break;
                    }
                    // Snapshot every boundary before this epoch first.
                    while let Some(&(epoch, checkpoint)) = boundaries.peek() {
                        if epoch >= time {
                            break;
                        }
                        boundaries.next();
                        close_epoch(&mut open_epoch, epoch, &mut *processor, &mut results)?;
                        emit(&mut output, base_cap, epoch, &mut results, &metrics);
                        let alignment = entry.get().arrived.map_or(Duration::ZERO, |at| at.elapsed());
                        let body = snapshot_part(&mut *processor, &tracker, spill.as_deref(), checkpoint)?;
                        if let Some(uploads) = uploads.as_mut() {
                            uploads.start(checkpoint, body, parts_cap.delayed(&epoch), alignment, false);
                        }
                    }
                    let Pending { batches, .. } = entry.remove();
                    if let Some(open) = open_epoch
                        && open < time
                    {
                        close_epoch(&mut open_epoch, open, &mut *processor, &mut results)?;
                        emit(&mut output, base_cap, open, &mut results, &metrics);
                    }
                    for (index, mut batch) in batches {
                        if let Some(mark) = batch.as_mark() {
                            if let Some(watermark) = tracker.observe(index, mark) {
                                processor.on_watermark(watermark, &mut results)?;
                            }
                            emit(&mut output, base_cap, time, &mut results, &metrics);
                            if let Some(mark) = tracker.announcement(worker as u32) {
                                output
                                    .session(&base_cap.delayed(&time))
                                    .give_container(&mut Batch::mark(mark));
                            }
                            continue;
                        }
                        let Some(records) = batch.take() else { continue };
                        metrics.record_in(records.num_rows(), records.get_array_memory_size());
                        processor.process(index, records, &mut results)?;
                        emit(&mut output, base_cap, time, &mut results, &metrics);
                    }
                    open_epoch = Some(time);
                }
                if let Some(open) = open_epoch
                    && open < limit
                {
                    close_epoch(&mut open_epoch, open, &mut *processor, &mut results)?;
                    emit(&mut output, base_cap, open, &mut results, &metrics);
                }
                for (epoch, checkpoint) in boundaries {
                    let body = snapshot_part(&mut *processor, &tracker, spill.as_deref(), checkpoint)?;
                    if let Some(uploads) = uploads.as_mut() {
                        uploads.start(checkpoint, body, parts_cap.delayed(&epoch), Duration::ZERO, false);
                    }
                }
                Ok(())
            };
            if let Err(error) = step() {
                failure.record(&name, error);
            }
            let state = processor.state_size() as u64;
            metrics.update_state_bytes(reported_state, state);
            reported_state = state;
            match frontier {
                Some(frontier) => {
                    if frontier > done_through {
                        done_through = frontier;
                        base_cap.downgrade(&frontier);
                        parts_cap.downgrade(&frontier);
                    }
                }
                None => {
                    // All inputs ended: the final checkpoint holds whatever state is left
                    // (nothing once bounded inputs were flushed; open windows after a stop).
                    if let (Some(uploads), Some(schedule)) = (uploads.as_mut(), schedule)
                        && !failure.has_failed()
                    {
                        match snapshot_part(&mut *processor, &tracker, spill.as_deref(), schedule.final_id())
                        {
                            Ok(body) => uploads.start(
                                schedule.final_id(),
                                body,
                                parts_cap.clone(),
                                Duration::ZERO,
                                false,
                            ),
                            Err(error) => failure.record(&name, error),
                        }
                    }
                    metrics.update_state_bytes(reported_state, 0);
                    reported_state = 0;
                    base = None;
                    parts_base = None;
                }
            }
            metrics.busy_since(busy);
            uploads.as_ref().is_some_and(Uploads::is_busy)
        }
    });
    (stream, parts)
}

/// The processor's state and merged input watermark as its part of `checkpoint`: in memory,
/// or with `spill`, streamed to a file there (so that state larger than memory never is in
/// memory at once).
fn snapshot_part(
    processor: &mut dyn Processor,
    tracker: &WatermarkTracker,
    spill: Option<&Path>,
    checkpoint: u64,
) -> Result<PartBody> {
    let Some(dir) = spill else {
        let mut part = ProcessorPartWriter::new(Vec::new(), tracker.current())?;
        processor.snapshot(&mut part)?;
        return Ok(PartBody::Bytes(part.finish()?));
    };
    let path = dir.join(format!("checkpoint-{checkpoint}.part"));
    match spill_part(processor, tracker.current(), &path) {
        Ok(()) => Ok(PartBody::File(path)),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Err(error)
        }
    }
}

/// Writes the processor's part to the file `path` through a small buffer. The file is scratch
/// until uploaded: it is not synced to disk.
fn spill_part(processor: &mut dyn Processor, watermark: Option<EventTime>, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| spill_failed(path, e))?;
    let mut part = ProcessorPartWriter::new(BufWriter::with_capacity(SPILL_BUFFER, file), watermark)?;
    processor.snapshot(&mut part)?;
    part.finish()?.into_inner().map(drop).map_err(|e| spill_failed(path, e.into_error()))
}

/// Empties (or creates) the folder parts are spilled to: files there are scratch left by an
/// earlier run.
fn prepare_spill(spill: Option<&Path>) -> Result<()> {
    let Some(dir) = spill else { return Ok(()) };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| spill_failed(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| spill_failed(dir, e))
}

fn spill_failed(path: &Path, error: std::io::Error) -> Error {
    Error::external(
        format!("writing checkpoint state to {} (set `state.path` to a folder with room)", path.display()),
        error,
    )
}

/// Calls `end_of_epoch` for the open epoch `epoch`.
fn close_epoch(
    open_epoch: &mut Option<u64>,
    epoch: u64,
    processor: &mut dyn Processor,
    results: &mut Vec<RecordBatch>,
) -> Result<()> {
    if *open_epoch == Some(epoch) || open_epoch.is_some_and(|open| open <= epoch) {
        *open_epoch = None;
        processor.end_of_epoch(results)?;
    }
    Ok(())
}

/// Sends `results` at `time`.
fn emit(
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        u64,
        CapacityContainerBuilder<Batch>,
    >,
    base: &Capability<u64>,
    time: u64,
    results: &mut Vec<RecordBatch>,
    metrics: &OperatorMetrics,
) {
    if results.is_empty() {
        return;
    }
    let capability = base.delayed(&time);
    let mut session = output.session(&capability);
    for result in results.drain(..) {
        if result.num_rows() > 0 {
            metrics.record_out(result.num_rows(), result.get_array_memory_size());
            session.give_container(&mut Batch::new(result));
        }
    }
}
