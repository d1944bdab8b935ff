//! Runs every golden case under `tests/golden/` (repository root) through the SQL processor and
//! compares its rows with `expected.jsonl`, which DuckDB computed independently
//! (`tests/golden/compute_expected.py`). A new case needs no Rust: add a folder.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::{LineDelimitedWriter, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use sluice_runtime::processor::Processor;
use sluice_sql::{SqlInput, plan};

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
}

fn load_case(dir: &Path) -> Case {
    let text = fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
    let pipeline: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let source = &pipeline["sources"][0];
    let fields: Vec<Field> = source["schema"]
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
    let sql = pipeline["processors"][0]["sql"].as_str().unwrap().to_owned();
    Case { sql, schema: Arc::new(Schema::new(fields)) }
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
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = load_case(dir);
        let inputs = [SqlInput { table: "input".into(), schema: Arc::clone(&case.schema) }];
        let mut processor = match plan(&case.sql, &inputs) {
            Ok(processor) => processor,
            Err(diagnostics) => {
                failures.push(format!("{name}: {diagnostics:?}"));
                continue;
            }
        };
        let mut out = Vec::new();
        for batch in read_input(dir, &case.schema) {
            processor.process(0, batch, &mut out).unwrap();
        }
        let expected: Vec<Value> = fs::read_to_string(dir.join("expected.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let (actual, expected) = (canonical(&to_json(&out)), canonical(&expected));
        if actual != expected {
            failures.push(format!("{name}:\n  actual:   {actual:?}\n  expected: {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
