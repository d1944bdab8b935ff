use std::path::Path;

use serde_json::json;
use sluice_runtime::dead_letter::OnError;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn schema() -> Vec<FieldSpec> {
    vec![
        field("id", DataType::Int64, false),
        field("name", DataType::Utf8, true),
        field("price", DataType::Float64, true),
    ]
}

const JSONL: &str = r#"{"id": 1, "name": "a", "price": 1.5}
{"id": 2, "name": "b"}
not json at all

{"id": "three", "name": "c"}
{"name": "no id"}
{"id": 4, "name": "d", "price": 4.0}
{"id": 5, "name": "e", "price": "cheap"}
{"id": 6}"#;

#[test]
fn bad_json_lines_go_to_dead_letters_and_good_lines_come_through() {
    let (_dir, base) = temp();
    std::fs::write(base.join("in.jsonl"), JSONL).unwrap();
    let fields = schema();
    let source = source("file", json!({"path": "in.jsonl"}), Some(&fields), false, &base);
    let dl = base.join("dead/letters.jsonl");
    let rows = union(source.as_ref(), 1, 0, &dl);
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 4, 6]);
    let letters = dead_letter_lines(&dl);
    let positions: Vec<String> = letters.iter().map(|l| l["position"].as_str().unwrap().to_owned()).collect();
    let file = base.join("in.jsonl").display().to_string();
    assert_eq!(positions, [3, 5, 6, 8].map(|line| format!("{file}:{line}")));
    assert_eq!(letters[0]["raw"], "not json at all");
    assert_eq!(letters[2]["raw"], r#"{"name": "no id"}"#);
    for letter in &letters {
        assert!(!letter["reason"].as_str().unwrap().is_empty());
    }
    // Every non-empty line is either a row or a dead letter.
    let non_empty = JSONL.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(ids.len() + letters.len(), non_empty);
}

#[test]
fn bad_csv_lines_go_to_dead_letters() {
    let (_dir, base) = temp();
    std::fs::write(base.join("in.csv"), "id,name,price\n1,a,1.5\n2,b\nx,c,3\n,d,4\n5,e,\n").unwrap();
    let fields = schema();
    let source = source("file", json!({"path": "in.csv"}), Some(&fields), false, &base);
    let dl = base.join("dl.jsonl");
    let rows = json_values(&drain(source.as_ref(), 0, 1, vec![true], &dl).outputs[0]);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 5]);
    let positions: Vec<String> =
        dead_letter_lines(&dl).iter().map(|l| l["position"].as_str().unwrap().to_owned()).collect();
    let file = base.join("in.csv").display().to_string();
    assert_eq!(positions, [3, 4, 5].map(|line| format!("{file}:{line}")));
}

#[test]
fn csv_with_other_delimiter_and_no_header() {
    let (_dir, base) = temp();
    std::fs::write(base.join("data.txt"), "1;a;1.5\n2;b;2.5\n").unwrap();
    let fields = schema();
    let options = json!({"path": "data.txt", "format": "csv", "csv": {"header": false, "delimiter": ";"}});
    let source = source("file", options, Some(&fields), false, &base);
    assert_eq!(union(source.as_ref(), 1, 0, &base.join("dl")).len(), 2);
}

fn write_folder(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut total = 0;
    for file in 0..5 {
        let lines: String = (0..10 + file).map(|i| format!("{{\"id\": {}}}\n", file * 100 + i)).collect();
        total += 10 + file;
        std::fs::write(dir.join(format!("part-{file}.jsonl")), lines).unwrap();
    }
    std::fs::write(dir.join(".hidden.jsonl"), "{\"id\": -1}\n").unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    total
}

#[test]
fn folder_is_split_over_workers_and_nothing_is_lost() {
    let (_dir, base) = temp();
    let total = write_folder(&base.join("in"));
    let fields = schema();
    let source = source("file", json!({"path": "in", "format": "jsonl"}), Some(&fields), false, &base);
    let dl = base.join("dl");
    let one = union(source.as_ref(), 1, 0, &dl);
    assert_eq!(one.len(), total);
    assert_eq!(union(source.as_ref(), 2, 0, &dl), one);
    let first = drain(source.as_ref(), 0, 2, vec![true], &dl).rows(0);
    assert!(first > 0 && first < total, "work is split: {first} of {total}");
}

#[test]
fn schema_is_inferred_from_json_lines_when_asked() {
    let (_dir, base) = temp();
    std::fs::write(base.join("in.jsonl"), "{\"a\": 1, \"b\": \"x\"}\nnope\n{\"a\": 2, \"c\": true}\n")
        .unwrap();
    let source = source("file", json!({"path": "in.jsonl"}), None, true, &base);
    let schema = source.outputs()[0].schema.clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let dl = base.join("dl.jsonl");
    assert_eq!(union(source.as_ref(), 1, 0, &dl).len(), 2);
    assert_eq!(dead_letter_lines(&dl).len(), 1);
}

#[test]
fn follow_mode_picks_up_new_files_and_lines() {
    let (_dir, base) = temp();
    let dir = base.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2").unwrap();
    let fields = schema();
    let source = source(
        "file",
        json!({"path": "in", "format": "jsonl", "follow": true, "poll_interval_ms": 10}),
        Some(&fields),
        false,
        &base,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), stop.clone());
    let mut reader = source.open(context).unwrap();
    let mut rows = 0;
    let mut poll_until_idle = |reader: &mut Box<dyn sluice_runtime::connector::SourceReader>| {
        let mut out = Vec::new();
        for _ in 0..100 {
            let status = reader.poll(100, &mut out).unwrap();
            if let sluice_runtime::connector::SourceStatus::Idle(delay) = status {
                std::thread::sleep(delay);
            }
        }
        rows += out.iter().map(|b| b.batch.num_rows()).sum::<usize>();
        rows
    };
    // The unfinished second line waits for its newline.
    assert_eq!(poll_until_idle(&mut reader), 1);
    std::fs::write(dir.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    std::fs::write(dir.join("b.jsonl"), "{\"id\": 3}\n").unwrap();
    assert_eq!(poll_until_idle(&mut reader), 3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::new();
    assert_eq!(reader.poll(100, &mut out).unwrap(), sluice_runtime::connector::SourceStatus::Finished);
}

#[test]
fn a_missing_file_is_an_external_error_naming_it() {
    let (_dir, base) = temp();
    let fields = schema();
    let source = source("file", json!({"path": "missing.jsonl"}), Some(&fields), false, &base);
    let context = source_context(0, 1, vec![true], OnError::Fail, &base.join("dl"), Default::default());
    // The reader lists its files when it opens (to resume them from a checkpoint).
    let error = match source.open(context) {
        Err(error) => error,
        Ok(mut reader) => reader.poll(100, &mut Vec::new()).unwrap_err(),
    };
    assert_eq!(error.kind(), sluice_runtime::ErrorKind::External);
    assert!(error.report().contains("missing.jsonl"), "{}", error.report());
}

/// Regression: a line holding several records (two JSON values, a CSV line split by a stray
/// `\r`) or a CSV line whose quote runs into the next lines must be one dead letter, never
/// extra, missing or merged records.
#[test]
fn every_line_is_exactly_one_record_or_one_dead_letter() {
    let (_dir, base) = temp();
    let fields = schema();

    std::fs::write(base.join("two.jsonl"), "{\"id\": 1}\n{\"id\": 2} {\"id\": 3}\n{\"id\": 4}\n").unwrap();
    let json_source = source("file", json!({"path": "two.jsonl"}), Some(&fields), false, &base);
    let dl = base.join("dl-json.jsonl");
    let rows = json_values(&drain(json_source.as_ref(), 0, 1, vec![true], &dl).outputs[0]);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 4]);
    let letters = dead_letter_lines(&dl);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["raw"], "{\"id\": 2} {\"id\": 3}");

    let csv = "id,name,price\n1,\"a\n2,b,2\n3,c,3\r4,d,4\n5,e,5\n";
    std::fs::write(base.join("odd.csv"), csv).unwrap();
    let csv_source = source("file", json!({"path": "odd.csv"}), Some(&fields), false, &base);
    let dl = base.join("dl-csv.jsonl");
    let rows = json_values(&drain(csv_source.as_ref(), 0, 1, vec![true], &dl).outputs[0]);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 5], "the good lines around the bad ones");
    let letters = dead_letter_lines(&dl);
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("unterminated quote"), "{reasons:?}");
    assert!(reasons[1].contains("holds 2 records"), "{reasons:?}");
    assert_eq!(rows.len() + letters.len(), csv.lines().count() - 1, "one outcome per data line");
}

/// Regression: blank lines before a CSV header must not turn the header into a record.
#[test]
fn csv_header_after_blank_lines_is_still_the_header() {
    let (_dir, base) = temp();
    std::fs::write(base.join("in.csv"), "\n\nid,name,price\n1,a,1.5\n").unwrap();
    let fields = schema();
    let source = source("file", json!({"path": "in.csv"}), Some(&fields), false, &base);
    let dl = base.join("dl.jsonl");
    let rows = json_values(&drain(source.as_ref(), 0, 1, vec![true], &dl).outputs[0]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], 1);
    assert!(dead_letter_lines(&dl).is_empty());
}
