//! Aggregation through `crate::plan`, driven like the runtime drives a stateful processor.
//! Expected rows are worked out by hand in the comments next to the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use sluice_runtime::connector::WorkerPosition;
use sluice_runtime::dead_letter::{DeadLetterCounts, DeadLetterSink, OnError};
use sluice_runtime::exchange::{key_group, worker_for_key_group};
use sluice_runtime::processor::{
    DEFAULT_CHUNK_BYTES, END_OF_TIME, KeyGroupState, KeyHasher, Processor, ProcessorContext, StateBackend,
};

use crate::tests::{restore_owned, snapshot};
use crate::{Diagnostic, PlanOptions, SqlInput, SqlProcessor, plan};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn inputs() -> Vec<SqlInput> {
    vec![SqlInput { table: "events".into(), schema: schema() }]
}

/// Rows of `(event time in seconds, k, v)`.
fn batch(rows: &[(i64, &str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.0 * 1000).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

struct Run {
    processor: SqlProcessor,
    out: Vec<RecordBatch>,
    dead_letters: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(sql: &str, options: &PlanOptions) -> Run {
    start_on(sql, options, false)
}

/// Like [`start`], with the state in RocksDB if `rocksdb`.
fn start_on(sql: &str, options: &PlanOptions, rocksdb: bool) -> Run {
    let processor = plan(sql, &inputs(), options).unwrap_or_else(|d| panic!("{sql}: {d:?}"));
    open(processor, 0, 1, rocksdb)
}

fn open(mut processor: SqlProcessor, index: usize, peers: usize, rocksdb: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let state = if rocksdb {
        StateBackend::RocksDb { dir: dir.path().join("rocksdb") }
    } else {
        StateBackend::Memory
    };
    let dead_letters = dir.path().join("dead.jsonl");
    let sink = DeadLetterSink::new(
        "test",
        "q",
        OnError::DeadLetter,
        dead_letters.clone(),
        Arc::new(DeadLetterCounts::default()),
    );
    let context = ProcessorContext { worker: WorkerPosition { index, peers }, dead_letters: sink, state };
    processor.open(context).unwrap();
    Run { processor, out: Vec::new(), dead_letters, _dir: dir }
}

impl Run {
    fn feed(&mut self, rows: &[(i64, &str, i64)]) {
        self.processor.process(0, batch(rows), &mut self.out).unwrap();
    }

    /// Watermark in seconds.
    fn watermark(&mut self, seconds: i64) {
        let watermark = if seconds == i64::MAX { END_OF_TIME } else { seconds * 1000 };
        self.processor.on_watermark(watermark, &mut self.out).unwrap();
    }

    fn epoch(&mut self) {
        self.processor.end_of_epoch(&mut self.out).unwrap();
    }

    fn rows(&mut self) -> Vec<String> {
        let rows = json_rows(&self.out);
        self.out.clear();
        rows
    }

    fn dead_letters(&mut self) -> Vec<Value> {
        self.processor
            .open(ProcessorContext {
                worker: WorkerPosition { index: 0, peers: 1 },
                dead_letters: DeadLetterSink::new(
                    "test",
                    "q",
                    OnError::DeadLetter,
                    self.dead_letters.with_extension("unused"),
                    Arc::new(DeadLetterCounts::default()),
                ),
                state: StateBackend::Memory,
            })
            .unwrap();
        read_lines(&self.dead_letters)
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Batches as sorted JSON lines with sorted keys.
fn json_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    let text = String::from_utf8(writer.into_inner()).unwrap();
    let mut rows: Vec<String> = text
        .lines()
        .map(|line| serde_json::to_string(&serde_json::from_str::<Value>(line).unwrap()).unwrap())
        .collect();
    rows.sort();
    rows
}

fn t(seconds: i64) -> String {
    format!("1970-01-01T00:00:{seconds:02}")
}

const TUMBLE: &str = "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, \
     MAX(v) AS hi, AVG(v) AS mean, COUNT(DISTINCT v) AS kinds \
     FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
     GROUP BY window_start, window_end, k";

/// A row of [`TUMBLE`]: window start (seconds), key, then `(n, total, lo, hi, mean, kinds)`.
fn tumble_row(
    start: i64,
    k: &str,
    (n, total, lo, hi, mean, kinds): (i64, i64, i64, i64, f64, i64),
) -> String {
    serde_json::json!({
        "window_start": t(start), "window_end": t(start + 10), "k": k, "n": n, "total": total,
        "lo": lo, "hi": hi, "mean": mean, "kinds": kinds,
    })
    .to_string()
}

#[test]
fn tumble_emits_each_window_when_the_watermark_passes_its_end() {
    let mut run = start(TUMBLE, &PlanOptions::default());
    assert!(run.processor.is_stateful());
    run.feed(&[(1, "a", 1), (2, "a", 2), (3, "b", 5), (11, "a", 7)]);
    run.watermark(9);
    assert!(run.rows().is_empty(), "window [0, 10) is open until the watermark reaches 10");
    run.feed(&[(12, "b", 1), (12, "b", 1), (9, "b", 5)]);
    run.watermark(10);
    // [0, 10): a = {1, 2}; b = {5, 5}.
    let mut expected =
        vec![tumble_row(0, "a", (2, 3, 1, 2, 1.5, 2)), tumble_row(0, "b", (2, 10, 5, 5, 5.0, 1))];
    expected.sort();
    assert_eq!(run.rows(), expected);
    run.feed(&[(25, "a", 3)]);
    run.watermark(i64::MAX);
    // [10, 20): a = {7}; b = {1, 1}. [20, 30): a = {3}.
    let mut expected = vec![
        tumble_row(10, "a", (1, 7, 7, 7, 7.0, 1)),
        tumble_row(10, "b", (2, 2, 1, 1, 1.0, 1)),
        tumble_row(20, "a", (1, 3, 3, 3, 3.0, 1)),
    ];
    expected.sort();
    assert_eq!(run.rows(), expected);
    assert!(run.dead_letters().is_empty());
}

#[test]
fn hop_counts_each_row_in_every_window_that_contains_it() {
    let sql = "SELECT window_start, window_end, COUNT(*) AS n, SUM(v) AS total \
               FROM HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND) \
               GROUP BY window_start, window_end";
    let mut run = start(sql, &PlanOptions::default());
    run.feed(&[(1, "a", 1), (6, "a", 10), (12, "b", 100)]);
    run.watermark(i64::MAX);
    // Windows of 10 s every 5 s: [-5,5) {1}, [0,10) {1,6}, [5,15) {6,12}, [10,20) {12}.
    let row = |start: i64, n: i64, total: i64| {
        let at = |s: i64| if s < 0 { "1969-12-31T23:59:55".to_owned() } else { t(s) };
        serde_json::json!({"window_start": at(start), "window_end": t(start + 10), "n": n, "total": total})
            .to_string()
    };
    let mut expected = vec![row(-5, 1, 1), row(0, 2, 11), row(5, 2, 110), row(10, 1, 100)];
    expected.sort();
    assert_eq!(run.rows(), expected);
}

#[test]
fn sessions_merge_rows_closer_than_the_gap_per_key() {
    let sql = "SELECT k, window_start, window_end, COUNT(*) AS n \
               FROM TABLE(SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '5' SECOND)) \
               GROUP BY k, window_start, window_end";
    let mut run = start(sql, &PlanOptions::default());
    // a: 1, 4 and (later batch) 7 form one session [1, 12); 20 starts another [20, 25).
    // b: 3 and 10 are 7 s apart: two sessions [3, 8) and [10, 15), until 6 arrives and
    // bridges them into [3, 15).
    run.feed(&[(1, "a", 0), (4, "a", 0), (3, "b", 0), (10, "b", 0), (20, "a", 0)]);
    run.feed(&[(7, "a", 0), (6, "b", 0)]);
    run.watermark(12);
    let row = |k: &str, start: i64, end: i64, n: i64| {
        serde_json::json!({"k": k, "window_start": t(start), "window_end": t(end), "n": n}).to_string()
    };
    assert_eq!(run.rows(), vec![row("a", 1, 12, 3)]);
    run.watermark(i64::MAX);
    let mut expected = vec![row("a", 20, 25, 1), row("b", 3, 15, 3)];
    expected.sort();
    assert_eq!(run.rows(), expected);
}

#[test]
fn late_records_go_to_dead_letters_with_the_reason() {
    let mut run = start(TUMBLE, &PlanOptions::default());
    run.feed(&[(1, "a", 1), (12, "a", 2)]);
    run.watermark(10);
    assert_eq!(run.rows().len(), 1);
    run.feed(&[(5, "a", 100), (13, "a", 3)]);
    run.watermark(i64::MAX);
    assert_eq!(run.rows(), vec![tumble_row(10, "a", (2, 5, 2, 3, 2.5, 2))]);
    let letters = run.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("event time 1970-01-01T00:00:05.000"), "{reason}");
    assert!(reason.contains("[1970-01-01T00:00:00.000, 1970-01-01T00:00:10.000)"), "{reason}");
    assert!(reason.contains("watermark 1970-01-01T00:00:10.000"), "{reason}");
    assert!(reason.contains("allowed lateness (0 ms)"), "{reason}");
    let raw: Value = serde_json::from_str(letters[0]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["k"], "a");
    assert_eq!(raw["v"], 100);
}

#[test]
fn allowed_lateness_updates_and_re_emits_the_window() {
    let options = PlanOptions { allowed_lateness: Duration::from_secs(5), ..PlanOptions::default() };
    let mut run = start(TUMBLE, &options);
    run.feed(&[(1, "a", 1), (2, "b", 4)]);
    run.watermark(10);
    assert_eq!(run.rows().len(), 2);
    // Within the lateness (10 + 5 > 12): a's row is updated and emitted again; b's is not.
    run.feed(&[(3, "a", 2)]);
    run.watermark(12);
    assert_eq!(run.rows(), vec![tumble_row(0, "a", (2, 3, 1, 2, 1.5, 2))]);
    run.watermark(15);
    // Past it: dead-lettered.
    run.feed(&[(4, "a", 9)]);
    run.watermark(i64::MAX);
    assert!(run.rows().is_empty());
    let letters = run.dead_letters();
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["reason"].as_str().unwrap().contains("allowed lateness (5000 ms)"));
}

#[test]
fn having_where_and_expressions_over_aggregates() {
    let sql = "CREATE VIEW positive AS SELECT ts, upper(k) AS key, v FROM events WHERE v > 0;
               SELECT key, window_end, SUM(v) * 2 AS doubled, CAST(COUNT(*) AS DOUBLE) / 2 AS half
               FROM TABLE(TUMBLE(TABLE positive, DESCRIPTOR(ts), INTERVAL '10' SECOND))
               WHERE v < 100
               GROUP BY window_start, window_end, key
               HAVING SUM(v) > 3";
    let mut run = start(sql, &PlanOptions::default());
    // a: 1 + 2 (and -5, 500 filtered) = 3: dropped by HAVING; b: 4 + 6 = 10.
    run.feed(&[(1, "a", 1), (2, "a", 2), (3, "a", -5), (4, "a", 500), (5, "b", 4), (6, "b", 6)]);
    run.watermark(i64::MAX);
    let expected =
        serde_json::json!({"key": "B", "window_end": t(10), "doubled": 20, "half": 1.0}).to_string();
    assert_eq!(run.rows(), vec![expected]);
}

#[test]
fn updating_group_by_emits_changed_keys_per_epoch() {
    for rocksdb in [false, true] {
        let sql = "SELECT k, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY k";
        let mut run = start_on(sql, &PlanOptions::default(), rocksdb);
        let row =
            |k: &str, n: i64, total: i64| serde_json::json!({"k": k, "n": n, "total": total}).to_string();
        run.feed(&[(1, "a", 1), (2, "b", 2), (3, "a", 3)]);
        assert!(run.rows().is_empty(), "rows are emitted at the end of an epoch");
        run.epoch();
        assert_eq!(run.rows(), vec![row("a", 2, 4), row("b", 1, 2)]);
        run.feed(&[(4, "b", 10)]);
        run.feed(&[(5, "b", 1)]);
        run.epoch();
        assert_eq!(run.rows(), vec![row("b", 3, 13)], "only keys changed in the epoch");
        run.epoch();
        assert!(run.rows().is_empty());
    }
}

#[test]
fn global_aggregate_without_group_by_is_one_updating_row() {
    for rocksdb in [false, true] {
        let mut run = start_on("SELECT COUNT(*) AS n FROM events", &PlanOptions::default(), rocksdb);
        run.feed(&[(1, "a", 1), (2, "b", 2)]);
        run.epoch();
        assert_eq!(run.rows(), vec![r#"{"n":2}"#.to_owned()]);
    }
}

#[test]
fn state_ttl_forgets_keys_not_updated_for_that_long() {
    for rocksdb in [false, true] {
        let options = PlanOptions { state_ttl: Some(Duration::from_secs(10)), ..PlanOptions::default() };
        let sql = "SELECT k, COUNT(*) AS n FROM events GROUP BY k";
        let mut run = start_on(sql, &options, rocksdb);
        run.watermark(0);
        run.feed(&[(1, "a", 1), (1, "b", 1)]);
        run.epoch();
        run.rows();
        run.watermark(5);
        run.feed(&[(6, "b", 1)]);
        run.epoch();
        run.rows();
        // a was last updated at watermark 0, b at 5: at 12, a has expired and b has not.
        run.watermark(12);
        let state_before = snapshot(&mut run.processor, DEFAULT_CHUNK_BYTES);
        run.feed(&[(13, "a", 1), (13, "b", 1)]);
        run.epoch();
        let row = |k: &str, n: i64| serde_json::json!({"k": k, "n": n}).to_string();
        assert_eq!(run.rows(), vec![row("a", 1), row("b", 3)], "rocksdb: {rocksdb}");
        // The snapshot at 12 holds b only: a expired.
        let keys: usize = state_before
            .iter()
            .map(|s| {
                let reader = arrow::ipc::reader::StreamReader::try_new(&s.bytes[..], None).unwrap();
                reader.map(|b| b.unwrap().num_rows()).sum::<usize>()
            })
            .sum();
        assert_eq!(keys, 1, "rocksdb: {rocksdb}");
    }
}

/// Runs `sql` over `batches` with watermarks after each on `peers.0` instances, snapshots them
/// after `split_at` batches (asking for chunks of `chunk_bytes`) and restores into `peers.1`
/// instances. Every instance gets the rows the runtime would route to it (by the processor's
/// own key hashers).
fn run_with_restore(
    sql: &str,
    batches: &[Vec<(i64, &str, i64)>],
    split_at: usize,
    peers: (usize, usize),
    (rocksdb_before, rocksdb_after): (bool, bool),
    chunk_bytes: usize,
) -> Vec<String> {
    let planned = plan(sql, &inputs(), &PlanOptions::default()).unwrap();
    let hasher = planned.key_by().remove(0);
    let mut first: Vec<Run> =
        (0..peers.0).map(|index| open(planned.clone(), index, peers.0, rocksdb_before)).collect();
    feed_workers(&mut first, hasher.as_ref(), &batches[..split_at], 0);
    let mut out = Vec::new();
    let mut states = Vec::new();
    for worker in &mut first {
        out.append(&mut worker.out);
        states.extend(snapshot(&mut worker.processor, chunk_bytes));
    }
    assert!(!states.is_empty());
    let mut workers: Vec<Run> =
        (0..peers.1).map(|index| open(planned.clone(), index, peers.1, rocksdb_after)).collect();
    for (index, worker) in workers.iter_mut().enumerate() {
        restore_owned(&mut worker.processor, &states, index, peers.1);
    }
    feed_workers(&mut workers, hasher.as_ref(), &batches[split_at..], split_at);
    for worker in &mut workers {
        worker.watermark(i64::MAX);
        out.append(&mut worker.out);
    }
    json_rows(&out)
}

/// Feeds `batches` to `workers`, each the rows routed to it, with a watermark and an end of
/// epoch after each batch; the first batch is batch `first` of the run.
fn feed_workers(
    workers: &mut [Run],
    hasher: &dyn KeyHasher,
    batches: &[Vec<(i64, &str, i64)>],
    first: usize,
) {
    let peers = workers.len();
    for (i, rows) in batches.iter().enumerate() {
        let mut hashes = Vec::new();
        hasher.hash_rows(&batch(rows), &mut hashes).unwrap();
        for (index, worker) in workers.iter_mut().enumerate() {
            let mine: Vec<(i64, &str, i64)> = rows
                .iter()
                .zip(&hashes)
                .filter(|(_, h)| worker_for_key_group(key_group(**h), peers) == index)
                .map(|(r, _)| *r)
                .collect();
            worker.feed(&mine);
            worker.watermark((first + i) as i64 * 10);
            worker.epoch();
        }
    }
}

#[test]
fn snapshot_and_restore_split_over_two_workers_give_the_uninterrupted_output() {
    let batches: Vec<Vec<(i64, &str, i64)>> = vec![
        vec![(1, "a", 1), (2, "b", 2), (3, "c", 3), (5, "d", 4)],
        vec![(11, "a", 5), (12, "b", 6), (14, "a", 7), (9, "c", 1)],
        vec![(21, "c", 8), (19, "a", 9), (25, "d", 1), (28, "b", 2)],
        vec![(31, "a", 3), (35, "e", 4), (29, "d", 5)],
    ];
    for sql in [
        TUMBLE,
        "SELECT window_start, window_end, k, COUNT(*) AS n, AVG(v) AS mean FROM HOP(TABLE events, \
         DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND) GROUP BY window_start, window_end, k",
        "SELECT k, window_start, window_end, SUM(v) AS total FROM SESSION(TABLE events PARTITION BY k, \
         DESCRIPTOR(ts), INTERVAL '6' SECOND) GROUP BY k, window_start, window_end",
        "SELECT k, COUNT(DISTINCT v) AS kinds, MAX(v) AS hi FROM events GROUP BY k",
    ] {
        let uninterrupted =
            run_with_restore(sql, &batches, batches.len(), (1, 1), (false, false), DEFAULT_CHUNK_BYTES);
        for split_at in 1..batches.len() {
            // Memory → memory, and across state backends in both directions.
            for backends in [(false, false), (false, true), (true, false), (true, true)] {
                assert_eq!(
                    run_with_restore(sql, &batches, split_at, (1, 2), backends, DEFAULT_CHUNK_BYTES),
                    uninterrupted,
                    "{sql} split at {split_at}, rocksdb before/after: {backends:?}"
                );
            }
        }
    }
}

#[test]
fn rocksdb_state_streamed_in_small_chunks_restores_at_another_parallelism_and_backend() {
    // Many keys, so that key groups hold several keys and small chunks cut them.
    let keys: Vec<String> = (0..300).map(|k| format!("key-{k}")).collect();
    let batches: Vec<Vec<(i64, &str, i64)>> = (0..4)
        .map(|b| {
            keys.iter().enumerate().map(|(k, key)| (b * 10 + 1, key.as_str(), (k as i64 + b) % 7)).collect()
        })
        .collect();
    let sql = "SELECT k, COUNT(*) AS n, SUM(v) AS total, MAX(v) AS hi FROM events GROUP BY k";
    let uninterrupted =
        run_with_restore(sql, &batches, batches.len(), (1, 1), (false, false), DEFAULT_CHUNK_BYTES);
    for peers in [(1, 2), (2, 1), (2, 2)] {
        for backends in [(true, true), (true, false), (false, true)] {
            for chunk_bytes in [1, 200, DEFAULT_CHUNK_BYTES] {
                assert_eq!(
                    run_with_restore(sql, &batches, 2, peers, backends, chunk_bytes),
                    uninterrupted,
                    "workers {peers:?}, rocksdb before/after {backends:?}, chunks of {chunk_bytes} bytes"
                );
            }
        }
    }
}

#[test]
fn rocksdb_snapshots_are_cut_into_chunks_of_the_size_asked_for() {
    let keys: Vec<String> = (0..2000).map(|k| format!("key-{k:05}")).collect();
    let rows: Vec<(i64, &str, i64)> = keys.iter().map(|key| (1, key.as_str(), 1)).collect();
    let sql = "SELECT k, COUNT(*) AS n FROM events GROUP BY k";
    let count_keys = |chunks: &[KeyGroupState]| -> usize {
        chunks
            .iter()
            .map(|c| {
                arrow::ipc::reader::StreamReader::try_new(&c.bytes[..], None)
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum::<usize>()
            })
            .sum()
    };
    for rocksdb in [false, true] {
        let mut run = start_on(sql, &PlanOptions::default(), rocksdb);
        run.feed(&rows);
        run.epoch();
        let whole = snapshot(&mut run.processor, DEFAULT_CHUNK_BYTES);
        let small = snapshot(&mut run.processor, 1000);
        assert_eq!(count_keys(&whole), keys.len());
        assert_eq!(count_keys(&small), keys.len());
        let groups: std::collections::BTreeSet<u32> = whole.iter().map(|c| c.key_group).collect();
        assert_eq!(whole.len(), groups.len(), "one chunk per key group when they fit");
        if rocksdb {
            // A key is about 30 bytes in a chunk's accounting: ~33 keys a chunk.
            assert!(small.len() > 2000 / 40, "{} chunks", small.len());
            let largest = small.iter().map(|c| c.bytes.len()).max().unwrap();
            let whole_largest = whole.iter().map(|c| c.bytes.len()).max().unwrap();
            assert!(largest < whole_largest, "{largest} vs {whole_largest}");
        }
    }
}

fn rejected(sql: &str) -> Diagnostic {
    let mut diagnostics = plan(sql, &inputs(), &PlanOptions::default()).expect_err(sql);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    diagnostics.remove(0)
}

#[test]
fn unsupported_forms_are_rejected_with_a_fix() {
    let missing = rejected(
        "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), \
         INTERVAL '10' SECOND)) GROUP BY window_start",
    );
    assert!(missing.message.contains("both window_start and window_end"), "{}", missing.message);
    assert!(missing.suggestion.unwrap().contains("GROUP BY window_start, window_end"));
    assert_eq!(missing.location.map(|l| (l.line, l.column)), Some((1, 102)));

    let hop = rejected(
        "SELECT * FROM HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
    );
    assert!(hop.message.contains("HOP windows can only be aggregated"), "{}", hop.message);
    assert_eq!(hop.location.map(|l| (l.line, l.column)), Some((1, 15)));

    let order = rejected("SELECT k, COUNT(*) FROM events GROUP BY k ORDER BY k");
    assert!(order.message.starts_with("ORDER BY is not supported yet"), "{}", order.message);

    let column = rejected(
        "SELECT COUNT(*) FROM TUMBLE(TABLE events, DESCRIPTOR(tss), INTERVAL '1' SECOND) \
         GROUP BY window_start, window_end",
    );
    assert!(column.message.contains("unknown time column \"tss\""), "{}", column.message);
    assert_eq!(column.suggestion.as_deref(), Some("did you mean \"ts\"?"));

    let wrong_type = rejected(
        "SELECT COUNT(*) FROM TUMBLE(TABLE events, DESCRIPTOR(k), INTERVAL '1' SECOND) \
         GROUP BY window_start, window_end",
    );
    assert!(wrong_type.message.contains("must be a timestamp"), "{}", wrong_type.message);

    let session = rejected(
        "SELECT window_start, window_end, COUNT(*) FROM SESSION(TABLE events, DESCRIPTOR(ts), \
         INTERVAL '1' SECOND) GROUP BY window_start, window_end, k",
    );
    assert!(session.message.contains("PARTITION BY k"), "{}", session.message);

    let nested = rejected("CREATE VIEW c AS SELECT k, COUNT(*) AS n FROM events GROUP BY k; SELECT * FROM c");
    assert!(nested.message.contains("GROUP BY inside a view"), "{}", nested.message);

    let filter = rejected(
        "SELECT COUNT(*) FROM SESSION(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND) \
         WHERE window_end > ts GROUP BY window_start, window_end",
    );
    assert!(filter.message.contains("known only after aggregation"), "{}", filter.message);
}

#[test]
fn tumble_columns_are_computed_per_row_for_stateless_queries() {
    let sql = "SELECT k, window_start, window_end FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), \
               INTERVAL '10' SECOND)) AS w WHERE w.v > 1";
    let processor = plan(sql, &inputs(), &PlanOptions::default()).unwrap();
    assert!(!processor.is_stateful());
    let mut run = open(processor, 0, 1, false);
    run.feed(&[(1, "a", 1), (19, "b", 2)]);
    let expected = serde_json::json!({"k": "b", "window_start": t(10), "window_end": t(20)}).to_string();
    assert_eq!(run.rows(), vec![expected]);
}

#[test]
fn snapshot_and_restore_of_rocksdb_state_hold_a_bounded_amount_of_memory() {
    use std::io::{BufReader, BufWriter};

    use sluice_runtime::checkpoint::part::{ProcessorPartReader, ProcessorPartWriter};

    use crate::tests::allocations::peak_during;

    // What a snapshot or a restore may hold at once: a chunk (asked for 16 KiB) in its forms
    // (rows, Arrow arrays, IPC bytes) and the file buffer (64 KiB). A whole key group (~270 KiB
    // here) in those forms is well above it, so this fails if key groups are not cut.
    const CHUNK: usize = 16 * 1024;
    const BOUND: usize = 384 * 1024;
    let sql = "SELECT k, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY k";
    let mut run = start_on(sql, &PlanOptions::default(), true);
    // ~30 MB of state: 120k keys of 200 bytes.
    for block in 0..12 {
        let keys: Vec<String> = (0..10_000).map(|k| format!("{:0>200}", block * 10_000 + k)).collect();
        run.feed(&keys.iter().map(|key| (1, key.as_str(), 1)).collect::<Vec<_>>());
        run.epoch();
        run.out.clear();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part");
    let write_part = |processor: &mut SqlProcessor| {
        let file = BufWriter::with_capacity(64 * 1024, std::fs::File::create(&path).unwrap());
        let mut part = ProcessorPartWriter::new(file, None).unwrap().with_chunk_bytes(CHUNK);
        processor.snapshot(&mut part).unwrap();
        let largest = part.largest_chunk();
        part.finish().unwrap();
        largest
    };
    let (largest_chunk, snapshot_peak) = peak_during(|| write_part(&mut run.processor));
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(size > 50 * BOUND, "the state ({size} bytes) is much larger than the bound");
    assert!(largest_chunk < 2 * CHUNK, "largest chunk {largest_chunk}");
    assert!(snapshot_peak < BOUND, "a snapshot of {size} bytes held {snapshot_peak} bytes at once");

    let read_part = |processor: &mut SqlProcessor| {
        let file = BufReader::with_capacity(64 * 1024, std::fs::File::open(&path).unwrap());
        let mut part = ProcessorPartReader::open(file, "q").unwrap();
        while let Some(chunk) = part.next_chunk(|_| true).unwrap() {
            processor.restore(vec![chunk]).unwrap();
        }
    };
    let planned = plan(sql, &inputs(), &PlanOptions::default()).unwrap();
    let mut restored = open(planned.clone(), 0, 1, true);
    let ((), restore_peak) = peak_during(|| read_part(&mut restored.processor));
    assert!(restore_peak < BOUND, "a restore of {size} bytes held {restore_peak} bytes at once");
    assert!(
        snapshot(&mut restored.processor, DEFAULT_CHUNK_BYTES)
            == snapshot(&mut run.processor, DEFAULT_CHUNK_BYTES),
        "the restored state is the state"
    );

    // The same measurement sees the in-memory backend hold its whole state while snapshotting.
    let mut memory = open(planned, 0, 1, false);
    read_part(&mut memory.processor);
    let (_, memory_peak) = peak_during(|| write_part(&mut memory.processor));
    assert!(memory_peak > size / 2, "in memory: {memory_peak} bytes at once for {size}");
    eprintln!(
        "state part of {size} bytes; at once: rocksdb snapshot {snapshot_peak}, restore {restore_peak}, \
         memory snapshot {memory_peak}"
    );
}
