//! The Redis sink and lookup table against the machine's Redis on 127.0.0.1:6379 (each test in
//! a key space of its own, deleted at the end), and against a private `redis-server` stopped
//! and started under a running sink. Expected contents are computed here from the records,
//! independently of the connector, and read back with a plain client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Value, json};
use sluice_connectors::testing::redis::{Keyspace, Server};
use sluice_connectors::{LookupRequest, build_lookup};
use sluice_runtime::processor::LookupTable;
use sluice_spec::{DataType as SpecType, FieldSpec};

use crate::support::*;

/// A click: user, page, amount (all but the user nullable).
type Click = (Option<i64>, Option<&'static str>, Option<f64>);

fn clicks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("page", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

/// Clicks with `at` = 1,700,000,000,000 + the row's position in `rows` seconds.
fn clicks(rows: &[Click]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            (0..rows.len() as i64).map(|i| 1_700_000_000_000 + i * 1000),
        )),
    ];
    RecordBatch::try_new(clicks_schema(), columns).unwrap()
}

/// `at` of row `i` as Arrow's JSON and text write it.
fn at_text(i: usize) -> String {
    chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + i as i64 * 1000)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

fn some_clicks() -> Vec<Click> {
    let pages = ["/", "/shop", "/cart", "/pay"];
    (0..23)
        .map(|i| {
            let page = if i % 5 == 4 { None } else { Some(pages[i % 4]) };
            let amount = if i % 3 == 0 { None } else { Some(i as f64 * 1.25) };
            (Some((i % 6) as i64), page, amount)
        })
        .collect()
}

fn write_all(sink: &dyn sluice_runtime::connector::Sink, batches: &[RecordBatch], dead: &std::path::Path) {
    let mut writer = sink.open(sink_context_with_dead_letters(0, 1, clicks_schema(), dead)).expect("open");
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.epoch_complete(1).unwrap();
    writer.finish().unwrap();
}

fn base() -> &'static std::path::Path {
    std::path::Path::new(".")
}

#[test]
fn set_writes_each_key_s_last_record_as_json_in_batches_and_replays_to_the_same_state() {
    let Some(mut redis) = Keyspace::new() else { return };
    let options =
        json!({"url": redis.url(), "key": format!("{}user:{{user_id}}", redis.prefix), "batch_size": 4});
    let sink = sink("redis", options, base());
    let rows = some_clicks();
    let batches = [clicks(&rows[..10]), clicks(&rows[10..])];
    let dir = tempfile::tempdir().unwrap();
    // Expected: per user, the last click, as JSON without its NULL fields.
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let positions = (0..10).chain(0..13);
    for ((user, page, amount), i) in rows.iter().zip(positions) {
        let mut object = serde_json::Map::new();
        object.insert("user_id".into(), json!(user));
        if let Some(page) = page {
            object.insert("page".into(), json!(page));
        }
        if let Some(amount) = amount {
            object.insert("amount".into(), json!(amount));
        }
        object.insert("at".into(), json!(at_text(i)));
        expected.insert(redis.key(&format!("user:{}", user.unwrap())), Value::Object(object));
    }
    for run in 0..2 {
        // The second run replays every record, as a resumed run would: same final state.
        write_all(sink.as_ref(), &batches, &dir.path().join("dead.jsonl"));
        let keys = redis.keys();
        assert_eq!(keys, expected.keys().cloned().collect::<Vec<_>>(), "run {run}");
        for (key, value) in &expected {
            let stored: Value = serde_json::from_str(&redis.get(key).unwrap()).unwrap();
            assert_eq!(&stored, value, "run {run}: {key}");
            assert_eq!(redis.pttl(key), -1, "no ttl");
        }
    }
    assert!(!dir.path().join("dead.jsonl").exists(), "no dead letters");
}

#[test]
fn set_with_a_value_column_and_a_ttl_writes_the_value_with_an_expiry() {
    let Some(mut redis) = Keyspace::new() else { return };
    let options = json!({
        "url": redis.url(), "key": format!("{}page:{{user_id}}:{{{{x}}}}", redis.prefix), "value": "page", "ttl": "10m"
    });
    let rows: Vec<Click> =
        vec![(Some(1), Some("/a"), None), (Some(2), Some("/b"), Some(1.0)), (Some(1), Some("/c"), None)];
    let dir = tempfile::tempdir().unwrap();
    write_all(sink("redis", options, base()).as_ref(), &[clicks(&rows)], &dir.path().join("dead.jsonl"));
    assert_eq!(redis.keys(), [redis.key("page:1:{x}"), redis.key("page:2:{x}")]);
    assert_eq!(redis.get(&redis.key("page:1:{x}")).as_deref(), Some("/c"));
    assert_eq!(redis.get(&redis.key("page:2:{x}")).as_deref(), Some("/b"));
    for key in redis.keys() {
        let ttl = redis.pttl(&key);
        assert!(ttl > 590_000 && ttl <= 600_000, "{key}: {ttl} ms left");
    }
}

#[test]
fn hash_writes_every_other_column_removes_null_ones_and_expires() {
    let Some(mut redis) = Keyspace::new() else { return };
    let key = format!("{}clicks:{{user_id}}", redis.prefix);
    let options = json!({"url": redis.url(), "mode": "hash", "key": key, "ttl": "1h", "batch_size": 2});
    let rows = some_clicks();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink("redis", options, base());
    write_all(sink.as_ref(), &[clicks(&rows)], &dir.path().join("dead.jsonl"));
    // Expected: per user, the last click's non-null columns other than the key, as text.
    let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (i, (user, page, amount)) in rows.iter().enumerate() {
        let mut fields = BTreeMap::from([("at".to_owned(), at_text(i))]);
        if let Some(page) = page {
            fields.insert("page".into(), (*page).to_owned());
        }
        if let Some(amount) = amount {
            fields.insert("amount".into(), format!("{amount:?}"));
        }
        expected.insert(redis.key(&format!("clicks:{}", user.unwrap())), fields);
    }
    assert_eq!(redis.keys(), expected.keys().cloned().collect::<Vec<_>>());
    for (key, fields) in &expected {
        assert_eq!(&redis.hash(key), fields, "{key}");
        assert_eq!(redis.kind(key), "hash");
        let ttl = redis.pttl(key);
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{key}: {ttl} ms left");
    }
}

#[test]
fn stream_appends_every_record_in_order_and_replays_append_again() {
    let Some(mut redis) = Keyspace::new() else { return };
    let stream = format!("{}events:{{page}}", redis.prefix);
    let options = json!({"url": redis.url(), "mode": "stream", "stream": stream, "batch_size": 5});
    let rows: Vec<Click> = some_clicks().into_iter().filter(|c| c.1.is_some()).collect();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink("redis", options, base());
    let mut expected: BTreeMap<String, Vec<Vec<(String, String)>>> = BTreeMap::new();
    for (i, (user, page, amount)) in rows.iter().enumerate() {
        let mut fields = vec![
            ("user_id".to_owned(), user.unwrap().to_string()),
            ("page".to_owned(), page.unwrap().into()),
        ];
        if let Some(amount) = amount {
            fields.push(("amount".into(), format!("{amount:?}")));
        }
        fields.push(("at".into(), at_text(i)));
        expected.entry(redis.key(&format!("events:{}", page.unwrap()))).or_default().push(fields);
    }
    write_all(sink.as_ref(), &[clicks(&rows)], &dir.path().join("dead.jsonl"));
    assert_eq!(redis.keys(), expected.keys().cloned().collect::<Vec<_>>());
    for (key, entries) in &expected {
        assert_eq!(&redis.stream(key), entries, "{key}");
    }
    // At-least-once: a replay appends the entries again.
    write_all(sink.as_ref(), &[clicks(&rows)], &dir.path().join("dead.jsonl"));
    for (key, entries) in &expected {
        assert_eq!(redis.stream(key), [entries.clone(), entries.clone()].concat(), "{key}");
    }
}

#[test]
fn records_without_a_key_or_refused_for_their_type_are_dead_letters_and_the_rest_is_written() {
    let Some(mut redis) = Keyspace::new() else { return };
    // A list where user 2's hash would go: Redis refuses that one with WRONGTYPE.
    let _: i64 = redis.command("RPUSH", (redis.key("u:2"), "occupied"));
    let options =
        json!({"url": redis.url(), "mode": "hash", "key": format!("{}u:{{user_id}}", redis.prefix)});
    let rows: Vec<Click> = vec![
        (Some(1), Some("/a"), Some(1.5)),
        (None, Some("/poison"), None),
        (Some(2), Some("/b"), None),
        (Some(3), None, Some(3.0)),
        (None, None, None),
    ];
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    write_all(sink("redis", options, base()).as_ref(), &[clicks(&rows)], &dead);
    assert_eq!(redis.keys(), [redis.key("u:1"), redis.key("u:2"), redis.key("u:3")]);
    assert_eq!(redis.hash(&redis.key("u:1")).get("page").map(String::as_str), Some("/a"));
    // Floats as `CAST(x AS VARCHAR)` writes them.
    assert_eq!(redis.hash(&redis.key("u:3")).get("amount").map(String::as_str), Some("3.0"));
    assert_eq!(redis.kind(&redis.key("u:2")), "list", "left alone");
    let letters = dead_letter_lines(&dead);
    let summary: Vec<(String, String, String)> = letters
        .iter()
        .map(|l| {
            (
                l["raw"].as_str().unwrap().to_owned(),
                l["reason"].as_str().unwrap().to_owned(),
                l["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let null_key = "column `user_id`, used by the key, is NULL, so the record has no key".to_owned();
    assert_eq!(
        summary,
        [
            (
                format!(r#"{{"page":"/poison","at":"{}"}}"#, at_text(1)),
                null_key.clone(),
                "undeliverable".into()
            ),
            (format!(r#"{{"at":"{}"}}"#, at_text(4)), null_key, "undeliverable".into()),
            (
                format!(r#"{{"user_id":2,"page":"/b","at":"{}"}}"#, at_text(2)),
                "Redis refused the write: WRONGTYPE Operation against a key holding the wrong kind of value"
                    .into(),
                "undeliverable".into()
            ),
        ]
    );
    assert_eq!(letters[2]["key"], json!(redis.key("u:2")));
    assert_eq!(letters[2]["redis"], json!(redis.url()));
}

#[test]
fn a_lost_connection_is_retried_until_the_server_is_back_and_fails_clearly_after_the_limit() {
    let Some(mut server) = Server::start() else { return };
    let patient = json!({
        "url": server.url(), "key": "k:{user_id}",
        "retry": {"max_attempts": 40, "initial_backoff": "50ms", "max_backoff": "200ms"}
    });
    let rows: Vec<Click> = (0..5).map(|i| (Some(i), Some("/"), None)).collect();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let sink = sink("redis", patient, base());
    let mut writer = sink.open(sink_context_with_dead_letters(0, 1, clicks_schema(), &dead)).expect("open");
    writer.write(&clicks(&rows[..2])).unwrap();
    writer.epoch_complete(1).unwrap();
    server.stop();
    let restarted = std::thread::scope(|scope| {
        let restart = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(700));
            server.spawn();
        });
        writer.write(&clicks(&rows[2..])).unwrap();
        let flushed = writer.epoch_complete(2);
        restart.join().unwrap();
        flushed
    });
    restarted.expect("written once the server is back");
    writer.finish().unwrap();
    let mut connection = server.connect();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("k:*").query(&mut connection).unwrap();
    keys.sort();
    // The restarted server kept nothing: only what was written after it came back.
    assert_eq!(keys, ["k:2", "k:3", "k:4"]);

    let hasty = json!({
        "url": server.url(), "key": "k:{user_id}",
        "retry": {"max_attempts": 3, "initial_backoff": "10ms", "max_backoff": "20ms"}
    });
    let sink = crate::support::sink("redis", hasty, base());
    let mut writer = sink.open(sink_context_with_dead_letters(0, 1, clicks_schema(), &dead)).expect("open");
    server.stop();
    writer.write(&clicks(&rows)).unwrap();
    let error = writer.finish().expect_err("the server is gone");
    let report = error.report();
    let expected =
        format!("writing 5 records: Redis at redis://127.0.0.1:{}/0 failed 3 attempts in ", server.port);
    assert!(report.starts_with(&expected), "{report}");
    assert!(report.contains("giving up (raise `retry.max_attempts` to wait longer)"), "{report}");
    assert_eq!(error.kind(), sluice_runtime::ErrorKind::External);
    assert!(!dead.exists(), "nothing was dead-lettered");
}

#[test]
fn passwords_never_show_in_errors() {
    let Some(redis) = Keyspace::new() else { return };
    let url = redis.url().replace("redis://", "redis://ann:hunter2@");
    let sink = sink("redis", json!({"url": url, "key": "{user_id}"}), base());
    let error = sink.open(sink_context(0, 1, clicks_schema())).err().expect("AUTH fails: no such user");
    let report = error.report();
    assert!(report.starts_with("cannot connect to Redis at redis://ann@127.0.0.1:6379/3; check that it runs and the URL is right: "), "{report}");
    assert!(!report.contains("hunter2"), "{report}");
    let gone = sink_errors("redis", json!({"url": "redis://ann:hunter2@127.0.0.1:6379/x", "key": "{a}"}));
    assert_eq!(gone.len(), 1);
    assert!(gone[0].starts_with("options.url: not a valid Redis URL: "), "{gone:?}");
    assert!(!gone[0].contains("hunter2"), "{gone:?}");
}

fn lookup(options: Value, schema: &[FieldSpec]) -> Arc<dyn LookupTable> {
    let request = LookupRequest { name: "users", options: &options, schema: Some(schema), base_dir: base() };
    match build_lookup("redis", &request) {
        Ok(table) => table,
        Err(errors) => panic!("{errors:?}"),
    }
}

fn user_fields() -> Vec<FieldSpec> {
    vec![
        field("id", SpecType::Int64, false),
        field("name", SpecType::Utf8, false),
        field("tier", SpecType::Utf8, true),
        field("credit", SpecType::Float64, true),
        field("since", SpecType::Timestamp, true),
    ]
}

#[test]
fn lookups_read_hashes_and_json_values_by_key_and_cache_rows_and_misses() {
    let Some(mut redis) = Keyspace::new() else { return };
    for (id, name, tier, credit) in
        [(1, "ann", Some("gold"), "10.5"), (2, "bob", None, "x"), (3, "cy", None, "0")]
    {
        let key = redis.key(&format!("h:{id}"));
        let mut fields = vec![("name", name.to_owned()), ("credit", credit.to_owned())];
        fields.extend(tier.map(|t| ("tier", t.to_owned())));
        fields.push(("since", "2024-03-01T10:00:00".to_owned()));
        let _: i64 = redis.command("HSET", (key, fields));
    }
    let _: () = redis
        .command("SET", (redis.key("j:1"), r#"{"name":"ann","tier":"gold","credit":10.5,"extra":true}"#));
    let _: () = redis.command("SET", (redis.key("j:2"), r#"{"name":"bob","since":"2024-03-01T10:00:00"}"#));
    let _: () = redis.command("SET", (redis.key("j:3"), "not json"));
    let _: () = redis.command("SET", (redis.key("j:4"), r#"{"tier":"no name"}"#));
    let fields = user_fields();
    let hashes = lookup(
        json!({"url": redis.url(), "mode": "hash", "key": format!("{}h:{{id}}", redis.prefix), "cache": {"ttl": "1s"}}),
        &fields,
    );
    let json_values =
        lookup(json!({"url": redis.url(), "key": format!("{}j:{{id}}", redis.prefix)}), &fields);
    assert_eq!(hashes.key_column(), "id");
    assert_eq!(hashes.reuse_for(), Duration::ZERO, "callers must not cache on top");
    // Keys arrive as the join gives them (here int32: cast to the key column's type).
    let keys =
        arrow::array::Int32Array::from(vec![Some(2), None, Some(9), Some(1), Some(3), Some(1), Some(4)]);
    let found = |table: &dyn LookupTable| sorted_lines(&[table.lookup(&keys).expect("lookup")]);
    // Bob's credit "x" is not a float64: skipped, like key 9 that does not exist.
    let from_hashes = [
        r#"{"id":1,"name":"ann","tier":"gold","credit":10.5,"since":"2024-03-01T10:00:00"}"#,
        r#"{"id":3,"name":"cy","credit":0.0,"since":"2024-03-01T10:00:00"}"#,
    ];
    assert_eq!(found(hashes.as_ref()), from_hashes);
    // "not json" and a value without the non-nullable name are skipped.
    assert_eq!(
        found(json_values.as_ref()),
        [
            r#"{"id":1,"name":"ann","tier":"gold","credit":10.5}"#,
            r#"{"id":2,"name":"bob","since":"2024-03-01T10:00:00"}"#
        ]
    );
    let _: i64 = redis.command("HSET", (redis.key("h:2"), "credit", "2.5"));
    let _: i64 = redis.command("HSET", (redis.key("h:9"), "name", "zed"));
    assert_eq!(found(hashes.as_ref()), from_hashes, "rows and misses come from the cache");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        found(hashes.as_ref()),
        [
            r#"{"id":1,"name":"ann","tier":"gold","credit":10.5,"since":"2024-03-01T10:00:00"}"#,
            r#"{"id":2,"name":"bob","credit":2.5,"since":"2024-03-01T10:00:00"}"#,
            r#"{"id":3,"name":"cy","credit":0.0,"since":"2024-03-01T10:00:00"}"#,
            r#"{"id":9,"name":"zed"}"#,
        ]
    );
}

#[test]
fn a_batch_of_keys_is_one_mget() {
    let Some(server) = Server::start() else { return };
    let mut connection = server.connect();
    for id in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("u:{id}"))
            .arg(format!(r#"{{"name":"n{id}"}}"#))
            .query(&mut connection)
            .unwrap();
    }
    let table =
        lookup(json!({"url": server.url(), "key": "u:{id}", "cache": {"ttl": "0s"}}), &user_fields()[..2]);
    let keys = Int64Array::from_iter_values(0..100);
    assert_eq!(table.lookup(&keys).unwrap().num_rows(), 50);
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut connection).unwrap();
    let mget = stats.lines().find(|line| line.starts_with("cmdstat_mget:")).unwrap_or_default();
    assert!(mget.starts_with("cmdstat_mget:calls=1,"), "{stats}");
}

/// Lookup options, declared schema, expected diagnostics.
type LookupCase<'a> = (Value, Option<&'a [FieldSpec]>, Vec<&'a str>);

#[test]
fn bad_redis_configs_get_exact_diagnostics() {
    let unset = "SLUICE_TEST_REDIS_URL_THAT_IS_NOT_SET";
    let url = "redis://127.0.0.1:6379/0";
    let sink_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({}),
            vec![
                "options.url: missing required option \"url\"; give `url: redis://host:6379/0`, or `url_env` naming an environment variable that holds it",
                "options.key: missing required option \"key\"; write a key template such as `user:{user_id}`",
            ],
        ),
        (
            json!({"url": url, "mode": "list", "ttl": 5, "batch_sise": 1}),
            vec![
                "options.batch_sise: unknown option \"batch_sise\"; did you mean \"batch_size\"?",
                "options.mode: unknown variant `list`, expected one of `set`, `hash`, `stream`",
                "options.ttl: invalid type: integer `5`, expected a string",
            ],
        ),
        (
            json!({"url": url, "url_env": "X", "key": "user_id", "stream": "s", "ttl": "soon", "batch_size": 0}),
            vec![
                "options.url_env: give either `url` or `url_env`, not both",
                "options.key: \"user_id\" uses no column, so every record would have one key; write {user_id} for the value of column `user_id`, or e.g. `user:{id}`",
                "options.stream: only applies to `mode: stream`; remove `stream` or change `mode`",
                "options.ttl: invalid duration \"soon\": write a number and a unit, like 500ms, 5s, 2m or 1h",
                "options.batch_size: must be at least 1",
            ],
        ),
        (
            json!({"url": "rediss://cache:6380", "mode": "hash", "key": "u:{id", "value": "v", "ttl": "0s"}),
            vec![
                "options.url: TLS (rediss://) is not supported yet; use redis:// on a trusted network, or a TLS tunnel to the server",
                "options.key: unclosed \"{\" in \"u:{id\"; write {column} for a column's value, or {{ for a brace",
                "options.value: only applies to `mode: set`; remove `value` or change `mode`",
                "options.ttl: must be at least 1ms, found \"0s\"; remove `ttl` to keep keys forever",
            ],
        ),
        (
            json!({"url_env": unset, "mode": "stream", "key": "{id}", "ttl": "1m", "retry": {"max_attempts": 0, "initial_backoff": "1s", "max_backoff": "10ms"}}),
            vec![
                "options.url_env: environment variable \"SLUICE_TEST_REDIS_URL_THAT_IS_NOT_SET\" is not set; export it with the Redis URL, e.g. redis://user:password@host:6379/0",
                "options.key: `mode: stream` appends to the stream named by `stream`, not to keys; remove `key`, or name the stream with `stream: events:{column}`",
                "options.stream: missing required option \"stream\"; name the stream, e.g. `stream: events`",
                "options.ttl: only applies to `mode: set` and `mode: hash`; remove `ttl` or change `mode`",
                "options.retry.max_attempts: must be at least 1 (1 sends each batch once, without retries)",
                "options.retry.max_backoff: 10ms is shorter than initial_backoff (1s); make it at least as long",
            ],
        ),
        (
            json!({"url": "http://cache:6379", "mode": "stream", "stream": "a}b"}),
            vec![
                "options.url: not a Redis URL: it must start with redis://; e.g. redis://127.0.0.1:6379/0, or redis://user:password@host:6379/0",
                "options.stream: unmatched \"}\" in \"a}b\"; write }} for a literal brace",
            ],
        ),
    ];
    for (options, expected) in sink_cases {
        assert_eq!(sink_errors("redis", options.clone()), expected, "sink options {options}");
    }
    let fields = user_fields();
    let with_list =
        [field("id", SpecType::Int64, false), field("tags", SpecType::List(Box::new(SpecType::Utf8)), true)];
    let lookup_cases: Vec<LookupCase> = vec![
        (
            json!({"url": url, "key": "u:{id}"}),
            None,
            vec![
                "schema: a Redis lookup table needs a declared schema: Redis values carry no types; declare `schema:` with the key column and the columns of the values",
            ],
        ),
        (
            json!({"url": url, "mode": "stream", "cache": {"ttl": "soon", "size": 1}}),
            Some(&fields),
            vec!["options.mode: unknown variant `stream`, expected `set` or `hash`"],
        ),
        (
            json!({"url": url, "cache": {"ttl": "soon", "max_entries": 0, "size": 1}}),
            Some(&fields),
            vec![
                "options.key: missing required option \"key\"; write a key template such as `user:{id}`",
                "options.cache.size: unknown option \"size\"",
            ],
        ),
        (
            json!({"url": url, "key": "u:{ids}", "cache": {"ttl": "soon", "max_entries": 0}}),
            Some(&fields),
            vec![
                "options.key: column \"ids\" is not in the schema; did you mean \"id\"?",
                "options.cache.ttl: invalid duration \"soon\": write a number and a unit, like 500ms, 5s, 2m or 1h",
                "options.cache.max_entries: must be at least 1; set `ttl: 0s` to turn the cache off",
            ],
        ),
        (
            json!({"url": url, "key": "u:{id}:{name}", "mode": "hash"}),
            Some(&with_list),
            vec![
                "options.key: a lookup key template uses exactly one column, the lookup key; e.g. `user:{id}`, joined with `ON s.user_id = u.id`",
                "schema[1]: column \"tags\" of type list<string> cannot be read from a hash field (use `mode: set`, with JSON values)",
            ],
        ),
        (json!({"url": url, "key": "u:{id}"}), Some(&with_list), vec![]),
    ];
    for (options, schema, expected) in lookup_cases {
        let request = LookupRequest { name: "users", options: &options, schema, base_dir: base() };
        let errors: Vec<String> = match build_lookup("redis", &request) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errors, expected, "lookup options {options}");
    }
}

#[test]
fn columns_the_stream_lacks_are_refused_at_open() {
    let Some(redis) = Keyspace::new() else { return };
    let cases = [
        (
            json!({"url": redis.url(), "key": "u:{user}"}),
            "options.key names column `user`, which the stream into the Redis sink does not have; its columns are: user_id, page, amount, at",
        ),
        (
            json!({"url": redis.url(), "key": "u:{user_id}", "value": "pages"}),
            "options.value names column `pages`, which the stream into the Redis sink does not have; its columns are: user_id, page, amount, at",
        ),
        (
            json!({"url": redis.url(), "mode": "hash", "key": "{user_id}{page}{amount}{at}"}),
            "`mode: hash` writes the columns the key does not use, and options.key uses every column of the stream; add columns in SQL, or use `mode: set`",
        ),
    ];
    for (options, message) in cases {
        let error = sink("redis", options.clone(), base())
            .open(sink_context(0, 1, clicks_schema()))
            .err()
            .expect("refused");
        assert_eq!(error.report(), message, "{options}");
        assert_eq!(error.kind(), sluice_runtime::ErrorKind::User);
    }
}
