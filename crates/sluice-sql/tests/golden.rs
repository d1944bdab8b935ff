//! Runs every golden case under `tests/golden/` (repository root) through the SQL processor and
//! compares its rows with `expected.jsonl`, which DuckDB computed independently
//! (`tests/golden/compute_expected.py`). A new case needs no Rust: add a folder.
//!
//! Stateful cases (aggregations) are driven like the runtime drives them: input in batches of
//! three rows, each batch one epoch; when the source declares a `watermark`, the watermark after
//! each batch is the largest event time seen minus `max_out_of_orderness`, and the end of input
//! is `END_OF_TIME`. Records the processor dead-letters are compared with
//! `expected_dead_letters.jsonl` (the raw records), absent meaning none. For an updating
//! aggregation the case names its upsert key columns in `upsert_key` (one per line) and the
//! last row emitted per key is compared.
//!
//! Every case runs once per state backend (memory and RocksDB): results must not depend on
//! where state lives.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::{LineDelimitedWriter, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use sluice_runtime::connector::WorkerPosition;
use sluice_runtime::dead_letter::{DeadLetterCounts, DeadLetterSink, OnError};
use sluice_runtime::processor::{END_OF_TIME, Processor, ProcessorContext, StateBackend};
use sluice_sql::{PlanOptions, SqlInput, SqlProcessor, plan};

/// The state backends every case runs with, RocksDB's in a folder under `scratch`.
fn backends(scratch: &Path) -> [StateBackend; 2] {
    [StateBackend::Memory, StateBackend::RocksDb { dir: scratch.join("rocksdb") }]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn arrow_type(name: &str) -> DataType {
    match name {
        "boolean" => DataType::Boolean,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        "string" => DataType::Utf8,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "list<int64>" => DataType::new_list(DataType::Int64, true),
        "list<string>" => DataType::new_list(DataType::Utf8, true),
        other => panic!("golden cases use types the runner knows; got {other}"),
    }
}

struct Case {
    sql: String,
    schema: SchemaRef,
    options: PlanOptions,
    /// Event-time column and watermark delay in milliseconds.
    watermark: Option<(String, i64)>,
}

fn duration(value: &serde_yaml::Value) -> std::time::Duration {
    sluice_spec::parse_duration(value.as_str().unwrap()).unwrap()
}

fn load_case(dir: &Path) -> Case {
    let text = fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
    let pipeline: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let source = &pipeline["sources"][0];
    let processor = &pipeline["processors"][0];
    let sql = processor["sql"].as_str().unwrap().to_owned();
    let mut options = PlanOptions::default();
    if !processor["allowed_lateness"].is_null() {
        options.allowed_lateness = duration(&processor["allowed_lateness"]);
    }
    if !processor["state_ttl"].is_null() {
        options.state_ttl = Some(duration(&processor["state_ttl"]));
    }
    let watermark = source["watermark"].as_mapping().map(|_| {
        let watermark = &source["watermark"];
        let delay = if watermark["max_out_of_orderness"].is_null() {
            0
        } else {
            duration(&watermark["max_out_of_orderness"]).as_millis() as i64
        };
        (watermark["column"].as_str().unwrap().to_owned(), delay)
    });
    Case { sql, schema: schema_of(source), options, watermark }
}

/// The largest event time (milliseconds) in `column` of `batch`.
fn max_event_time(batch: &RecordBatch, column: &str) -> Option<i64> {
    let array = batch.column_by_name(column).unwrap();
    let millis = arrow::compute::cast(array, &DataType::Int64).unwrap();
    let millis = millis.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
    let scale = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => 1000,
        _ => 1,
    };
    arrow::compute::max(millis).map(|m| m * scale)
}

/// Runs a case through the processor; returns its output and the raw dead letters.
fn run_case(
    dir: &Path,
    case: &Case,
    mut processor: SqlProcessor,
    state: StateBackend,
) -> (Vec<RecordBatch>, Vec<Value>) {
    let scratch = tempfile::tempdir().unwrap();
    let dead_letters = scratch.path().join("dead_letters.jsonl");
    let sink = DeadLetterSink::new(
        "golden",
        "q",
        OnError::DeadLetter,
        dead_letters.clone(),
        Arc::new(DeadLetterCounts::default()),
    );
    let worker = WorkerPosition { index: 0, peers: 1 };
    processor.open(ProcessorContext { worker, dead_letters: sink, state: state.clone() }).unwrap();
    let stateful = processor.is_stateful();
    let mut out = Vec::new();
    let mut newest = i64::MIN;
    let mut watermark = i64::MIN;
    for batch in read_input(dir, &case.schema) {
        let newest_here = case.watermark.as_ref().and_then(|(column, _)| max_event_time(&batch, column));
        processor.process(0, batch, &mut out).unwrap();
        if !stateful {
            continue;
        }
        if let (Some((_, delay)), Some(time)) = (&case.watermark, newest_here) {
            newest = newest.max(time);
            if newest - delay > watermark {
                watermark = newest - delay;
                processor.on_watermark(watermark, &mut out).unwrap();
            }
        }
        processor.end_of_epoch(&mut out).unwrap();
    }
    if stateful {
        processor.on_watermark(END_OF_TIME, &mut out).unwrap();
        processor.end_of_epoch(&mut out).unwrap();
    }
    // Closing the sink (by replacing it) flushes its file.
    let closed = DeadLetterSink::new(
        "golden",
        "q",
        OnError::Drop,
        scratch.path().join("unused"),
        Arc::new(DeadLetterCounts::default()),
    );
    processor.open(ProcessorContext { worker, dead_letters: closed, state }).unwrap();
    let letters = fs::read_to_string(&dead_letters)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let letter: Value = serde_json::from_str(line).unwrap();
            serde_json::from_str(letter["raw"].as_str().unwrap()).unwrap()
        })
        .collect();
    (out, letters)
}

/// For an updating result: the last row per upsert key.
fn latest_per_key(rows: Vec<Value>, key: &[String]) -> Vec<Value> {
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for row in rows {
        let id: Vec<&Value> = key.iter().map(|k| row.get(k).unwrap_or(&Value::Null)).collect();
        latest.insert(serde_json::to_string(&id).unwrap(), row);
    }
    latest.into_values().collect()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .map(|text| text.lines().map(|line| serde_json::from_str(line).unwrap()).collect())
        .unwrap_or_default()
}

fn read_input(dir: &Path, schema: &SchemaRef) -> Vec<RecordBatch> {
    let data = fs::read(dir.join("input.jsonl")).unwrap();
    ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(3)
        .build(Cursor::new(data))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn to_json(batches: &[RecordBatch]) -> Vec<Value> {
    let mut writer = LineDelimitedWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Rows as sorted canonical strings, floats rounded so 1e-9 relative differences vanish.
fn canonical(rows: &[Value]) -> Vec<String> {
    fn normalize(value: &Value) -> Value {
        match value {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap();
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    Value::from(f as i64)
                } else {
                    Value::String(format!("{f:.9e}"))
                }
            }
            Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
            Value::Object(map) => Value::Object(
                map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), normalize(v))).collect(),
            ),
            other => other.clone(),
        }
    }
    let mut rows: Vec<String> = rows
        .iter()
        .map(|row| {
            let sorted: BTreeMap<_, _> =
                row.as_object().unwrap().iter().map(|(k, v)| (k.clone(), normalize(v))).collect();
            serde_json::to_string(&sorted).unwrap()
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn golden_cases_match_duckdb() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("pipeline.yaml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "golden cases missing");
    let mut failures = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for (dir, backend) in dirs.iter().flat_map(|dir| backends(scratch.path()).map(|b| (dir, b))) {
        let name = format!("{} ({})", dir.file_name().unwrap().to_string_lossy(), backend.name());
        if is_join_case(dir) {
            continue; // golden_join_cases_match_duckdb
        }
        let case = load_case(dir);
        let inputs = [SqlInput { table: "input".into(), schema: Arc::clone(&case.schema) }];
        let processor = match plan(&case.sql, &inputs, &case.options) {
            Ok(processor) => processor,
            Err(diagnostics) => {
                failures.push(format!("{name}: {diagnostics:?}"));
                continue;
            }
        };
        let (out, letters) = run_case(dir, &case, processor, backend);
        let mut rows = to_json(&out);
        if let Ok(key) = fs::read_to_string(dir.join("upsert_key")) {
            let key: Vec<String> =
                key.lines().map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
            rows = latest_per_key(rows, &key);
        }
        let expected = read_jsonl(&dir.join("expected.jsonl"));
        let (actual, expected) = (canonical(&rows), canonical(&expected));
        if actual != expected {
            failures.push(format!("{name}:\n  actual:   {actual:?}\n  expected: {expected:?}"));
        }
        let expected_letters = read_jsonl(&dir.join("expected_dead_letters.jsonl"));
        let (letters, expected_letters) = (canonical(&letters), canonical(&expected_letters));
        if letters != expected_letters {
            failures.push(format!(
                "{name} dead letters:\n  actual:   {letters:?}\n  expected: {expected_letters:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- Cases with several sources or lookup tables (joins) ----
//
// Each source is read from its own `options.path`, in batches of three rows taken from the
// inputs in turn. A source's watermark is the largest event time it has delivered minus its
// `max_out_of_orderness`, and `END_OF_TIME` once it has no more rows; the processor sees the
// minimum over its inputs, as the runtime would give it. Lookup tables (top-level `lookups:`,
// each with a `key` column) are served from their file by an in-memory table.

/// Whether a case has several sources or lookup tables.
fn is_join_case(dir: &Path) -> bool {
    let pipeline: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir.join("pipeline.yaml")).unwrap()).unwrap();
    pipeline["sources"].as_sequence().is_some_and(|s| s.len() > 1) || !pipeline["lookups"].is_null()
}

fn schema_of(table: &serde_yaml::Value) -> SchemaRef {
    let fields: Vec<Field> = table["schema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|field| {
            Field::new(
                field["name"].as_str().unwrap(),
                arrow_type(field["type"].as_str().unwrap()),
                field["nullable"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn read_batches(path: &Path, schema: &SchemaRef) -> Vec<RecordBatch> {
    let data = fs::read(path).unwrap();
    ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(3)
        .build(Cursor::new(data))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A lookup table served from a batch (a test fixture for the file connector's lookup table).
struct FileTable {
    rows: RecordBatch,
    key: String,
}

impl sluice_runtime::processor::LookupTable for FileTable {
    fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }

    fn key_column(&self) -> &str {
        &self.key
    }

    fn lookup(&self, keys: &dyn arrow::array::Array) -> sluice_runtime::Result<RecordBatch> {
        let column = self.rows.column_by_name(&self.key).unwrap();
        // Rows whose key is one of `keys`: one comparison per key (the tables are tiny).
        let mut mask = vec![false; self.rows.num_rows()];
        for index in 0..keys.len() {
            let key = arrow::array::Scalar::new(keys.slice(index, 1));
            let equal = arrow::compute::kernels::cmp::eq(column, &key).unwrap();
            for (row, hit) in equal.iter().enumerate() {
                mask[row] |= hit == Some(true);
            }
        }
        Ok(arrow::compute::filter_record_batch(&self.rows, &mask.into()).unwrap())
    }
}

#[test]
fn golden_join_cases_match_duckdb() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("pipeline.yaml").exists() && is_join_case(path))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "join golden cases missing");
    let mut failures = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for (dir, backend) in dirs.iter().flat_map(|dir| backends(scratch.path()).map(|b| (dir, b))) {
        let name = format!("{} ({})", dir.file_name().unwrap().to_string_lossy(), backend.name());
        let pipeline: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(dir.join("pipeline.yaml")).unwrap()).unwrap();
        let processor = &pipeline["processors"][0];
        let mut options = PlanOptions::default();
        if !processor["state_ttl"].is_null() {
            options.state_ttl = Some(duration(&processor["state_ttl"]));
        }
        for lookup in pipeline["lookups"].as_sequence().into_iter().flatten() {
            let rows =
                read_batches(&dir.join(lookup["options"]["path"].as_str().unwrap()), &schema_of(lookup));
            let rows = arrow::compute::concat_batches(&schema_of(lookup), &rows).unwrap();
            let key = lookup["options"]["key"].as_str().unwrap().to_owned();
            options.lookups.push(sluice_sql::SqlLookup {
                table: lookup["name"].as_str().unwrap().to_owned(),
                source: Arc::new(FileTable { rows, key }),
            });
        }
        let mut inputs = Vec::new();
        let mut batches = Vec::new();
        let mut watermarks = Vec::new();
        for input in processor["inputs"].as_sequence().unwrap() {
            let input = input.as_str().unwrap();
            let sources = pipeline["sources"].as_sequence().unwrap();
            let source = sources.iter().find(|s| s["name"].as_str() == Some(input)).unwrap();
            let schema = schema_of(source);
            batches.push(read_batches(&dir.join(source["options"]["path"].as_str().unwrap()), &schema));
            watermarks.push(source["watermark"].as_mapping().map(|_| {
                let delay = duration(&source["watermark"]["max_out_of_orderness"]).as_millis() as i64;
                (source["watermark"]["column"].as_str().unwrap().to_owned(), delay)
            }));
            inputs.push(SqlInput { table: input.to_owned(), schema });
        }
        let mut processor = match plan(processor["sql"].as_str().unwrap(), &inputs, &options) {
            Ok(processor) => processor,
            Err(diagnostics) => {
                failures.push(format!("{name}: {diagnostics:?}"));
                continue;
            }
        };
        let counts = Arc::new(DeadLetterCounts::default());
        let sink =
            DeadLetterSink::new("golden", "q", OnError::Drop, PathBuf::from("unused"), Arc::clone(&counts));
        let worker = WorkerPosition { index: 0, peers: 1 };
        processor.open(ProcessorContext { worker, dead_letters: sink, state: backend }).unwrap();
        let mut out = Vec::new();
        let mut per_input = vec![i64::MIN; inputs.len()];
        let mut current = i64::MIN;
        for round in 0.. {
            let mut any = false;
            for (input, batches) in batches.iter().enumerate() {
                match batches.get(round) {
                    Some(batch) => {
                        any = true;
                        processor.process(input, batch.clone(), &mut out).unwrap();
                        if let Some((column, delay)) = &watermarks[input]
                            && let Some(time) = max_event_time(batch, column)
                        {
                            per_input[input] = per_input[input].max(time - delay);
                        }
                    }
                    None => per_input[input] = END_OF_TIME,
                }
            }
            let watermark = per_input.iter().copied().min().unwrap();
            if processor.is_stateful() && watermark > current {
                current = watermark;
                processor.on_watermark(watermark, &mut out).unwrap();
            }
            if processor.is_stateful() {
                processor.end_of_epoch(&mut out).unwrap();
            }
            if !any {
                break;
            }
        }
        let (actual, expected) =
            (canonical(&to_json(&out)), canonical(&read_jsonl(&dir.join("expected.jsonl"))));
        if actual != expected {
            failures.push(format!("{name}:\n  actual:   {actual:?}\n  expected: {expected:?}"));
        }
        let dropped = counts.dropped.load(std::sync::atomic::Ordering::Relaxed);
        let expected_letters = read_jsonl(&dir.join("expected_dead_letters.jsonl")).len() as u64;
        if dropped != expected_letters {
            failures.push(format!("{name}: {dropped} late rows, expected {expected_letters}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
