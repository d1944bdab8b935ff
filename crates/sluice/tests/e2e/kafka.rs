//! Kafka end to end through the real binary and a real broker (`tansu` on loopback): a window
//! aggregation from a topic into a topic (at-least-once) and into files (exactly-once), killed
//! with SIGKILL and resumed; the broker restarted mid-run; poison records on the topic.
//! Expected results are computed here from the generated events, independently of Sluice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_connectors::testing::{Outgoing, Tansu};

use super::*;

/// Users of the generated clicks.
const USERS: u64 = 20;
/// Event time of the first click, in milliseconds (a whole 10 s window boundary).
const BASE_MS: i64 = 1_767_225_600_000;

/// Click `i`: its user and event time (5 ms apart, up to ±400 ms out of order).
fn click(i: u64) -> (String, i64) {
    let jitter = ((i.wrapping_mul(2_654_435_761) >> 7) % 801) as i64 - 400;
    (format!("u{}", i % USERS), BASE_MS + i as i64 * 5 + jitter)
}

fn produce_clicks(broker: &Tansu, topic: &str, range: std::ops::Range<u64>, poison_every: Option<u64>) {
    // Keyed by user, so every partition gets data all the time (idle partitions stay rare).
    let mut payloads = Vec::new();
    for i in range {
        let (uid, ts) = click(i);
        payloads
            .push((uid.clone(), json!({"uid": uid, "ts": ts, "url": format!("/p/{}", i % 97)}).to_string()));
        if let Some(every) = poison_every
            && i % every == 0
        {
            payloads.push(("u1".to_owned(), format!("{{\"uid\": \"u1\", \"ts\": \"not a number {i}\"}}")));
            payloads.push(("u2".to_owned(), format!("garbage {i}")));
        }
    }
    for chunk in payloads.chunks(5000) {
        let records: Vec<Outgoing<'_>> =
            chunk.iter().map(|(k, p)| (Some(k.as_bytes()), Some(p.as_bytes()), &[][..])).collect();
        broker.produce(topic, &records);
    }
}

/// Clicks per user per 10 s window of clicks `0..count`: (user, window start ms) → count.
fn expected_counts(count: u64) -> BTreeMap<(String, i64), u64> {
    let mut counts = BTreeMap::new();
    for i in 0..count {
        let (uid, ts) = click(i);
        *counts.entry((uid, ts - ts.rem_euclid(10_000))).or_default() += 1;
    }
    counts
}

fn spec(brokers: &str) -> String {
    spec_with(brokers, "")
}

/// The pipeline with extra top-level YAML (e.g. a `dead_letter:` destination).
fn spec_with(brokers: &str, extra: &str) -> String {
    spec_for(brokers, extra, ", stop_at: latest", "")
}

/// The pipeline over a live topic: it never ends by itself, and a partition without records
/// for 2 s stops holding the watermark back.
fn live_spec(brokers: &str) -> String {
    spec_for(brokers, "", "", ", idle_timeout: 2s")
}

fn spec_for(brokers: &str, extra: &str, source_options: &str, watermark_options: &str) -> String {
    format!(
        r#"
name: kafka-clicks
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
{extra}
sources:
  - name: clicks
    connector: kafka
    options: {{brokers: "{brokers}", topic: clicks{source_options}}}
    schema:
      - {{name: uid, type: string, nullable: false}}
      - {{name: ts, type: int64, nullable: false}}
      - {{name: url, type: string}}
    watermark: {{column: ts, max_out_of_orderness: 1s{watermark_options}}}
processors:
  - name: per_user
    inputs: [clicks]
    sql: |
      SELECT uid, window_start, COUNT(*) AS clicks
      FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
      GROUP BY uid, window_start, window_end
sinks:
  - {{name: to_kafka, connector: kafka, inputs: [per_user], options: {{brokers: "{brokers}", topic: counts, key: uid}}}}
  - {{name: to_file, connector: file, inputs: [per_user], options: {{path: out/counts}}}}
"#
    )
}

/// A row of the aggregation as (user, window start ms, count).
fn parse_row(row: &Value) -> ((String, i64), u64) {
    let start = row["window_start"].as_str().expect("window_start is a timestamp");
    let start = chrono::NaiveDateTime::parse_from_str(start, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("window_start {start}: {e}"))
        .and_utc()
        .timestamp_millis();
    ((row["uid"].as_str().unwrap().to_owned(), start), row["clicks"].as_u64().unwrap())
}

/// The file sink's committed rows: must be exactly the expected counts, each once.
fn assert_files_exact(dir: &Path, expected: &BTreeMap<(String, i64), u64>, what: &str) {
    let rows = read_json_lines(&dir.join("out/counts"));
    let mut seen = BTreeMap::new();
    for row in &rows {
        let (key, count) = parse_row(row);
        assert!(seen.insert(key.clone(), count).is_none(), "{what}: {key:?} committed twice");
    }
    if &seen != expected {
        let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
        let wrong = expected.iter().filter(|(k, v)| seen.get(*k).is_some_and(|s| s != *v)).count();
        panic!(
            "{what}: {} rows in files, expected {}: {missing} missing, {wrong} with wrong counts",
            seen.len(),
            expected.len()
        );
    }
}

/// The Kafka topic's rows: at-least-once, so every expected row at least once, nothing else.
fn assert_topic_complete(broker: &Tansu, expected: &BTreeMap<(String, i64), u64>, what: &str) -> usize {
    let records = broker.consume_all("counts");
    let mut distinct = BTreeSet::new();
    for record in &records {
        let row: Value = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        let (key, count) = parse_row(&row);
        assert_eq!(record.key.as_deref(), Some(key.0.as_bytes()), "{what}: keyed by user");
        assert_eq!(expected.get(&key), Some(&count), "{what}: unexpected row {row}");
        distinct.insert(key);
    }
    assert_eq!(distinct.len(), expected.len(), "{what}: every row reaches the topic at least once");
    records.len() - distinct.len()
}

fn setup(clicks: u64) -> (Tansu, tempfile::TempDir) {
    let broker = Tansu::start().expect("tansu is needed for the Kafka tests (run .ci/run to install it)");
    broker.create_topic("clicks", 3);
    broker.create_topic("counts", 2);
    let produced = Instant::now();
    produce_clicks(&broker, "clicks", 0..clicks, None);
    eprintln!("produced {clicks} clicks in {:?}", produced.elapsed());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&broker.brokers())).unwrap();
    (broker, dir)
}

fn start(dir: &Path) -> Child {
    spawn_run(dir, &["-w", "2"])
}

#[test]
fn kafka_window_aggregation_survives_kill_9_exactly_in_files_and_completely_in_kafka() {
    let clicks = 100_000;
    let (broker, dir) = setup(clicks);
    let expected = expected_counts(clicks);
    let state = dir.path().join("state");
    let seed = 20_261_125;
    let kills = kill_after_checkpoints_then_finish(|| start(dir.path()), &state, seed, 3, 300..900, 0..300);
    let what = format!("seed {seed}, kills (delay after a checkpoint, checkpoint) {kills:?}");
    assert!(!kills.is_empty(), "{what}: the run must be killed at least once");
    assert_files_exact(dir.path(), &expected, &what);
    let duplicates = assert_topic_complete(&broker, &expected, &what);
    eprintln!("{what}; the topic holds {duplicates} duplicate rows (at-least-once)");
}

/// A live topic, read while its producer runs, killed three times, then run until every
/// window is committed.
///
/// On a saturated machine this test found two bugs, both fixed (30 of 30 runs passed with two
/// CPU hogs on two cores afterwards):
/// - one worker's source stopped polling its consumer for good while checkpoints went on,
///   because it went on counting epochs while it waited for a slower worker (see
///   `a_slow_worker_does_not_stall_a_fast_one_for_good` in the runtime's tests);
/// - a slowed-down worker's partitions counted as idle after `idle_timeout` (2 s) although the
///   broker held a backlog for them, so the watermark passed their records, which were then
///   dropped as late; a split with records left to read is no longer idle (see
///   `SourceReader::backlogged`).
#[test]
fn a_live_topic_with_its_producer_running_survives_kill_9_exactly_in_files() {
    let total = 60_000;
    let first = 10_000;
    let broker = Tansu::start().expect("tansu is needed for the Kafka tests (run .ci/run to install it)");
    broker.create_topic("clicks", 3);
    broker.create_topic("counts", 2);
    produce_clicks(&broker, "clicks", 0..first, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), live_spec(&broker.brokers())).unwrap();
    let expected = expected_counts(total);
    let state = dir.path().join("state");
    let seed = 20_261_126;
    let mut schedule = Lcg(seed);
    let mut kills = Vec::new();
    std::thread::scope(|scope| {
        // The rest of the clicks arrive while the pipeline runs and is killed; then one click
        // per user far in the future moves every partition's watermark past the last window.
        let producer = scope.spawn(|| {
            for start in (first..total).step_by(2_000) {
                produce_clicks(&broker, "clicks", start..start + 2_000, None);
                std::thread::sleep(Duration::from_millis(150));
            }
            let closers: Vec<(String, String)> = (0..USERS)
                .map(|user| {
                    let ts = BASE_MS + total as i64 * 5 + 60_000;
                    (format!("u{user}"), json!({"uid": format!("u{user}"), "ts": ts, "url": "/"}).to_string())
                })
                .collect();
            let records: Vec<Outgoing<'_>> =
                closers.iter().map(|(k, p)| (Some(k.as_bytes()), Some(p.as_bytes()), &[][..])).collect();
            broker.produce("clicks", &records);
        });
        for attempt in 0..3 {
            let before = latest_checkpoint(&state);
            let mut child = spawn_run(dir.path(), &["-w", "2"]);
            let deadline = Instant::now() + Duration::from_secs(120);
            while attempt > 0 && latest_checkpoint(&state) <= before {
                assert!(child.try_wait().unwrap().is_none(), "a live pipeline does not end by itself");
                assert!(Instant::now() < deadline, "no checkpoint within two minutes");
                std::thread::sleep(Duration::from_millis(10));
            }
            let delay = Duration::from_millis(if attempt == 0 {
                schedule.next_millis(300, 900)
            } else {
                schedule.next_millis(0, 600)
            });
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
            kills.push((delay, latest_checkpoint(&state)));
        }
        producer.join().unwrap();
    });
    // The last run goes on until every window is committed, then stops gracefully.
    let mut child = spawn_run(dir.path(), &["-w", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let what = format!("seed {seed}, kills (delay, checkpoint) {kills:?}");
    loop {
        let committed = read_json_lines(&dir.path().join("out/counts")).len();
        if committed >= expected.len() {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "{what}: a live pipeline does not end by itself");
        if Instant::now() >= deadline {
            let rows = read_json_lines(&dir.path().join("out/counts"));
            let seen: BTreeSet<(String, i64)> = rows.iter().map(|row| parse_row(row).0).collect();
            let missing: BTreeSet<i64> = expected
                .keys()
                .filter(|k| !seen.contains(*k))
                .map(|(_, start)| (start - BASE_MS) / 1000)
                .collect();
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            let mut on_broker: BTreeMap<i32, usize> = BTreeMap::new();
            for record in broker.consume_all("clicks") {
                *on_broker.entry(record.partition).or_default() += 1;
            }
            panic!(
                "{what}: {committed} of {} windows committed after two minutes; windows missing at \
                 {missing:?} s after the first click; clicks on the broker per partition \
                 {on_broker:?} (of {} produced); stderr of the last run:\n{}",
                expected.len(),
                total + USERS,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    finish_run(child, "the last run, stopped");
    assert_files_exact(dir.path(), &expected, &what);
    let duplicates = assert_topic_complete(&broker, &expected, &what);
    eprintln!("{what}; the topic holds {duplicates} duplicate rows (at-least-once)");
}

#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let clicks = 40_000;
    let (mut broker, dir) = setup(clicks);
    let expected = expected_counts(clicks);
    let state = dir.path().join("state");
    let mut child = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest_checkpoint(&state).is_none() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the broker restart");
        assert!(Instant::now() < deadline, "no checkpoint within two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let checkpointed = Instant::now();
    broker.restart(Duration::from_secs(3));
    finish_run(child, "the run across a broker restart");
    eprintln!(
        "the run went on for {:?} after its first checkpoint, across the restart",
        checkpointed.elapsed()
    );
    assert_files_exact(dir.path(), &expected, "across a broker restart");
    assert_topic_complete(&broker, &expected, "across a broker restart");
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_and_the_pipeline_keeps_going() {
    let broker = Tansu::start().expect("tansu is needed for the Kafka tests (run .ci/run to install it)");
    broker.create_topic("clicks", 2);
    broker.create_topic("counts", 1);
    broker.create_topic("dead-letters", 1);
    let clicks = 5_000;
    produce_clicks(&broker, "clicks", 0..clicks, Some(500));
    let dir = tempfile::tempdir().unwrap();
    let brokers = broker.brokers();
    let destination = format!(
        "dead_letter: {{connector: kafka, options: {{brokers: \"{brokers}\", topic: dead-letters}}}}"
    );
    std::fs::write(dir.path().join("pipeline.yaml"), spec_with(&brokers, &destination)).unwrap();
    finish_run(start(dir.path()), "a run over poison records");
    assert_files_exact(dir.path(), &expected_counts(clicks), "poison records");
    assert!(!dir.path().join("dead-letters").exists(), "letters go to the topic, not the folder");
    let letters: Vec<Value> = broker
        .consume_all("dead-letters")
        .iter()
        .map(|record| serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        letters.len(),
        2 * (clicks / 500) as usize,
        "every poison record is a dead letter: {letters:?}"
    );
    for letter in &letters {
        assert_eq!(
            (&letter["pipeline"], &letter["node"], &letter["kind"]),
            (&json!("kafka-clicks"), &json!("clicks"), &json!("bad_record"))
        );
        assert!(letter["time"].is_string(), "{letter}");
        let raw = letter["raw"].as_str().unwrap();
        let reason = letter["reason"].as_str().unwrap();
        assert!(letter["position"].as_str().unwrap().starts_with("kafka clicks/"), "{letter}");
        if raw.starts_with("garbage") {
            assert!(reason.starts_with("not valid JSON"), "{letter}");
        } else {
            assert!(raw.contains("not a number") && reason.contains("ts"), "{letter}");
        }
    }
}

/// The declared schema of clicks, as a YAML flow sequence.
const CLICK_SCHEMA: &str = "[{name: uid, type: string, nullable: false}, {name: ts, type: int64, nullable: false}, {name: url, type: string}]";

/// The Avro writer schema of clicks in the Avro topic.
const CLICK_AVRO: &str = r#"{"type":"record","name":"Click","fields":[{"name":"uid","type":"string"},{"name":"ts","type":"long"},{"name":"url","type":["null","string"]}]}"#;

/// Avro's variable-length zig-zag encoding of a `long`, written here from the specification
/// so that the test does not trust the encoder under test.
fn avro_long(value: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn avro_string(value: &str, out: &mut Vec<u8>) {
    avro_long(value.len() as i64, out);
    out.extend_from_slice(value.as_bytes());
}

/// Click `i` as the Avro binary encoding of a `CLICK_AVRO` record (every 7th without a url).
fn avro_click(i: u64) -> Vec<u8> {
    let (uid, ts) = click(i);
    let mut out = Vec::new();
    avro_string(&uid, &mut out);
    avro_long(ts, &mut out);
    if i.is_multiple_of(7) {
        avro_long(0, &mut out);
    } else {
        avro_long(1, &mut out);
        avro_string(&format!("/p/{}", i % 97), &mut out);
    }
    out
}

/// A click as the file sink writes it: `url` left out when null.
fn click_row(i: u64, with_url: bool) -> Value {
    let (uid, ts) = click(i);
    if with_url {
        json!({"uid": uid, "ts": ts, "url": format!("/p/{}", i % 97)})
    } else {
        json!({"uid": uid, "ts": ts})
    }
}

/// Poison records on a JSON topic and on an Avro topic of one pipeline: every one is a dead
/// letter in the dead-letter topic with a reason saying what is wrong, and every good record
/// reaches the files exactly once.
#[test]
fn poison_json_and_avro_records_all_land_in_the_dead_letter_topic_with_their_reasons() {
    let broker = Tansu::start().expect("tansu is needed for the Kafka tests (run .ci/run to install it)");
    broker.create_topic("clicks-json", 2);
    broker.create_topic("clicks-avro", 2);
    broker.create_topic("dead-letters", 1);
    let clicks = 2_000u64;
    produce_clicks(&broker, "clicks-json", 0..clicks, Some(400));
    // The Avro topic: good clicks, and every 250th click followed by four kinds of poison.
    let mut payloads: Vec<(Vec<u8>, &str)> = Vec::new();
    for i in 0..clicks {
        payloads.push((avro_click(i), "good"));
        if i % 250 == 0 {
            payloads.push((format!("garbage {i}").into_bytes(), "garbage"));
            let whole = avro_click(i);
            payloads.push((whole[..whole.len() - 3].to_vec(), "truncated"));
            let mut longer = avro_click(i);
            longer.extend_from_slice(b"xyz");
            payloads.push((longer, "trailing"));
            // Another schema: the fields in another order (ts first).
            let (uid, ts) = click(i);
            let mut other = Vec::new();
            avro_long(ts, &mut other);
            avro_string(&uid, &mut other);
            payloads.push((other, "other schema"));
        }
    }
    let records: Vec<Outgoing<'_>> =
        payloads.iter().map(|(p, _)| (None, Some(p.as_slice()), &[][..])).collect();
    broker.produce("clicks-avro", &records);
    let poison_avro = payloads.iter().filter(|(_, kind)| *kind != "good").count();

    let brokers = broker.brokers();
    let spec = format!(
        r#"
name: poison
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
dead_letter: {{connector: kafka, options: {{brokers: "{brokers}", topic: dead-letters}}}}
sources:
  - name: json_clicks
    connector: kafka
    options: {{brokers: "{brokers}", topic: clicks-json, stop_at: latest}}
    schema: {CLICK_SCHEMA}
  - name: avro_clicks
    connector: kafka
    options:
      brokers: "{brokers}"
      topic: clicks-avro
      stop_at: latest
      format: avro
      avro: {{schema: '{CLICK_AVRO}'}}
    schema: {CLICK_SCHEMA}
processors:
  - {{name: from_json, inputs: [json_clicks], sql: "SELECT uid, ts, url FROM json_clicks"}}
  - {{name: from_avro, inputs: [avro_clicks], sql: "SELECT uid, ts, url FROM avro_clicks"}}
sinks:
  - {{name: json_out, connector: file, inputs: [from_json], options: {{path: out/json}}}}
  - {{name: avro_out, connector: file, inputs: [from_avro], options: {{path: out/avro}}}}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec).unwrap();
    finish_run(start(dir.path()), "a run over poison JSON and Avro records");

    let expected_json: Vec<Value> = (0..clicks).map(|i| click_row(i, true)).collect();
    let expected_avro: Vec<Value> = (0..clicks).map(|i| click_row(i, i % 7 != 0)).collect();
    assert_eq!(canonical(&read_json_lines(&dir.path().join("out/json"))), canonical(&expected_json));
    assert_eq!(canonical(&read_json_lines(&dir.path().join("out/avro"))), canonical(&expected_avro));

    let letters: Vec<Value> = broker
        .consume_all("dead-letters")
        .iter()
        .map(|record| serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap())
        .collect();
    let from = |node: &str| letters.iter().filter(|l| l["node"] == json!(node)).collect::<Vec<_>>();
    let (json_letters, avro_letters) = (from("json_clicks"), from("avro_clicks"));
    assert_eq!(json_letters.len(), 2 * (clicks / 400) as usize, "every poison JSON record: {json_letters:?}");
    assert_eq!(avro_letters.len(), poison_avro, "every poison Avro record: {avro_letters:?}");
    assert_eq!(json_letters.len() + avro_letters.len(), letters.len(), "nothing else");
    for letter in &json_letters {
        let (raw, reason) = (letter["raw"].as_str().unwrap(), letter["reason"].as_str().unwrap());
        if raw.starts_with("garbage") {
            assert!(reason.starts_with("not valid JSON"), "{letter}");
        } else {
            assert!(raw.contains("not a number") && reason.contains("ts"), "{letter}");
        }
    }
    let mut reasons = BTreeMap::<&str, usize>::new();
    for letter in &avro_letters {
        assert_eq!(
            (&letter["pipeline"], &letter["kind"]),
            (&json!("poison"), &json!("bad_record")),
            "{letter}"
        );
        assert!(letter["position"].as_str().unwrap().starts_with("kafka clicks-avro/"), "{letter}");
        let reason = letter["reason"].as_str().unwrap();
        assert!(reason.starts_with("not valid Avro for the declared schema"), "{letter}");
        let kind = if reason.contains("ends in the middle") {
            "ends early"
        } else if reason.contains("left over") {
            "left over"
        } else {
            "other"
        };
        *reasons.entry(kind).or_default() += 1;
    }
    let batches = clicks.div_ceil(250) as usize;
    assert_eq!(reasons.get("left over"), Some(&batches), "{reasons:?}: the trailing bytes");
    assert!(reasons.get("ends early").copied().unwrap_or(0) >= batches, "{reasons:?}: the truncated records");
}
