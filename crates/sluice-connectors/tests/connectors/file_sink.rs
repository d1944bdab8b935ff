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

fn checkpointed(
    index: usize,
    peers: usize,
    restore: Option<Vec<Vec<u8>>>,
) -> sluice_runtime::connector::SinkContext {
    let mut context = sink_context(index, peers, batch(&[]).schema());
    context.checkpointing = true;
    context.restore = restore.map(Arc::new);
    context
}

/// All ids in the visible part files of `dir`, sorted.
fn committed_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for name in listing(dir).iter().filter(|name| !name.starts_with('.')) {
        for line in std::fs::read_to_string(dir.join(name)).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push(value["id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

#[test]
fn with_checkpoints_output_appears_only_on_commit() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out", "roll_bytes": 1}), &base);
    let out = base.join("out");
    let mut writer = sink.open(checkpointed(2, 3, None)).unwrap();
    assert!(writer.transactional());
    writer.write(&batch(&[1, 2])).unwrap();
    // A roll closes the part but shows nothing.
    writer.epoch_complete(1).unwrap();
    writer.write(&batch(&[3])).unwrap();
    assert!(committed_ids(&out).is_empty());
    let state = writer.prepare(7).unwrap();
    assert!(committed_ids(&out).is_empty(), "prepared is not visible");
    let hidden = listing(&out);
    assert_eq!(
        hidden,
        [".part-00002-00000.jsonl.attempt-0.inprogress", ".part-00002-00001.jsonl.attempt-0.inprogress"]
    );
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["checkpoint"], 7);
    assert_eq!(state["parts"].as_array().unwrap().len(), 2);
    writer.write(&batch(&[4])).unwrap();
    writer.commit(7).unwrap();
    let visible: Vec<String> = listing(&out).into_iter().filter(|name| !name.starts_with('.')).collect();
    assert_eq!(visible, ["part-0000000007-00002-00000.jsonl", "part-0000000007-00002-00001.jsonl"]);
    assert_eq!(committed_ids(&out), [1, 2, 3]);
    writer.prepare(8).unwrap();
    writer.commit(8).unwrap();
    writer.finish().unwrap();
    assert_eq!(committed_ids(&out), [1, 2, 3, 4]);
    assert!(listing(&out).iter().all(|name| !name.starts_with('.')), "{:?}", listing(&out));
}

/// A crash after checkpoint 2 completed but before every writer committed it, with checkpoint
/// 3 prepared by one writer only and more output in progress: the next run, at another
/// parallelism, shows exactly what checkpoint 2 covers, then replays the rest.
#[test]
fn a_crash_between_prepare_and_commit_loses_and_repeats_nothing() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out"}), &base);
    let out = base.join("out");
    let mut first = sink.open(checkpointed(0, 2, None)).unwrap();
    let mut second = sink.open(checkpointed(1, 2, None)).unwrap();
    first.write(&batch(&[1, 2])).unwrap();
    second.write(&batch(&[3])).unwrap();
    let states = vec![first.prepare(1).unwrap(), second.prepare(1).unwrap()];
    first.commit(1).unwrap();
    second.commit(1).unwrap();
    first.write(&batch(&[4])).unwrap();
    second.write(&batch(&[5])).unwrap();
    let _ = states;
    let states = vec![first.prepare(2).unwrap(), second.prepare(2).unwrap()];
    first.commit(2).unwrap(); // The second writer crashes before committing 2.
    first.write(&batch(&[6])).unwrap();
    second.write(&batch(&[7])).unwrap();
    first.prepare(3).unwrap(); // Checkpoint 3 never completes.
    first.write(&batch(&[8])).unwrap();
    drop((first, second));
    assert_eq!(committed_ids(&out), [1, 2, 3, 4]);

    // Restart from checkpoint 2 with three workers: worker 1 opens first and starts writing;
    // worker 0 must not delete its part.
    let mut one = sink.open(checkpointed(1, 3, Some(states.clone()))).unwrap();
    one.write(&batch(&[6])).unwrap();
    let mut zero = sink.open(checkpointed(0, 3, Some(states.clone()))).unwrap();
    let mut two = sink.open(checkpointed(2, 3, Some(states.clone()))).unwrap();
    assert_eq!(committed_ids(&out), [1, 2, 3, 4, 5], "checkpoint 2 is fully visible");
    let hidden: Vec<String> = listing(&out).into_iter().filter(|n| n.starts_with('.')).collect();
    assert_eq!(hidden, [".part-00001-00001.jsonl.attempt-3.inprogress"], "only the new run's part is left");
    // Recovering again (a crash during recovery) is harmless.
    drop(sink.open(checkpointed(0, 3, Some(states))).unwrap());
    zero.write(&batch(&[7])).unwrap();
    two.write(&batch(&[8])).unwrap();
    for writer in [&mut zero, &mut one, &mut two] {
        writer.prepare(3).unwrap();
    }
    for writer in [&mut zero, &mut one, &mut two] {
        writer.commit(3).unwrap();
        writer.finish().unwrap();
    }
    assert_eq!(committed_ids(&out), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(listing(&out).iter().all(|name| !name.starts_with('.')), "{:?}", listing(&out));
}

#[test]
fn workers_other_than_zero_ignore_the_restored_state() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out"}), &base);
    let out = base.join("out");
    let mut writer = sink.open(checkpointed(0, 1, None)).unwrap();
    writer.write(&batch(&[1])).unwrap();
    let states = vec![writer.prepare(1).unwrap()];
    drop(writer);
    drop(sink.open(checkpointed(1, 2, Some(states.clone()))).unwrap());
    assert!(committed_ids(&out).is_empty());
    drop(sink.open(checkpointed(0, 2, Some(states))).unwrap());
    assert_eq!(committed_ids(&out), [1]);
}

#[test]
fn a_prepared_part_deleted_behind_the_pipeline_is_reported() {
    let (_dir, base) = temp();
    let sink = sink("file", json!({"path": "out"}), &base);
    let out = base.join("out");
    let mut writer = sink.open(checkpointed(0, 1, None)).unwrap();
    writer.write(&batch(&[1])).unwrap();
    let states = vec![writer.prepare(4).unwrap()];
    drop(writer);
    for name in listing(&out) {
        std::fs::remove_file(out.join(name)).unwrap();
    }
    let error = sink.open(checkpointed(0, 1, Some(states))).err().expect("refused");
    let report = error.report();
    assert!(report.contains("is missing") && report.contains("checkpoint 4"), "{report}");
}
