//! Runs small graphs with in-test connectors through the real timely runtime: results must not
//! depend on the number of workers, keyed exchange must co-locate keys, failures must name the
//! node, a stop request must end an unbounded pipeline, and a slow worker must not stall a
//! fast one for good.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice_runtime::connector::{
    Sink, SinkContext, SinkWriter, Source, SourceBatch, SourceContext, SourceOutput, SourceReader,
    SourceStatus,
};
use sluice_runtime::dead_letter::OnError;
use sluice_runtime::graph::{GraphNode, NodeKind, PipelineGraph, StreamRef};
use sluice_runtime::processor::{KeyHasher, Processor};
use sluice_runtime::{Error, Result, RunOptions, Runtime, Topology};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

/// Emits 0..count (or forever), worker w taking numbers ≡ w mod peers.
struct Numbers {
    count: Option<i64>,
}

struct NumbersReader {
    next: i64,
    step: i64,
    count: Option<i64>,
}

impl Source for Numbers {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: schema() }]
    }
    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(NumbersReader {
            next: context.worker.index as i64,
            step: context.worker.peers as i64,
            count: self.count,
        }))
    }
}

impl SourceReader for NumbersReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        let mut values = Vec::new();
        while values.len() < max_rows.min(1000) && self.count.is_none_or(|count| self.next < count) {
            values.push(self.next);
            self.next += self.step;
        }
        if !values.is_empty() {
            let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values))])?;
            out.push(SourceBatch { output: 0, split: 0, batch });
        }
        Ok(match self.count {
            Some(count) if self.next >= count => SourceStatus::Finished,
            _ => SourceStatus::Ready,
        })
    }
}

/// Doubles `n` and adds the worker it ran on; fails on a chosen value.
#[derive(Clone)]
struct Doubler {
    fail_on: Option<i64>,
    worker_seen: Arc<Mutex<Vec<(i64, u64)>>>,
    thread_tag: u64,
}

impl Processor for Doubler {
    fn output_schema(&self) -> SchemaRef {
        schema()
    }
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let values = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64 column");
        let mut seen = self.worker_seen.lock().expect("lock");
        let thread = thread_id();
        for value in values.iter().flatten() {
            if Some(value) == self.fail_on {
                return Err(Error::user(format!("cannot double {value}")));
            }
            seen.push((value, thread));
        }
        let doubled: Int64Array = values.iter().map(|v| v.map(|v| v * 2)).collect();
        out.push(RecordBatch::try_new(schema(), vec![Arc::new(doubled)])?);
        Ok(())
    }
    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(Doubler { thread_tag: self.thread_tag + 1, ..self.clone() })
    }
}

fn thread_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut hasher);
    hasher.finish()
}

/// Key = n mod 10.
struct ModTen;

impl KeyHasher for ModTen {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        let values = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64 column");
        hashes.clear();
        hashes.extend(
            values.iter().map(|v| ((v.unwrap_or(0) % 10) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        Ok(())
    }
}

/// Collects every row it receives; counts finish calls.
#[derive(Clone, Default)]
struct Collect {
    rows: Arc<Mutex<Vec<i64>>>,
    finished: Arc<Mutex<usize>>,
    completed_epochs: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Collect {
    fn open(&self, _context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter for Collect {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = batch.column(0);
        let values = column.as_any().downcast_ref::<Int64Array>().expect("int64 column");
        self.rows.lock().expect("lock").extend(values.iter().flatten());
        Ok(())
    }
    fn epoch_complete(&mut self, epoch: u64) -> Result<()> {
        self.completed_epochs.lock().expect("lock").push(epoch);
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        *self.finished.lock().expect("lock") += 1;
        Ok(())
    }
}

struct Built {
    graph: PipelineGraph,
    sink: Collect,
    seen: Arc<Mutex<Vec<(i64, u64)>>>,
}

fn graph(count: Option<i64>, fail_on: Option<i64>, keyed: bool) -> Built {
    graph_from(Arc::new(Numbers { count }), fail_on, keyed)
}

fn graph_from(source: Arc<dyn Source>, fail_on: Option<i64>, keyed: bool) -> Built {
    let sink = Collect::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let processor = Doubler { fail_on, worker_seen: seen.clone(), thread_tag: 0 };
    let nodes = vec![
        GraphNode {
            name: "numbers".into(),
            inputs: vec![],
            kind: NodeKind::Source { source, on_error: OnError::Fail, watermark: None },
        },
        GraphNode {
            name: "double".into(),
            inputs: vec![StreamRef { node: 0, output: 0 }],
            kind: NodeKind::Processor {
                processor: Mutex::new(Box::new(processor)),
                key_by: if keyed { vec![Arc::new(ModTen) as Arc<dyn KeyHasher>] } else { vec![] },
            },
        },
        GraphNode {
            name: "out".into(),
            inputs: vec![StreamRef { node: 1, output: 0 }],
            kind: NodeKind::Sink { sink: Arc::new(sink.clone()), schema: schema() },
        },
    ];
    let graph = PipelineGraph {
        name: "test".into(),
        epoch: Duration::from_millis(20),
        dead_letter_dir: std::env::temp_dir(),
        nodes,
        state_backend: Default::default(),
    };
    Built { graph, sink, seen }
}

fn options(workers: usize) -> RunOptions {
    RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 2,
        stop: Arc::new(AtomicBool::new(false)),
        checkpoints: None,
    }
}

fn sorted(mut rows: Vec<i64>) -> Vec<i64> {
    rows.sort_unstable();
    rows
}

#[test]
fn same_output_for_one_two_and_three_workers() {
    let expected: Vec<i64> = (0..50_000).map(|n| n * 2).collect();
    for workers in 1..=3 {
        let built = graph(Some(50_000), None, false);
        let runtime = Runtime::new(built.graph).unwrap();
        let report = runtime.run(&options(workers)).unwrap();
        assert_eq!(sorted(built.sink.rows.lock().unwrap().clone()), expected, "{workers} workers");
        assert_eq!(*built.sink.finished.lock().unwrap(), workers, "each worker's sink finishes once");
        let double = report.operators.iter().find(|o| o.name == "double").unwrap();
        assert_eq!((double.records_in, double.records_out), (50_000, 50_000));
    }
}

#[test]
fn keyed_exchange_puts_each_key_on_one_worker() {
    let built = graph(Some(20_000), None, true);
    let runtime = Runtime::new(built.graph).unwrap();
    runtime.run(&options(3)).unwrap();
    assert_eq!(
        sorted(built.sink.rows.lock().unwrap().clone()),
        (0..20_000).map(|n| n * 2).collect::<Vec<_>>()
    );
    let seen = built.seen.lock().unwrap();
    let mut owner = std::collections::HashMap::new();
    for (value, thread) in seen.iter() {
        let previous = owner.insert(value % 10, *thread);
        assert!(previous.is_none_or(|p| p == *thread), "key {} seen on two workers", value % 10);
    }
    let threads: std::collections::HashSet<_> = owner.values().collect();
    assert!(threads.len() > 1, "ten keys over three workers should use more than one worker");
}

#[test]
fn a_failing_processor_fails_the_run_with_its_name() {
    let built = graph(Some(10_000), Some(4242), false);
    let runtime = Runtime::new(built.graph).unwrap();
    let error = runtime.run(&options(2)).unwrap_err();
    assert_eq!(error.report(), "node \"double\": cannot double 4242");
}

#[test]
fn stop_ends_an_unbounded_pipeline_and_flushes_sinks() {
    let built = graph(None, None, false);
    let runtime = Runtime::new(built.graph).unwrap();
    let options = options(2);
    let stop = options.stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let report = runtime.run(&options).unwrap();
    stopper.join().unwrap();
    let rows = built.sink.rows.lock().unwrap().len() as u64;
    assert!(rows > 0);
    assert_eq!(*built.sink.finished.lock().unwrap(), 2);
    let source = report.operators.iter().find(|o| o.name == "numbers").unwrap();
    assert_eq!(source.records_out, rows, "everything produced before the stop reaches the sink");
    // Epochs of 20 ms over ~300 ms: the two workers' sinks hear of several completed epochs.
    let epochs = built.sink.completed_epochs.lock().unwrap().clone();
    assert!(epochs.len() >= 2 * 3, "sinks should hear of completed epochs: {epochs:?}");
}

/// A live source whose workers read at different speeds: worker 0 gets `count` even numbers,
/// 50 every 5 ms, then waits for more that never come; worker 1 reads odd numbers forever, 100
/// at a time, each poll taking 100 ms (a busy or descheduled thread).
struct Uneven {
    count: i64,
}

struct UnevenReader {
    worker: usize,
    next: i64,
    count: i64,
}

impl Source for Uneven {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: schema() }]
    }
    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let worker = context.worker.index;
        Ok(Box::new(UnevenReader { worker, next: worker as i64, count: self.count }))
    }
}

impl SourceReader for UnevenReader {
    fn poll(&mut self, _max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        let rows = if self.worker == 0 {
            (self.count - self.next / 2).clamp(0, 50) as usize
        } else {
            std::thread::sleep(Duration::from_millis(100));
            100
        };
        if rows == 0 {
            return Ok(SourceStatus::Idle(Duration::from_millis(10)));
        }
        let values: Vec<i64> = (0..rows as i64).map(|i| self.next + 2 * i).collect();
        self.next += 2 * rows as i64;
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values))])?;
        out.push(SourceBatch { output: 0, split: 0, batch });
        Ok(if self.worker == 0 { SourceStatus::Idle(Duration::from_millis(5)) } else { SourceStatus::Ready })
    }
}

/// Epochs are counted per worker; a worker whose thread is slow counts fewer. The fast worker
/// used to go on counting epochs while it waited for the slow one, so the gap only grew and it
/// never read again (a Kafka consumer stalled mid-topic while the other worker read on).
#[test]
fn a_slow_worker_does_not_stall_a_fast_one_for_good() {
    let count = 2_000;
    let built = graph_from(Arc::new(Uneven { count }), None, true);
    let rows = built.sink.rows.clone();
    let runtime = Runtime::new(built.graph).unwrap();
    let options = options(2);
    let stop = options.stop.clone();
    let fast_rows = move || rows.lock().unwrap().iter().filter(|n| *n % 4 == 0).count() as i64;
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while fast_rows() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        fast_rows()
    });
    runtime.run(&options).unwrap();
    let read = watcher.join().unwrap();
    assert_eq!(read, count, "the fast worker's rows all reach the sink within 30 s");
}
