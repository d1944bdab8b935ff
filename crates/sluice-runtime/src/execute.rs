//! Runs a [`PipelineGraph`] on timely: builds the dataflow on every worker, steps it until all
//! sources end (or a stop is requested), and reports metrics and the first failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use timely::{CommunicationConfig, WorkerConfig};

use crate::batch::Batch;
use crate::connector::{SinkContext, SourceContext, WorkerPosition};
use crate::dead_letter::{DeadLetterCounts, DeadLetterSink};
use crate::error::{Error, Result};
use crate::exchange::keyed_pact;
use crate::graph::{NodeKind, PipelineGraph, StreamRef};
use crate::metrics::{MetricsRegistry, NodeRole, OperatorMetrics, OperatorSnapshot};
use crate::operators::source::SourcePacing;
use crate::operators::{Failure, key_by, process, sink, source};

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
    /// Set to stop gracefully: sources end, the pipeline drains, sinks commit.
    pub stop: Arc<AtomicBool>,
}

/// Bad-record counts of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// Source name.
    pub source: String,
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
    /// Bad-record counts per source.
    pub dead_letters: Vec<DeadLetterSummary>,
    /// Wall-clock duration of the run.
    pub elapsed: Duration,
}

/// A pipeline prepared to run, with metrics that can be watched while it runs.
pub struct Runtime {
    graph: Arc<PipelineGraph>,
    metrics: MetricsRegistry,
    dead_letters: Vec<(String, Arc<DeadLetterCounts>)>,
    first_failure: Arc<Mutex<Option<Error>>>,
}

impl Runtime {
    /// Prepares `graph`; fails if its wiring is inconsistent.
    pub fn new(graph: PipelineGraph) -> Result<Self> {
        graph.check()?;
        let mut metrics = MetricsRegistry::default();
        let mut dead_letters = Vec::new();
        for node in &graph.nodes {
            let role = match node.kind {
                NodeKind::Source { .. } => {
                    dead_letters.push((node.name.clone(), Arc::default()));
                    NodeRole::Source
                }
                NodeKind::Processor { .. } => NodeRole::Processor,
                NodeKind::Sink { .. } => NodeRole::Sink,
            };
            metrics.register(&node.name, role);
        }
        Ok(Self { graph: Arc::new(graph), metrics, dead_letters, first_failure: Arc::default() })
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
        let shared = Arc::new(WorkerShared {
            graph: self.graph.clone(),
            metrics: self.metrics.clone(),
            dead_letters: self.dead_letters.iter().map(|(_, counts)| counts.clone()).collect(),
            failure: failure.clone(),
            stop: options.stop.clone(),
            max_epochs_in_flight: options.max_epochs_in_flight,
        });
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
                .map(|(source, counts)| DeadLetterSummary {
                    source: source.clone(),
                    dead_lettered: counts.dead_lettered.load(Ordering::Relaxed),
                    dropped: counts.dropped.load(Ordering::Relaxed),
                })
                .collect(),
            elapsed: started.elapsed(),
        })
    }
}

/// What every worker thread shares.
struct WorkerShared {
    graph: Arc<PipelineGraph>,
    metrics: MetricsRegistry,
    dead_letters: Vec<Arc<DeadLetterCounts>>,
    failure: Failure,
    stop: Arc<AtomicBool>,
    max_epochs_in_flight: u64,
}

impl WorkerShared {
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
    let mut streams: HashMap<StreamRef, Stream<'scope, u64, Batch>> = HashMap::new();
    let mut source_index = 0;
    for (index, node) in graph.nodes.iter().enumerate() {
        let metrics = shared.node_metrics(&node.name);
        let failure = shared.failure.clone();
        let inputs: Vec<_> = node.inputs.iter().filter_map(|input| streams.get(input).cloned()).collect();
        match &node.kind {
            NodeKind::Source { source: connector, on_error } => {
                let outputs = connector.outputs();
                let used_outputs = (0..outputs.len())
                    .map(|output| graph.is_consumed(StreamRef { node: index, output }))
                    .collect();
                let dead_letter_path =
                    graph.dead_letter_dir.join(&node.name).join(format!("part-{:05}.jsonl", position.index));
                let context = SourceContext {
                    worker: position,
                    used_outputs,
                    dead_letters: DeadLetterSink::new(
                        &graph.name,
                        &node.name,
                        *on_error,
                        dead_letter_path,
                        shared.dead_letters[source_index].clone(),
                    ),
                    stop: shared.stop.clone(),
                };
                source_index += 1;
                let reader = connector.open(context).map_err(|error| failure.record(&node.name, error)).ok();
                let built = source::source(
                    scope,
                    &node.name,
                    outputs.len(),
                    reader,
                    pacing.clone(),
                    metrics,
                    failure,
                );
                for (output, stream) in built.into_iter().enumerate() {
                    streams.insert(StreamRef { node: index, output }, stream);
                }
            }
            NodeKind::Processor { processor, key_by: key } => {
                let instance = match processor.lock() {
                    Ok(template) => template.clone_box(),
                    Err(_) => {
                        failure.record(&node.name, Error::internal("processor template lock poisoned"));
                        continue;
                    }
                };
                let stream = if key.is_empty() {
                    process::process(scope, &node.name, inputs, || Pipeline, instance, metrics, failure)
                } else {
                    let keyed = inputs
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
                    process::process(scope, &node.name, keyed, keyed_pact, instance, metrics, failure)
                };
                streams.insert(StreamRef { node: index, output: 0 }, stream);
            }
            NodeKind::Sink { sink: connector, schema } => {
                let stream = scope.concatenate(inputs).probe_with(probe);
                let context = SinkContext { worker: position, schema: schema.clone() };
                let writer = connector.open(context).map_err(|error| failure.record(&node.name, error)).ok();
                sink::sink(stream, &node.name, writer, metrics, failure);
            }
        }
    }
}
