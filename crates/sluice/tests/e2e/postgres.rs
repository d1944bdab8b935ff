//! PostgreSQL end to end, against the real server on 127.0.0.1:5432 (database `test`, user
//! `postgres`, trust auth): a checkpointed pipeline writing picked bids and window counts
//! (insert) and running totals (upsert) into PostgreSQL, killed with SIGKILL and resumed, ends
//! with the tables of an uninterrupted run; and a SQL lookup join against a PostgreSQL table sees changes once its
//! cache expires. Without PostgreSQL these tests fail, naming it.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use sluice_connectors::{LookupRequest, build_lookup};
use sluice_runtime::processor::Processor;
use sluice_sql::{PlanOptions, SqlInput, SqlLookup, plan};
use sqlx::{AssertSqlSafe, Row};

use super::*;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own in the test database, dropped when this goes.
struct Pg {
    runtime: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
    schema: String,
}

impl Pg {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let pool = runtime
            .block_on(sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(URL))
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is needed at {URL} (user postgres, trust auth) and cannot be reached: {e}")
            });
        let schema = format!("sluice_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pg = Pg { runtime, pool, schema };
        pg.execute(&format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", pg.schema));
        pg
    }

    fn execute(&self, sql: &str) {
        self.runtime
            .block_on(sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of `table` in this schema as JSON, sorted (duplicates kept).
    fn rows(&self, table: &str) -> Vec<String> {
        let sql = format!("SELECT row_to_json(t)::text FROM {}.{table} t", self.schema);
        let rows = self
            .runtime
            .block_on(sqlx::query(AssertSqlSafe(sql.clone())).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut rows: Vec<String> = rows.iter().map(|row| row.get::<String, _>(0)).collect();
        rows.sort();
        rows
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = self.runtime.block_on(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.pool));
    }
}

/// Nexmark bids at a fixed rate (about 8 s of data): every bid whose price is a multiple of 20
/// and the counts per auction per 1 s tumbling window (appended), and the running count per
/// auction (upserted), checkpointed every second. The picked bids and the totals are committed
/// at every checkpoint; the windows (whose event time does not pass their ends before the
/// sources end) mostly at the final one.
fn spec(schema: &str) -> String {
    format!(
        r#"
name: postgres-recovery
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
sources:
  - name: nx
    connector: nexmark
    options: {{events: 200000, events_per_second: 25000, seed: 11}}
    watermark: {{column: date_time, max_out_of_orderness: 500ms}}
processors:
  - name: bids_per_window
    inputs: [nx.bid]
    sql: |
      SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
      FROM TABLE(TUMBLE(TABLE nx.bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
      GROUP BY auction, window_start, window_end
  - name: totals
    inputs: [nx.bid]
    sql: SELECT auction, COUNT(*) AS bids, SUM(price) AS spent FROM nx.bid GROUP BY auction
  - name: picked
    inputs: [nx.bid]
    sql: SELECT auction, bidder, price, date_time FROM nx.bid WHERE price % 20 = 0
sinks:
  - name: some_bids
    connector: postgres
    inputs: [picked]
    options: {{url_env: SLUICE_TEST_PG_URL, table: {schema}.picked, create_table: true, batch_size: 500}}
  - name: windows
    connector: postgres
    inputs: [bids_per_window]
    options: {{url_env: SLUICE_TEST_PG_URL, table: {schema}.windows, create_table: true, batch_size: 500}}
  - name: running
    connector: postgres
    inputs: [totals]
    options: {{url_env: SLUICE_TEST_PG_URL, table: {schema}.totals, mode: upsert, key: [auction], create_table: true}}
"#
    )
}

fn pipeline_dir(pg: &Pg) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&pg.schema)).unwrap();
    dir
}

fn start(dir: &Path) -> Child {
    run_command(dir, &["-w", "2"]).env("SLUICE_TEST_PG_URL", URL).spawn().expect("start sluice")
}

#[test]
fn a_pipeline_writing_to_postgres_killed_and_resumed_ends_with_the_uninterrupted_tables() {
    let reference = Pg::new();
    let dir = pipeline_dir(&reference);
    finish_run(start(dir.path()), "uninterrupted run");
    let tables = ["picked", "windows", "totals"];
    let expected: Vec<Vec<String>> = tables.iter().map(|table| reference.rows(table)).collect();
    assert!(
        expected.iter().all(|rows| rows.len() > 1000),
        "a meaningful reference: {:?} rows",
        expected.iter().map(Vec::len).collect::<Vec<_>>()
    );

    let pg = Pg::new();
    let dir = pipeline_dir(&pg);
    let state = dir.path().join("state");
    let mut kills = Vec::new();
    // Seeded moments after a new checkpoint, so that each run commits something before it dies.
    let mut seed = 20_261_126u64;
    for attempt in 0..3 {
        let before = latest_checkpoint(&state);
        let mut child = start(dir.path());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = false;
        while latest_checkpoint(&state) <= before {
            if child.try_wait().unwrap().is_some() {
                ended = true;
                break;
            }
            assert!(Instant::now() < deadline, "attempt {attempt}: no checkpoint after a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
        if ended {
            finish_run(child, "a run that ended before its kill");
            break;
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis((seed >> 33) % 900);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        kills.push((latest_checkpoint(&state), delay));
    }
    assert!(kills.len() >= 2, "the pipeline must be killed at least twice: {kills:?}");
    assert!(!pg.rows("picked").is_empty(), "killed runs committed rows before dying");
    finish_run(start(dir.path()), "the final resumed run");
    for (table, expected) in tables.iter().zip(&expected) {
        let rows = pg.rows(table);
        let mut unique = rows.clone();
        unique.dedup();
        assert_eq!(
            (rows.len(), rows.len() - unique.len()),
            (
                expected.len(),
                expected.len() - {
                    let mut e = expected.clone();
                    e.dedup();
                    e.len()
                }
            ),
            "kills {kills:?}: rows and duplicated rows of table {table}"
        );
        assert!(rows == *expected, "kills {kills:?}: table {table} differs from the uninterrupted run's");
    }
}

#[test]
fn a_sql_lookup_join_against_postgres_sees_changes_once_the_cache_expires() {
    let pg = Pg::new();
    pg.execute(&format!(
        "CREATE TABLE {0}.customers (id bigint PRIMARY KEY, name text NOT NULL, tier text); \
         INSERT INTO {0}.customers VALUES (1, 'ann', 'gold'), (2, 'bob', NULL)",
        pg.schema
    ));
    let options = serde_json::json!({
        "url": URL, "table": format!("{}.customers", pg.schema), "key": "id", "cache": {"ttl": "1s"}
    });
    let request =
        LookupRequest { name: "customers", options: &options, schema: None, base_dir: Path::new(".") };
    let table = build_lookup("postgres", &request).unwrap_or_else(|e| panic!("{e:?}"));
    let orders = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
    ]));
    let sql = "SELECT o.order_id, c.name, upper(c.tier) AS tier FROM orders AS o \
               LEFT JOIN customers FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.customer_id = c.id";
    let inputs = [SqlInput { table: "orders".into(), schema: orders.clone() }];
    let options = PlanOptions {
        lookups: vec![SqlLookup { table: "customers".into(), source: table }],
        ..PlanOptions::default()
    };
    let mut processor = plan(sql, &inputs, &options).unwrap_or_else(|d| panic!("{d:?}"));
    let batch = RecordBatch::try_new(
        orders,
        vec![
            Arc::new(Int64Array::from(vec![10, 11, 12, 13])),
            Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3), None])),
        ],
    )
    .unwrap();
    let mut joined = |batch: &RecordBatch| {
        let mut out = Vec::new();
        processor.process(0, batch.clone(), &mut out).unwrap();
        let mut rows: Vec<String> = Vec::new();
        for batch in &out {
            let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
            writer.write(batch).unwrap();
            writer.finish().unwrap();
            rows.extend(String::from_utf8(writer.into_inner()).unwrap().lines().map(str::to_owned));
        }
        rows.sort();
        rows
    };
    let before = [
        r#"{"order_id":10,"name":"ann","tier":"GOLD"}"#,
        r#"{"order_id":11,"name":"bob"}"#,
        r#"{"order_id":12}"#,
        r#"{"order_id":13}"#,
    ];
    assert_eq!(joined(&batch), before);
    pg.execute(&format!(
        "UPDATE {0}.customers SET tier = 'silver' WHERE id = 2; INSERT INTO {0}.customers VALUES (3, 'cy', 'new')",
        pg.schema
    ));
    assert_eq!(joined(&batch), before, "within the time to live, rows and misses come from the cache");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        joined(&batch),
        [
            r#"{"order_id":10,"name":"ann","tier":"GOLD"}"#,
            r#"{"order_id":11,"name":"bob","tier":"SILVER"}"#,
            r#"{"order_id":12,"name":"cy","tier":"NEW"}"#,
            r#"{"order_id":13}"#,
        ]
    );
}
