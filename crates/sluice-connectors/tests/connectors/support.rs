//! Driving sources and sinks the way the runtime does, without the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::Value;
use sluice_connectors::{SinkRequest, SourceRequest, build_sink, build_source};
use sluice_runtime::connector::{
    Sink, SinkContext, Source, SourceContext, SourceStatus, SplitState, WorkerPosition,
};
use sluice_runtime::dead_letter::{DeadLetterCounts, DeadLetterSink, OnError};
use sluice_spec::{DataType, FieldSpec};

pub fn field(name: &str, data_type: DataType, nullable: bool) -> FieldSpec {
    FieldSpec { name: name.into(), data_type, nullable }
}

pub fn source(
    connector: &str,
    options: Value,
    schema: Option<&[FieldSpec]>,
    infer: bool,
    base: &Path,
) -> Arc<dyn Source> {
    let request = SourceRequest {
        pipeline: "test",
        name: "src",
        options: &options,
        schema,
        infer_schema: infer,
        base_dir: base,
    };
    match build_source(connector, &request) {
        Ok(source) => source,
        Err(errors) => panic!("{connector}: {errors:?}"),
    }
}

pub fn source_errors(
    connector: &str,
    options: Value,
    schema: Option<&[FieldSpec]>,
    infer: bool,
) -> Vec<String> {
    let request = SourceRequest {
        pipeline: "test",
        name: "src",
        options: &options,
        schema,
        infer_schema: infer,
        base_dir: Path::new("/nonexistent"),
    };
    match build_source(connector, &request) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

pub fn sink(connector: &str, options: Value, base: &Path) -> Arc<dyn Sink> {
    let request = SinkRequest { name: "out", options: &options, base_dir: base };
    match build_sink(connector, &request) {
        Ok(sink) => sink,
        Err(errors) => panic!("{connector}: {errors:?}"),
    }
}

pub fn sink_errors(connector: &str, options: Value) -> Vec<String> {
    let request = SinkRequest { name: "out", options: &options, base_dir: Path::new("/nonexistent") };
    match build_sink(connector, &request) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The context the runtime would give worker `index` of `peers` of a sink whose dead letters
/// are not expected: reporting one fails (its folder cannot be created: /dev/null is a file).
pub fn sink_context(index: usize, peers: usize, schema: SchemaRef) -> SinkContext {
    sink_context_with_dead_letters(index, peers, schema, Path::new("/dev/null/dead-letters.jsonl"))
}

/// The context of worker `index` of `peers` of a sink (named `out`) whose dead letters go to the
/// JSON Lines file `dead_letters`.
pub fn sink_context_with_dead_letters(
    index: usize,
    peers: usize,
    schema: SchemaRef,
    dead_letters: &Path,
) -> SinkContext {
    let counts = Arc::new(DeadLetterCounts::default());
    SinkContext {
        worker: WorkerPosition { index, peers },
        schema,
        checkpointing: false,
        restore: None,
        // As the runtime gives sinks: their dead letters are undeliverable records.
        dead_letters: DeadLetterSink::new(
            "test",
            "out",
            OnError::DeadLetter,
            dead_letters.to_path_buf(),
            counts,
        )
        .with_kind(sluice_runtime::dead_letter::kind::UNDELIVERABLE),
    }
}

/// What one worker's reader produced, per output.
pub struct Drained {
    pub outputs: Vec<Vec<RecordBatch>>,
}

impl Drained {
    pub fn rows(&self, output: usize) -> usize {
        self.outputs[output].iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs worker `index` of `peers` to the end; dead letters go to `dead_letters`.
/// The context the runtime would give worker `index` of `peers`: bad records follow `policy`
/// and go to `dead_letters`; setting `stop` asks the reader to end.
pub fn source_context(
    index: usize,
    peers: usize,
    used: Vec<bool>,
    policy: OnError,
    dead_letters: &Path,
    stop: Arc<AtomicBool>,
) -> SourceContext {
    let counts = Arc::new(DeadLetterCounts::default());
    SourceContext {
        worker: WorkerPosition { index, peers },
        used_outputs: used,
        dead_letters: DeadLetterSink::new("test", "src", policy, dead_letters.to_path_buf(), counts),
        stop,
        restore: None,
        checkpointing: false,
    }
}

pub fn drain(
    source: &dyn Source,
    index: usize,
    peers: usize,
    used: Vec<bool>,
    dead_letters: &Path,
) -> Drained {
    let context = source_context(index, peers, used, OnError::DeadLetter, dead_letters, Arc::default());
    let mut reader = source.open(context).expect("open");
    let mut outputs = vec![Vec::new(); source.outputs().len()];
    let mut out = Vec::new();
    loop {
        let status = reader.poll(1000, &mut out).expect("poll");
        for batch in out.drain(..) {
            outputs[batch.output].push(batch.batch);
        }
        match status {
            SourceStatus::Ready => {}
            SourceStatus::Idle(delay) => std::thread::sleep(delay),
            SourceStatus::Finished => break,
        }
    }
    drop(reader);
    Drained { outputs }
}

/// All rows of `batches` as sorted JSON lines.
pub fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buffer);
        for batch in batches {
            writer.write(batch).expect("encode");
        }
        writer.finish().expect("encode");
    }
    let mut lines: Vec<String> =
        String::from_utf8(buffer).expect("utf8").lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// All rows over `peers` workers of output `output`, sorted.
pub fn union(source: &dyn Source, peers: usize, output: usize, dead_letters: &Path) -> Vec<String> {
    let used = vec![true; source.outputs().len()];
    let mut batches = Vec::new();
    for index in 0..peers {
        batches.extend(drain(source, index, peers, used.clone(), dead_letters).outputs.swap_remove(output));
    }
    sorted_lines(&batches)
}

pub fn json_values(batches: &[RecordBatch]) -> Vec<serde_json::Map<String, Value>> {
    sorted_lines(batches).iter().map(|line| serde_json::from_str(line).expect("json")).collect()
}

pub fn dead_letter_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).expect("json")).collect(),
        Err(_) => Vec::new(),
    }
}

/// What one worker's reader produced before it was stopped for a checkpoint.
pub struct Stopped {
    /// The batches, per output.
    pub outputs: Vec<Vec<RecordBatch>>,
    /// The positions of the reader's splits after them.
    pub snapshot: Vec<SplitState>,
}

/// Runs worker `index` of `peers`, resumed from `restore`, for at most `polls` polls of up to
/// `max_rows` rows (stopping early when the reader is finished, or idle when `until_idle`),
/// then takes a snapshot. Checks that every batch names one of the reader's splits.
pub fn run_and_snapshot(
    source: &dyn Source,
    (index, peers): (usize, usize),
    restore: Option<Arc<Vec<SplitState>>>,
    polls: usize,
    max_rows: usize,
    until_idle: bool,
    dead_letters: &Path,
) -> Stopped {
    let used = vec![true; source.outputs().len()];
    let mut context = source_context(index, peers, used, OnError::DeadLetter, dead_letters, Arc::default());
    context.restore = restore;
    let mut reader = source.open(context).expect("open");
    let mut outputs = vec![Vec::new(); source.outputs().len()];
    let mut out = Vec::new();
    for _ in 0..polls {
        let status = reader.poll(max_rows, &mut out).expect("poll");
        for batch in out.drain(..) {
            assert!(batch.split < reader.splits(), "split {} of {}", batch.split, reader.splits());
            outputs[batch.output].push(batch.batch);
        }
        match status {
            SourceStatus::Ready => {}
            SourceStatus::Idle(_) if until_idle => break,
            SourceStatus::Idle(delay) => std::thread::sleep(delay),
            SourceStatus::Finished => break,
        }
    }
    let snapshot = reader.snapshot().expect("snapshot");
    Stopped { outputs, snapshot }
}

/// Runs `source` as a sequence of runs, each at the parallelism in `runs` and resumed from the
/// snapshots of all workers of the run before, stopping each worker of every run but the last
/// after a random number of polls of a random size; the last run goes to the end. Returns all
/// rows of output `output`, sorted.
pub fn rows_over_restores(
    source: &dyn Source,
    output: usize,
    runs: &[usize],
    seed: u64,
    until_idle: bool,
    dead_letters: &Path,
) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut batches = Vec::new();
    let mut restore: Option<Arc<Vec<SplitState>>> = None;
    for (run, &peers) in runs.iter().enumerate() {
        let last = run + 1 == runs.len();
        let mut states = Vec::new();
        for index in 0..peers {
            let polls = if last { usize::MAX } else { rng.random_range(0..6) };
            let max_rows = rng.random_range(1..3000);
            let stopped = run_and_snapshot(
                source,
                (index, peers),
                restore.clone(),
                polls,
                max_rows,
                until_idle,
                dead_letters,
            );
            batches.extend(stopped.outputs.into_iter().nth(output).unwrap_or_default());
            states.extend(stopped.snapshot);
        }
        let mut names: Vec<&str> = states.iter().map(|state| state.split.as_str()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "every split is owned by one worker");
        restore = Some(Arc::new(states));
    }
    sorted_lines(&batches)
}

pub fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    (dir, path)
}
