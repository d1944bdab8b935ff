//! Parquet through the file connector: parts written by the sink read back with the `parquet`
//! crate's own reader, files written with the `parquet` crate read by the source (projected,
//! converted, resumed at other parallelisms), and files that do not fit the schema refused.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use serde_json::json;
use sluice_runtime::dead_letter::OnError;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("name", ArrowType::Utf8, true),
    ]))
}

fn stream_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let names: StringArray = ids.clone().map(|i| (i % 3 != 0).then(|| format!("n{i}"))).collect();
    RecordBatch::try_new(stream_schema(), vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(names)])
        .unwrap()
}

/// Rows of every visible Parquet file of `dir` read with the `parquet` crate, as sorted JSON
/// lines, and the number of row groups per file.
fn read_parts(dir: &Path) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut batches = Vec::new();
    let mut groups = Vec::new();
    for name in names {
        assert!(name.ends_with(".parquet"), "{name}");
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(dir.join(&name)).unwrap()).unwrap();
        groups.push(builder.metadata().num_row_groups());
        batches.extend(builder.build().unwrap().map(Result::unwrap));
    }
    (sorted_lines(&batches), groups)
}

#[test]
fn sink_writes_parquet_parts_with_row_groups_that_another_reader_reads_back() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "format": "parquet", "row_group_rows": 1000}), &base);
    let mut writer = sink.open(sink_context(0, 1, stream_schema())).unwrap();
    for start in (0..2500).step_by(500) {
        writer.write(&stream_batch(start..start + 500)).unwrap();
    }
    writer.finish().unwrap();
    let (rows, groups) = read_parts(&base.join("out"));
    assert_eq!(rows, sorted_lines(&[stream_batch(0..2500)]));
    assert_eq!(groups, [3], "2500 rows in groups of at most 1000");
}

#[test]
fn checkpointed_parquet_parts_appear_on_commit_and_the_source_reads_them() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "format": "parquet", "roll_bytes": 1}), &base);
    let mut context = sink_context(1, 2, stream_schema());
    context.checkpointing = true;
    let mut writer = sink.open(context).unwrap();
    writer.write(&stream_batch(0..100)).unwrap();
    writer.epoch_complete(1).unwrap();
    writer.write(&stream_batch(100..150)).unwrap();
    writer.prepare(3).unwrap();
    assert!(read_parts(&base.join("out")).0.is_empty(), "prepared parts are hidden");
    writer.commit(3).unwrap();
    writer.finish().unwrap();
    let (rows, groups) = read_parts(&base.join("out"));
    assert_eq!(rows, sorted_lines(&[stream_batch(0..150)]));
    assert_eq!(groups, [1, 1], "one part per roll, each a complete file");

    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let source = source("file", json!({"path": "out", "format": "parquet"}), Some(&fields), false, &base);
    assert_eq!(union(source.as_ref(), 2, 0, &base.join("dl")), rows);
}

/// A file as another tool writes it: more columns than the source declares, in another
/// order, timestamps in microseconds with a time zone, several row groups.
fn write_foreign(path: &Path, ids: std::ops::Range<i64>, row_group_rows: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("price", ArrowType::Float64, true),
        Field::new("ts", ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("unused", ArrowType::Utf8, true),
        Field::new("id", ArrowType::Int64, false),
    ]));
    let count = ids.end - ids.start;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from_iter(ids.clone().map(|i| (i % 4 != 0).then_some(i as f64 / 2.0)))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ids.clone().map(|i| i * 1_000_000))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values((0..count).map(|_| "x"))),
            Arc::new(Int64Array::from_iter_values(ids)),
        ],
    )
    .unwrap();
    let properties = WriterProperties::builder().set_max_row_group_row_count(Some(row_group_rows)).build();
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn declared() -> Vec<FieldSpec> {
    vec![
        field("id", DataType::Int64, false),
        field("price", DataType::Float64, true),
        field("ts", DataType::Timestamp, false),
    ]
}

/// The rows `write_foreign` wrote for `ids`, as the declared schema reads them: computed here,
/// not by the reader under test.
fn expected_rows(ids: impl Iterator<Item = i64>) -> Vec<String> {
    let mut lines: Vec<String> = ids
        .map(|i| {
            let ts = chrono::DateTime::from_timestamp(i, 0).unwrap().naive_utc().format("%Y-%m-%dT%H:%M:%S");
            if i % 4 == 0 {
                format!("{{\"id\":{i},\"ts\":\"{ts}\"}}")
            } else {
                format!("{{\"id\":{i},\"price\":{:?},\"ts\":\"{ts}\"}}", i as f64 / 2.0)
            }
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn source_reads_declared_columns_by_name_and_converts_their_types() {
    let (_dir, base) = temp();
    write_foreign(&base.join("data.parquet"), 0..10, 4);
    let fields = declared();
    let source = source("file", json!({"path": "data.parquet"}), Some(&fields), false, &base);
    assert_eq!(union(source.as_ref(), 1, 0, &base.join("dl")), expected_rows(0..10));
}

#[test]
fn source_resumes_parquet_files_mid_row_group_at_other_parallelisms() {
    let (_dir, base) = temp();
    let dir = base.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for file in 0..4i64 {
        write_foreign(
            &dir.join(format!("f{file}.parquet")),
            file * 1000..file * 1000 + 700 + file * 300,
            256,
        );
    }
    let fields = declared();
    let source = source("file", json!({"path": "in", "format": "parquet"}), Some(&fields), false, &base);
    let expected = expected_rows((0..4i64).flat_map(|file| file * 1000..file * 1000 + 700 + file * 300));
    for (seed, runs) in [(1, vec![2, 1, 3]), (2, vec![1, 3, 2, 1]), (3, vec![3, 3])] {
        let rows = rows_over_restores(source.as_ref(), 0, &runs, seed, false, &base.join("dl"));
        assert_eq!(rows.len(), expected.len(), "runs {runs:?}: nothing lost or repeated");
        assert_eq!(rows, expected, "runs {runs:?}");
    }
}

#[test]
fn schema_is_inferred_from_the_first_parquet_file() {
    let (_dir, base) = temp();
    write_foreign(&base.join("data.parquet"), 0..3, 10);
    let source = source("file", json!({"path": "data.parquet"}), None, true, &base);
    let schema = source.outputs()[0].schema.clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["price", "ts", "unused", "id"]);
    assert_eq!(union(source.as_ref(), 1, 0, &base.join("dl")).len(), 3);
}

/// Runs the source on one worker and returns its error.
fn read_error(options: serde_json::Value, fields: &[FieldSpec], base: &Path) -> String {
    let source = source("file", options, Some(fields), false, base);
    let context = source_context(0, 1, vec![true], OnError::DeadLetter, &base.join("dl"), Default::default());
    let mut reader = source.open(context).unwrap();
    let mut out = Vec::new();
    loop {
        match reader.poll(100, &mut out) {
            Ok(sluice_runtime::connector::SourceStatus::Finished) => panic!("no error"),
            Ok(_) => {}
            Err(error) => {
                assert_eq!(error.kind(), sluice_runtime::ErrorKind::User);
                return error.report();
            }
        }
    }
}

#[test]
fn files_that_do_not_fit_the_schema_are_refused_with_the_column_and_the_fix() {
    let (_dir, base) = temp();
    write_foreign(&base.join("data.parquet"), 0..3, 10);
    let options = json!({"path": "data.parquet"});
    let missing = vec![field("id", DataType::Int64, false), field("qty", DataType::Int32, true)];
    let report = read_error(options.clone(), &missing, &base);
    assert!(report.contains("data.parquet does not fit the source's schema"), "{report}");
    assert!(report.contains("it has no column `qty`; its columns are `price` (Float64)"), "{report}");

    let binary = vec![field("price", DataType::Binary, true)];
    let report = read_error(options.clone(), &binary, &base);
    assert!(
        report.contains("its column `price` is Float64, which cannot be read as the declared Binary"),
        "{report}"
    );

    let not_null = vec![field("price", DataType::Float64, false)];
    let report = read_error(options, &not_null, &base);
    assert!(report.contains("declare the column nullable"), "{report}");

    std::fs::write(base.join("broken.parquet"), "PAR1 not really").unwrap();
    let report = read_error(json!({"path": "broken.parquet"}), &not_null, &base);
    assert!(report.contains("broken.parquet is not a readable Parquet file"), "{report}");
}
