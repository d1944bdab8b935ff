//! The sink operator: hands batches to a connector's writer and tells it when epochs
//! complete. Without checkpoints it writes batches as they come and finishes the writer when
//! its input ends. With checkpoints it writes them in epoch order, prepares the writer's
//! output at every checkpoint boundary — after exactly the epochs the checkpoint covers — and
//! saves what it prepared; the committer (see [`super::checkpoint`]) commits and finishes it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, Stream};
use timely::progress::operate::FrontierInterest;

use super::Failure;
use crate::batch::Batch;
use crate::checkpoint::CheckpointRun;
use crate::checkpoint::part::SinkPart;
use crate::checkpoint::upload::Uploads;
use crate::connector::SinkWriter;
use crate::error::Result;
use crate::metrics::OperatorMetrics;

/// A writer shared by a worker's sink operator and its committer.
pub(crate) type SharedWriter = Rc<RefCell<Option<Box<dyn SinkWriter>>>>;

/// Builds a sink operator writing `stream` through `writer` (holding None if opening failed:
/// the input is then drained and dropped, the failure already being recorded). Returns the
/// stream of part reports (empty without checkpoints).
pub(crate) fn sink<'scope>(
    stream: Stream<'scope, u64, Batch>,
    name: &str,
    writer: SharedWriter,
    checkpoints: Option<Arc<CheckpointRun>>,
    metrics: Arc<OperatorMetrics>,
    failure: Failure,
) -> Stream<'scope, u64, Batch> {
    let scope: Scope<'scope, u64> = stream.scope();
    let worker = scope.index();
    let mut builder = OperatorBuilder::new(format!("Sink({name})"), scope);
    let address = builder.operator_info().address;
    let sync_activator = scope.worker().sync_activator_for(address.to_vec());
    let mut input = builder.new_input(stream, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Always);
    let (parts_output, parts) = builder.new_output::<Batch>();
    let mut parts_output = OutputBuilder::<u64, CapacityContainerBuilder<Batch>>::from(parts_output);
    let mut uploads = checkpoints.as_ref().map(|run| Uploads::new(run.clone(), name, worker, sync_activator));
    let schedule = checkpoints.as_ref().map(|run| run.schedule);
    let name = name.to_owned();
    builder.build_reschedule(move |mut capabilities| {
        let mut parts_cap = capabilities.pop();
        let mut completed_epoch = 0u64;
        // With checkpoints: batches of epochs after `completed_epoch`, which must not be written
        // before the boundaries in between are prepared.
        let mut early: BTreeMap<u64, Vec<RecordBatch>> = BTreeMap::new();
        move |frontiers| {
            let busy = Instant::now();
            if let Some(uploads) = uploads.as_mut() {
                uploads.report_finished(&mut parts_output, &failure);
            }
            let mut slot = writer.borrow_mut();
            let frontier = frontiers[0].frontier().iter().min().copied();
            input.for_each(|capability, data| {
                let Some(batch) = data.take() else { return };
                metrics.record_in(batch.num_rows(), batch.get_array_memory_size());
                if failure.has_failed() {
                    return;
                }
                let time = capability.least().copied().unwrap_or_default();
                // Not `time > frontier`: the frontier may have just passed a boundary before
                // `time` that is prepared below, after this batch would have been written.
                if schedule.is_some() && time > completed_epoch {
                    early.entry(time).or_default().push(batch);
                    return;
                }
                if let Some(sink) = slot.as_mut()
                    && let Err(error) = sink.write(&batch)
                {
                    failure.record(&name, error);
                }
            });
            let Some(cap) = parts_cap.as_mut() else {
                metrics.busy_since(busy);
                return uploads.as_ref().is_some_and(Uploads::is_busy);
            };
            let result = (|| {
                let Some(sink) = slot.as_mut() else { return Ok(()) };
                match (frontier, schedule) {
                    (None, None) => {
                        let result = if failure.has_failed() { Ok(()) } else { sink.finish() };
                        *slot = None;
                        result
                    }
                    (None, Some(schedule)) => {
                        // The committer finishes the writer after the final checkpoint commits.
                        if failure.has_failed() {
                            return Ok(());
                        }
                        write_until(sink.as_mut(), &mut early, u64::MAX)?;
                        let prepared = sink.prepare(schedule.final_id())?;
                        if let Some(uploads) = uploads.as_mut() {
                            let bytes = SinkPart { prepared }.encode();
                            uploads.start(schedule.final_id(), bytes, cap.clone(), Duration::ZERO, false);
                        }
                        Ok(())
                    }
                    (Some(epoch), _) if epoch > completed_epoch => {
                        if let Some(schedule) = schedule {
                            for (boundary, checkpoint) in schedule.boundaries(completed_epoch, epoch) {
                                if failure.has_failed() {
                                    break;
                                }
                                write_until(sink.as_mut(), &mut early, boundary)?;
                                let prepared = sink.prepare(checkpoint)?;
                                if let Some(uploads) = uploads.as_mut() {
                                    let bytes = SinkPart { prepared }.encode();
                                    uploads.start(
                                        checkpoint,
                                        bytes,
                                        cap.delayed(&boundary),
                                        Duration::ZERO,
                                        false,
                                    );
                                }
                            }
                        }
                        write_until(sink.as_mut(), &mut early, epoch)?;
                        completed_epoch = epoch;
                        sink.epoch_complete(epoch)
                    }
                    (Some(_), _) => Ok(()),
                }
            })();
            if let Err(error) = result {
                failure.record(&name, error);
            }
            match frontier {
                Some(epoch) => cap.downgrade(&epoch.max(*cap.time())),
                None => parts_cap = None,
            }
            metrics.busy_since(busy);
            parts_cap.is_some() || uploads.as_ref().is_some_and(Uploads::is_busy)
        }
    });
    parts
}

/// Writes the held-back batches of epochs up to `last`, in epoch order.
fn write_until(
    sink: &mut dyn SinkWriter,
    early: &mut BTreeMap<u64, Vec<RecordBatch>>,
    last: u64,
) -> Result<()> {
    while let Some(entry) = early.first_entry() {
        if *entry.key() > last {
            break;
        }
        for batch in entry.remove() {
            sink.write(&batch)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use sluice_state::{CheckpointStore, StoreOptions};
    use timely::dataflow::operators::Concatenate;
    use timely::dataflow::operators::generic::operator::Operator;
    use timely::dataflow::operators::generic::operator::source;

    use super::*;
    use crate::checkpoint::Schedule;
    use crate::metrics::NodeRole;

    #[derive(Debug, PartialEq)]
    enum Event {
        Write(i64),
        Prepare(u64),
    }

    struct Recorder(Arc<Mutex<Vec<Event>>>);

    impl SinkWriter for Recorder {
        fn write(&mut self, batch: &RecordBatch) -> Result<()> {
            let values = batch.column(0).as_primitive::<Int64Type>().values().to_vec();
            self.0.lock().unwrap().extend(values.into_iter().map(Event::Write));
            Ok(())
        }

        fn finish(&mut self) -> Result<()> {
            Ok(())
        }

        fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
            self.0.lock().unwrap().push(Event::Prepare(checkpoint));
            Ok(Vec::new())
        }
    }

    fn batch(value: i64) -> Batch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        Batch::new(RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap())
    }

    fn metrics() -> Arc<OperatorMetrics> {
        let zero = || AtomicU64::new(0);
        Arc::new(OperatorMetrics {
            name: "out".into(),
            role: NodeRole::Sink,
            records_in: zero(),
            records_out: zero(),
            bytes_in: zero(),
            bytes_out: zero(),
            batches_in: zero(),
            busy_nanos: zero(),
            state_bytes: zero(),
            lag: zero(),
        })
    }

    /// Worker 1 holds everyone's frontier at epoch 0; then, in one activation, it moves its
    /// capability to epoch 12 and sends a batch of epoch 12 to worker 0. Worker 0's sink gets
    /// that batch in the same activation in which its frontier first passes the boundary at
    /// epoch 9. The batch belongs to the next checkpoint: it must be written after that
    /// boundary's prepare, not into the checkpoint before it (which would commit it twice
    /// after a restore from that checkpoint).
    #[test]
    fn a_batch_arriving_with_a_frontier_past_a_boundary_is_written_after_its_prepare() {
        const GO: u8 = 1;
        const SENT: u8 = 2;
        const END: u8 = 3;
        let dir = tempfile::tempdir().unwrap();
        let io = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = CheckpointStore::open(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        let schedule = Schedule { interval_epochs: 10, base: 0 };
        let run = Arc::new(CheckpointRun {
            pipeline: "test".into(),
            store,
            schedule,
            retain: 1,
            io: io.handle().clone(),
            restored: None,
            savepoint: None,
            history: Arc::default(),
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&events);
        let phase = Arc::new(AtomicU8::new(0));
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let log = if index == 0 { Arc::clone(&log) } else { Arc::default() };
            let writer: SharedWriter = Rc::new(RefCell::new(Some(Box::new(Recorder(log)))));
            let (run, script) = (Arc::clone(&run), Arc::clone(&phase));
            worker.dataflow::<u64, _, _>(|scope| {
                let stream = source::<_, CapacityContainerBuilder<Batch>, _, _>(
                    scope,
                    "Script",
                    move |capability, info| {
                        let activator = scope.activator_for(info.address);
                        let mut capability = Some(capability);
                        let mut sent = false;
                        move |output| {
                            let phase = script.load(Ordering::SeqCst);
                            let Some(cap) = capability.as_mut() else { return };
                            if phase == END {
                                capability = None;
                                return;
                            }
                            if index == 0 && !sent {
                                // Batches go to worker 0 (the destination of `Batch::new`).
                                output.session(cap).give_container(&mut batch(5));
                                cap.downgrade(&12);
                                sent = true;
                            } else if index == 1 && phase == GO && !sent {
                                cap.downgrade(&12);
                                output.session(cap).give_container(&mut batch(12));
                                sent = true;
                            }
                            activator.activate();
                        }
                    },
                );
                let routed = stream.unary(crate::exchange::keyed_pact(), "Route", |_, _| {
                    |input, output| {
                        input.for_each(|time, data| output.session(&time).give_container(data));
                    }
                });
                let stream = scope.concatenate(vec![routed]);
                sink(stream, "out", writer, Some(run), metrics(), Failure::default());
            });
            let steps = |worker: &mut timely::worker::Worker, count| {
                (0..count).for_each(|_| {
                    worker.step();
                })
            };
            steps(worker, 50);
            if index == 0 {
                // Hold still while worker 1 sends, so its data and progress arrive together.
                phase.store(GO, Ordering::SeqCst);
                while phase.load(Ordering::SeqCst) != SENT {
                    std::thread::yield_now();
                }
                steps(worker, 50);
                phase.store(END, Ordering::SeqCst);
            } else {
                while phase.load(Ordering::SeqCst) != GO {
                    std::thread::yield_now();
                }
                steps(worker, 1);
                phase.store(SENT, Ordering::SeqCst);
            }
            while worker.step_or_park(Some(std::time::Duration::from_millis(1))) {}
        })
        .unwrap();
        guards.join().into_iter().for_each(|result| result.unwrap());
        let events = events.lock().unwrap();
        assert_eq!(
            events[..],
            [Event::Write(5), Event::Prepare(1), Event::Write(12), Event::Prepare(schedule.final_id())]
        );
    }
}
