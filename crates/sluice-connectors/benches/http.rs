//! Throughput of the `http` sink: records per second from one writer (one worker) to a local
//! server that answers 200 at once, with one record per request and with JSON-array batches,
//! at a few concurrencies. The records look like Nexmark bids.
//!
//! `cargo bench -p sluice-connectors --bench http` (add `-- --quick` for a short smoke run).

#[path = "../tests/connectors/http_server.rs"]
mod http_server;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::json;
use sluice_connectors::{SinkRequest, build_sink};
use sluice_runtime::connector::{SinkContext, WorkerPosition};
use sluice_runtime::dead_letter::{DeadLetterCounts, DeadLetterSink, OnError};

use http_server::TestServer;

const ROWS_PER_BATCH: usize = 1_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("date_time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

fn bids(start: usize) -> RecordBatch {
    let ids = (start..start + ROWS_PER_BATCH).map(|i| i as i64);
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| 1_000 + i % 97))),
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| 2_000 + i % 1_013))),
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| (i * 7_919) % 100_000))),
        Arc::new(StringArray::from_iter_values(
            ids.clone().map(|i| ["Google", "Facebook", "Baidu", "Apple"][i as usize % 4]),
        )),
        Arc::new(TimestampMillisecondArray::from_iter_values(ids.map(|i| 1_700_000_000_000 + i))),
    ];
    RecordBatch::try_new(schema(), columns).expect("a valid batch")
}

struct Case {
    name: &'static str,
    options: serde_json::Value,
    records: usize,
}

fn run(server: &TestServer, case: &Case, dead: &Path) {
    let mut options = case.options.clone();
    options["url"] = json!(server.url("/bench"));
    let request = SinkRequest { name: "bench", options: &options, base_dir: Path::new(".") };
    let sink = build_sink("http", &request).unwrap_or_else(|errors| panic!("{errors:?}"));
    let context = SinkContext {
        worker: WorkerPosition { index: 0, peers: 1 },
        schema: schema(),
        checkpointing: false,
        restore: None,
        dead_letters: DeadLetterSink::new(
            "bench",
            "bench",
            OnError::DeadLetter,
            dead.to_path_buf(),
            Arc::new(DeadLetterCounts::default()),
        ),
    };
    let batches: Vec<RecordBatch> =
        (0..case.records / ROWS_PER_BATCH).map(|i| bids(i * ROWS_PER_BATCH)).collect();
    let before = server.received();
    let mut writer = sink.open(context).expect("open");
    let started = Instant::now();
    for batch in &batches {
        writer.write(batch).expect("write");
    }
    writer.finish().expect("finish");
    let elapsed = started.elapsed().as_secs_f64();
    let requests = server.received() - before;
    let records = batches.len() * ROWS_PER_BATCH;
    println!(
        "{:<28} {:>9} records {:>8} requests {:>7.2} s {:>10.0} records/s {:>8.0} requests/s",
        case.name,
        records,
        requests,
        elapsed,
        records as f64 / elapsed,
        requests as f64 / elapsed
    );
    assert!(!dead.exists(), "a benchmark request failed; see {}", dead.display());
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let scale = if quick { 10 } else { 1 };
    let server = TestServer::counting();
    let dir = tempfile::tempdir().expect("temp dir");
    let dead = dir.path().join("dead.jsonl");
    let cases = [
        Case { name: "record, concurrency 4", options: json!({}), records: 20_000 / scale },
        Case { name: "record, concurrency 16", options: json!({"concurrency": 16}), records: 20_000 / scale },
        Case {
            name: "batch of 100, concurrency 4",
            options: json!({"body": "batch", "batch_size": 100}),
            records: 500_000 / scale,
        },
        Case {
            name: "batch of 1000, concurrency 4",
            options: json!({"body": "batch", "batch_size": 1000}),
            records: 1_000_000 / scale,
        },
    ];
    for case in &cases {
        run(&server, case, &dead);
    }
}
