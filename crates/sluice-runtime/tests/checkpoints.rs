//! Checkpoints through the real timely runtime with in-test connectors: a replayable source
//! with splits, a keyed tumbling-window count, and a two-phase sink. Stopping with a final
//! checkpoint and resuming — at the same or another parallelism, or from a savepoint — must
//! commit exactly the rows an uninterrupted run commits, which the test computes directly.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice_runtime::checkpoint::{CheckpointOptions, RestoreFrom};
use sluice_runtime::connector::{
    Sink, SinkContext, SinkWriter, Source, SourceBatch, SourceContext, SourceOutput, SourceReader,
    SourceStatus, SplitState,
};
use sluice_runtime::dead_letter::OnError;
use sluice_runtime::exchange::key_group;
use sluice_runtime::graph::{GraphNode, NodeKind, PipelineGraph, StreamRef};
use sluice_runtime::processor::{
    END_OF_TIME, KeyGroupState, KeyHasher, Processor, SnapshotWriter, StateBackend,
};
use sluice_runtime::watermark::WatermarkStrategy;
use sluice_runtime::{Result, RunOptions, Runtime, Topology};
use sluice_state::StoreOptions;

const SPLITS: i64 = 4;
const KEYS: i64 = 7;
const WINDOW: i64 = 50;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_start", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
    ]))
}

/// Values 0..total as (k = n % 7, ts = n); split s holds the values ≡ s mod 4.
struct Counter {
    total: i64,
}

struct CounterReader {
    /// (split, next value) for the splits this worker owns.
    splits: Vec<(i64, i64)>,
    total: i64,
}

impl Source for Counter {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: input_schema() }]
    }
    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let restored: BTreeMap<String, i64> = context
            .restore
            .iter()
            .flat_map(|states| states.iter())
            .map(|state| (state.split.clone(), i64::from_le_bytes(state.position[..8].try_into().unwrap())))
            .collect();
        let splits = (0..SPLITS)
            .filter(|split| *split as usize % context.worker.peers == context.worker.index)
            .map(|split| (split, restored.get(&split.to_string()).copied().unwrap_or(split)))
            .collect();
        Ok(Box::new(CounterReader { splits, total: self.total }))
    }
    fn replayable(&self) -> bool {
        true
    }
}

impl SourceReader for CounterReader {
    fn poll(&mut self, _max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        for (index, (_, next)) in self.splits.iter_mut().enumerate() {
            let values: Vec<i64> =
                (0..25).map(|i| *next + i * SPLITS).take_while(|v| *v < self.total).collect();
            if let Some(last) = values.last() {
                *next = last + SPLITS;
                let keys: Int64Array = values.iter().map(|v| v % KEYS).collect();
                let batch = RecordBatch::try_new(
                    input_schema(),
                    vec![Arc::new(keys), Arc::new(Int64Array::from(values))],
                )?;
                out.push(SourceBatch { output: 0, split: index, batch });
            }
        }
        Ok(if self.splits.iter().all(|(_, next)| *next >= self.total) {
            SourceStatus::Finished
        } else {
            SourceStatus::Idle(Duration::from_millis(1))
        })
    }
    fn splits(&self) -> usize {
        self.splits.len()
    }
    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(self
            .splits
            .iter()
            .map(|(split, next)| SplitState {
                split: split.to_string(),
                position: next.to_le_bytes().to_vec(),
            })
            .collect())
    }
}

fn hash_key(k: i64) -> u64 {
    (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

struct ByK;

impl KeyHasher for ByK {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        let keys = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        hashes.clear();
        hashes.extend(keys.values().iter().map(|k| hash_key(*k)));
        Ok(())
    }
}

/// Counts rows per (50 ms window of ts, k); emits a window when the watermark passes it.
#[derive(Default)]
struct WindowCount {
    counts: BTreeMap<(i64, i64), i64>,
}

impl Processor for WindowCount {
    fn output_schema(&self) -> SchemaRef {
        output_schema()
    }
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let keys = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let times = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for (k, ts) in keys.values().iter().zip(times.values()) {
            *self.counts.entry((ts - ts.rem_euclid(WINDOW), *k)).or_default() += 1;
        }
        Ok(())
    }
    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(WindowCount::default())
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn key_by(&self) -> Vec<Arc<dyn KeyHasher>> {
        vec![Arc::new(ByK)]
    }
    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let ready: Vec<(i64, i64)> = self
            .counts
            .keys()
            .filter(|(start, _)| watermark == END_OF_TIME || start + WINDOW - 1 <= watermark)
            .copied()
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let counts: Vec<i64> = ready.iter().map(|key| self.counts.remove(key).unwrap()).collect();
        out.push(RecordBatch::try_new(
            output_schema(),
            vec![
                Arc::new(ready.iter().map(|(start, _)| *start).collect::<Int64Array>()),
                Arc::new(ready.iter().map(|(_, k)| *k).collect::<Int64Array>()),
                Arc::new(Int64Array::from(counts)),
            ],
        )?);
        Ok(())
    }
    fn snapshot(&mut self, out: &mut dyn SnapshotWriter) -> Result<()> {
        let mut groups: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for ((start, k), count) in &self.counts {
            let bytes = groups.entry(key_group(hash_key(*k)) as u32).or_default();
            for value in [start, k, count] {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        // One entry a chunk: every key group is restored from several chunks.
        for (key_group, bytes) in groups {
            for entry in bytes.chunks(24) {
                out.write(key_group, entry)?;
            }
        }
        Ok(())
    }
    fn restore(&mut self, states: Vec<KeyGroupState>) -> Result<()> {
        for state in states {
            for entry in state.bytes.chunks_exact(24) {
                let value = |i: usize| i64::from_le_bytes(entry[i * 8..i * 8 + 8].try_into().unwrap());
                *self.counts.entry((value(0), value(1))).or_default() += value(2);
            }
        }
        Ok(())
    }
}

type Row = (i64, i64, i64);

/// Two-phase sink into memory: rows become visible in `committed` only on commit; a commit
/// is identified by (run, worker, checkpoint) so replaying one after a restore is a no-op.
#[derive(Clone, Default)]
struct Committing {
    committed: Arc<Mutex<Vec<Row>>>,
    done: Arc<Mutex<HashSet<String>>>,
    run: Arc<Mutex<u64>>,
}

struct CommittingWriter {
    shared: Committing,
    id: String,
    buffer: Vec<Row>,
    prepared: Vec<(u64, String, Vec<Row>)>,
}

fn encode(tag: &str, rows: &[Row]) -> Vec<u8> {
    let mut bytes = (tag.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(tag.as_bytes());
    for (a, b, c) in rows {
        for value in [a, b, c] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

fn decode(bytes: &[u8]) -> (String, Vec<Row>) {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let tag = String::from_utf8(bytes[8..8 + length].to_vec()).unwrap();
    let rows = bytes[8 + length..]
        .chunks_exact(24)
        .map(|c| {
            let v = |i: usize| i64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
            (v(0), v(1), v(2))
        })
        .collect();
    (tag, rows)
}

impl Committing {
    fn publish(&self, tag: &str, rows: &[Row]) {
        if self.done.lock().unwrap().insert(tag.to_owned()) {
            self.committed.lock().unwrap().extend_from_slice(rows);
        }
    }
}

impl Sink for Committing {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        assert!(context.checkpointing);
        if context.worker.index == 0
            && let Some(restore) = &context.restore
        {
            for prepared in restore.iter().filter(|p| !p.is_empty()) {
                let (tag, rows) = decode(prepared);
                self.publish(&tag, &rows);
            }
        }
        let run = *self.run.lock().unwrap();
        Ok(Box::new(CommittingWriter {
            shared: self.clone(),
            id: format!("run{run}-w{}", context.worker.index),
            buffer: Vec::new(),
            prepared: Vec::new(),
        }))
    }
}

impl SinkWriter for CommittingWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |i: usize| batch.column(i).as_any().downcast_ref::<Int64Array>().unwrap().clone();
        let (a, b, c) = (column(0), column(1), column(2));
        self.buffer.extend((0..a.len()).map(|i| (a.value(i), b.value(i), c.value(i))));
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        assert!(self.buffer.is_empty() && self.prepared.is_empty(), "everything was committed");
        Ok(())
    }
    fn transactional(&self) -> bool {
        true
    }
    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let rows = std::mem::take(&mut self.buffer);
        let tag = format!("{}-c{checkpoint}", self.id);
        let bytes = encode(&tag, &rows);
        self.prepared.push((checkpoint, tag, rows));
        Ok(bytes)
    }
    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.prepared).into_iter().partition(|(id, _, _)| *id <= checkpoint);
        self.prepared = later;
        for (_, tag, rows) in ready {
            self.shared.publish(&tag, &rows);
        }
        Ok(())
    }
}

const TOTAL: i64 = 40_000;

fn graph(sink: &Committing) -> PipelineGraph {
    graph_on(sink, StateBackend::Memory)
}

fn graph_on(sink: &Committing, state_backend: StateBackend) -> PipelineGraph {
    let nodes = vec![
        GraphNode {
            name: "counter".into(),
            inputs: vec![],
            kind: NodeKind::Source {
                source: Arc::new(Counter { total: TOTAL }),
                on_error: OnError::Fail,
                watermark: Some(WatermarkStrategy {
                    columns: vec![Some(1)],
                    max_out_of_orderness: Duration::ZERO,
                    idle_timeout: None,
                }),
            },
        },
        GraphNode {
            name: "windows".into(),
            inputs: vec![StreamRef { node: 0, output: 0 }],
            kind: NodeKind::Processor {
                processor: Mutex::new(Box::new(WindowCount::default())),
                key_by: vec![],
            },
        },
        GraphNode {
            name: "out".into(),
            inputs: vec![StreamRef { node: 1, output: 0 }],
            kind: NodeKind::Sink { sink: Arc::new(sink.clone()), schema: output_schema() },
        },
    ];
    PipelineGraph {
        name: "windows-test".into(),
        epoch: Duration::from_millis(10),
        dead_letter_dir: std::env::temp_dir().join("sluice-checkpoint-test-dead-letters"),
        nodes,
        state_backend,
    }
}

fn expected() -> Vec<Row> {
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for n in 0..TOTAL {
        *counts.entry((n - n % WINDOW, n % KEYS)).or_default() += 1;
    }
    counts.into_iter().map(|((start, k), count)| (start, k, count)).collect()
}

fn options(location: &str, workers: usize, restore: RestoreFrom, savepoint: Option<String>) -> RunOptions {
    RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 4,
        stop: Arc::new(AtomicBool::new(false)),
        checkpoints: Some(CheckpointOptions {
            location: location.to_owned(),
            store: StoreOptions::default(),
            interval: Duration::from_millis(50),
            retain: 2,
            restore,
            savepoint,
        }),
    }
}

/// Runs until the source ends, or stops after `stop_after`.
fn run(sink: &Committing, options: RunOptions, stop_after: Option<Duration>) -> sluice_runtime::RunReport {
    run_on(sink, options, stop_after, StateBackend::Memory)
}

/// Like [`run`], with `backend` as the pipeline's state backend.
fn run_on(
    sink: &Committing,
    options: RunOptions,
    stop_after: Option<Duration>,
    backend: StateBackend,
) -> sluice_runtime::RunReport {
    *sink.run.lock().unwrap() += 1;
    let runtime = Runtime::new(graph_on(sink, backend)).unwrap();
    if let Some(delay) = stop_after {
        let stop = options.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            stop.store(true, Ordering::SeqCst);
        });
    }
    runtime.run(&options).unwrap_or_else(|error| panic!("run failed: {}", error.report()))
}

fn committed(sink: &Committing) -> Vec<Row> {
    let mut rows = sink.committed.lock().unwrap().clone();
    rows.sort_unstable();
    rows
}

/// Compares committed rows with the expected ones, reporting a summary rather than both lists.
fn assert_exactly_expected(sink: &Committing) {
    let (actual, expected) = (committed(sink), expected());
    if actual != expected {
        let missing = expected.iter().filter(|row| actual.binary_search(row).is_err()).count();
        let mut unique = actual.clone();
        unique.dedup();
        panic!(
            "committed {} rows, expected {}: {missing} expected rows missing, {} duplicates; first committed: {:?}",
            actual.len(),
            expected.len(),
            actual.len() - unique.len(),
            actual.first()
        );
    }
}

#[test]
fn an_uninterrupted_run_commits_every_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Committing::default();
    let report = run(&sink, options(dir.path().to_str().unwrap(), 2, RestoreFrom::Latest, None), None);
    assert!(!report.checkpoints.is_empty(), "no checkpoint completed");
    assert_exactly_expected(&sink);
    let last = report.checkpoints.last().expect("a final checkpoint");
    assert!(last.finished, "the final checkpoint records that the source ended");
    assert!(report.checkpoints.len() >= 2, "periodic checkpoints too: {}", report.checkpoints.len());
}

#[test]
fn stopping_and_resuming_at_other_parallelisms_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap();
    let sink = Committing::default();
    let first = run(&sink, options(location, 1, RestoreFrom::Latest, None), Some(Duration::from_millis(150)));
    assert!(first.restored_from.is_none());
    assert!(!first.checkpoints.last().unwrap().finished, "stopped before the end");
    let partial = committed(&sink).len();
    assert!(partial < expected().len(), "the first run must stop early ({partial} windows committed)");
    let second =
        run(&sink, options(location, 2, RestoreFrom::Latest, None), Some(Duration::from_millis(150)));
    assert_eq!(
        second.restored_from.as_ref().map(|m| m.checkpoint),
        first.checkpoints.last().map(|m| m.checkpoint)
    );
    let third = run(&sink, options(location, 3, RestoreFrom::Latest, None), None);
    assert!(third.checkpoints.last().unwrap().finished);
    assert_exactly_expected(&sink);
}

#[test]
fn parts_spilled_to_the_state_folder_resume_at_other_parallelisms() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("checkpoints");
    let location = location.to_str().unwrap();
    let state = dir.path().join("state");
    let backend = StateBackend::RocksDb { dir: state.clone() };
    let sink = Committing::default();
    let stop = Some(Duration::from_millis(150));
    let first = run_on(&sink, options(location, 2, RestoreFrom::Latest, None), stop, backend.clone());
    assert!(!first.checkpoints.last().unwrap().finished, "stopped before the end");
    let spill = state.join("windows/worker-0.spill");
    assert!(spill.is_dir(), "parts are spilled to {}", spill.display());
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spilled parts are deleted once uploaded");
    let second = run_on(&sink, options(location, 1, RestoreFrom::Latest, None), None, backend);
    assert_eq!(
        second.restored_from.as_ref().map(|m| m.checkpoint),
        first.checkpoints.last().map(|m| m.checkpoint)
    );
    assert!(second.checkpoints.last().unwrap().finished);
    assert_exactly_expected(&sink);
}

#[test]
fn a_savepoint_resumes_in_a_fresh_location() {
    let dir = tempfile::tempdir().unwrap();
    let savepoint = dir.path().join("savepoint").display().to_string();
    let sink = Committing::default();
    let stopped =
        options(dir.path().join("a").to_str().unwrap(), 2, RestoreFrom::Latest, Some(savepoint.clone()));
    run(&sink, stopped, Some(Duration::from_millis(150)));
    let resumed = options(dir.path().join("b").to_str().unwrap(), 1, RestoreFrom::Savepoint(savepoint), None);
    let report = run(&sink, resumed, None);
    assert!(report.restored_from.is_some());
    assert_exactly_expected(&sink);
}

#[test]
fn a_finished_pipeline_is_not_silently_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap();
    let sink = Committing::default();
    run(&sink, options(location, 1, RestoreFrom::Latest, None), None);
    let runtime = Runtime::new(graph(&sink)).unwrap();
    let error = runtime.run(&options(location, 1, RestoreFrom::Latest, None)).unwrap_err();
    assert!(error.report().contains("already ran to completion"), "{}", error.report());
    assert!(error.report().contains("--fresh"));
}

/// A source that cannot replay, like MQTT: its snapshot is a count of rows returned, and it
/// records each count it is told is committed with how many rows the sink had committed then.
struct Acking {
    total: i64,
    sink: Committing,
    told: Arc<Mutex<Vec<(i64, usize)>>>,
    checkpointing: Arc<Mutex<Option<bool>>>,
}

struct AckingReader {
    next: i64,
    total: i64,
    sink: Committing,
    told: Arc<Mutex<Vec<(i64, usize)>>>,
}

impl Source for Acking {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: output_schema() }]
    }
    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        assert!(context.restore.is_none(), "nothing is restored for a source that cannot replay");
        *self.checkpointing.lock().unwrap() = Some(context.checkpointing);
        Ok(Box::new(AckingReader {
            next: 0,
            total: self.total,
            sink: self.sink.clone(),
            told: self.told.clone(),
        }))
    }
}

impl SourceReader for AckingReader {
    fn poll(&mut self, _max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        let values: Vec<i64> = (self.next..self.total).take(25).collect();
        self.next += values.len() as i64;
        if !values.is_empty() {
            let zeros = Int64Array::from(vec![0; values.len()]);
            let batch = RecordBatch::try_new(
                output_schema(),
                vec![Arc::new(Int64Array::from(values)), Arc::new(zeros.clone()), Arc::new(zeros)],
            )?;
            out.push(SourceBatch { output: 0, split: 0, batch });
        }
        Ok(if self.next >= self.total {
            SourceStatus::Finished
        } else {
            SourceStatus::Idle(Duration::from_millis(1))
        })
    }
    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(vec![SplitState { split: "acks".into(), position: self.next.to_le_bytes().to_vec() }])
    }
    fn positions_committed(&mut self, positions: &[SplitState]) -> Result<()> {
        let marker = i64::from_le_bytes(positions[0].position[..8].try_into().unwrap());
        let committed = self.sink.committed.lock().unwrap().len();
        self.told.lock().unwrap().push((marker, committed));
        Ok(())
    }
}

/// Drops everything it is given.
struct Discard;

impl Sink for Discard {
    fn open(&self, _context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(Discard))
    }
}

impl SinkWriter for Discard {
    fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

fn acking_graph(source: Acking, sink: Arc<dyn Sink>) -> PipelineGraph {
    let nodes = vec![
        GraphNode {
            name: "acking".into(),
            inputs: vec![],
            kind: NodeKind::Source { source: Arc::new(source), on_error: OnError::Fail, watermark: None },
        },
        GraphNode {
            name: "out".into(),
            inputs: vec![StreamRef { node: 0, output: 0 }],
            kind: NodeKind::Sink { sink, schema: output_schema() },
        },
    ];
    PipelineGraph {
        name: "acking-test".into(),
        epoch: Duration::from_millis(10),
        dead_letter_dir: std::env::temp_dir().join("sluice-checkpoint-test-dead-letters"),
        nodes,
        state_backend: Default::default(),
    }
}

#[test]
fn a_source_that_cannot_replay_is_told_each_count_once_its_rows_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Committing::default();
    *sink.run.lock().unwrap() += 1;
    let told = Arc::new(Mutex::new(Vec::new()));
    let checkpointing = Arc::new(Mutex::new(None));
    let total = 20_000;
    let source =
        Acking { total, sink: sink.clone(), told: told.clone(), checkpointing: checkpointing.clone() };
    let runtime = Runtime::new(acking_graph(source, Arc::new(sink.clone()))).unwrap();
    let options = options(dir.path().to_str().unwrap(), 1, RestoreFrom::Latest, None);
    let report = runtime.run(&options).unwrap_or_else(|error| panic!("run failed: {}", error.report()));
    assert!(report.checkpoints.len() >= 3, "periodic checkpoints: {}", report.checkpoints.len());
    assert_eq!(*checkpointing.lock().unwrap(), Some(true));
    let told = told.lock().unwrap().clone();
    let (last, periodic) = told.split_last().expect("told at least once");
    assert!(!periodic.is_empty(), "told after periodic checkpoints too: {told:?}");
    // Periodic checkpoints: told only once the sink committed every row the count covers.
    for (marker, committed) in periodic {
        assert!(
            *committed as i64 >= *marker,
            "told {marker} rows were committed when {committed} were: {told:?}"
        );
    }
    assert!(periodic.windows(2).all(|pair| pair[0].0 <= pair[1].0), "in checkpoint order: {told:?}");
    // The end of reading: told the final count before the final checkpoint completes.
    assert_eq!(last.0, total);
    assert_eq!(sink.committed.lock().unwrap().len() as i64, total);
}

#[test]
fn without_checkpoints_a_source_is_told_it_will_never_be_told() {
    let sink = Committing::default();
    let told = Arc::new(Mutex::new(Vec::new()));
    let checkpointing = Arc::new(Mutex::new(None));
    let source =
        Acking { total: 1_000, sink: sink.clone(), told: told.clone(), checkpointing: checkpointing.clone() };
    let runtime = Runtime::new(acking_graph(source, Arc::new(Discard))).unwrap();
    let mut options = options("unused", 1, RestoreFrom::Latest, None);
    options.checkpoints = None;
    runtime.run(&options).unwrap_or_else(|error| panic!("run failed: {}", error.report()));
    assert_eq!(*checkpointing.lock().unwrap(), Some(false));
    assert!(told.lock().unwrap().is_empty());
}
