//! Avro container files through the file connector: files built here byte by byte from the
//! Avro specification read by the source (resumed at other parallelisms), sink parts read back
//! by the source, and files that do not fit the schema refused.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use serde_json::json;
use sluice_runtime::dead_letter::OnError;
use sluice_spec::DataType;

use crate::support::*;

fn long(value: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn bytes(value: &[u8], out: &mut Vec<u8>) {
    long(value.len() as i64, out);
    out.extend_from_slice(value);
}

const SCHEMA: &str = r#"{"type":"record","name":"Event","fields":[{"name":"kind","type":"string"},{"name":"id","type":"long"},{"name":"note","type":["null","string"]}]}"#;

/// An uncompressed object container file of `Event` records `ids`, `per_block` to a block,
/// written from the specification: magic, metadata map, sync marker, blocks.
fn container_file(ids: std::ops::Range<i64>, per_block: usize) -> Vec<u8> {
    let sync = *b"0123456789abcdef";
    let mut out = b"Obj\x01".to_vec();
    long(1, &mut out);
    bytes(b"avro.schema", &mut out);
    bytes(SCHEMA.as_bytes(), &mut out);
    long(0, &mut out);
    out.extend_from_slice(&sync);
    let ids: Vec<i64> = ids.collect();
    for block in ids.chunks(per_block) {
        let mut data = Vec::new();
        for &id in block {
            bytes(b"click", &mut data);
            long(id, &mut data);
            if id % 3 == 0 {
                long(0, &mut data);
            } else {
                long(1, &mut data);
                bytes(format!("note {id}").as_bytes(), &mut data);
            }
        }
        long(block.len() as i64, &mut out);
        bytes(&data, &mut out);
        out.extend_from_slice(&sync);
    }
    out
}

/// The rows `container_file` holds for `ids`, as the declared schema reads them.
fn expected(ids: impl Iterator<Item = i64>) -> Vec<String> {
    let mut rows: Vec<String> = ids
        .map(|id| {
            if id % 3 == 0 {
                format!("{{\"id\":{id}}}")
            } else {
                format!("{{\"id\":{id},\"note\":\"note {id}\"}}")
            }
        })
        .collect();
    rows.sort();
    rows
}

fn declared() -> Vec<sluice_spec::FieldSpec> {
    vec![field("id", DataType::Int64, false), field("note", DataType::Utf8, true)]
}

#[test]
fn container_files_built_from_the_specification_are_read_and_resumed_at_other_parallelisms() {
    let (_dir, base) = temp();
    let dir = base.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for file in 0..3i64 {
        let ids = file * 10_000..file * 10_000 + 500 + file * 400;
        std::fs::write(dir.join(format!("f{file}.avro")), container_file(ids, 128)).unwrap();
    }
    let all = (0..3i64).flat_map(|file| file * 10_000..file * 10_000 + 500 + file * 400);
    let fields = declared();
    let source = source("file", json!({"path": "in", "format": "avro"}), Some(&fields), false, &base);
    assert_eq!(union(source.as_ref(), 1, 0, &base.join("dl")), expected(all.clone()));
    for (seed, runs) in [(1, vec![2, 1, 3]), (2, vec![3, 1])] {
        let rows = rows_over_restores(source.as_ref(), 0, &runs, seed, false, &base.join("dl"));
        assert_eq!(rows, expected(all.clone()), "runs {runs:?}");
    }
    let inferred = source_schema_names(&base);
    assert_eq!(inferred, ["kind", "id", "note"]);
}

fn source_schema_names(base: &Path) -> Vec<String> {
    let source = source("file", json!({"path": "in/f0.avro"}), None, true, base);
    source.outputs()[0].schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("note", ArrowType::Utf8, true),
    ]))
}

fn stream_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let notes: StringArray = ids.clone().map(|i| (i % 3 != 0).then(|| format!("note {i}"))).collect();
    RecordBatch::try_new(stream_schema(), vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(notes)])
        .unwrap()
}

#[test]
fn checkpointed_avro_parts_are_committed_whole_and_read_back_by_the_source() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "format": "avro", "roll_bytes": 1}), &base);
    let mut context = sink_context(0, 1, stream_schema());
    context.checkpointing = true;
    let mut writer = sink.open(context).unwrap();
    writer.write(&stream_batch(0..300)).unwrap();
    writer.epoch_complete(1).unwrap();
    writer.write(&stream_batch(300..310)).unwrap();
    writer.write(&stream_batch(310..400)).unwrap();
    writer.prepare(2).unwrap();
    writer.commit(2).unwrap();
    writer.finish().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(base.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["part-0000000002-00000-00000.avro", "part-0000000002-00000-00001.avro"]);
    // A container file starts with the magic bytes of the specification.
    let first = std::fs::read(base.join("out").join(&names[0])).unwrap();
    assert_eq!(&first[..4], b"Obj\x01");
    let fields = declared();
    let source = source("file", json!({"path": "out", "format": "avro"}), Some(&fields), false, &base);
    assert_eq!(union(source.as_ref(), 2, 0, &base.join("dl")), expected(0..400));
}

#[test]
fn avro_files_that_do_not_fit_the_schema_are_refused_with_the_field_and_the_fix() {
    let (_dir, base) = temp();
    std::fs::write(base.join("e.avro"), container_file(0..5, 5)).unwrap();
    let fields = vec![field("id", DataType::Int64, false), field("qty", DataType::Int32, true)];
    let source = source("file", json!({"path": "e.avro"}), Some(&fields), false, &base);
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), Default::default());
    let mut reader = source.open(context).unwrap();
    let error = reader.poll(100, &mut Vec::new()).unwrap_err();
    let report = error.report();
    assert!(report.contains("e.avro does not fit the source's schema: it has no column `qty`"), "{report}");
    assert!(report.contains("`kind` (Utf8), `id` (Int64)"), "{report}");
}
