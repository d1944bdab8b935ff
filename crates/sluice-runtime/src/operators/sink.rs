//! The sink operator: hands batches to a connector's writer, tells it when epochs complete, and
//! finishes it when its input ends.

use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use super::Failure;
use crate::batch::Batch;
use crate::connector::SinkWriter;
use crate::metrics::OperatorMetrics;

/// Builds a sink operator writing `stream` through `writer` (None if opening failed: the input
/// is then drained and dropped, the failure already being recorded).
pub(crate) fn sink(
    stream: Stream<'_, u64, Batch>,
    name: &str,
    writer: Option<Box<dyn SinkWriter>>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) {
    let mut builder = OperatorBuilder::new(format!("Sink({name})"), stream.scope());
    let mut input = builder.new_input(stream, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Always);
    let name = name.to_owned();
    builder.build_reschedule(move |_capabilities| {
        let mut writer = writer;
        let mut completed_epoch = 0u64;
        move |frontiers| {
            let busy = Instant::now();
            input.for_each(|_capability, data| {
                let Some(batch) = data.take() else { return };
                metrics.record_in(batch.num_rows(), batch.get_array_memory_size());
                if failure.has_failed() {
                    return;
                }
                if let Some(sink) = writer.as_mut()
                    && let Err(error) = sink.write(&batch)
                {
                    failure.record(&name, error);
                }
            });
            let frontier = frontiers[0].frontier();
            let result = match (writer.as_mut(), frontier.iter().min()) {
                (None, _) => Ok(()),
                (Some(sink), None) => {
                    let result = if failure.has_failed() { Ok(()) } else { sink.finish() };
                    writer = None;
                    result
                }
                (Some(sink), Some(&epoch)) if epoch > completed_epoch => {
                    completed_epoch = epoch;
                    sink.epoch_complete(epoch)
                }
                (Some(_), Some(_)) => Ok(()),
            };
            if let Err(error) = result {
                failure.record(&name, error);
            }
            metrics.busy_since(busy);
            writer.is_some()
        }
    });
}
