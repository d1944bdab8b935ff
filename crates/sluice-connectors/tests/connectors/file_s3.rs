//! The file source and sink on `s3://` paths, against a real S3-compatible server (`s3s-fs`)
//! on loopback. The server keeps objects as files in a folder, so tests put input there and
//! check output there, without going through the code under test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use serde_json::json;
use sluice_runtime::dead_letter::OnError;
use sluice_spec::DataType;
use sluice_state::testing::{ACCESS_KEY, BUCKET, S3sFs, SECRET_KEY};

use crate::support::*;

fn s3_options(server: &S3sFs) -> serde_json::Value {
    json!({"endpoint": server.endpoint(), "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY})
}

/// The folder where the server keeps the objects under `prefix` of the bucket.
fn folder(server: &S3sFs, prefix: &str) -> PathBuf {
    server.root().join(BUCKET).join(prefix)
}

/// Names of the files the server holds under `dir`, sorted; hidden ones only if `hidden`.
fn names(dir: &Path, hidden: bool) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| hidden || !name.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("name", ArrowType::Utf8, true),
    ]))
}

fn batch(ids: &[i64]) -> RecordBatch {
    let names: StringArray = ids.iter().map(|i| Some(format!("n{i}"))).collect();
    RecordBatch::try_new(stream_schema(), vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(names)])
        .unwrap()
}

/// The ids in the visible JSON Lines files of `dir`, read from disk, sorted.
fn committed_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for name in names(dir, false) {
        for line in std::fs::read_to_string(dir.join(&name)).unwrap().lines() {
            ids.push(serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

#[test]
fn source_reads_the_objects_under_a_prefix_and_resumes_them_at_other_parallelisms() {
    let Some(server) = S3sFs::start() else { return };
    let dir = folder(&server, "events/in");
    std::fs::create_dir_all(dir.join("deeper")).unwrap();
    let mut expected = Vec::new();
    for file in 0..4 {
        let mut text = String::new();
        for i in 0..(300 + file * 150) {
            let id = file * 10_000 + i;
            text.push_str(&format!("{{\"id\":{id},\"name\":\"n{id}\"}}\n"));
            expected.push(format!("{{\"id\":{id},\"name\":\"n{id}\"}}"));
        }
        std::fs::write(dir.join(format!("part-{file}.jsonl")), text).unwrap();
    }
    // Neither hidden objects nor objects under deeper prefixes are read.
    std::fs::write(dir.join(".in-progress.jsonl"), "{\"id\": -1}\n").unwrap();
    std::fs::write(dir.join("deeper/other.jsonl"), "{\"id\": -2}\n").unwrap();
    expected.sort();
    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options = json!({"path": "s3://checkpoints/events/in", "format": "jsonl", "s3": s3_options(&server)});
    let source = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let (_dl_dir, dl) = temp();
    assert_eq!(union(source.as_ref(), 1, 0, &dl.join("dl")), expected);
    for (seed, runs) in [(1, vec![2, 1, 3]), (2, vec![3, 2])] {
        let rows = rows_over_restores(source.as_ref(), 0, &runs, seed, false, &dl.join("dl"));
        assert_eq!(rows, expected, "runs {runs:?}");
    }
}

#[test]
fn source_reads_one_object_and_sends_its_bad_lines_to_dead_letters_with_their_s3_position() {
    let Some(server) = S3sFs::start() else { return };
    let dir = folder(&server, "one");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.csv"), "id,name\n1,a\nx,b\n3,c\n").unwrap();
    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options = json!({"path": "s3://checkpoints/one/in.csv", "s3": s3_options(&server)});
    let source = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let (_dir, base) = temp();
    let dl = base.join("dl.jsonl");
    let rows = union(source.as_ref(), 1, 0, &dl);
    assert_eq!(rows, [r#"{"id":1,"name":"a"}"#, r#"{"id":3,"name":"c"}"#]);
    let letters = dead_letter_lines(&dl);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["position"], "s3://checkpoints/one/in.csv:3");
    assert_eq!(letters[0]["raw"], "x,b");
}

/// Two phases on S3: parts are staged under hidden names, become visible when their
/// checkpoint commits, and a crash between prepare and commit is finished by the next run.
#[test]
fn sink_on_s3_commits_parts_with_their_checkpoint_and_recovers_after_a_crash() {
    let Some(server) = S3sFs::start() else { return };
    let options = json!({"path": "s3://checkpoints/out/", "s3": s3_options(&server)});
    let sink = sink("file", options, Path::new("/nonexistent"));
    let out = folder(&server, "out");
    let checkpointed = |index, peers, restore: Option<Vec<Vec<u8>>>| {
        let mut context = sink_context(index, peers, stream_schema());
        context.checkpointing = true;
        context.restore = restore.map(Arc::new);
        context
    };
    let mut first = sink.open(checkpointed(0, 2, None)).unwrap();
    let mut second = sink.open(checkpointed(1, 2, None)).unwrap();
    first.write(&batch(&[1, 2])).unwrap();
    second.write(&batch(&[3])).unwrap();
    let states = vec![first.prepare(1).unwrap(), second.prepare(1).unwrap()];
    assert!(names(&out, false).is_empty(), "prepared parts are hidden");
    assert_eq!(names(&out, true).len(), 2);
    first.commit(1).unwrap();
    assert_eq!(committed_ids(&out), [1, 2]);
    // The second writer crashes before committing checkpoint 1; the first has more in progress.
    first.write(&batch(&[4])).unwrap();
    first.prepare(2).unwrap();
    drop((first, second));

    let mut zero = sink.open(checkpointed(0, 1, Some(states.clone()))).unwrap();
    assert_eq!(committed_ids(&out), [1, 2, 3], "checkpoint 1 is complete, checkpoint 2 is not");
    assert_eq!(names(&out, true), names(&out, false), "the crashed run's hidden parts are gone");
    // Recovering again is harmless.
    drop(sink.open(checkpointed(0, 1, Some(states))).unwrap());
    zero.write(&batch(&[4])).unwrap();
    zero.prepare(2).unwrap();
    zero.commit(2).unwrap();
    zero.finish().unwrap();
    assert_eq!(committed_ids(&out), [1, 2, 3, 4]);
    assert_eq!(
        names(&out, true),
        [
            "part-0000000001-00000-00000.jsonl",
            "part-0000000001-00001-00000.jsonl",
            "part-0000000002-00000-00001.jsonl"
        ]
    );
}

#[test]
fn parquet_parts_on_s3_are_read_back_by_the_source() {
    let Some(server) = S3sFs::start() else { return };
    let sink_options = json!({
        "path": "s3://checkpoints/pq", "format": "parquet", "row_group_rows": 100, "s3": s3_options(&server),
    });
    let sink = sink("file", sink_options, Path::new("/nonexistent"));
    let mut writer = sink.open(sink_context(0, 1, stream_schema())).unwrap();
    let ids: Vec<i64> = (0..1000).collect();
    writer.write(&batch(&ids)).unwrap();
    writer.finish().unwrap();
    assert_eq!(names(&folder(&server, "pq"), true), ["part-00000-00000.parquet"]);
    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options = json!({"path": "s3://checkpoints/pq", "format": "parquet", "s3": s3_options(&server)});
    let source = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let (_dir, base) = temp();
    let expected = sorted_lines(&[batch(&ids)]);
    assert_eq!(union(source.as_ref(), 1, 0, &base.join("dl")), expected);
    // Ten row groups read in ranges, resumed mid-group.
    for (seed, runs) in [(3, vec![1, 1, 1, 1]), (4, vec![1, 2])] {
        assert_eq!(rows_over_restores(source.as_ref(), 0, &runs, seed, false, &base.join("dl")), expected);
    }
}

#[test]
fn wrong_credentials_fail_with_the_location_and_never_show_the_secret() {
    let Some(server) = S3sFs::start() else { return };
    let secret = "not-the-secret-4711";
    let options = json!({
        "path": "s3://checkpoints/in",
        "format": "jsonl",
        "s3": {"endpoint": server.endpoint(), "access_key_id": ACCESS_KEY, "secret_access_key": secret},
    });
    let fields = vec![field("id", DataType::Int64, false)];
    let wrong = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let (_dir, base) = temp();
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), Default::default());
    let report = match wrong.open(context) {
        Err(error) => error.report(),
        Ok(_) => panic!("opened with a wrong secret"),
    };
    assert!(report.contains("reading s3://checkpoints/in"), "{report}");
    assert!(!report.contains(secret), "{report}");

    let options = json!({
        "path": "s3://checkpoints/in",
        "format": "jsonl",
        "s3": {"access_key_id": "${env:SLUICE_TEST_UNSET_KEY_ID}", "secret_access_key": "${env:SLUICE_TEST_UNSET_SECRET}"},
    });
    let unset = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), Default::default());
    let report = unset.open(context).err().expect("refused").report();
    assert!(report.contains("environment variable SLUICE_TEST_UNSET_KEY_ID is not set"), "{report}");
}

/// Regression: following a prefix on S3 must take an object's last line even without a
/// newline (objects do not grow, so waiting for its end would wait forever), and find new
/// objects.
#[test]
fn following_a_prefix_reads_whole_objects_and_finds_new_ones() {
    let Some(server) = S3sFs::start() else { return };
    let dir = folder(&server, "follow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}").unwrap();
    let fields = vec![field("id", DataType::Int64, false)];
    let options = json!({
        "path": "s3://checkpoints/follow", "format": "jsonl", "follow": true, "poll_interval_ms": 10,
        "s3": s3_options(&server),
    });
    let source = source("file", options, Some(&fields), false, Path::new("/nonexistent"));
    let (_dl, base) = temp();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), stop.clone());
    let mut reader = source.open(context).unwrap();
    let mut rows = 0;
    let mut poll = |reader: &mut Box<dyn sluice_runtime::connector::SourceReader>| {
        let mut out = Vec::new();
        for _ in 0..50 {
            if let sluice_runtime::connector::SourceStatus::Idle(delay) = reader.poll(100, &mut out).unwrap()
            {
                std::thread::sleep(delay);
            }
        }
        rows += out.iter().map(|b| b.batch.num_rows()).sum::<usize>();
        rows
    };
    assert_eq!(poll(&mut reader), 2);
    std::fs::write(dir.join("b.jsonl"), "{\"id\": 3}\n").unwrap();
    assert_eq!(poll(&mut reader), 3, "the new object, and nothing read twice");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A part bigger than one upload request goes up in parts (multipart upload) and arrives whole.
#[test]
fn a_big_part_is_uploaded_in_parts_and_arrives_whole() {
    let Some(server) = S3sFs::start() else { return };
    let options = json!({"path": "s3://checkpoints/big", "s3": s3_options(&server)});
    let sink = sink("file", options, Path::new("/nonexistent"));
    let mut writer = sink.open(sink_context(0, 1, stream_schema())).unwrap();
    let padding = "x".repeat(200);
    let mut expected = 0u64;
    for start in (0..120_000i64).step_by(10_000) {
        let ids: Vec<i64> = (start..start + 10_000).collect();
        let names: StringArray = ids.iter().map(|i| Some(format!("{padding}{i}"))).collect();
        let batch =
            RecordBatch::try_new(stream_schema(), vec![Arc::new(Int64Array::from(ids)), Arc::new(names)])
                .unwrap();
        writer.write(&batch).unwrap();
        expected += 10_000;
    }
    writer.finish().unwrap();
    let dir = folder(&server, "big");
    let files = names(&dir, true);
    assert_eq!(files, ["part-00000-00000.jsonl"]);
    let size = std::fs::metadata(dir.join(&files[0])).unwrap().len();
    assert!(size > 16 * 1024 * 1024, "bigger than one upload request: {size} bytes");
    let ids = committed_ids(&dir);
    assert_eq!(ids.len() as u64, expected);
    assert!(ids.iter().enumerate().all(|(i, id)| *id == i as i64), "every row once, in full");
}
