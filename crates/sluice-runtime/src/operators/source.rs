//! The source operator: polls a connector's reader, stamps batches with the current epoch,
//! announces event-time watermarks, saves reader positions at checkpoints, and keeps at most a
//! few epochs in flight so memory stays bounded.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::Failure;
use crate::batch::{Batch, Mark};
use crate::checkpoint::part::SourcePart;
use crate::checkpoint::upload::Uploads;
use crate::checkpoint::{CheckpointRun, Schedule};
use crate::connector::{SourceBatch, SourceReader, SourceStatus, SplitState};
use crate::error::Result;
use crate::metrics::OperatorMetrics;
use crate::processor::END_OF_TIME;
use crate::watermark::{SourceWatermark, SourceWatermarkState, WatermarkStrategy, max_event_time};

/// Rows asked of a reader per poll; also the target batch size.
pub(crate) const POLL_ROWS: usize = 8192;
/// Polls per activation before yielding to downstream operators.
const POLLS_PER_ACTIVATION: usize = 4;

/// Flow control and timing shared by all sources of a worker.
#[derive(Clone)]
pub(crate) struct SourcePacing {
    pub(crate) epoch: Duration,
    pub(crate) max_epochs_in_flight: u64,
    pub(crate) probe: ProbeHandle<u64>,
    pub(crate) stop: Arc<AtomicBool>,
}

/// What a source node needs besides its reader.
pub(crate) struct SourceSetup {
    pub(crate) name: String,
    pub(crate) outputs: usize,
    pub(crate) watermark: Option<WatermarkStrategy>,
    pub(crate) checkpoints: Option<Arc<CheckpointRun>>,
    pub(crate) replayable: bool,
    /// The newest checkpoint this worker's committer has committed.
    pub(crate) committed: Rc<Cell<Option<u64>>>,
}

/// Builds a source operator driven by `reader` (None if opening failed: the operator then
/// ends at once). Returns the data streams, one per output, and the stream of part reports.
pub(crate) fn source<'scope>(
    scope: Scope<'scope, u64>,
    setup: SourceSetup,
    reader: Option<Box<dyn SourceReader>>,
    pacing: SourcePacing,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> (Vec<Stream<'scope, u64, Batch>>, Stream<'scope, u64, Batch>) {
    let SourceSetup { name, outputs, watermark, checkpoints, replayable, committed } = setup;
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let sync_activator = scope.worker().sync_activator_for(address.to_vec());
    let worker = scope.index();
    let mut handles = Vec::with_capacity(outputs);
    let mut streams = Vec::with_capacity(outputs);
    for _ in 0..outputs {
        let (output, stream) = builder.new_output::<Batch>();
        handles.push(OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output));
        streams.push(stream);
    }
    let (parts_output, parts) = builder.new_output::<Batch>();
    let mut parts_output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(parts_output);
    let mut uploads =
        checkpoints.as_ref().map(|run| Uploads::new(run.clone(), &name, worker, sync_activator));
    let schedule = checkpoints.as_ref().map(|run| run.schedule);
    let end = End { flush_on_stop: checkpoints.is_none(), replayable, worker, schedule };
    builder.build_reschedule(move |mut capabilities| {
        let mut parts_capability = capabilities.pop();
        let mut capabilities = reader.is_some().then_some(capabilities);
        if capabilities.is_none() {
            parts_capability = None;
        }
        let mut reader = reader;
        let mut epoch = 0u64;
        let mut epoch_started = Instant::now();
        let mut produced = Vec::new();
        let mut generator = watermark
            .as_ref()
            .map(|strategy| SourceWatermark::new(strategy.max_out_of_orderness, strategy.idle_timeout));
        let mut announced: Option<Option<i64>> = None;
        // Positions saved for checkpoints not yet committed, oldest first.
        let mut saved: VecDeque<(u64, Vec<SplitState>)> = VecDeque::new();
        let mut lag = 0;
        move |_frontiers| {
            let busy = Instant::now();
            if let Some(source) = reader.as_mut() {
                while let Some((checkpoint, positions)) = saved.front()
                    && committed.get().is_some_and(|id| id >= *checkpoint)
                {
                    if let Err(error) = source.positions_committed(positions) {
                        failure.record(&name, error);
                    }
                    saved.pop_front();
                }
            }
            if let Some(uploads) = uploads.as_mut() {
                uploads.report_finished(&mut parts_output, &failure);
            }
            let busy_uploading = uploads.as_ref().is_some_and(Uploads::is_busy);
            let (Some(caps), Some(source), Some(parts_cap)) =
                (capabilities.as_mut(), reader.as_mut(), parts_capability.as_mut())
            else {
                return busy_uploading;
            };
            let ending = if pacing.stop.load(Ordering::Relaxed) || failure.has_failed() {
                Some(Ending::Stopped)
            } else if pacing.probe.less_than(&epoch.saturating_sub(pacing.max_epochs_in_flight)) {
                // Downstream is behind: wait rather than buffer unboundedly, and count no epochs
                // meanwhile. Each worker counts its own epochs and the frontier waits for the
                // slowest; a worker that counted on while waiting would only get further ahead of
                // a slower one (busy, or descheduled on a loaded machine) and never read again.
                activator.activate_after(Duration::from_millis(1));
                return false;
            } else {
                let since_epoch = epoch_started.elapsed();
                if since_epoch >= pacing.epoch {
                    if let (Some(uploads), Some(checkpoint)) =
                        (uploads.as_mut(), schedule.and_then(|schedule| schedule.boundary(epoch)))
                    {
                        match snapshot(source.as_mut(), replayable, false) {
                            Ok((bytes, positions)) => {
                                uploads.start(checkpoint, bytes, parts_cap.clone(), Duration::ZERO, false);
                                saved.push_back((checkpoint, positions));
                            }
                            Err(error) => failure.record(&name, error),
                        }
                    }
                    let now = source.lag().unwrap_or(0);
                    metrics.update_lag(lag, now);
                    lag = now;
                    epoch += 1;
                    epoch_started = Instant::now();
                    for cap in caps.iter_mut() {
                        cap.downgrade(&epoch);
                    }
                    parts_cap.downgrade(&epoch);
                }
                let until_next_epoch = pacing.epoch.saturating_sub(epoch_started.elapsed());
                let mut status = SourceStatus::Ready;
                for _ in 0..POLLS_PER_ACTIVATION {
                    status = match source.poll(POLL_ROWS, &mut produced) {
                        Ok(status) => status,
                        Err(error) => {
                            failure.record(&name, error);
                            metrics.busy_since(busy);
                            activator.activate();
                            return false;
                        }
                    };
                    let now = Instant::now();
                    let splits = source.splits();
                    for SourceBatch { output, split, batch } in produced.drain(..) {
                        if batch.num_rows() == 0 || output >= handles.len() {
                            continue;
                        }
                        if let (Some(generator), Some(strategy)) = (generator.as_mut(), watermark.as_ref()) {
                            let column = strategy.columns.get(output).copied().flatten();
                            match column.map(|index| max_event_time(batch.column(index))).transpose() {
                                Ok(max) => generator.observe(split, splits, max.flatten(), now),
                                Err(error) => failure.record(&name, error),
                            }
                        }
                        metrics.record_out(batch.num_rows(), batch.get_array_memory_size());
                        let mut container = Batch::new(batch);
                        handles[output].activate().session(&caps[output]).give_container(&mut container);
                    }
                    if status != SourceStatus::Ready || epoch_started.elapsed() >= pacing.epoch {
                        break;
                    }
                }
                // Announce the watermark when it changes (idle when there is no event time).
                let state = match generator.as_mut() {
                    Some(generator) => {
                        generator.state(source.splits(), Instant::now(), |split| source.backlogged(split))
                    }
                    None => SourceWatermarkState::Idle,
                };
                let now = match state {
                    SourceWatermarkState::Pending => None,
                    SourceWatermarkState::Idle => Some(None),
                    SourceWatermarkState::At(watermark) => Some(Some(watermark)),
                };
                if let Some(now) = now
                    && announced != Some(now)
                {
                    announce(&mut handles, caps, worker, now);
                    announced = Some(now);
                }
                metrics.busy_since(busy);
                match status {
                    SourceStatus::Ready => activator.activate(),
                    SourceStatus::Idle(delay) => activator.activate_after(delay.min(until_next_epoch)),
                    SourceStatus::Finished => {}
                }
                // Readers of unbounded sources also end when they see the stop flag: that is a
                // stop, not the end of the data.
                (status == SourceStatus::Finished).then(|| {
                    if pacing.stop.load(Ordering::Relaxed) { Ending::Stopped } else { Ending::Exhausted }
                })
            };
            if let Some(ending) = ending {
                let pending = uploads.as_mut();
                end.finish(ending, source.as_mut(), caps, parts_cap, &mut handles, pending, &failure, &name);
                capabilities = None;
                parts_capability = None;
                reader = None;
            }
            uploads.as_ref().is_some_and(Uploads::is_busy)
        }
    });
    (streams, parts)
}

type DataOutputs = Vec<OutputBuilder<u64, CapacityContainerBuilder<Batch>>>;

/// How a worker's reading ends: the end of the data is announced downstream (so windows
/// flush); a stop with checkpoints is not (open windows go to the final checkpoint instead).
/// Either way the final checkpoint gets the reader's positions.
#[derive(Clone, Copy)]
struct End {
    flush_on_stop: bool,
    replayable: bool,
    worker: usize,
    schedule: Option<Schedule>,
}

impl End {
    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        ending: Ending,
        source: &mut dyn SourceReader,
        caps: &[Capability<u64>],
        parts_cap: &Capability<u64>,
        handles: &mut DataOutputs,
        uploads: Option<&mut Uploads>,
        failure: &Failure,
        name: &str,
    ) {
        if failure.has_failed() {
            return;
        }
        let exhausted = ending == Ending::Exhausted;
        if exhausted || self.flush_on_stop {
            announce(handles, caps, self.worker, Some(END_OF_TIME));
        }
        if let (Some(uploads), Some(schedule)) = (uploads, self.schedule) {
            match snapshot(source, self.replayable, exhausted) {
                Ok((bytes, positions)) => {
                    uploads.start(schedule.final_id(), bytes, parts_cap.clone(), Duration::ZERO, exhausted);
                    // The reader ends here, before the final checkpoint is committed; its
                    // positions are told now (they only serve lag tools, never recovery).
                    if let Err(error) = source.positions_committed(&positions) {
                        failure.record(name, error);
                    }
                }
                Err(error) => failure.record(name, error),
            }
        }
    }
}

/// Why a worker's reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The reader read everything.
    Exhausted,
    /// The pipeline was asked to stop (or failed).
    Stopped,
}

/// Sends a watermark mark on every output.
fn announce(handles: &mut DataOutputs, caps: &[Capability<u64>], worker: usize, watermark: Option<i64>) {
    for (handle, cap) in handles.iter_mut().zip(caps) {
        let mut mark = Batch::mark(Mark { sender: worker as u32, watermark });
        handle.activate().session(cap).give_container(&mut mark);
    }
}

/// The reader's positions as a part (empty for a source that cannot replay: its positions
/// are only markers for [`SourceReader::positions_committed`]), and the positions.
fn snapshot(
    reader: &mut dyn SourceReader,
    replayable: bool,
    finished: bool,
) -> Result<(Vec<u8>, Vec<SplitState>)> {
    let positions = reader.snapshot()?;
    let splits = if replayable { positions.clone() } else { Vec::new() };
    let part = SourcePart { splits, finished };
    Ok((part.encode(), positions))
}
