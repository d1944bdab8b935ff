//! The PostgreSQL sink and lookup table against the real PostgreSQL on 127.0.0.1:5432
//! (database `test`, user `postgres`, trust auth). Each test works in a schema of its own,
//! dropped at the end. Without PostgreSQL these tests fail, naming it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use serde_json::{Value, json};
use sluice_connectors::{LookupRequest, build_lookup};
use sluice_runtime::connector::SinkContext;
use sluice_runtime::processor::LookupTable;
use sluice_spec::{DataType as SpecType, FieldSpec};
use sqlx::{AssertSqlSafe, Row};

use crate::support::*;

/// The test database.
pub const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own in the test database, dropped when this goes.
pub struct Pg {
    runtime: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
    pub schema: String,
}

impl Pg {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let pool = runtime
            .block_on(sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(URL))
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is needed at {URL} (user postgres, trust auth) and cannot be reached: {e}")
            });
        let schema = format!("sluice_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pg = Pg { runtime, pool, schema };
        pg.execute(&format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", pg.schema));
        pg
    }

    /// `schema.name`.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    pub fn execute(&self, sql: &str) {
        self.runtime
            .block_on(sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The rows of `sql` as JSON objects, sorted.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let wrapped = format!("SELECT row_to_json(t)::text FROM ({sql}) t");
        let rows = self
            .runtime
            .block_on(sqlx::query(AssertSqlSafe(wrapped)).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut rows: Vec<String> = rows.iter().map(|row| normalized(&row.get::<String, _>(0))).collect();
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

/// A JSON object with every number written as a float, so that `1` and `1.0` compare equal.
fn normalized(json: &str) -> String {
    fn floats(value: Value) -> Value {
        match value {
            Value::Number(n) => n.as_f64().map_or(Value::Number(n), |f| json!(f)),
            Value::Array(items) => Value::Array(items.into_iter().map(floats).collect()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, floats(v))).collect()),
            other => other,
        }
    }
    floats(serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))).to_string()
}

fn sorted_normalized(rows: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = rows.iter().map(|row| normalized(row)).collect();
    rows.sort();
    rows
}

fn schema_of(fields: &[(&str, DataType, bool)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields.iter().map(|(n, t, null)| Field::new(*n, t.clone(), *null)).collect::<Vec<_>>(),
    ))
}

fn people_schema() -> SchemaRef {
    schema_of(&[
        ("id", DataType::Int64, false),
        ("name", DataType::Utf8, true),
        ("score", DataType::Float64, true),
    ])
}

fn people(rows: &[(i64, Option<&str>, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        people_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// The rows of batches as the JSON PostgreSQL's `row_to_json` gives, sorted.
fn expected_people(rows: &[(i64, Option<&str>, f64)]) -> Vec<String> {
    let mut rendered: Vec<String> = rows
        .iter()
        .map(|(id, name, score)| normalized(&json!({"id": id, "name": name, "score": score}).to_string()))
        .collect();
    rendered.sort();
    rendered
}

fn context(
    index: usize,
    schema: SchemaRef,
    checkpointing: bool,
    restore: Option<Vec<Vec<u8>>>,
) -> SinkContext {
    let mut context = crate::support::sink_context(index, 2, schema);
    context.checkpointing = checkpointing;
    context.restore = restore.map(Arc::new);
    context
}

fn rows_of(count: i64, offset: i64) -> Vec<(i64, Option<&'static str>, f64)> {
    (offset..offset + count)
        .map(|i| {
            (i, if i % 3 == 0 { None } else { Some(["ann", "bob", "cy"][i as usize % 3]) }, i as f64 / 4.0)
        })
        .collect()
}

#[test]
fn insert_creates_the_table_and_writes_every_row_in_batches() {
    let pg = Pg::new();
    let table = pg.table("people");
    let sink =
        sink("postgres", json!({"url": URL, "table": table, "create_table": true, "batch_size": 3}), base());
    let mut writer = sink.open(context(0, people_schema(), false, None)).expect("open");
    let all = rows_of(11, 0);
    writer.write(&people(&all[..4])).unwrap();
    writer.epoch_complete(1).unwrap();
    assert_eq!(
        pg.rows(&format!("SELECT * FROM {table}")),
        expected_people(&all[..4]),
        "written at the epoch's end"
    );
    writer.write(&people(&all[4..])).unwrap();
    writer.finish().unwrap();
    assert_eq!(pg.rows(&format!("SELECT * FROM {table}")), expected_people(&all));
    let columns = pg.rows(&format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = '{}' AND table_name = 'people'",
        pg.schema
    ));
    assert_eq!(
        columns,
        [
            r#"{"column_name":"id","data_type":"bigint","is_nullable":"NO"}"#,
            r#"{"column_name":"name","data_type":"text","is_nullable":"YES"}"#,
            r#"{"column_name":"score","data_type":"double precision","is_nullable":"YES"}"#,
        ]
    );
}

#[test]
fn upsert_keeps_the_last_row_of_each_key_within_and_across_batches() {
    let pg = Pg::new();
    let table = pg.table("scores");
    pg.execute(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text, score double precision)"));
    pg.execute(&format!("INSERT INTO {table} VALUES (100, 'old', 1.0), (1, 'old', 1.0)"));
    let sink = sink("postgres", json!({"url": URL, "table": table, "mode": "upsert", "key": ["id"]}), base());
    let mut writer = sink.open(context(0, people_schema(), false, None)).expect("open");
    let first: Vec<_> = (0..20).map(|i| (i % 7, Some("a"), i as f64)).collect();
    let second: Vec<_> = (0..10).map(|i| (i % 4, Some("b"), 100.0 + i as f64)).collect();
    writer.write(&people(&first)).unwrap();
    writer.write(&people(&second)).unwrap();
    writer.finish().unwrap();
    let mut expected: BTreeMap<i64, (Option<&str>, f64)> = BTreeMap::from([(100, (Some("old"), 1.0))]);
    for (id, name, score) in first.iter().chain(&second) {
        expected.insert(*id, (*name, *score));
    }
    let expected: Vec<_> = expected.into_iter().map(|(id, (name, score))| (id, name, score)).collect();
    assert_eq!(pg.rows(&format!("SELECT * FROM {table}")), expected_people(&expected));
}

#[test]
fn each_checkpoint_is_written_once_however_often_it_is_committed_or_restored() {
    let pg = Pg::new();
    let table = pg.table("events");
    let options = json!({"url": URL, "table": table, "create_table": true});
    let all = rows_of(30, 0);
    let count = |pg: &Pg| pg.rows(&format!("SELECT * FROM {table}"));

    let first_run = sink("postgres", options.clone(), base());
    let mut worker0 = first_run.open(context(0, people_schema(), true, None)).expect("open");
    let mut worker1 = first_run.open(context(1, people_schema(), true, None)).expect("open");
    worker0.write(&people(&all[0..5])).unwrap();
    worker1.write(&people(&all[5..10])).unwrap();
    worker0.epoch_complete(3).unwrap();
    assert!(count(&pg).is_empty(), "nothing is visible before its checkpoint commits");
    let prepared0 = worker0.prepare(1).unwrap();
    let prepared1 = worker1.prepare(1).unwrap();
    worker0.commit(1).unwrap();
    worker0.commit(1).unwrap();
    worker1.commit(1).unwrap();
    assert_eq!(count(&pg), expected_people(&all[0..10]));
    // Checkpoint 2 is prepared by both; only worker 0 commits before the crash.
    worker0.write(&people(&all[10..15])).unwrap();
    worker1.write(&people(&all[15..20])).unwrap();
    let prepared0_2 = worker0.prepare(2).unwrap();
    let prepared1_2 = worker1.prepare(2).unwrap();
    worker0.commit(2).unwrap();
    // Rows after the checkpoint are lost in the crash: the sources replay them.
    worker0.write(&people(&all[20..25])).unwrap();
    drop((worker0, worker1, first_run, prepared0, prepared1));

    assert_eq!(count(&pg), expected_people(&all[0..15]));
    // A restart from checkpoint 2, twice (the first restart crashes as well).
    for _ in 0..2 {
        let restarted = sink("postgres", options.clone(), base());
        let restore = Some(vec![prepared0_2.clone(), prepared1_2.clone()]);
        let before = count(&pg);
        let other = restarted.open(context(1, people_schema(), true, restore.clone())).expect("open");
        assert_eq!(count(&pg), before, "only worker 0 restores");
        let _writer = restarted.open(context(0, people_schema(), true, restore)).expect("open");
        drop(other);
        assert_eq!(count(&pg), expected_people(&all[0..20]));
    }
    // After the restart, new rows are written once more at a checkpoint of the new run, even
    // one whose id an earlier run used (the checkpoint folder was deleted, say).
    let restarted = sink("postgres", options.clone(), base());
    let mut writer = restarted.open(context(0, people_schema(), true, None)).expect("open");
    writer.write(&people(&all[20..30])).unwrap();
    writer.prepare(1).unwrap();
    writer.commit(1).unwrap();
    writer.finish().unwrap();
    assert_eq!(count(&pg), expected_people(&all));
    let commits = pg.rows(&format!("SELECT worker, checkpoint, rows FROM {}.sluice_sink_commits", pg.schema));
    assert_eq!(
        commits,
        sorted_normalized(&[
            r#"{"worker":0,"checkpoint":1,"rows":10}"#,
            r#"{"worker":0,"checkpoint":1,"rows":5}"#,
            r#"{"worker":0,"checkpoint":2,"rows":5}"#,
            r#"{"worker":1,"checkpoint":1,"rows":5}"#,
            r#"{"worker":1,"checkpoint":2,"rows":5}"#,
        ])
    );
}

#[test]
fn a_checkpoint_that_failed_is_written_with_the_next_one() {
    let pg = Pg::new();
    let table = pg.table("late");
    let sink = sink("postgres", json!({"url": URL, "table": table, "create_table": true}), base());
    let mut writer = sink.open(context(0, people_schema(), true, None)).expect("open");
    let all = rows_of(6, 0);
    writer.write(&people(&all[..3])).unwrap();
    writer.prepare(1).unwrap();
    writer.write(&people(&all[3..])).unwrap();
    // Checkpoint 1 never completes; 2 does and covers it.
    let prepared = writer.prepare(2).unwrap();
    writer.commit(2).unwrap();
    assert_eq!(pg.rows(&format!("SELECT * FROM {table}")), expected_people(&all));
    // Restoring checkpoint 2, which holds both sets, writes nothing again.
    let restarted = sink_again(&table);
    restarted.open(context(0, people_schema(), true, Some(vec![prepared]))).expect("open");
    assert_eq!(pg.rows(&format!("SELECT * FROM {table}")), expected_people(&all));
}

fn sink_again(table: &str) -> Arc<dyn sluice_runtime::connector::Sink> {
    sink("postgres", json!({"url": URL, "table": table}), base())
}

fn base() -> &'static std::path::Path {
    std::path::Path::new(".")
}

/// A batch with a column of each type the sink maps, nulls included.
fn all_types() -> RecordBatch {
    let decimal =
        Decimal128Array::from(vec![Some(12345), None, Some(-5)]).with_precision_and_scale(12, 2).unwrap();
    let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
        Some(vec![]),
    ]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("i8", Arc::new(Int8Array::from(vec![Some(-8), None, Some(127)]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(-16), None, Some(i16::MAX)]))),
        ("i32", Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(32)]))),
        ("u32", Arc::new(UInt32Array::from(vec![Some(u32::MAX), None, Some(0)]))),
        ("u64", Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(1)]))),
        ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.25)]))),
        ("f64", Arc::new(Float64Array::from(vec![Some(1e300), None, Some(-2.5)]))),
        ("flag", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))),
        ("text", Arc::new(StringArray::from(vec![Some("héllo \"q\" \\ ,{}"), None, Some("")]))),
        ("bytes", Arc::new(BinaryArray::from(vec![Some(&[0u8, 255, 10][..]), None, Some(&[][..])]))),
        ("day", Arc::new(Date32Array::from(vec![Some(19_000), None, Some(-1)]))),
        ("at", Arc::new(TimestampMillisecondArray::from(vec![Some(1_700_000_000_123), None, Some(-1)]))),
        ("amount", Arc::new(decimal)),
        ("list", Arc::new(list)),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), *name != "id"))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

#[test]
fn every_mapped_type_round_trips_through_the_sink_and_the_lookup() {
    let pg = Pg::new();
    let table = pg.table("types");
    let batch = all_types();
    let sink = sink("postgres", json!({"url": URL, "table": table, "create_table": true}), base());
    let mut writer = sink.open(context(0, batch.schema(), false, None)).expect("open");
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    // Everything but the list reads back as it was, through a lookup declaring the same types.
    let scalar_fields: Vec<FieldSpec> = vec![
        field("id", SpecType::Int64, false),
        field("i8", SpecType::Int8, true),
        field("i16", SpecType::Int16, true),
        field("i32", SpecType::Int32, true),
        field("u32", SpecType::UInt32, true),
        field("u64", SpecType::UInt64, true),
        field("f32", SpecType::Float32, true),
        field("f64", SpecType::Float64, true),
        field("flag", SpecType::Boolean, true),
        field("text", SpecType::Utf8, true),
        field("bytes", SpecType::Binary, true),
        field("day", SpecType::Date, true),
        field("at", SpecType::Timestamp, true),
        field("amount", SpecType::Decimal { precision: 12, scale: 2 }, true),
    ];
    let lookup = lookup(json!({"url": URL, "table": table, "key": "id"}), Some(&scalar_fields));
    let found = lookup.lookup(&Int64Array::from(vec![1, 2, 3])).unwrap();
    let found = arrow::compute::sort_to_indices(found.column(0), None, None)
        .map(|order| arrow::compute::take_record_batch(&found, &order).unwrap())
        .unwrap();
    let scalar = batch.project(&(0..scalar_fields.len()).collect::<Vec<_>>()).unwrap();
    assert_eq!(found, scalar);
    // Lists are JSON.
    let lists = pg.rows(&format!("SELECT id, list FROM {table}"));
    assert_eq!(
        lists,
        sorted_normalized(&[
            r#"{"id":1,"list":[1, null, 3]}"#,
            r#"{"id":2,"list":null}"#,
            r#"{"id":3,"list":[]}"#
        ])
    );
}

fn lookup(options: Value, schema: Option<&[FieldSpec]>) -> Arc<dyn LookupTable> {
    let request = LookupRequest { name: "customers", options: &options, schema, base_dir: base() };
    match build_lookup("postgres", &request) {
        Ok(table) => table,
        Err(errors) => panic!("{errors:?}"),
    }
}

fn lookup_errors(options: Value, schema: Option<&[FieldSpec]>) -> Vec<String> {
    let request = LookupRequest { name: "customers", options: &options, schema, base_dir: base() };
    match build_lookup("postgres", &request) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn found(table: &dyn LookupTable, keys: &dyn Array) -> Vec<String> {
    sorted_lines(&[table.lookup(keys).expect("lookup")])
}

#[test]
fn lookups_read_the_schema_cache_rows_and_misses_and_see_changes_after_the_ttl() {
    let pg = Pg::new();
    let table = pg.table("customers");
    pg.execute(&format!(
        "CREATE TABLE {table} (id integer PRIMARY KEY, name varchar(20) NOT NULL, credit numeric(8,2)); \
         INSERT INTO {table} VALUES (1, 'ann', 10.5), (2, 'bob', NULL)"
    ));
    let customers = lookup(json!({"url": URL, "table": table, "key": "id", "cache": {"ttl": "1s"}}), None);
    assert_eq!(
        customers
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
            .collect::<Vec<_>>(),
        ["id Int32 false", "name Utf8 false", "credit Decimal128(8, 2) true"]
    );
    assert_eq!(customers.reuse_for(), Duration::ZERO, "callers must not cache on top");
    let keys = Int64Array::from(vec![Some(2), None, Some(99), Some(1), Some(2)]);
    let before = [r#"{"id":1,"name":"ann","credit":10.50}"#, r#"{"id":2,"name":"bob"}"#];
    assert_eq!(found(customers.as_ref(), &keys), before);
    pg.execute(&format!(
        "UPDATE {table} SET name = 'anna' WHERE id = 1; INSERT INTO {table} VALUES (99, 'zed', 1)"
    ));
    assert_eq!(found(customers.as_ref(), &keys), before, "rows and misses come from the cache");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        found(customers.as_ref(), &keys),
        [
            r#"{"id":1,"name":"anna","credit":10.50}"#,
            r#"{"id":2,"name":"bob"}"#,
            r#"{"id":99,"name":"zed","credit":1.00}"#
        ]
    );
    // A query instead of a table, with a text key.
    let by_name = lookup(
        json!({"url": URL, "query": format!("SELECT name, id * 10 AS tens FROM {table}"), "key": "name", "cache": {"ttl": "0s"}}),
        None,
    );
    assert_eq!(
        found(by_name.as_ref(), &StringArray::from(vec!["zed", "nobody"])),
        [r#"{"name":"zed","tens":990}"#]
    );
}

#[test]
fn a_table_that_does_not_match_the_stream_is_refused_at_open_with_every_problem() {
    let pg = Pg::new();
    let table = pg.table("wrong");
    pg.execute(&format!("CREATE TABLE {table} (id text, score double precision, extra int NOT NULL)"));
    let wrong =
        sink("postgres", json!({"url": URL, "table": table, "mode": "upsert", "key": ["id"]}), base());
    let error = wrong.open(context(0, people_schema(), false, None)).err().expect("a mismatch");
    assert_eq!(error.kind(), sluice_runtime::ErrorKind::User);
    assert_eq!(
        error.report(),
        format!(
            "PostgreSQL table {table} at postgres://postgres@127.0.0.1:5432/test: the table does not match the \
             stream: column \"id\" is text in the table but Int64 in the stream (which needs bigint); the table \
             has no column \"name\"; column \"extra\" is NOT NULL without a default, and the stream has no such \
             column. The table has (id text, score double precision, extra integer); change the table or the query"
        )
    );
    let missing = pg.table("missing");
    let error = sink_again(&missing).open(context(0, people_schema(), false, None)).err().expect("no table");
    assert_eq!(
        error.report(),
        format!(
            "PostgreSQL table {missing} at postgres://postgres@127.0.0.1:5432/test does not exist; create it, or \
             set `create_table: true` to create it from the stream's schema"
        )
    );
    let unkeyed = pg.table("unkeyed");
    pg.execute(&format!("CREATE TABLE {unkeyed} (id bigint, name text, score float8)"));
    let sink =
        sink("postgres", json!({"url": URL, "table": unkeyed, "mode": "upsert", "key": ["id"]}), base());
    let error = sink.open(context(0, people_schema(), false, None)).err().expect("no key");
    assert_eq!(
        error.report(),
        format!(
            "PostgreSQL table {unkeyed} at postgres://postgres@127.0.0.1:5432/test: `mode: upsert` needs a primary \
             key or unique index on exactly (\"id\"), and the table has none; add one: ALTER TABLE \"{}\".\"unkeyed\" \
             ADD PRIMARY KEY (\"id\")",
            pg.schema
        )
    );
}

#[test]
fn bad_postgres_configs_get_exact_diagnostics() {
    // SAFETY of the test: a variable name no other test uses.
    let unset = "SLUICE_TEST_POSTGRES_URL_THAT_IS_NOT_SET";
    let sink_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({}),
            vec![
                "options.url: missing required option \"url\"; give `url: postgres://user@host:5432/db`, or `url_env` naming an environment variable that holds it",
                "options.table: missing required option \"table\"",
            ],
        ),
        (
            json!({"url": URL, "url_env": "X", "table": "t", "mode": "merge", "batch_sise": 1}),
            vec![
                "options.batch_sise: unknown option \"batch_sise\"; did you mean \"batch_size\"?",
                "options.mode: unknown variant `merge`, expected `insert` or `upsert`",
            ],
        ),
        (
            json!({"url": URL, "url_env": "X", "table": "a.b.c", "mode": "upsert", "batch_size": 0}),
            vec![
                "options.url_env: give either `url` or `url_env`, not both",
                "options.table: \"a.b.c\" is not a table name; write `name` or `schema.name`",
                "options.key: `mode: upsert` needs `key`; list the columns that identify a row, e.g. `key: [id]`",
                "options.batch_size: must be at least 1",
            ],
        ),
        (
            json!({"url": "mysql://root@localhost/db", "table": "t", "key": ["id", "id"]}),
            vec![
                "options.url: not a PostgreSQL URL: it must start with postgres:// or postgresql://; e.g. postgres://user@host:5432/db",
                "options.key[1]: column \"id\" is named twice",
            ],
        ),
        (
            json!({"url_env": unset, "table": "t", "key": []}),
            vec![
                "options.url_env: environment variable \"SLUICE_TEST_POSTGRES_URL_THAT_IS_NOT_SET\" is not set; export it with the database URL, e.g. postgres://user:password@host:5432/db",
                "options.key: must name at least one column",
            ],
        ),
        (
            json!({"url": URL, "table": "t", "create_table": "yes"}),
            vec!["options.create_table: invalid type: string \"yes\", expected a boolean"],
        ),
    ];
    for (options, expected) in sink_cases {
        assert_eq!(sink_errors("postgres", options.clone()), expected, "sink options {options}");
    }
    let pg = Pg::new();
    let table = pg.table("lookup");
    pg.execute(&format!("CREATE TABLE {table} (id bigint, name text)"));
    let lookup_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"url": URL, "cache": {"ttl": "soon", "max_entries": 0, "size": 1}}),
            vec![
                "options.table: missing required option \"table\"; name a table, or give a `query` whose rows are looked up in",
                "options.key: missing required option \"key\"",
                "options.cache.size: unknown option \"size\"",
            ],
        ),
        (
            json!({"url": URL, "table": table, "query": "SELECT 1", "key": "id", "cache": {"ttl": "soon", "max_entries": 0}}),
            vec![
                "options.query: give either `table` or `query`, not both",
                "options.cache.ttl: invalid duration \"soon\": write a number and a unit, like 500ms, 5s, 2m or 1h",
                "options.cache.max_entries: must be at least 1; set `ttl: 0s` to turn the cache off",
            ],
        ),
        (
            json!({"url": URL, "table": table, "key": "ids"}),
            vec!["options.key: unknown column \"ids\"; did you mean \"id\"?"],
        ),
        (json!({"url": URL, "table": pg.table("nothing"), "key": "id"}), vec![]),
        (json!({"url": URL, "query": "SELECT id, nam FROM nowhere", "key": "id"}), vec![]),
    ];
    for (options, expected) in lookup_cases {
        let errors = lookup_errors(options.clone(), None);
        if expected.is_empty() {
            assert_eq!(errors.len(), 1, "lookup options {options}: {errors:?}");
        } else {
            assert_eq!(errors, expected, "lookup options {options}");
        }
    }
    // Messages that hold PostgreSQL's own words are checked for their start and their cause.
    let nothing = lookup_errors(json!({"url": URL, "table": pg.table("nothing"), "key": "id"}), None);
    assert_eq!(
        nothing,
        [format!(
            "options.table: table {} does not exist (or has no columns) at postgres://postgres@127.0.0.1:5432/test",
            pg.table("nothing")
        )]
    );
    let query = lookup_errors(json!({"url": URL, "query": "SELECT id FROM nowhere", "key": "id"}), None);
    assert_eq!(
        query,
        [
            "options.query: reading the columns of the lookup query: PostgreSQL says: relation \"nowhere\" does not exist"
        ]
    );
    let refused = lookup_errors(
        json!({"url": "postgres://postgres:secret@127.0.0.1:1/test", "table": table, "key": "id"}),
        None,
    );
    assert!(
        refused[0].starts_with("options.url: cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:1/test; check that it runs and the URL is right: "),
        "{refused:?}"
    );
    assert!(!refused[0].contains("secret"), "never the password: {refused:?}");
    let declared = vec![field("id", SpecType::Int64, false), field("email", SpecType::Utf8, true)];
    assert_eq!(
        lookup_errors(json!({"url": URL, "table": table, "key": "id"}), Some(&declared)),
        [format!("schema[1]: table {table} has no column \"email\"")]
    );
}
