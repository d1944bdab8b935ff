//! Join tests: every expected result is computed here with plain loops over the input rows,
//! independently of the join code.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;
use serde_json::{Value, json};
use sluice_runtime::connector::WorkerPosition;
use sluice_runtime::dead_letter::{DeadLetterCounts, DeadLetterSink, OnError};
use sluice_runtime::exchange::key_group;
use sluice_runtime::processor::{
    DEFAULT_CHUNK_BYTES, END_OF_TIME, LookupTable, Processor, ProcessorContext, StateBackend,
};

use crate::tests::{restore_owned, snapshot};
use crate::{Diagnostic, PlanOptions, SqlInput, SqlLookup, SqlProcessor, plan};

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn batch(schema: &SchemaRef, rows: &[Value]) -> RecordBatch {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let mut reader = ReaderBuilder::new(Arc::clone(schema)).build(Cursor::new(text)).unwrap();
    reader.next().unwrap().unwrap()
}

/// Output rows as sorted JSON strings (NULLs left out, like arrow-json writes them).
fn rows(out: &[RecordBatch]) -> Vec<String> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    for batch in out {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    let text = String::from_utf8(writer.into_inner()).unwrap();
    sorted(text.lines().map(|line| serde_json::from_str(line).unwrap()).collect())
}

fn sorted(rows: Vec<Value>) -> Vec<String> {
    let mut lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    lines.sort();
    lines
}

fn planned(sql: &str, inputs: &[SqlInput], options: &PlanOptions) -> SqlProcessor {
    plan(sql, inputs, options).unwrap_or_else(|d| panic!("{sql}: {d:?}"))
}

fn error(sql: &str, inputs: &[SqlInput]) -> Diagnostic {
    let mut diagnostics = plan(sql, inputs, &PlanOptions::default()).expect_err(sql);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    diagnostics.remove(0)
}

/// What arrives at a processor.
#[derive(Clone)]
enum Event {
    Batch(usize, RecordBatch),
    Watermark(i64),
}

/// Opens `processor` with its state in memory, or in RocksDB under `dir` if `rocksdb`.
fn open_on(processor: &mut dyn Processor, rocksdb: bool, dir: &std::path::Path) {
    let state = if rocksdb {
        StateBackend::RocksDb { dir: dir.join(format!("rocksdb-{}", rand_suffix())) }
    } else {
        StateBackend::Memory
    };
    let dead_letters = DeadLetterSink::new(
        "test",
        "join",
        OnError::Drop,
        dir.join("dead-letters.jsonl"),
        Arc::new(DeadLetterCounts::default()),
    );
    let worker = WorkerPosition { index: 0, peers: 1 };
    processor.open(ProcessorContext { worker, dead_letters, state }).unwrap();
}

/// A distinct suffix per call, so that instances opened in one test get their own folders.
fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn run(processor: &mut dyn Processor, events: &[Event]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Batch(input, batch) => processor.process(*input, batch.clone(), &mut out).unwrap(),
            Event::Watermark(w) => processor.on_watermark(*w, &mut out).unwrap(),
        }
    }
    for batch in &out {
        assert_eq!(batch.schema(), processor.output_schema());
    }
    out
}

// ---- regular inner join (Nexmark q3) ----

fn nexmark_inputs() -> Vec<SqlInput> {
    let auction =
        schema(&[("id", DataType::Int64), ("seller", DataType::Int64), ("category", DataType::Int64)]);
    let person = schema(&[("id", DataType::Int64), ("name", DataType::Utf8), ("state", DataType::Utf8)]);
    vec![
        SqlInput { table: "auction".into(), schema: auction },
        SqlInput { table: "person".into(), schema: person },
    ]
}

const Q3: &str = "SELECT P.name, P.city_or_state AS state, A.id FROM auction AS A INNER JOIN \
                  (SELECT id, name, state AS city_or_state FROM person) AS P ON A.seller = P.id \
                  WHERE A.category = 10 AND (P.city_or_state = 'OR' OR P.city_or_state = 'ID' OR \
                  P.city_or_state = 'CA')";

type AuctionRow = (i64, Option<i64>, i64);
type PersonRow = (i64, &'static str, &'static str);

fn q3_data() -> (Vec<AuctionRow>, Vec<PersonRow>) {
    let states = ["OR", "WA", "ID", "CA", "NY"];
    let persons: Vec<PersonRow> =
        (0..12).map(|i| (i, ["ann", "bob", "cy", "di"][i as usize % 4], states[i as usize % 5])).collect();
    let auctions: Vec<AuctionRow> = (0..40)
        .map(|i| {
            (100 + i, if i % 9 == 8 { None } else { Some((i * 7) % 14) }, if i % 3 == 0 { 11 } else { 10 })
        })
        .collect();
    (auctions, persons)
}

fn q3_events(auctions: &[AuctionRow], persons: &[PersonRow]) -> Vec<Event> {
    let inputs = nexmark_inputs();
    let mut events = Vec::new();
    // Interleave: persons arrive both before and after their auctions.
    for step in 0..8 {
        let a: Vec<Value> = auctions[step * 5..step * 5 + 5]
            .iter()
            .map(|(id, seller, category)| json!({"id": id, "seller": seller, "category": category}))
            .collect();
        events.push(Event::Batch(0, batch(&inputs[0].schema, &a)));
        if step < 6 {
            let p: Vec<Value> = persons[step * 2..step * 2 + 2]
                .iter()
                .map(|(id, name, state)| json!({"id": id, "name": name, "state": state}))
                .collect();
            events.push(Event::Batch(1, batch(&inputs[1].schema, &p)));
        }
    }
    events
}

fn q3_expected(auctions: &[AuctionRow], persons: &[PersonRow]) -> Vec<String> {
    let mut expected = Vec::new();
    for (id, seller, category) in auctions {
        for (pid, name, state) in persons {
            if *seller == Some(*pid) && *category == 10 && ["OR", "ID", "CA"].contains(state) {
                expected.push(json!({"name": name, "state": state, "id": id}));
            }
        }
    }
    sorted(expected)
}

#[test]
fn regular_inner_join_matches_rows_whichever_side_arrives_first() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (auctions, persons) = q3_data();
        let mut processor = planned(Q3, &nexmark_inputs(), &PlanOptions::default());
        open_on(&mut processor, rocksdb, dir.path());
        assert!(processor.is_stateful());
        assert_eq!(processor.key_by().len(), 2);
        let out = run(&mut processor, &q3_events(&auctions, &persons));
        let expected = q3_expected(&auctions, &persons);
        assert!(expected.len() > 5, "{expected:?}");
        assert_eq!(rows(&out), expected, "rocksdb: {rocksdb}");
    }
}

#[test]
fn snapshot_restored_on_two_workers_by_key_group_equals_an_uninterrupted_run() {
    let (auctions, persons) = q3_data();
    let events = q3_events(&auctions, &persons);
    let mut whole = planned(Q3, &nexmark_inputs(), &PlanOptions::default());
    let expected = rows(&run(&mut whole, &events));
    assert_eq!(expected, q3_expected(&auctions, &persons));

    // Memory → memory, and across state backends in both directions.
    for (before_in_rocksdb, after_in_rocksdb) in [(false, false), (false, true), (true, false), (true, true)]
    {
        let dir = tempfile::tempdir().unwrap();
        let (before, after) = events.split_at(events.len() / 2);
        let mut first = planned(Q3, &nexmark_inputs(), &PlanOptions::default());
        open_on(&mut first, before_in_rocksdb, dir.path());
        let mut out = run(&mut first, before);
        let states = snapshot(&mut first, DEFAULT_CHUNK_BYTES);
        assert!(states.len() > 1);
        assert!(first.state_size() > 0);
        let backend = after_in_rocksdb.then_some(dir.path());
        out.extend(resume_on_workers(2, &first, states, after, backend));
        assert_eq!(rows(&out), expected, "rocksdb before/after: {before_in_rocksdb}/{after_in_rocksdb}");
    }
}

/// Restores `states` on two fresh instances (each its own key groups) and runs `events` with
/// every batch split by the processor's keys, as the runtime's exchange would.
fn resume_on_two_workers(
    template: &dyn Processor,
    states: Vec<sluice_runtime::processor::KeyGroupState>,
    events: &[Event],
) -> Vec<RecordBatch> {
    resume_on_workers(2, template, states, events, None)
}

/// Like [`resume_on_two_workers`], on `peers` instances, with state in RocksDB under `rocksdb`
/// if given.
fn resume_on_workers(
    peers: usize,
    template: &dyn Processor,
    states: Vec<sluice_runtime::processor::KeyGroupState>,
    events: &[Event],
    rocksdb: Option<&std::path::Path>,
) -> Vec<RecordBatch> {
    let mut workers = restored_workers(peers, template, &states, rocksdb);
    run_on_workers(&mut workers, template, events)
}

/// `peers` fresh instances of `template`, each with the chunks of `states` it owns, restored
/// one at a time as the runtime does, and its state in RocksDB under `rocksdb` if given.
fn restored_workers(
    peers: usize,
    template: &dyn Processor,
    states: &[sluice_runtime::processor::KeyGroupState],
    rocksdb: Option<&std::path::Path>,
) -> Vec<Box<dyn Processor>> {
    let mut workers: Vec<Box<dyn Processor>> = (0..peers).map(|_| template.clone_box()).collect();
    if let Some(dir) = rocksdb {
        workers.iter_mut().for_each(|worker| open_on(worker.as_mut(), true, dir));
    }
    for (index, worker) in workers.iter_mut().enumerate() {
        restore_owned(worker.as_mut(), states, index, peers);
    }
    workers
}

/// Runs `events` on `workers`, every batch split by the processor's keys as the runtime's
/// exchange would.
fn run_on_workers(
    workers: &mut [Box<dyn Processor>],
    template: &dyn Processor,
    events: &[Event],
) -> Vec<RecordBatch> {
    let peers = workers.len();
    let hashers = template.key_by();
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Batch(input, batch) => {
                let mut hashes = Vec::new();
                hashers[*input].hash_rows(batch, &mut hashes).unwrap();
                for parts in sluice_runtime::exchange::split_by_hash(batch, &hashes, peers).unwrap() {
                    let worker = parts.destination();
                    let records = parts.records().unwrap().clone();
                    workers[worker].process(*input, records, &mut out).unwrap();
                }
            }
            Event::Watermark(w) => workers.iter_mut().for_each(|p| p.on_watermark(*w, &mut out).unwrap()),
        }
    }
    out
}

#[test]
fn rocksdb_join_state_streamed_in_small_chunks_restores_at_another_parallelism_and_backend() {
    let (auctions, persons) = q3_data();
    let events = q3_events(&auctions, &persons);
    let expected = q3_expected(&auctions, &persons);
    let (before, after) = events.split_at(events.len() / 2);
    let template = planned(Q3, &nexmark_inputs(), &PlanOptions::default());
    for (from, to) in [(1, 2), (2, 1), (2, 2)] {
        for (before_in_rocksdb, after_in_rocksdb) in [(true, true), (true, false), (false, true)] {
            for chunk_bytes in [1, 100, DEFAULT_CHUNK_BYTES] {
                let dir = tempfile::tempdir().unwrap();
                let rocksdb = |on: bool| on.then_some(dir.path());
                let mut first = restored_workers(from, &template, &[], rocksdb(before_in_rocksdb));
                let mut out = run_on_workers(&mut first, &template, before);
                let states: Vec<_> =
                    first.iter_mut().flat_map(|w| snapshot(w.as_mut(), chunk_bytes)).collect();
                let groups: BTreeSet<u32> = states.iter().map(|s| s.key_group).collect();
                if before_in_rocksdb && chunk_bytes == 1 {
                    assert!(states.len() > groups.len(), "key groups are cut into chunks");
                }
                let mut second = restored_workers(to, &template, &states, rocksdb(after_in_rocksdb));
                out.extend(run_on_workers(&mut second, &template, after));
                assert_eq!(
                    rows(&out),
                    expected,
                    "workers {from} → {to}, rocksdb before/after {before_in_rocksdb}/{after_in_rocksdb}, \
                     chunks of {chunk_bytes} bytes"
                );
            }
        }
    }
}

#[test]
fn state_ttl_drops_quiet_keys_in_event_time() {
    for rocksdb in [false, true] {
        state_ttl_drops_quiet_keys(rocksdb);
    }
}

fn state_ttl_drops_quiet_keys(rocksdb: bool) {
    let dir = tempfile::tempdir().unwrap();
    let inputs = nexmark_inputs();
    let options = PlanOptions { state_ttl: Some(Duration::from_secs(10)), ..PlanOptions::default() };
    let sql = "SELECT P.name, A.id FROM auction A JOIN person P ON A.seller = P.id";
    let mut processor = planned(sql, &inputs, &options);
    open_on(&mut processor, rocksdb, dir.path());
    let person =
        |id: i64, name: &str| batch(&inputs[1].schema, &[json!({"id": id, "name": name, "state": "OR"})]);
    let auction = |id: i64, seller: i64| {
        batch(&inputs[0].schema, &[json!({"id": id, "seller": seller, "category": 1})])
    };
    let events = [
        Event::Batch(1, person(1, "early")), // stamped with the first watermark, 1 s
        Event::Watermark(1_000),
        Event::Watermark(9_000),
        Event::Batch(1, person(2, "later")), // stamped 9 s
        Event::Batch(0, auction(10, 1)),     // person 1 is 8 s old: still kept
        Event::Watermark(12_000),            // person 1 dropped at 11 s
        Event::Batch(0, auction(11, 1)),
        Event::Batch(0, auction(12, 2)), // person 2 kept until 19 s
    ];
    let out = run(&mut processor, &events);
    let expected = sorted(vec![json!({"name": "early", "id": 10}), json!({"name": "later", "id": 12})]);
    assert_eq!(rows(&out), expected, "rocksdb: {rocksdb}");
    assert!(!snapshot(&mut processor, DEFAULT_CHUNK_BYTES).is_empty());
    run(&mut processor, &[Event::Watermark(40_000)]);
    assert!(
        snapshot(&mut processor, DEFAULT_CHUNK_BYTES).is_empty(),
        "every key expired; rocksdb: {rocksdb}"
    );
    if !rocksdb {
        assert_eq!(processor.state_size(), 0);
    }
}

// ---- interval join ----

fn interval_inputs() -> Vec<SqlInput> {
    let side = |v: &str| schema(&[("k", DataType::Int64), (v, DataType::Utf8), ("ts", ts())]);
    vec![SqlInput { table: "a".into(), schema: side("x") }, SqlInput { table: "b".into(), schema: side("y") }]
}

/// A (key, value, ms) row of an interval join's input.
type IntervalRow = (i64, String, i64);

/// Rows of both inputs, each sorted by time, and events with watermarks.
fn interval_data() -> (Vec<IntervalRow>, Vec<IntervalRow>, Vec<Event>) {
    let inputs = interval_inputs();
    let a: Vec<IntervalRow> = (0..30).map(|i| ((i * 5) % 7, format!("a{i}"), 1_000 + i * 1_700)).collect();
    let b: Vec<IntervalRow> =
        (0..30).map(|i| ((i * 3) % 5, format!("b{i}"), 1_500 + i * 1_900 + (i % 3) * 100)).collect();
    let to_batch = |input: usize, rows: &[IntervalRow]| {
        let column = if input == 0 { "x" } else { "y" };
        let values: Vec<Value> = rows.iter().map(|(k, v, t)| json!({"k": k, column: v, "ts": t})).collect();
        batch(&inputs[input].schema, &values)
    };
    let mut events = Vec::new();
    let (mut max_a, mut max_b) = (i64::MIN, i64::MIN);
    for step in 0..6 {
        let (ra, rb) = (&a[step * 5..step * 5 + 5], &b[step * 5..step * 5 + 5]);
        events.push(Event::Batch(0, to_batch(0, ra)));
        events.push(Event::Batch(1, to_batch(1, rb)));
        max_a = max_a.max(ra.iter().map(|r| r.2).max().unwrap());
        max_b = max_b.max(rb.iter().map(|r| r.2).max().unwrap());
        events.push(Event::Watermark(max_a.min(max_b) - 1));
    }
    events.push(Event::Watermark(END_OF_TIME));
    (a, b, events)
}

fn interval_expected(left: bool) -> Vec<String> {
    let (a, b, _) = interval_data();
    let mut expected = Vec::new();
    for (ka, x, ta) in &a {
        let mut matched = false;
        for (kb, y, tb) in &b {
            if ka == kb && *tb - 5_000 <= *ta && *ta <= *tb + 5_000 {
                matched = true;
                expected.push(json!({"k": ka, "x": x, "y": y}));
            }
        }
        if left && !matched {
            expected.push(json!({"k": ka, "x": x}));
        }
    }
    sorted(expected)
}

#[test]
fn interval_inner_join_matches_within_the_bounds() {
    let sql = "SELECT a.k, a.x, b.y FROM a JOIN b ON a.k = b.k \
               AND a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '5' SECOND";
    let mut processor = planned(sql, &interval_inputs(), &PlanOptions::default());
    let (_, _, events) = interval_data();
    let out = run(&mut processor, &events);
    let expected = interval_expected(false);
    assert!(expected.len() > 10);
    assert_eq!(rows(&out), expected);
    assert_eq!(processor.state_size(), 0, "the end of input empties the state");
}

#[test]
fn interval_left_join_emits_unmatched_rows_once_the_watermark_passes_their_bound() {
    let sql = "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.k = b.k \
               AND a.ts >= b.ts - INTERVAL '5' SECOND AND a.ts <= b.ts + INTERVAL '5' SECOND";
    let mut processor = planned(sql, &interval_inputs(), &PlanOptions::default());
    let (_, _, events) = interval_data();
    let out = run(&mut processor, &events);
    let expected = interval_expected(true);
    assert!(expected.iter().any(|row| !row.contains("\"y\"")), "some rows are unmatched");
    assert_eq!(rows(&out), expected);
}

#[test]
fn interval_left_join_restored_on_two_workers_equals_an_uninterrupted_run() {
    let sql = "SELECT a.k, a.x, b.y FROM a LEFT JOIN b ON a.k = b.k \
               AND a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '5' SECOND";
    let (_, _, events) = interval_data();
    let (before, after) = events.split_at(events.len() / 2);
    let mut first = planned(sql, &interval_inputs(), &PlanOptions::default());
    let mut out = run(&mut first, before);
    let states = snapshot(&mut first, DEFAULT_CHUNK_BYTES);
    out.extend(resume_on_two_workers(&first, states, after));
    assert_eq!(rows(&out), interval_expected(true));
}

#[test]
fn interval_join_evicts_by_watermark_and_dead_letters_late_rows() {
    let sql = "SELECT a.x, b.y FROM a JOIN b ON a.k = b.k \
               AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '1' SECOND";
    let inputs = interval_inputs();
    let mut processor = planned(sql, &inputs, &PlanOptions::default());
    let a = batch(&inputs[0].schema, &[json!({"k": 1, "x": "a", "ts": 10_000})]);
    run(&mut processor, &[Event::Batch(0, a)]);
    assert!(processor.state_size() > 0);
    run(&mut processor, &[Event::Watermark(11_000)]);
    assert_eq!(processor.state_size(), 0, "a row at 10 s matches right rows up to 11 s only");
    let late = batch(&inputs[1].schema, &[json!({"k": 1, "y": "late", "ts": 10_500})]);
    let out = run(&mut processor, &[Event::Batch(1, late)]);
    assert!(out.is_empty());
    assert_eq!(processor.state_size(), 0, "a late row is not kept");
}

// ---- window join (Nexmark q8) ----

#[test]
fn window_join_emits_matches_and_unmatched_left_rows_per_window() {
    let person = schema(&[("id", DataType::Int64), ("name", DataType::Utf8), ("dateTime", ts())]);
    let auction = schema(&[("seller", DataType::Int64), ("dateTime", ts())]);
    let inputs = vec![
        SqlInput { table: "person".into(), schema: Arc::clone(&person) },
        SqlInput { table: "auction".into(), schema: Arc::clone(&auction) },
    ];
    let sql = "SELECT P.id, P.name, P.window_start FROM \
        (SELECT * FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))) P \
        LEFT JOIN (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))) A \
        ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end";
    let mut processor = planned(sql, &inputs, &PlanOptions::default());
    let persons: Vec<(i64, &str, i64)> =
        vec![(1, "ann", 1_000), (2, "bob", 2_000), (3, "cy", 12_000), (1, "ann2", 15_000)];
    // 10 s is the start of the second window, not the end of the first.
    let auctions: Vec<(i64, i64)> = vec![(1, 9_999), (1, 10_000), (3, 19_000), (3, 13_000), (2, 25_000)];
    let p = |rows: &[(i64, &str, i64)]| {
        batch(
            &person,
            &rows.iter().map(|(i, n, t)| json!({"id": i, "name": n, "dateTime": t})).collect::<Vec<_>>(),
        )
    };
    let a = |rows: &[(i64, i64)]| {
        batch(&auction, &rows.iter().map(|(s, t)| json!({"seller": s, "dateTime": t})).collect::<Vec<_>>())
    };
    let events = [
        Event::Batch(0, p(&persons[..2])),
        Event::Batch(1, a(&auctions[..2])),
        Event::Watermark(9_998),
        Event::Watermark(9_999),
        Event::Batch(0, p(&persons[2..])),
        Event::Batch(1, a(&auctions[2..])),
        Event::Watermark(END_OF_TIME),
    ];
    // Independently: a person row joins each auction of its seller in the same 10 s window.
    let window = |t: i64| t - t % 10_000;
    let mut expected = Vec::new();
    for (id, name, t) in &persons {
        let partners = auctions.iter().filter(|(s, at)| s == id && window(*at) == window(*t)).count();
        let start = seconds_timestamp(window(*t));
        for _ in 0..partners.max(1) {
            expected.push(json!({"id": id, "name": name, "window_start": start}));
        }
    }
    // Matches are emitted as soon as both rows are there; a row without partner when the
    // watermark passes its window's end.
    let mut out = run(&mut processor, &events[..3]);
    assert_eq!(
        rows(&out),
        sorted(vec![json!({"id": 1, "name": "ann", "window_start": seconds_timestamp(0)})])
    );
    let closed = run(&mut processor, &events[3..4]);
    let bob = json!({"id": 2, "name": "bob", "window_start": seconds_timestamp(0)});
    assert_eq!(rows(&closed), sorted(vec![bob]), "bob has no auction in the first window");
    out.extend(closed);
    out.extend(run(&mut processor, &events[4..]));
    assert_eq!(rows(&out), sorted(expected));
}

/// A TUMBLE window join snapshotted mid-stream (windows still open, rows of both sides kept)
/// and restored on one and on two instances by key-group ownership emits what an
/// uninterrupted run does: each match once.
#[test]
fn window_join_restored_on_one_and_two_workers_equals_an_uninterrupted_run() {
    let person = schema(&[("id", DataType::Int64), ("name", DataType::Utf8), ("date_time", ts())]);
    let auction = schema(&[("id", DataType::Int64), ("seller", DataType::Int64), ("date_time", ts())]);
    let inputs = vec![
        SqlInput { table: "person".into(), schema: Arc::clone(&person) },
        SqlInput { table: "auction".into(), schema: Arc::clone(&auction) },
    ];
    let sql = "SELECT P.id, P.name, A.id AS auction, P.window_start FROM \
        (SELECT * FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '1' SECOND))) P \
        JOIN (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '1' SECOND))) A \
        ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end";
    // Persons 0..40 at 100 ms apart; each auction's seller is a recent person (some in the
    // same window, some not), arriving in batches of both sides interleaved with watermarks.
    let persons: Vec<(i64, i64)> = (0..40).map(|i| (i, i * 100 + 50)).collect();
    let auctions: Vec<(i64, i64, i64)> =
        (0..120).map(|i| (1000 + i, (i / 3 + i % 4) % 40, i * 33 + 90)).collect();
    let mut events = Vec::new();
    for step in 0..10 {
        let p: Vec<Value> = persons[step * 4..step * 4 + 4]
            .iter()
            .map(|(id, t)| json!({"id": id, "name": format!("p{id}"), "date_time": t}))
            .collect();
        let a: Vec<Value> = auctions[step * 12..step * 12 + 12]
            .iter()
            .map(|(id, seller, t)| json!({"id": id, "seller": seller, "date_time": t}))
            .collect();
        events.push(Event::Batch(1, batch(&auction, &a)));
        events.push(Event::Batch(0, batch(&person, &p)));
        events.push(Event::Watermark(step as i64 * 400 - 500));
    }
    events.push(Event::Watermark(END_OF_TIME));
    let window = |t: i64| t - t % 1000;
    let mut expected = Vec::new();
    for (id, t) in &persons {
        for (auction, seller, at) in &auctions {
            if seller == id && window(*at) == window(*t) {
                let start = seconds_timestamp(window(*t));
                expected.push(
                    json!({"id": id, "name": format!("p{id}"), "auction": auction, "window_start": start}),
                );
            }
        }
    }
    let expected = sorted(expected);
    assert!(expected.len() > 20, "{expected:?}");
    let mut whole = planned(sql, &inputs, &PlanOptions::default());
    assert_eq!(rows(&run(&mut whole, &events)), expected);

    for split in [8, 13, 16] {
        let (before, after) = events.split_at(split);
        let mut first = planned(sql, &inputs, &PlanOptions::default());
        let out = run(&mut first, before);
        let states = snapshot(&mut first, DEFAULT_CHUNK_BYTES);
        assert!(!states.is_empty());
        for peers in [1, 2] {
            let mut resumed = out.clone();
            resumed.extend(resume_on_workers(peers, &first, states.clone(), after, None));
            assert_eq!(rows(&resumed), expected, "snapshot after {split} events, {peers} workers");
        }
    }
}

/// A millisecond timestamp as arrow-json writes it.
fn seconds_timestamp(ms: i64) -> String {
    let seconds = ms / 1000;
    format!("1970-01-01T00:00:{seconds:02}")
}

// ---- lookup join ----

/// A lookup table over a batch, counting the keys it is asked for.
struct BatchTable {
    rows: RecordBatch,
    asked: AtomicUsize,
}

impl LookupTable for BatchTable {
    fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }

    fn key_column(&self) -> &str {
        "id"
    }

    fn lookup(&self, keys: &dyn Array) -> sluice_runtime::Result<RecordBatch> {
        self.asked.fetch_add(keys.len(), Ordering::Relaxed);
        let keys = keys.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        let ids = self.rows.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        let wanted: Vec<u32> = (0..ids.len())
            .filter(|i| keys.iter().flatten().any(|k| k == ids.value(*i)))
            .map(|i| i as u32)
            .collect();
        Ok(arrow::compute::take_record_batch(&self.rows, &arrow::array::UInt32Array::from(wanted)).unwrap())
    }
}

fn lookup_setup() -> (Vec<SqlInput>, PlanOptions, Arc<BatchTable>) {
    let customers = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
    let rows = batch(&customers, &[json!({"id": 1, "name": "ann"}), json!({"id": 2, "name": "bob"})]);
    let table = Arc::new(BatchTable { rows, asked: AtomicUsize::new(0) });
    let orders = schema(&[("order_id", DataType::Int64), ("customer_id", DataType::Int32)]);
    let options = PlanOptions {
        lookups: vec![SqlLookup { table: "customers".into(), source: table.clone() }],
        ..PlanOptions::default()
    };
    (vec![SqlInput { table: "orders".into(), schema: orders }], options, table)
}

fn orders_batch(inputs: &[SqlInput]) -> RecordBatch {
    let rows: Vec<Value> = [(10, Some(1)), (11, Some(3)), (12, None), (13, Some(2)), (14, Some(1))]
        .iter()
        .map(|(o, c)| json!({"order_id": o, "customer_id": c}))
        .collect();
    batch(&inputs[0].schema, &rows)
}

#[test]
fn lookup_join_enriches_rows_and_caches_keys() {
    let (inputs, options, table) = lookup_setup();
    let sql = "SELECT o.order_id, c.name FROM orders AS o \
               JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.customer_id = c.id";
    let mut processor = planned(sql, &inputs, &options);
    assert!(!processor.is_stateful());
    let out = run(&mut processor, &[Event::Batch(0, orders_batch(&inputs))]);
    let expected = sorted(vec![
        json!({"order_id": 10, "name": "ann"}),
        json!({"order_id": 13, "name": "bob"}),
        json!({"order_id": 14, "name": "ann"}),
    ]);
    assert_eq!(rows(&out), expected);
    assert_eq!(table.asked.load(Ordering::Relaxed), 3, "distinct non-NULL keys 1, 3, 2");
    let out = run(&mut processor, &[Event::Batch(0, orders_batch(&inputs))]);
    assert_eq!(rows(&out), expected);
    assert_eq!(table.asked.load(Ordering::Relaxed), 3, "hits and misses come from the cache");
}

#[test]
fn left_lookup_join_without_system_time_keeps_unmatched_rows() {
    let (inputs, options, _) = lookup_setup();
    let sql = "SELECT o.order_id, c.name FROM orders o LEFT JOIN customers c \
               ON o.customer_id = c.id AND c.name <> 'bob'";
    let mut processor = planned(sql, &inputs, &options);
    let out = run(&mut processor, &[Event::Batch(0, orders_batch(&inputs))]);
    let expected = sorted(vec![
        json!({"order_id": 10, "name": "ann"}),
        json!({"order_id": 11}),
        json!({"order_id": 12}),
        json!({"order_id": 13}),
        json!({"order_id": 14, "name": "ann"}),
    ]);
    assert_eq!(rows(&out), expected);
}

// ---- diagnostics ----

#[test]
fn unsupported_joins_are_explained() {
    let inputs = interval_inputs();
    let full = error("SELECT a.x FROM a FULL JOIN b ON a.k = b.k", &inputs);
    assert!(full.message.contains("FULL OUTER JOIN"), "{}", full.message);
    assert_eq!(full.location.map(|l| (l.line, l.column)), Some((1, 19)));

    let no_equality = error("SELECT a.x FROM a JOIN b ON a.ts < b.ts", &inputs);
    assert!(no_equality.message.contains("at least one equality"), "{}", no_equality.message);

    let outer = error("SELECT a.x, b.y FROM a LEFT JOIN b ON a.k = b.k", &inputs);
    assert!(outer.message.contains("retracted"), "{}", outer.message);
    assert!(outer.suggestion.as_deref().unwrap_or("").contains("INTERVAL"));

    let one_bound = error("SELECT a.x FROM a LEFT JOIN b ON a.k = b.k AND a.ts > b.ts", &inputs);
    assert!(one_bound.message.contains("lower and an upper bound"), "{}", one_bound.message);

    let grouped = error("SELECT a.k, count(*) FROM a JOIN b ON a.k = b.k GROUP BY a.k", &inputs);
    assert!(grouped.message.contains("of joined rows is not supported"), "{}", grouped.message);

    let mut three = interval_inputs();
    three.push(SqlInput { table: "c".into(), schema: Arc::clone(&three[0].schema) });
    let chained = error("SELECT a.x FROM a JOIN b ON a.k = b.k JOIN c ON b.k = c.k", &three);
    assert!(chained.message.contains("more than two"), "{}", chained.message);
}

#[test]
fn lookup_join_must_use_the_table_key() {
    let (inputs, options, _) = lookup_setup();
    let sql = "SELECT o.order_id FROM orders o JOIN customers c ON o.order_id = c.name";
    let diagnostics = plan(sql, &inputs, &options).expect_err(sql);
    assert!(diagnostics[0].message.contains("key column \"id\""), "{:?}", diagnostics);
    let alone = plan("SELECT name FROM customers", &inputs, &options).expect_err("alone");
    assert!(alone[0].message.contains("only be read in a lookup join"), "{alone:?}");
}

#[test]
fn snapshot_key_groups_are_those_of_the_exchange_hashes() {
    let (auctions, persons) = q3_data();
    let mut processor = planned(Q3, &nexmark_inputs(), &PlanOptions::default());
    run(&mut processor, &q3_events(&auctions, &persons));
    let groups: BTreeSet<u32> =
        snapshot(&mut processor, DEFAULT_CHUNK_BYTES).iter().map(|s| s.key_group).collect();
    let mut hashed = BTreeSet::new();
    for event in q3_events(&auctions, &persons) {
        if let Event::Batch(input, batch) = event {
            let mut hashes = Vec::new();
            processor.key_by()[input].hash_rows(&batch, &mut hashes).unwrap();
            hashed.extend(hashes.into_iter().map(|h| key_group(h) as u32));
        }
    }
    assert!(!groups.is_empty());
    assert!(groups.is_subset(&hashed), "{groups:?} not in {hashed:?}");
}
