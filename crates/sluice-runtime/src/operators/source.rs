//! The source operator: polls a connector's reader, stamps batches with the current epoch, and
//! keeps at most a few epochs in flight so memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, Stream};

use super::Failure;
use crate::batch::Batch;
use crate::connector::{SourceBatch, SourceReader, SourceStatus};
use crate::metrics::OperatorMetrics;

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

/// Builds a source operator with `outputs` outputs driven by `reader` (None if opening failed:
/// the operator then ends at once).
pub(crate) fn source<'scope>(
    scope: Scope<'scope, u64>,
    name: &str,
    outputs: usize,
    reader: Option<Box<dyn SourceReader>>,
    pacing: SourcePacing,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> Vec<Stream<'scope, u64, Batch>> {
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut handles = Vec::with_capacity(outputs);
    let mut streams = Vec::with_capacity(outputs);
    for _ in 0..outputs {
        let (output, stream) = builder.new_output::<Batch>();
        handles.push(OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output));
        streams.push(stream);
    }
    let name = name.to_owned();
    builder.build(move |capabilities| {
        let mut capabilities = reader.is_some().then_some(capabilities);
        let mut reader = reader;
        let mut epoch = 0u64;
        let mut epoch_started = Instant::now();
        let mut produced = Vec::new();
        move |_frontiers| {
            let (Some(caps), Some(source)) = (capabilities.as_mut(), reader.as_mut()) else {
                return;
            };
            let busy = Instant::now();
            if pacing.stop.load(Ordering::Relaxed) {
                capabilities = None;
                return;
            }
            let since_epoch = epoch_started.elapsed();
            if since_epoch >= pacing.epoch {
                epoch += 1;
                epoch_started = Instant::now();
                for cap in caps.iter_mut() {
                    cap.downgrade(&epoch);
                }
            }
            let until_next_epoch = pacing.epoch.saturating_sub(epoch_started.elapsed());
            if pacing.probe.less_than(&epoch.saturating_sub(pacing.max_epochs_in_flight)) {
                // Downstream is behind: wait rather than buffer unboundedly.
                activator.activate_after(Duration::from_millis(1).min(until_next_epoch));
                return;
            }
            let mut status = SourceStatus::Ready;
            for _ in 0..POLLS_PER_ACTIVATION {
                status = match source.poll(POLL_ROWS, &mut produced) {
                    Ok(status) => status,
                    Err(error) => {
                        failure.record(&name, error);
                        capabilities = None;
                        metrics.busy_since(busy);
                        return;
                    }
                };
                for SourceBatch { output, batch } in produced.drain(..) {
                    if batch.num_rows() == 0 || output >= handles.len() {
                        continue;
                    }
                    metrics.record_out(batch.num_rows(), batch.get_array_memory_size());
                    let mut container = Batch::new(batch);
                    handles[output].activate().session(&caps[output]).give_container(&mut container);
                }
                if status != SourceStatus::Ready || epoch_started.elapsed() >= pacing.epoch {
                    break;
                }
            }
            metrics.busy_since(busy);
            match status {
                SourceStatus::Ready => activator.activate(),
                SourceStatus::Idle(delay) => activator.activate_after(delay.min(until_next_epoch)),
                SourceStatus::Finished => capabilities = None,
            }
        }
    });
    streams
}
