//! The dead-letter operator: turns the letters queued on this worker into batches for the
//! pipeline's dead-letter sink.
//!
//! Its input is every data stream of the worker, read only for its frontier. A node reports a
//! letter while it works at some epoch `t`, so at that moment the frontier is at most `t`; the
//! operator holds a capability at the frontier it last saw and drains the queue before moving
//! that capability on. A letter is therefore emitted at an epoch no later than the record's, and
//! the checkpoint that covers the record covers its letter too: a crash never loses one (a
//! letter emitted at an earlier epoch than its record may be reported again after a restore,
//! so dead letters are at-least-once).

use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;

use super::{Failure, frontier_min};
use crate::batch::Batch;
use crate::dead_letter::{DeadLetterQueue, dead_letter_batch};

/// Name of the operator's node in metrics and failures.
const NAME: &str = "dead letters";

/// Builds the operator; `watched` is every data stream of the worker, concatenated.
pub(crate) fn dead_letters<'scope>(
    watched: Stream<'scope, u64, Batch>,
    queue: Arc<DeadLetterQueue>,
    failure: Failure,
) -> Stream<'scope, u64, Batch> {
    let scope: Scope<'scope, u64> = watched.scope();
    let mut builder = OperatorBuilder::new("DeadLetters".to_owned(), scope);
    let mut input = builder.new_input(watched, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Always);
    let (output, stream) = builder.new_output::<Batch>();
    let mut output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(output);
    builder.build(move |mut capabilities| {
        let mut capability = capabilities.pop();
        move |frontiers| {
            // Only the frontier matters; the data is other nodes'.
            input.for_each(|_, _| {});
            let Some(held) = capability.as_mut() else { return };
            match queue.drain() {
                Ok(letters) if !letters.is_empty() => match dead_letter_batch(&letters) {
                    Ok(batch) => output.activate().session(&*held).give_container(&mut Batch::new(batch)),
                    Err(error) => failure.record(NAME, error),
                },
                Ok(_) => {}
                Err(error) => failure.record(NAME, error),
            }
            match frontier_min(frontiers) {
                Some(time) if time > *held.time() => held.downgrade(&time),
                Some(_) => {}
                None => capability = None,
            }
        }
    });
    stream
}
