//! Runs a [`PipelineGraph`] on timely: builds the dataflow on every worker, steps it until all
//! sources end (or a stop is requested), and reports metrics and the first failure.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_state::{CheckpointStore, Manifest};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::{CommunicationConfig, WorkerConfig};

use crate::batch::Batch;
use crate::checkpoint::{CheckpointOptions, CheckpointRun, RestoreFrom, Schedule, restore};
use crate::connector::{SinkContext, SourceContext, WorkerPosition};
use crate::dead_letter::{DeadLetter, DeadLetterCounts, DeadLetterQueue, DeadLetterSink, OnError, kind};
use crate::error::{Error, Result};
use crate::exchange::keyed_pact;
use crate::graph::{DEAD_LETTER_NODE, NodeKind, PipelineGraph, StreamRef};
use crate::metrics::{MetricsRegistry, NodeRole, OperatorMetrics, OperatorSnapshot};
use crate::operators::sink::SharedWriter;
use crate::operators::source::{SourcePacing, SourceSetup};
use crate::operators::stateful::StatefulSetup;
use crate::operators::{Failure, checkpoint, dead_letters, key_by, process, sink, source, stateful};
use crate::processor::{KeyHasher, ProcessorContext};

/// How many processes and threads run the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `workers` threads in this process.
    Local {
        /// Worker threads.
        workers: usize,
    },
    /// One of several processes (timely's cluster mode); every process runs the same pipeline.
    Cluster {
        /// Worker threads per process.
        workers: usize,
        /// This process's index into `addresses`.
        process: usize,
        /// `host:port` of every process, in process order.
        addresses: Vec<String>,
    },
}

impl Topology {
    fn config(&self) -> timely::Config {
        let communication = match self {
            Topology::Local { workers: 1 } => CommunicationConfig::Thread,
            Topology::Local { workers } => CommunicationConfig::Process(*workers),
            Topology::Cluster { workers, process, addresses } => CommunicationConfig::Cluster {
                threads: *workers,
                process: *process,
                addresses: addresses.clone(),
                report: false,
                zerocopy: false,
            },
        };
        timely::Config { communication, worker: WorkerConfig::default() }
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Processes and threads.
    pub topology: Topology,
    /// Epochs a source may run ahead of the slowest sink.
    pub max_epochs_in_flight: u64,
    /// Set to stop gracefully: sources end, the pipeline drains, sinks commit. With
    /// checkpoints, open windows are kept in a final checkpoint instead of being flushed.
    pub stop: Arc<AtomicBool>,
    /// Checkpointing, if enabled.
    pub checkpoints: Option<CheckpointOptions>,
}

/// Bad-record counts of one node (a source's undecodable records, a processor's late ones, a
/// sink's undeliverable ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// Node name.
    pub node: String,
    /// Records written to the dead-letter destination.
    pub dead_lettered: u64,
    /// Records dropped by policy.
    pub dropped: u64,
}

/// What a finished run reports (for this process).
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Per-operator counters.
    pub operators: Vec<OperatorSnapshot>,
    /// Bad-record counts per node, in graph order.
    pub dead_letters: Vec<DeadLetterSummary>,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
    /// The checkpoint the run resumed from, if any.
    pub restored_from: Option<Manifest>,
    /// The checkpoints this run completed, oldest first.
    pub checkpoints: Vec<Manifest>,
}

/// A pipeline prepared to run, with metrics that can be watched while it runs.
pub struct Runtime {
    graph: Arc<PipelineGraph>,
    metrics: MetricsRegistry,
    dead_letters: Vec<(String, Arc<DeadLetterCounts>)>,
    first_failure: Arc<Mutex<Option<Error>>>,
    checkpoints: Arc<Mutex<Vec<Manifest>>>,
    /// The checkpoint the current run resumed from, and how long loading it took.
    restored: Mutex<Option<(Manifest, Duration)>>,
}

impl Runtime {
    /// Prepares `graph`; fails if its wiring is inconsistent.
    pub fn new(graph: PipelineGraph) -> Result<Self> {
        graph.check()?;
        let mut metrics = MetricsRegistry::default();
        let mut dead_letters = Vec::new();
        for node in &graph.nodes {
            let role = match node.kind {
                NodeKind::Source { .. } => NodeRole::Source,
                NodeKind::Processor { .. } => NodeRole::Processor,
                NodeKind::Sink { .. } => NodeRole::Sink,
            };
            // Every node may dead-letter records: in graph order, as `build` takes them.
            dead_letters.push((node.name.clone(), Arc::default()));
            metrics.register(&node.name, role);
        }
        Ok(Self {
            graph: Arc::new(graph),
            metrics,
            dead_letters,
            first_failure: Arc::default(),
            checkpoints: Arc::default(),
            restored: Mutex::default(),
        })
    }

    /// The checkpoint the current run resumed from, once it is loaded, and how long loading
    /// it took: its manifest and its sources' and sinks' parts. Stateful processors stream
    /// their parts while their workers start, which this does not include.
    pub fn restored_from(&self) -> Option<(Manifest, Duration)> {
        self.restored.lock().ok().and_then(|restored| restored.clone())
    }

    /// The checkpoints completed so far in the current run, oldest first.
    pub fn checkpoint_history(&self) -> Vec<Manifest> {
        self.checkpoints.lock().map(|history| history.clone()).unwrap_or_default()
    }

    /// The newest checkpoint completed in the current run (cheaper than the whole history).
    pub fn latest_checkpoint(&self) -> Option<Manifest> {
        self.checkpoints.lock().ok().and_then(|history| history.last().cloned())
    }

    /// The first failure of the current run, while it is still running down. In cluster mode
    /// the stop it triggers is local to this process: peers' sources keep running, so the
    /// caller may need to leave the cluster (exit) once it has given the pipeline time to drain.
    pub fn failure(&self) -> Option<String> {
        self.first_failure.lock().ok().and_then(|first| first.as_ref().map(Error::report))
    }

    /// Live metrics of this process.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Runs to completion: until bounded sources end, `options.stop` is set, or a node fails.
    pub fn run(&self, options: &RunOptions) -> Result<RunReport> {
        let started = Instant::now();
        let failure = Failure::new(self.first_failure.clone(), options.stop.clone());
        let (io, checkpoints) = match &options.checkpoints {
            Some(checkpoint_options) => {
                let (io, run) =
                    prepare_checkpoints(checkpoint_options, &self.graph, self.checkpoints.clone())?;
                (Some(io), Some(run))
            }
            None => (None, None),
        };
        let restored_from =
            checkpoints.as_ref().and_then(|run| run.restored.as_ref()).map(|r| r.manifest.clone());
        if let (Some(manifest), Ok(mut restored)) = (&restored_from, self.restored.lock()) {
            *restored = Some((manifest.clone(), started.elapsed()));
        }
        let shared = Arc::new(WorkerShared {
            graph: self.graph.clone(),
            metrics: self.metrics.clone(),
            dead_letters: self.dead_letters.iter().map(|(_, counts)| counts.clone()).collect(),
            failure: failure.clone(),
            stop: options.stop.clone(),
            max_epochs_in_flight: options.max_epochs_in_flight,
            checkpoints,
            queues: Mutex::default(),
        });
        let leftovers = shared.clone();
        let guards = timely::execute(options.topology.config(), move |worker| {
            let probe = ProbeHandle::new();
            let position = WorkerPosition { index: worker.index(), peers: worker.peers() };
            worker.dataflow::<u64, _, _>(|scope| build(scope, &shared, position, &probe));
            while worker.has_dataflows() {
                worker.step_or_park(Some(Duration::from_millis(100)));
            }
        })
        .map_err(|message| Error::user(format!("starting workers: {message}")))?;
        // A worker or communication thread that panics (e.g. a peer process died) makes timely
        // panic again while joining; turn that into an error instead of aborting the caller.
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
        // Uploads still running belong to checkpoints that will never complete.
        if let Some(io) = io {
            io.shutdown_timeout(Duration::from_secs(5));
        }
        // Letters queued after the dead-letter sink finished go to the folder, not nowhere.
        leftovers.write_leftover_dead_letters()?;
        // A recorded failure explains whatever went wrong with the threads afterwards.
        if let Some(error) = failure.take() {
            return Err(error);
        }
        let abnormal = || Error::internal("worker threads stopped abnormally (see the panic message above)");
        for result in joined.map_err(|_| abnormal())? {
            result.map_err(|_| abnormal())?;
        }
        Ok(RunReport {
            operators: self.metrics.snapshot(),
            dead_letters: self
                .dead_letters
                .iter()
                .map(|(node, counts)| DeadLetterSummary {
                    node: node.clone(),
                    dead_lettered: counts.dead_lettered.load(Ordering::Relaxed),
                    dropped: counts.dropped.load(Ordering::Relaxed),
                })
                .collect(),
            elapsed: started.elapsed(),
            restored_from,
            checkpoints: self.checkpoint_history(),
        })
    }
}

/// Opens the checkpoint store, loads the checkpoint to resume from, and picks this run's ids.
fn prepare_checkpoints(
    options: &CheckpointOptions,
    graph: &PipelineGraph,
    history: Arc<Mutex<Vec<Manifest>>>,
) -> Result<(tokio::runtime::Runtime, Arc<CheckpointRun>)> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-checkpoint-io")
        .enable_all()
        .build()
        .map_err(|error| Error::external("starting the checkpoint I/O runtime", error))?;
    let open = |location: &str| {
        CheckpointStore::open(location, &options.store)
            .map_err(|error| Error::user(format!("checkpoint location {location}: {error}")))
    };
    let store = open(&options.location)?;
    let restored = io.block_on(async {
        let (source, manifest) = match &options.restore {
            RestoreFrom::Nothing => return Ok(None),
            RestoreFrom::Latest => (store.clone(), store.latest_complete().await),
            RestoreFrom::Savepoint(path) => {
                let savepoint = open(path)?;
                let manifest = savepoint.latest_complete().await;
                if let Ok(None) = manifest {
                    return Err(Error::user(format!(
                        "no savepoint at {path}: it holds no complete checkpoint (give the folder or URL \
                         that was passed to `--stop-with-savepoint`)"
                    )));
                }
                (savepoint, manifest)
            }
        };
        let manifest = manifest.map_err(|error| {
            Error::user(format!("reading checkpoints from {}: {error}", source.location()))
        })?;
        let Some(manifest) = manifest else { return Ok(None) };
        restore::load(&source, manifest, graph).await.map(Some)
    })?;
    if let Some(finished) =
        restored.as_ref().filter(|r| r.manifest.finished && options.restore == RestoreFrom::Latest)
    {
        // A crash may have come between the final manifest and the sinks' commit: finish that.
        commit_final_output(graph, finished)?;
        return Err(Error::user(format!(
            "pipeline \"{}\" already ran to completion: its last checkpoint ({}) in {} says every \
             source was read to the end, and its output is committed. To run it again from the start, \
             pass --fresh (its checkpoints will be replaced) or remove that folder",
            graph.name,
            finished.manifest.checkpoint,
            store.location()
        )));
    }
    let next = io
        .block_on(store.next_checkpoint_id())
        .map_err(|error| Error::user(format!("listing checkpoints in {}: {error}", store.location())))?;
    let after_restored = restored.as_ref().map_or(0, |r: &restore::Restored| r.manifest.checkpoint + 1);
    let base = next.max(after_restored).saturating_sub(1);
    let epoch_ms = graph.epoch.as_millis().max(1);
    let interval_epochs = (options.interval.as_millis() / epoch_ms).max(1) as u64;
    let savepoint = options.savepoint.as_deref().map(open).transpose()?;
    let run = CheckpointRun {
        pipeline: graph.name.clone(),
        store,
        schedule: Schedule { interval_epochs, base },
        retain: options.retain,
        io: io.handle().clone(),
        restored,
        savepoint,
        history,
    };
    Ok((io, Arc::new(run)))
}

/// Makes the output of a finished run's final checkpoint visible: each sink's first writer,
/// opened with what the checkpoint prepared, commits it (idempotently, as after any restore).
fn commit_final_output(graph: &PipelineGraph, finished: &restore::Restored) -> Result<()> {
    for node in &graph.nodes {
        let (NodeKind::Sink { sink, schema }, Some(prepared)) = (&node.kind, finished.sinks.get(&node.name))
        else {
            continue;
        };
        let context = SinkContext {
            worker: WorkerPosition { index: 0, peers: 1 },
            schema: schema.clone(),
            checkpointing: true,
            restore: Some(prepared.clone()),
            dead_letters: DeadLetterSink::new(
                &graph.name,
                &node.name,
                OnError::DeadLetter,
                graph.dead_letter_dir.join(&node.name).join("part-commit.jsonl"),
                Arc::default(),
            )
            .with_kind(kind::UNDELIVERABLE),
        };
        drop(sink.open(context)?);
    }
    Ok(())
}

/// What every worker thread shares.
struct WorkerShared {
    graph: Arc<PipelineGraph>,
    metrics: MetricsRegistry,
    dead_letters: Vec<Arc<DeadLetterCounts>>,
    failure: Failure,
    stop: Arc<AtomicBool>,
    max_epochs_in_flight: u64,
    checkpoints: Option<Arc<CheckpointRun>>,
    /// With a dead-letter sink: each local worker's queue of letters for it.
    queues: Mutex<Vec<Arc<DeadLetterQueue>>>,
}

impl WorkerShared {
    /// A new dead-letter queue for one worker, if the pipeline has a dead-letter sink.
    fn dead_letter_queue(&self) -> Option<Arc<DeadLetterQueue>> {
        let wanted = self.graph.nodes.iter().any(|node| node.name == DEAD_LETTER_NODE);
        let queue = Arc::new(DeadLetterQueue::default());
        let mut queues = self.queues.lock().ok()?;
        wanted.then(|| {
            queues.push(queue.clone());
            queue
        })
    }

    /// Writes letters still queued (reported after the dead-letter sink finished, e.g. by a sink
    /// while finishing) to the dead-letter folder.
    fn write_leftover_dead_letters(&self) -> Result<()> {
        let queues = self.queues.lock().map_err(|_| Error::internal("dead-letter queues lock poisoned"))?;
        for (index, queue) in queues.iter().enumerate() {
            for letter in queue.drain()? {
                let path =
                    self.graph.dead_letter_dir.join(&*letter.node).join(format!("leftover-{index:05}.jsonl"));
                tracing::warn!(node = %letter.node, path = %path.display(), "a dead letter arrived after the dead-letter sink finished; writing it to the folder");
                let mut file = DeadLetterSink::new(
                    &letter.pipeline,
                    &letter.node,
                    OnError::DeadLetter,
                    path,
                    Arc::default(),
                )
                .with_kind(letter.kind);
                let letter_details = letter.details;
                file.report_detailed(
                    DeadLetter { position: letter.position, raw: letter.raw, reason: letter.reason },
                    letter_details,
                )?;
                file.flush()?;
            }
        }
        Ok(())
    }
    fn node_metrics(&self, name: &str) -> Arc<OperatorMetrics> {
        self.metrics.get(name).cloned().expect("invariant: every node is registered in Runtime::new")
    }
}

/// Builds this worker's copy of the dataflow.
fn build<'scope>(
    scope: Scope<'scope, u64>,
    shared: &WorkerShared,
    position: WorkerPosition,
    probe: &ProbeHandle<u64>,
) {
    let graph = &shared.graph;
    let pacing = SourcePacing {
        epoch: graph.epoch,
        max_epochs_in_flight: shared.max_epochs_in_flight,
        probe: probe.clone(),
        stop: shared.stop.clone(),
    };
    let checkpoints = shared.checkpoints.clone();
    let restored = checkpoints.as_ref().and_then(|run| run.restored.as_ref());
    let mut streams: HashMap<StreamRef, Stream<'scope, u64, Batch>> = HashMap::new();
    let mut parts = Vec::new();
    let mut writers: Vec<(String, SharedWriter)> = Vec::new();
    let mut expected: Vec<(String, usize)> = Vec::new();
    let mut dead_letter_index = 0;
    let peers = position.peers;
    let committed = Rc::new(Cell::new(None));
    let queue = shared.dead_letter_queue();
    let dead_letter_sink =
        |node: &str, policy: OnError, counts: &Arc<DeadLetterCounts>, kind: &'static str| {
            let path = graph.dead_letter_dir.join(node).join(format!("part-{:05}.jsonl", position.index));
            let sink = DeadLetterSink::new(&graph.name, node, policy, path, counts.clone()).with_kind(kind);
            match &queue {
                Some(queue) => sink.with_queue(queue.clone()),
                None => sink,
            }
        };
    for (index, node) in graph.nodes.iter().enumerate() {
        let metrics = shared.node_metrics(&node.name);
        let failure = shared.failure.clone();
        let inputs: Vec<_> = node.inputs.iter().filter_map(|input| streams.get(input).cloned()).collect();
        let mut expect_parts = || expected.extend((0..peers).map(|worker| (node.name.clone(), worker)));
        match &node.kind {
            NodeKind::Source { source: connector, on_error, watermark } => {
                let outputs = connector.outputs();
                let used_outputs = (0..outputs.len())
                    .map(|output| graph.is_consumed(StreamRef { node: index, output }))
                    .collect();
                let counts = &shared.dead_letters[dead_letter_index];
                dead_letter_index += 1;
                let context = SourceContext {
                    worker: position,
                    used_outputs,
                    dead_letters: dead_letter_sink(&node.name, *on_error, counts, kind::BAD_RECORD),
                    stop: shared.stop.clone(),
                    restore: restored.and_then(|restored| restored.sources.get(&node.name).cloned()),
                    checkpointing: checkpoints.is_some(),
                };
                let reader = connector.open(context).map_err(|error| failure.record(&node.name, error)).ok();
                let setup = SourceSetup {
                    name: node.name.clone(),
                    outputs: outputs.len(),
                    watermark: watermark.clone(),
                    checkpoints: checkpoints.clone(),
                    replayable: connector.replayable(),
                    committed: committed.clone(),
                };
                let (built, source_parts) =
                    source::source(scope, setup, reader, pacing.clone(), metrics, failure);
                for (output, stream) in built.into_iter().enumerate() {
                    streams.insert(StreamRef { node: index, output }, stream);
                }
                parts.push(source_parts);
                expect_parts();
            }
            NodeKind::Processor { processor, key_by: key } => {
                let counts = &shared.dead_letters[dead_letter_index];
                dead_letter_index += 1;
                let instance = match processor.lock() {
                    Ok(template) => template.clone_box(),
                    Err(_) => {
                        failure.record(&node.name, Error::internal("processor template lock poisoned"));
                        continue;
                    }
                };
                let stream = if instance.is_stateful() {
                    let own_keys = instance.key_by();
                    let keys: Vec<Arc<dyn KeyHasher>> = if !own_keys.is_empty() {
                        own_keys
                    } else if !key.is_empty() {
                        key.clone()
                    } else {
                        // No key: all of the state lives on one worker.
                        inputs.iter().map(|_| Arc::new(SingleKey) as Arc<dyn KeyHasher>).collect()
                    };
                    let keyed: Vec<_> = inputs
                        .into_iter()
                        .zip(keys)
                        .map(|(input, hasher)| {
                            key_by::key_by(input, &node.name, hasher, metrics.clone(), failure.clone())
                        })
                        .collect();
                    let setup = StatefulSetup {
                        name: node.name.clone(),
                        senders: vec![peers; keyed.len()],
                        context: ProcessorContext {
                            worker: position,
                            state: graph.state_backend.for_instance(&node.name, position.index),
                            dead_letters: dead_letter_sink(
                                &node.name,
                                OnError::DeadLetter,
                                counts,
                                kind::REJECTED,
                            ),
                        },
                        checkpoints: checkpoints.clone(),
                        restore: restored.and_then(|restored| restored.processors.get(&node.name).cloned()),
                    };
                    let (stream, processor_parts) =
                        stateful::stateful(scope, setup, keyed, keyed_pact, instance, metrics, failure);
                    parts.push(processor_parts);
                    expect_parts();
                    stream
                } else if key.is_empty() {
                    let senders = vec![1; inputs.len()];
                    process::process(
                        scope,
                        &node.name,
                        inputs,
                        senders,
                        || Pipeline,
                        instance,
                        metrics,
                        failure,
                    )
                } else {
                    let keyed: Vec<_> = inputs
                        .into_iter()
                        .zip(key)
                        .map(|(input, hasher)| {
                            key_by::key_by(
                                input,
                                &node.name,
                                hasher.clone(),
                                metrics.clone(),
                                failure.clone(),
                            )
                        })
                        .collect();
                    let senders = vec![peers; keyed.len()];
                    process::process(
                        scope, &node.name, keyed, senders, keyed_pact, instance, metrics, failure,
                    )
                };
                streams.insert(StreamRef { node: index, output: 0 }, stream);
            }
            NodeKind::Sink { sink: connector, schema } => {
                let stream = match (&queue, node.name == DEAD_LETTER_NODE) {
                    (Some(queue), true) => {
                        // Every stream so far: the dead-letter node comes last.
                        let watched = scope.concatenate(streams.values().cloned().collect::<Vec<_>>());
                        dead_letters::dead_letters(watched, queue.clone(), failure.clone())
                    }
                    _ => scope.concatenate(inputs),
                }
                .probe_with(probe);
                let counts = &shared.dead_letters[dead_letter_index];
                dead_letter_index += 1;
                let context = SinkContext {
                    worker: position,
                    schema: schema.clone(),
                    checkpointing: checkpoints.is_some(),
                    restore: restored.and_then(|restored| restored.sinks.get(&node.name).cloned()),
                    dead_letters: if node.name == DEAD_LETTER_NODE {
                        // What the dead-letter sink cannot deliver goes to the folder.
                        let path = graph
                            .dead_letter_dir
                            .join(&node.name)
                            .join(format!("part-{:05}.jsonl", position.index));
                        DeadLetterSink::new(
                            &graph.name,
                            &node.name,
                            OnError::DeadLetter,
                            path,
                            counts.clone(),
                        )
                        .with_kind(kind::UNDELIVERABLE)
                    } else {
                        dead_letter_sink(&node.name, OnError::DeadLetter, counts, kind::UNDELIVERABLE)
                    },
                };
                let writer = connector.open(context).map_err(|error| failure.record(&node.name, error)).ok();
                let writer: SharedWriter = Rc::new(RefCell::new(writer));
                writers.push((node.name.clone(), writer.clone()));
                parts.push(sink::sink(stream, &node.name, writer, checkpoints.clone(), metrics, failure));
                expect_parts();
            }
        }
    }
    if let Some(run) = checkpoints {
        // Sources also wait for checkpoints to become durable, not only for sinks.
        let parts = scope.concatenate(parts).probe_with(probe);
        let sources = graph
            .nodes
            .iter()
            .filter(|node| matches!(node.kind, NodeKind::Source { .. }))
            .map(|node| node.name.clone())
            .collect();
        let notices = checkpoint::coordinator(parts, expected, sources, run, shared.failure.clone());
        checkpoint::committer(notices, writers, committed, shared.failure.clone());
    }
}

/// The key of a stateful processor that declares none: every row in key group 0.
struct SingleKey;

impl KeyHasher for SingleKey {
    fn hash_rows(&self, batch: &arrow::record_batch::RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        hashes.clear();
        hashes.resize(batch.num_rows(), 0);
        Ok(())
    }
}
