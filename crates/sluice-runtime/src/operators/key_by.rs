//! The key-by operator: splits each batch by the hash of a key so that the following keyed
//! exchange can send every part to the worker owning its key groups.

use std::sync::Arc;
use std::time::Instant;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Failure;
use crate::batch::Batch;
use crate::exchange::split_by_hash;
use crate::metrics::OperatorMetrics;
use crate::processor::KeyHasher;

/// Splits `stream` by key for `node`; batches come out tagged with their destination worker.
pub(crate) fn key_by<'scope>(
    stream: Stream<'scope, u64, Batch>,
    node: &str,
    hasher: Arc<dyn KeyHasher>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> Stream<'scope, u64, Batch> {
    let peers = stream.scope().peers();
    let node = node.to_owned();
    stream.unary::<CapacityContainerBuilder<Batch>, _, _, _>(
        Pipeline,
        &format!("KeyBy({node})"),
        move |_, _| {
            let mut hashes = Vec::new();
            move |input, output| {
                let busy = Instant::now();
                input.for_each(|capability, data| {
                    if let Some(mark) = data.as_mark() {
                        // Marks go to every worker downstream.
                        output.session(&capability).give_container(&mut Batch::mark(mark).broadcast(peers));
                        return;
                    }
                    let Some(batch) = data.take() else { return };
                    if failure.has_failed() {
                        return;
                    }
                    let parts = hasher
                        .hash_rows(&batch, &mut hashes)
                        .and_then(|()| split_by_hash(&batch, &hashes, peers));
                    match parts {
                        Ok(parts) => {
                            let mut session = output.session(&capability);
                            for mut part in parts {
                                session.give_container(&mut part);
                            }
                        }
                        Err(error) => failure.record(&node, error.context("evaluating key_by")),
                    }
                });
                metrics.busy_since(busy);
            }
        },
    )
}
