//! The processor operator: feeds every batch from any of its inputs to a [`Processor`] and
//! emits the results at the same timestamp.

use std::sync::Arc;
use std::time::Instant;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};

use super::Failure;
use crate::batch::Batch;
use crate::metrics::OperatorMetrics;
use crate::processor::Processor;

/// Builds a processor operator over `inputs`, each connected with a pact made by `pact`.
pub(crate) fn process<'scope, P>(
    scope: Scope<'scope, u64>,
    name: &str,
    inputs: Vec<Stream<'scope, u64, Batch>>,
    pact: impl Fn() -> P,
    mut processor: Box<dyn Processor>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> Stream<'scope, u64, Batch>
where
    P: ParallelizationContract<u64, Batch>,
{
    let mut builder = OperatorBuilder::new(format!("Process({name})"), scope);
    let mut handles: Vec<_> = inputs.into_iter().map(|input| builder.new_input(input, pact())).collect();
    let (output, stream) = builder.new_output::<Batch>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output);
    let name = name.to_owned();
    builder.build(move |_capabilities| {
        let mut results = Vec::new();
        move |_frontiers| {
            let busy = Instant::now();
            let mut output = output.activate();
            for (index, input) in handles.iter_mut().enumerate() {
                input.for_each(|capability, data| {
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
            metrics.busy_since(busy);
        }
    });
    stream
}
