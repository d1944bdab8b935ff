//! Driving sources and sinks the way the runtime does, without the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::Value;
use sluice_connectors::{SinkRequest, SourceRequest, build_sink, build_source};
use sluice_runtime::connector::{Sink, SinkContext, Source, SourceContext, SourceStatus, WorkerPosition};
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
    let request =
        SourceRequest { name: "src", options: &options, schema, infer_schema: infer, base_dir: base };
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

pub fn sink_context(index: usize, peers: usize, schema: SchemaRef) -> SinkContext {
    SinkContext { worker: WorkerPosition { index, peers }, schema }
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

pub fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    (dir, path)
}
