use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::json;

use crate::support::*;

fn batch(ids: &[i64]) -> RecordBatch {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: StringArray = ids.iter().map(|i| (i % 2 == 0).then(|| format!("n{i}"))).collect();
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(names)]).unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn parts_appear_only_when_committed() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "roll_interval_ms": 3_600_000}), &base);
    let out = base.join("out");
    let mut writer = sink.open(sink_context(3, 4, batch(&[]).schema())).unwrap();
    writer.write(&batch(&[1, 2])).unwrap();
    writer.epoch_complete(1).unwrap();
    assert_eq!(listing(&out), [".part-00003-00000.jsonl.inprogress"]);
    writer.write(&batch(&[3])).unwrap();
    writer.finish().unwrap();
    assert_eq!(listing(&out), ["part-00003-00000.jsonl"]);
    let text = std::fs::read_to_string(out.join("part-00003-00000.jsonl")).unwrap();
    assert_eq!(text, "{\"id\":1}\n{\"id\":2,\"name\":\"n2\"}\n{\"id\":3}\n");
}

#[test]
fn parts_roll_at_epoch_ends_and_empty_parts_are_never_written() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "roll_bytes": 1}), &base);
    let out = base.join("out");
    let mut writer = sink.open(sink_context(0, 1, batch(&[]).schema())).unwrap();
    writer.write(&batch(&[1])).unwrap();
    writer.epoch_complete(1).unwrap();
    writer.epoch_complete(2).unwrap();
    writer.write(&batch(&[])).unwrap();
    writer.write(&batch(&[2])).unwrap();
    writer.epoch_complete(3).unwrap();
    writer.finish().unwrap();
    assert_eq!(listing(&out), ["part-00000-00000.jsonl", "part-00000-00001.jsonl"]);
    // A rerun continues the numbering instead of overwriting.
    let mut writer = sink.open(sink_context(0, 1, batch(&[]).schema())).unwrap();
    writer.write(&batch(&[3])).unwrap();
    writer.finish().unwrap();
    assert_eq!(listing(&out).last().map(String::as_str), Some("part-00000-00002.jsonl"));
}

#[test]
fn csv_parts_have_a_header() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "format": "csv"}), &base);
    let mut writer = sink.open(sink_context(1, 2, batch(&[]).schema())).unwrap();
    writer.write(&batch(&[1, 2])).unwrap();
    writer.write(&batch(&[4])).unwrap();
    writer.finish().unwrap();
    let text = std::fs::read_to_string(base.join("out/part-00001-00000.csv")).unwrap();
    assert_eq!(text, "id,name\n1,\n2,n2\n4,n4\n");
}

#[test]
fn blackhole_and_stdout_accept_batches() {
    let (_dir, base) = temp();
    for connector in ["blackhole", "stdout"] {
        let sink = sink(connector, json!({}), &base);
        let mut writer = sink.open(sink_context(0, 1, batch(&[]).schema())).unwrap();
        writer.write(&batch(&[1, 2])).unwrap();
        writer.finish().unwrap();
    }
}
