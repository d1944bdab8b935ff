//! Throughput of the PostgreSQL sink against the local server (127.0.0.1:5432, database
//! `test`): rows per second through the registry's sink, as the runtime drives it, for insert
//! and upsert, without checkpoints (written at epoch ends) and with them (prepared, encoded and
//! committed with the bookkeeping row).
//!
//! `cargo bench -p sluice-connectors --bench postgres_sink` (rows: `SLUICE_BENCH_ROWS`, default
//! 500,000; URL: `SLUICE_BENCH_PG_URL`).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sluice_connectors::{SinkRequest, build_sink};
use sluice_runtime::connector::{SinkContext, WorkerPosition};
use sluice_runtime::dead_letter::{DeadLetterSink, OnError};
use sqlx::AssertSqlSafe;

const BATCH_ROWS: usize = 8192;
/// Rows per epoch, then `epoch_complete`; a checkpoint every 10 epochs.
const EPOCH_ROWS: usize = 50_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Rows `from..to`, keyed `row % keys`.
fn batch(from: usize, to: usize, keys: usize) -> RecordBatch {
    let ids = (from..to).map(|i| (i % keys) as i64);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values((from..to).map(|i| format!("name-{}", i % 977)))),
            Arc::new(Float64Array::from_iter_values((from..to).map(|i| i as f64 * 0.5))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (from..to).map(|i| 1_700_000_000_000 + i as i64),
            )),
        ],
    )
    .unwrap()
}

fn main() {
    let url = std::env::var("SLUICE_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS").ok().and_then(|r| r.parse().ok()).unwrap_or(500_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pool = runtime
        .block_on(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url))
        .unwrap_or_else(|e| panic!("the PostgreSQL sink benchmark needs PostgreSQL at {url}: {e}"));
    let schema_name = format!("sluice_bench_{}", std::process::id());
    let execute = |sql: String| {
        runtime.block_on(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&pool)).unwrap();
    };
    execute(format!("DROP SCHEMA IF EXISTS {schema_name} CASCADE; CREATE SCHEMA {schema_name}"));
    println!(
        "PostgreSQL sink, {rows} rows of 4 columns (bigint, text, double, timestamp), batches of {BATCH_ROWS}, 1 writer"
    );
    println!("{:<8} {:<12} {:>10} {:>12}", "mode", "checkpoints", "seconds", "rows/s");
    for (mode, keys) in [("insert", rows), ("upsert", rows / 2)] {
        for checkpointing in [false, true] {
            let table = format!("{schema_name}.{mode}_{checkpointing}");
            let mut options =
                serde_json::json!({"url": url, "table": table, "mode": mode, "create_table": true});
            if mode == "upsert" {
                options["key"] = serde_json::json!(["id"]);
            }
            let request =
                SinkRequest { name: "bench", options: &options, base_dir: std::path::Path::new(".") };
            let sink = build_sink("postgres", &request).unwrap_or_else(|e| panic!("{e:?}"));
            let context = SinkContext {
                worker: WorkerPosition { index: 0, peers: 1 },
                schema: schema(),
                checkpointing,
                restore: None,
                dead_letters: DeadLetterSink::new(
                    "bench",
                    "bench",
                    OnError::Fail,
                    std::path::PathBuf::from("/dev/null/dead-letters.jsonl"),
                    Default::default(),
                ),
            };
            let mut writer = sink.open(context).unwrap();
            let batches: Vec<RecordBatch> = (0..rows)
                .step_by(BATCH_ROWS)
                .map(|from| batch(from, (from + BATCH_ROWS).min(rows), keys))
                .collect();
            let started = Instant::now();
            let (mut written, mut epoch, mut checkpoint) = (0, 0u64, 0u64);
            for batch in &batches {
                writer.write(batch).unwrap();
                written += batch.num_rows();
                if written >= (epoch as usize + 1) * EPOCH_ROWS {
                    epoch += 1;
                    writer.epoch_complete(epoch).unwrap();
                    if checkpointing && epoch % 10 == 0 {
                        checkpoint += 1;
                        writer.prepare(checkpoint).unwrap();
                        writer.commit(checkpoint).unwrap();
                    }
                }
            }
            if checkpointing {
                checkpoint += 1;
                writer.prepare(checkpoint).unwrap();
                writer.commit(checkpoint).unwrap();
            }
            writer.finish().unwrap();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{mode:<8} {:<12} {seconds:>10.2} {:>12.0}",
                if checkpointing { "every 10 ep" } else { "off" },
                rows as f64 / seconds
            );
        }
    }
    execute(format!("DROP SCHEMA IF EXISTS {schema_name} CASCADE"));
}
