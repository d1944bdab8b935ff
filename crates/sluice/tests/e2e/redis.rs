//! Redis end to end, against the machine's server on 127.0.0.1:6379 (each test in a key space
//! of its own, deleted at the end): a file through SQL into Redis in every mode, with poison
//! records in the dead-letter folder; a SQL lookup join enriching a stream from Redis hashes
//! and JSON values; and a checkpointed pipeline writing hashes and a stream, killed with SIGKILL
//! and resumed, whose hashes equal an uninterrupted run's and whose stream holds every entry.
//! Expected contents are computed here from the inputs.

use std::collections::BTreeMap;
use std::process::Child;

use sluice_connectors::testing::redis::Keyspace;

use super::*;

/// The variable the specs read the URL from.
const URL_ENV: &str = "SLUICE_TEST_REDIS_URL";

/// The `sources` of the specs that read the orders of `write_orders`.
const ORDERS_SOURCE: &str = "sources:
  - name: orders
    connector: file
    options: {path: orders.jsonl}
    schema:
      - {name: id, type: int64, nullable: true}
      - {name: user_id, type: int64}
      - {name: page, type: string}
      - {name: amount, type: float64}
";

/// An order: id (NULL for a poison record), user, page, amount.
type Order = (Option<i64>, i64, &'static str, f64);

fn orders() -> Vec<Order> {
    let pages = ["/", "/shop", "/cart", "/pay", "/help"];
    (0..300)
        .map(|i| {
            let id = if i % 37 == 5 { None } else { Some(i) };
            (id, i % 11, pages[(i % 5) as usize], (i % 40) as f64 * 2.5)
        })
        .collect()
}

fn write_orders(dir: &Path, orders: &[Order]) {
    let lines: Vec<String> = orders
        .iter()
        .map(|(id, user, page, amount)| {
            json!({"id": id, "user_id": user, "page": page, "amount": amount}).to_string()
        })
        .collect();
    std::fs::write(dir.join("orders.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn sinks_spec(prefix: &str) -> String {
    format!(
        r#"
name: redis-sinks
epoch_ms: 50
{ORDERS_SOURCE}processors:
  - name: totals
    inputs: [orders]
    sql: SELECT user_id, COUNT(*) AS orders, SUM(amount) AS spent FROM orders GROUP BY user_id
  - name: big
    inputs: [orders]
    sql: SELECT user_id, page, amount FROM orders WHERE amount >= 90
sinks:
  - name: each
    connector: redis
    inputs: [orders]
    options: {{url_env: {URL_ENV}, key: "{prefix}order:{{id}}", value: page, batch_size: 16}}
  - name: as_json
    connector: redis
    inputs: [totals]
    options: {{url_env: {URL_ENV}, key: "{prefix}json:{{user_id}}", ttl: 10m, batch_size: 3}}
  - name: as_hash
    connector: redis
    inputs: [totals]
    options: {{url_env: {URL_ENV}, mode: hash, key: "{prefix}hash:{{user_id}}"}}
  - name: as_stream
    connector: redis
    inputs: [big]
    options: {{url_env: {URL_ENV}, mode: stream, stream: "{prefix}big"}}
"#
    )
}

#[test]
fn a_pipeline_writes_to_redis_in_every_mode_and_keyless_records_become_dead_letters() {
    let Some(mut redis) = Keyspace::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let orders = orders();
    write_orders(dir.path(), &orders);
    std::fs::write(dir.path().join("pipeline.yaml"), sinks_spec(&redis.prefix)).unwrap();
    let output =
        run_command(dir.path(), &["-w", "2"]).env(URL_ENV, redis.url()).output().expect("run sluice");
    assert_success(&output, "the pipeline");

    // What Redis must hold, computed from the orders.
    let mut expected_values = BTreeMap::new();
    let mut totals: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
    let mut big = Vec::new();
    for (id, user, page, amount) in &orders {
        if let Some(id) = id {
            expected_values.insert(redis.key(&format!("order:{id}")), (*page).to_owned());
        }
        let total = totals.entry(*user).or_default();
        total.0 += 1;
        total.1 += amount;
        if *amount >= 90.0 {
            big.push(vec![
                ("user_id".to_owned(), user.to_string()),
                ("page".to_owned(), (*page).to_owned()),
                ("amount".to_owned(), format!("{amount:?}")),
            ]);
        }
    }
    let mut expected_keys: Vec<String> = expected_values.keys().cloned().collect();
    for user in totals.keys() {
        expected_keys.push(redis.key(&format!("json:{user}")));
        expected_keys.push(redis.key(&format!("hash:{user}")));
    }
    expected_keys.push(redis.key("big"));
    expected_keys.sort();
    assert_eq!(redis.keys(), expected_keys);
    for (key, page) in &expected_values {
        assert_eq!(redis.get(key).as_ref(), Some(page), "{key}");
    }
    for (user, (count, spent)) in &totals {
        let key = redis.key(&format!("json:{user}"));
        let stored: Value = serde_json::from_str(&redis.get(&key).unwrap()).unwrap();
        assert_eq!(stored, json!({"user_id": user, "orders": count, "spent": spent}), "{key}");
        let ttl = redis.pttl(&key);
        assert!(ttl > 540_000 && ttl <= 600_000, "{key}: {ttl} ms left");
        let key = redis.key(&format!("hash:{user}"));
        let fields = BTreeMap::from([
            ("orders".to_owned(), count.to_string()),
            ("spent".to_owned(), format!("{spent:?}")),
        ]);
        assert_eq!(redis.hash(&key), fields, "{key}");
        assert_eq!(redis.pttl(&key), -1, "{key} lives forever");
    }
    let mut entries = redis.stream(&redis.key("big"));
    entries.sort();
    big.sort();
    assert_eq!(entries, big, "every big order once");

    // Orders without an id have no key: dead letters of the sink `each`, with the reason.
    let letters = read_json_lines(&dir.path().join("dead-letters/redis-sinks/each"));
    let poison: Vec<Value> = orders
        .iter()
        .filter(|order| order.0.is_none())
        .map(|(_, user, page, amount)| json!({"user_id": user, "page": page, "amount": amount}))
        .collect();
    assert_eq!(poison.len(), 8);
    let raw: Vec<Value> =
        letters.iter().map(|l| serde_json::from_str(l["raw"].as_str().unwrap()).unwrap()).collect();
    assert_eq!(canonical(&raw), canonical(&poison));
    for letter in &letters {
        assert_eq!(letter["reason"], "column `id`, used by the key, is NULL, so the record has no key");
        assert_eq!(letter["kind"], "undeliverable");
        assert_eq!(letter["node"], "each");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_sql_lookup_join_enriches_orders_from_redis_hashes_and_json_values() {
    let Some(mut redis) = Keyspace::new() else { return };
    // Users 0..8 as hashes (user 3 without a tier, user 5 with a credit that is not a number:
    // skipped as no match), prices of some pages as JSON values.
    let mut users: BTreeMap<i64, (String, Option<&str>)> = BTreeMap::new();
    for id in 0..8 {
        let tier = if id == 3 { None } else { Some(["gold", "silver"][id as usize % 2]) };
        let mut fields = vec![
            ("name", format!("user{id}")),
            ("credit", if id == 5 { "lots".into() } else { format!("{id}.5") }),
        ];
        fields.extend(tier.map(|tier| ("tier", tier.to_owned())));
        let _: i64 = redis.command("HSET", (redis.key(&format!("user:{id}")), fields));
        if id != 5 {
            users.insert(id, (format!("user{id}"), tier));
        }
    }
    let prices = BTreeMap::from([("/", 0.0), ("/shop", 9.99), ("/pay", 1.25)]);
    for (page, price) in &prices {
        let _: () =
            redis.command("SET", (redis.key(&format!("price:{page}")), json!({"price": price}).to_string()));
    }
    let dir = tempfile::tempdir().unwrap();
    let orders = orders();
    write_orders(dir.path(), &orders);
    let spec = format!(
        r#"
name: redis-lookups
{ORDERS_SOURCE}lookups:
  - name: users
    connector: redis
    options: {{url_env: {URL_ENV}, mode: hash, key: "{prefix}user:{{id}}", cache: {{ttl: 1m}}}}
    schema:
      - {{name: id, type: int64}}
      - {{name: name, type: string}}
      - {{name: tier, type: string, nullable: true}}
      - {{name: credit, type: float64, nullable: true}}
  - name: prices
    connector: redis
    options: {{url_env: {URL_ENV}, key: "{prefix}price:{{page}}"}}
    schema:
      - {{name: page, type: string}}
      - {{name: price, type: float64}}
processors:
  - name: with_users
    inputs: [orders]
    sql: |
      SELECT o.id, o.page, u.name, u.tier FROM orders AS o
      LEFT JOIN users FOR SYSTEM_TIME AS OF o.proc_time AS u ON o.user_id = u.id
  - name: enriched
    inputs: [with_users]
    sql: |
      SELECT w.id, w.name, w.tier, p.price FROM with_users AS w
      JOIN prices FOR SYSTEM_TIME AS OF w.proc_time AS p ON w.page = p.page
sinks:
  - {{name: out, connector: file, inputs: [enriched], options: {{path: out, format: jsonl}}}}
"#,
        prefix = redis.prefix
    );
    std::fs::write(dir.path().join("pipeline.yaml"), spec).unwrap();
    let output =
        run_command(dir.path(), &["-w", "2"]).env(URL_ENV, redis.url()).output().expect("run sluice");
    assert_success(&output, "the pipeline");
    // The join, computed here: users left-joined, prices inner-joined.
    let mut expected = Vec::new();
    for (id, user, page, _) in &orders {
        let Some(price) = prices.get(page) else { continue };
        let mut row = serde_json::Map::new();
        if let Some(id) = id {
            row.insert("id".into(), json!(id));
        }
        if let Some((name, tier)) = users.get(user) {
            row.insert("name".into(), json!(name));
            if let Some(tier) = tier {
                row.insert("tier".into(), json!(tier));
            }
        }
        row.insert("price".into(), json!(price));
        expected.push(Value::Object(row));
    }
    let rows = read_json_lines(&dir.path().join("out"));
    assert_eq!(rows.len(), 180, "orders on pages with a price");
    assert_eq!(canonical(&rows), canonical(&expected));
}

/// Nexmark bids at a fixed rate, checkpointed every second: per auction the running count and
/// total (hashes, upserted) and every bid whose price is a multiple of 20 (a stream).
fn replay_spec(prefix: &str) -> String {
    format!(
        r#"
name: redis-recovery
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
sources:
  - name: nx
    connector: nexmark
    options: {{events: 120000, events_per_second: 25000, seed: 7}}
processors:
  - name: totals
    inputs: [nx.bid]
    sql: SELECT auction, COUNT(*) AS bids, SUM(price) AS spent FROM nx.bid GROUP BY auction
  - name: picked
    inputs: [nx.bid]
    sql: SELECT auction, bidder, price, date_time FROM nx.bid WHERE price % 20 = 0
sinks:
  - name: running
    connector: redis
    inputs: [totals]
    options: {{url_env: {URL_ENV}, mode: hash, key: "{prefix}t:{{auction}}", batch_size: 500}}
  - name: some_bids
    connector: redis
    inputs: [picked]
    options: {{url_env: {URL_ENV}, mode: stream, stream: "{prefix}picked"}}
"#
    )
}

/// Hashes by key without the prefix, and stream entries (each its fields in order).
type Contents = (BTreeMap<String, BTreeMap<String, String>>, Vec<Vec<(String, String)>>);

/// Every hash of `redis` and the stream's entries, sorted.
fn contents(redis: &mut Keyspace) -> Contents {
    let mut hashes = BTreeMap::new();
    for key in redis.keys() {
        if key.ends_with(":picked") {
            continue;
        }
        let fields = redis.hash(&key);
        hashes.insert(key[redis.prefix.len()..].to_owned(), fields);
    }
    let mut entries = redis.stream(&redis.key("picked"));
    entries.sort();
    (hashes, entries)
}

fn start(dir: &Path, redis: &Keyspace) -> Child {
    run_command(dir, &["-w", "2"]).env(URL_ENV, redis.url()).spawn().expect("start sluice")
}

#[test]
fn a_pipeline_writing_to_redis_killed_and_resumed_ends_with_the_uninterrupted_hashes_and_every_entry() {
    let Some(mut reference) = Keyspace::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), replay_spec(&reference.prefix)).unwrap();
    finish_run(start(dir.path(), &reference), "uninterrupted run");
    let (expected_hashes, mut expected_entries) = contents(&mut reference);
    expected_entries.dedup();
    assert!(
        expected_hashes.len() > 500 && expected_entries.len() > 1000,
        "a meaningful reference: {} hashes, {} entries",
        expected_hashes.len(),
        expected_entries.len()
    );

    let Some(mut redis) = Keyspace::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), replay_spec(&redis.prefix)).unwrap();
    let seed = 20_260_412;
    let kills = kill_after_checkpoints_then_finish(
        || start(dir.path(), &redis),
        &dir.path().join("state"),
        seed,
        3,
        1500..2500,
        0..700,
    );
    let what = format!("seed {seed}, kills (delay, checkpoint) {kills:?}");
    assert!(!kills.is_empty(), "{what}: the run must be killed at least once");
    let (hashes, mut entries) = contents(&mut redis);
    assert!(hashes == expected_hashes, "{what}: the hashes differ from the uninterrupted run's");
    // At-least-once: every entry is there, some perhaps more than once.
    entries.dedup();
    assert!(
        entries == expected_entries,
        "{what}: the stream's distinct entries differ from the uninterrupted run's"
    );
}
