//! The processor operator for stateless processors: feeds every batch from any of its inputs
//! to a [`Processor`] and emits the results at the same timestamp. Watermark marks are merged
//! over inputs in epoch order and passed on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;

use super::{Failure, frontier_min};
use crate::batch::{Batch, Mark};
use crate::metrics::OperatorMetrics;
use crate::processor::Processor;
use crate::watermark::WatermarkTracker;

/// Marks received for one epoch, with a capability to pass the merged one on at that epoch.
type PendingMarks = (Capability<u64>, Vec<(usize, Mark)>);

/// Builds a processor operator over `inputs`, each connected with a pact made by `pact`;
/// `senders[i]` is how many upstream workers send marks on input `i`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn process<'scope, P>(
    scope: Scope<'scope, u64>,
    name: &str,
    inputs: Vec<Stream<'scope, u64, Batch>>,
    senders: Vec<usize>,
    pact: impl Fn() -> P,
    mut processor: Box<dyn Processor>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> Stream<'scope, u64, Batch>
where
    P: ParallelizationContract<u64, Batch>,
{
    let worker = scope.index() as u32;
    let mut builder = OperatorBuilder::new(format!("Process({name})"), scope);
    let mut handles: Vec<_> = inputs.into_iter().map(|input| builder.new_input(input, pact())).collect();
    for input in 0..handles.len() {
        builder.set_notify_for(input, FrontierInterest::Always);
    }
    let (output, stream) = builder.new_output::<Batch>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output);
    let name = name.to_owned();
    builder.build(move |_capabilities| {
        let mut results = Vec::new();
        let mut tracker = WatermarkTracker::new(senders, None);
        // Marks wait here until every earlier epoch is done, so the merged watermark at an
        // epoch never reflects a later epoch of another input.
        let mut marks: BTreeMap<u64, PendingMarks> = BTreeMap::new();
        move |frontiers| {
            let busy = Instant::now();
            let mut output = output.activate();
            for (index, input) in handles.iter_mut().enumerate() {
                input.for_each(|capability, data| {
                    if let Some(mark) = data.as_mark() {
                        if let Some(cap) = capability.retain_least(0) {
                            let time = *cap.time();
                            marks.entry(time).or_insert_with(|| (cap, Vec::new())).1.push((index, mark));
                        }
                        return;
                    }
                    let Some(batch) = data.take() else { return };
                    if failure.has_failed() {
                        // Drain without work so the pipeline can wind down.
                        return;
                    }
                    metrics.record_in(batch.num_rows(), batch.get_array_memory_size());
                    if let Err(error) = processor.process(index, batch, &mut results) {
                        failure.record(&name, error);
                        results.clear();
                        return;
                    }
                    let mut session = output.session(&capability);
                    for result in results.drain(..) {
                        if result.num_rows() > 0 {
                            metrics.record_out(result.num_rows(), result.get_array_memory_size());
                            session.give_container(&mut Batch::new(result));
                        }
                    }
                });
            }
            let limit = frontier_min(frontiers).unwrap_or(u64::MAX);
            while let Some(entry) = marks.first_entry() {
                if *entry.key() > limit {
                    break;
                }
                let (cap, received) = entry.remove();
                for (index, mark) in received {
                    tracker.observe(index, mark);
                }
                if let Some(mark) = tracker.announcement(worker) {
                    output.session(&cap).give_container(&mut Batch::mark(mark));
                }
            }
            metrics.busy_since(busy);
        }
    });
    stream
}
