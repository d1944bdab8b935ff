//! Replayable sources: whatever the parallelism and the restore history, the rows of all runs
//! together are exactly those of one uninterrupted run.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use sluice_connectors::nexmark::{AUCTION, BID, PERSON};
use sluice_runtime::connector::SplitState;
use sluice_runtime::dead_letter::OnError;
use sluice_spec::DataType;

use crate::support::*;

/// Parallelism histories: growing, shrinking, and back and forth.
const HISTORIES: &[&[usize]] = &[&[1, 2, 3], &[3, 1], &[2, 3, 1, 3, 2, 1], &[1, 1, 1]];

#[test]
fn nexmark_restored_at_any_parallelism_repeats_and_loses_nothing() {
    let (_dir, base) = temp();
    let dl = base.join("dl");
    let source = source("nexmark", json!({"events": 150_000, "seed": 9}), None, false, &base);
    assert!(source.replayable());
    for output in [PERSON, AUCTION, BID] {
        let expected = union(source.as_ref(), 1, output, &dl);
        for (seed, history) in HISTORIES.iter().enumerate() {
            let rows = rows_over_restores(source.as_ref(), output, history, seed as u64, false, &dl);
            assert_eq!(rows.len(), expected.len(), "output {output}, runs {history:?}");
            assert!(rows == expected, "output {output}, runs {history:?}: other rows");
        }
    }
}

#[test]
fn datagen_restored_at_any_parallelism_repeats_and_loses_nothing() {
    let (_dir, base) = temp();
    let dl = base.join("dl");
    let fields = [field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options =
        json!({"count": 70_000, "seed": 3, "fields": {"id": {"sequence": true}, "name": {"null_rate": 0.1}}});
    let source = source("datagen", options, Some(&fields), false, &base);
    assert!(source.replayable());
    let expected = union(source.as_ref(), 1, 0, &dl);
    assert_eq!(expected.len(), 70_000);
    for (seed, history) in HISTORIES.iter().enumerate() {
        let rows = rows_over_restores(source.as_ref(), 0, history, 100 + seed as u64, false, &dl);
        assert!(rows == expected, "runs {history:?}: {} rows instead of {}", rows.len(), expected.len());
    }
}

#[test]
fn a_paced_generator_reports_its_splits_and_resumes_them() {
    let (_dir, base) = temp();
    let fields = [field("id", DataType::Int64, false)];
    let options = json!({"rows_per_second": 1_000_000, "fields": {"id": {"sequence": true}}});
    let source = source("datagen", options, Some(&fields), false, &base);
    let first = run_and_snapshot(source.as_ref(), (1, 3), None, 20, 100, false, &base.join("dl"));
    assert_eq!(first.snapshot.len(), 21, "splits 1, 4, .., 61 of 64");
    assert!(first.outputs[0].iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    let restore = Some(Arc::new(first.snapshot.clone()));
    let again = run_and_snapshot(source.as_ref(), (0, 1), restore, 0, 100, false, &base.join("dl"));
    let resumed: Vec<&SplitState> = again.snapshot.iter().filter(|s| first.snapshot.contains(s)).collect();
    assert_eq!(resumed.len(), 21, "the positions are kept until the splits move on");
}

#[test]
fn a_checkpoint_of_another_source_is_refused_with_a_fix() {
    let (_dir, base) = temp();
    let source = source("nexmark", json!({"events": 10}), None, false, &base);
    let mut context = source_context(0, 1, vec![true; 3], OnError::Fail, &base.join("dl"), Arc::default());
    let foreign = SplitState { split: "data.jsonl".into(), position: b"{\"offset\":3}".to_vec() };
    context.restore = Some(Arc::new(vec![foreign]));
    let error = source.open(context).err().expect("refused");
    assert!(
        error.report().contains("\"data.jsonl\"") && error.report().contains("without it"),
        "{}",
        error.report()
    );
}

/// Five JSON Lines files of different lengths, with blank lines, a bad line and a last line
/// without its newline.
fn write_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for file in 0..5 {
        let mut text: String =
            (0..300 + 97 * file).map(|i| format!("{{\"id\": {}}}\n", file * 10_000 + i)).collect();
        let middle = text[..text.len() / 2].rfind('\n').map_or(0, |at| at + 1);
        text.insert_str(middle, "\n  \nnot json\n");
        text.push_str(&format!("{{\"id\": {}}}", file * 10_000 + 9_999));
        std::fs::write(dir.join(format!("f{file}.jsonl")), text).unwrap();
    }
}

#[test]
fn file_source_restored_at_any_parallelism_repeats_and_loses_nothing() {
    let (_dir, base) = temp();
    write_files(&base.join("in"));
    let fields = [field("id", DataType::Int64, false)];
    let source = source("file", json!({"path": "in", "format": "jsonl"}), Some(&fields), false, &base);
    assert!(source.replayable());
    let expected = union(source.as_ref(), 1, 0, &base.join("dl-one.jsonl"));
    assert_eq!(expected.len(), 5 * 300 + 97 * 10 + 5);
    assert_eq!(dead_letter_lines(&base.join("dl-one.jsonl")).len(), 5);
    for (seed, history) in HISTORIES.iter().enumerate() {
        let dl = base.join(format!("dl-{seed}.jsonl"));
        let rows = rows_over_restores(source.as_ref(), 0, history, 200 + seed as u64, false, &dl);
        assert!(rows == expected, "runs {history:?}: {} rows instead of {}", rows.len(), expected.len());
        let letters = dead_letter_lines(&dl);
        assert_eq!(letters.len(), 5, "runs {history:?}: each bad line is reported once");
        let mut positions: Vec<&str> = letters.iter().map(|l| l["position"].as_str().unwrap()).collect();
        positions.sort_unstable();
        positions.dedup();
        assert_eq!(positions.len(), 5, "{positions:?}");
    }
}

#[test]
fn csv_header_is_not_read_again_after_a_restore() {
    let (_dir, base) = temp();
    let text: String = std::iter::once("id\n".to_owned()).chain((0..50).map(|i| format!("{i}\n"))).collect();
    std::fs::write(base.join("in.csv"), text).unwrap();
    let fields = [field("id", DataType::Int64, false)];
    let source = source("file", json!({"path": "in.csv"}), Some(&fields), false, &base);
    let dl = base.join("dl.jsonl");
    let first = run_and_snapshot(source.as_ref(), (0, 1), None, 1, 10, false, &dl);
    assert_eq!(first.snapshot.len(), 1);
    assert_eq!(first.snapshot[0].split, "in.csv");
    let rest =
        run_and_snapshot(source.as_ref(), (0, 2), Some(Arc::new(first.snapshot)), usize::MAX, 7, false, &dl);
    let rows = first.outputs[0].iter().chain(&rest.outputs[0]).map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows, 50);
    assert!(dead_letter_lines(&dl).is_empty(), "the header was not read as a bad record");
}

#[test]
fn followed_folder_resumes_old_files_and_finds_new_ones() {
    let (_dir, base) = temp();
    let dir = base.join("in");
    write_files(&dir);
    let fields = [field("id", DataType::Int64, false)];
    let options = json!({"path": "in", "format": "jsonl", "follow": true, "poll_interval_ms": 1});
    let source = source("file", options, Some(&fields), false, &base);
    let dl = base.join("dl.jsonl");
    let mut rows = Vec::new();
    let mut restore = None;
    for (round, peers) in [2, 3, 1].into_iter().enumerate() {
        let mut states = Vec::new();
        for index in 0..peers {
            let stopped =
                run_and_snapshot(source.as_ref(), (index, peers), restore.clone(), 3, 200, false, &dl);
            rows.extend(sorted_lines(&stopped.outputs[0]));
            states.extend(stopped.snapshot);
        }
        restore = Some(Arc::new(states));
        // New data between runs: a new file, and lines appended to an old one.
        std::fs::write(dir.join(format!("new{round}.jsonl")), format!("{{\"id\": {}}}\n", 90_000 + round))
            .unwrap();
        let mut old = std::fs::read_to_string(dir.join("f0.jsonl")).unwrap();
        old.push_str(&format!("\n{{\"id\": {}}}\n", 80_000 + round));
        std::fs::write(dir.join("f0.jsonl"), old).unwrap();
    }
    for index in 0..2 {
        let stopped = run_and_snapshot(source.as_ref(), (index, 2), restore.clone(), 10_000, 500, true, &dl);
        rows.extend(sorted_lines(&stopped.outputs[0]));
    }
    rows.sort();
    let expected_ids: Vec<i64> = {
        let mut ids: Vec<i64> = (0..5).flat_map(|f| (0..300 + 97 * f).map(move |i| f * 10_000 + i)).collect();
        // Only f0's unfinished last line gets its newline.
        ids.push(9_999);
        ids.extend([80_000, 80_001, 80_002, 90_000, 90_001, 90_002]);
        ids
    };
    let mut expected: Vec<String> = expected_ids.iter().map(|id| format!("{{\"id\":{id}}}")).collect();
    expected.sort();
    let missing: Vec<&String> = expected.iter().filter(|row| !rows.contains(row)).collect();
    assert_eq!(rows.len(), expected.len(), "missing {missing:?}");
    assert!(rows == expected, "other rows");
}
