//! NATS JetStream end to end through the real binary and the machine's server
//! (`127.0.0.1:4222`): a window aggregation from a stream into a stream (with message ids) and
//! into files, killed with SIGKILL and resumed; poison messages into the dead-letter folder.
//! Expected results are computed here from the generated events, independently of Sluice.
//! Every test uses streams and subjects of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Instant;

use serde_json::{Value, json};
use sluice_connectors::testing::nats::{JetStream, URL};
use sluice_connectors::testing::unique_name;

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

/// Publishes clicks `range` on `<prefix>.even` / `<prefix>.odd` by user number, with a poison
/// pair every `poison_every` clicks.
fn publish_clicks(nats: &JetStream, prefix: &str, range: std::ops::Range<u64>, poison_every: Option<u64>) {
    let mut messages = Vec::new();
    for i in range {
        let (uid, ts) = click(i);
        let parity = if (i % USERS).is_multiple_of(2) { "even" } else { "odd" };
        let payload = json!({"uid": uid, "ts": ts, "url": format!("/p/{}", i % 97)}).to_string();
        messages.push((format!("{prefix}.{parity}"), payload.into_bytes(), Vec::new()));
        if let Some(every) = poison_every
            && i % every == 0
        {
            let bad = format!("{{\"uid\": \"u1\", \"ts\": \"not a number {i}\"}}");
            messages.push((format!("{prefix}.odd"), bad.into_bytes(), Vec::new()));
            messages.push((format!("{prefix}.even"), format!("garbage {i}").into_bytes(), Vec::new()));
        }
    }
    nats.publish(&messages);
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

fn spec(stream: &str, prefix: &str, out_subject: &str) -> String {
    format!(
        r#"
name: nats-clicks
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
sources:
  - name: clicks
    connector: nats
    options:
      url: "{URL}"
      stream: {stream}
      subjects: ["{prefix}.even", "{prefix}.odd"]
      stop_at: latest
    schema:
      - {{name: uid, type: string, nullable: false}}
      - {{name: ts, type: int64, nullable: false}}
      - {{name: url, type: string}}
    watermark: {{column: ts, max_out_of_orderness: 1s}}
processors:
  - name: per_user
    inputs: [clicks]
    sql: |
      SELECT uid, window_start, COUNT(*) AS clicks
      FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND))
      GROUP BY uid, window_start, window_end
  - name: keyed
    inputs: [per_user]
    sql: SELECT uid, window_start, clicks, CONCAT(uid, '@', CAST(window_start AS VARCHAR)) AS row_id FROM per_user
sinks:
  - {{name: to_nats, connector: nats, inputs: [keyed], options: {{url: "{URL}", subject: {out_subject}, message_id: row_id}}}}
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

fn start(dir: &Path) -> Child {
    spawn_run(dir, &["-w", "2"])
}

#[test]
fn nats_window_aggregation_survives_kill_9_exactly_in_files_and_in_the_stream() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("CLICKS"), unique_name("clicks"));
    let (out_stream, out_subject) = (unique_name("COUNTS"), unique_name("counts"));
    nats.create_stream(&stream, &[&format!("{prefix}.*")]);
    nats.create_stream(&out_stream, &[&out_subject]);
    let clicks = 150_000;
    let published = Instant::now();
    publish_clicks(&nats, &prefix, 0..clicks, None);
    eprintln!("published {clicks} clicks in {:?}", published.elapsed());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&stream, &prefix, &out_subject)).unwrap();
    let expected = expected_counts(clicks);
    let state = dir.path().join("state");
    let seed = 20_261_126;
    let kills = kill_after_checkpoints_then_finish(|| start(dir.path()), &state, seed, 3, 200..700, 0..400);
    let what = format!("seed {seed}, kills (delay, checkpoint) {kills:?}");
    assert!(!kills.is_empty(), "{what}: the run must be killed at least once");
    assert_files_exact(dir.path(), &expected, &what);
    // The stream: every row once, because repeats carry a message id the stream has seen.
    let mut in_stream = BTreeMap::new();
    let messages = nats.messages(&out_stream);
    for message in &messages {
        let row: Value = serde_json::from_slice(&message.payload).unwrap();
        let (key, count) = parse_row(&row);
        assert_eq!(expected.get(&key), Some(&count), "{what}: unexpected row {row}");
        let id = message.headers.iter().find(|(name, _)| name == "Nats-Msg-Id").map(|(_, v)| v.clone());
        assert_eq!(id.as_deref(), row["row_id"].as_str(), "{what}: the message id is the row_id column");
        assert!(in_stream.insert(key.clone(), count).is_none(), "{what}: {key:?} published twice");
    }
    assert_eq!(in_stream.len(), expected.len(), "{what}: every row reaches the stream");
    eprintln!("{what}: {} rows, each once in files and in the stream", expected.len());
}

#[test]
fn nats_poison_messages_go_to_the_dead_letter_folder_and_the_pipeline_keeps_going() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("POISON"), unique_name("poison"));
    let (out_stream, out_subject) = (unique_name("POUT"), unique_name("pout"));
    nats.create_stream(&stream, &[&format!("{prefix}.*")]);
    nats.create_stream(&out_stream, &[&out_subject]);
    let clicks = 5_000;
    publish_clicks(&nats, &prefix, 0..clicks, Some(500));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&stream, &prefix, &out_subject)).unwrap();
    finish_run(start(dir.path()), "a run over poison messages");
    assert_files_exact(dir.path(), &expected_counts(clicks), "poison messages");
    let letters = read_json_lines(&dir.path().join("dead-letters/nats-clicks/clicks"));
    assert_eq!(
        letters.len(),
        2 * (clicks / 500) as usize,
        "every poison message is a dead letter: {letters:?}"
    );
    for letter in &letters {
        assert_eq!(
            (&letter["pipeline"], &letter["node"], &letter["kind"]),
            (&json!("nats-clicks"), &json!("clicks"), &json!("bad_record"))
        );
        let raw = letter["raw"].as_str().unwrap();
        let reason = letter["reason"].as_str().unwrap();
        let position = letter["position"].as_str().unwrap();
        assert!(position.starts_with(&format!("nats {stream}@")), "{letter}");
        if raw.starts_with("garbage") {
            assert!(reason.starts_with("not valid JSON"), "{letter}");
            assert!(position.ends_with(&format!("({prefix}.even)")), "{letter}");
        } else {
            assert!(raw.contains("not a number") && reason.contains("ts"), "{letter}");
        }
    }
    assert_eq!(nats.messages(&out_stream).len(), expected_counts(clicks).len());
}
