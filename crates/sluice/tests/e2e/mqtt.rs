//! MQTT end to end through the real binary and the machine's broker (Mosquitto on
//! `127.0.0.1:1883`): readings from topics through SQL into files and a topic, with poison
//! messages in the dead-letter folder; and a run killed with SIGKILL and resumed, where the
//! persistent session redelivers what no complete checkpoint covered, so nothing is lost.
//! Expected results are computed here, independently of Sluice. Every test uses topics and
//! client ids of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_connectors::testing::mqtt::{self, Subscriber, URL};
use sluice_connectors::testing::unique_name;

use super::*;

/// Reading `i`: `{"id", "name", "value"}` on `<prefix>/in/s<i % 3>`.
fn reading(i: i64) -> Value {
    json!({"id": i, "name": format!("r{i}"), "value": (i * 37) % 100})
}

fn publish_readings(prefix: &str, range: std::ops::Range<i64>) {
    for sensor in 0..3 {
        let payloads: Vec<Vec<u8>> =
            range.clone().filter(|i| i % 3 == sensor).map(|i| reading(i).to_string().into_bytes()).collect();
        mqtt::publish(&format!("{prefix}/in/s{sensor}"), &payloads);
    }
}

/// The rows the pipeline keeps from readings `range`, as the file sink writes them, by id.
fn expected(prefix: &str, range: std::ops::Range<i64>) -> BTreeMap<i64, Value> {
    range
        .filter(|i| (i * 37) % 100 >= 50)
        .map(|i| {
            let topic = format!("{prefix}/in/s{}", i % 3);
            (i, json!({"id": i, "name": format!("R{i}"), "value": (i * 37) % 100, "sensor": topic}))
        })
        .collect()
}

fn spec(prefix: &str, client_id: &str) -> String {
    format!(
        r#"
name: mqtt-readings
epoch_ms: 100
checkpoints: {{interval: 1s, location: state}}
sources:
  - name: readings
    connector: mqtt
    options:
      url: "{URL}"
      topic: "{prefix}/in/+"
      client_id: {client_id}
      session_expiry: 2m
      metadata: {{sensor: topic}}
    schema:
      - {{name: id, type: int64, nullable: false}}
      - {{name: name, type: string}}
      - {{name: value, type: int64, nullable: false}}
      - {{name: sensor, type: string, nullable: false}}
processors:
  - name: hot
    inputs: [readings]
    sql: SELECT id, UPPER(name) AS name, value, sensor FROM readings WHERE value >= 50
sinks:
  - {{name: to_file, connector: file, inputs: [hot], options: {{path: out/hot}}}}
  - {{name: to_mqtt, connector: mqtt, inputs: [hot], options: {{url: "{URL}", topic: "{prefix}/out", qos: 1}}}}
"#
    )
}

fn start(dir: &Path) -> Child {
    spawn_run(dir, &["-w", "2"])
}

/// The file sink's committed rows by id, with how often each was written.
fn committed(dir: &Path) -> BTreeMap<i64, (Value, usize)> {
    let mut rows: BTreeMap<i64, (Value, usize)> = BTreeMap::new();
    for row in read_json_lines(&dir.join("out/hot")) {
        let id = row["id"].as_i64().unwrap();
        rows.entry(id).or_insert((row, 0)).1 += 1;
    }
    rows
}

/// Waits until the files hold every id of `expected` (or a minute passed), then stops the
/// run with SIGTERM and checks that it ended well.
fn stop_when_complete(mut child: Child, dir: &Path, expected: &BTreeMap<i64, Value>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        let rows = committed(dir);
        if expected.keys().all(|id| rows.contains_key(id)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_success(&output, "a run stopped with SIGTERM");
}

#[test]
fn mqtt_readings_through_sql_into_files_and_a_topic_with_poison_messages_as_dead_letters() {
    if !mqtt::available() {
        return;
    }
    let prefix = unique_name("plant");
    let client_id = unique_name("sluice-e2e");
    // The pipeline's session exists before anything is published, so it misses nothing.
    mqtt::create_session(&client_id, &format!("{prefix}/in/+"), 120);
    let output = Subscriber::start(&format!("{prefix}/out"));
    publish_readings(&prefix, 0..600);
    mqtt::publish(
        &format!("{prefix}/in/s1"),
        &[b"{\"id\": 9999, \"value\": \"high\"}".to_vec(), b"not json".to_vec()],
    );
    let expected = expected(&prefix, 0..600);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&prefix, &client_id)).unwrap();
    stop_when_complete(start(dir.path()), dir.path(), &expected);
    let rows = committed(dir.path());
    for (id, (row, times)) in &rows {
        assert_eq!(*times, 1, "row {id} written {times} times");
        assert_eq!(Some(row), expected.get(id), "row {id}");
    }
    assert_eq!(rows.len(), expected.len(), "every kept reading reaches the files");
    let published = output.wait_for(expected.len(), Duration::from_secs(10));
    let mut on_topic: BTreeMap<i64, Value> = BTreeMap::new();
    for message in &published {
        let row: Value = serde_json::from_slice(&message.payload).unwrap();
        let id = row["id"].as_i64().unwrap();
        assert!(on_topic.insert(id, row).is_none(), "row {id} published twice");
    }
    assert_eq!(on_topic, expected, "the topic holds the kept readings");
    let letters = read_json_lines(&dir.path().join("dead-letters/mqtt-readings/readings"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["position"], format!("mqtt {prefix}/in/s1"));
        assert_eq!(letter["kind"], "bad_record");
        let reason = letter["reason"].as_str().unwrap();
        if letter["raw"] == "not json" {
            assert!(reason.starts_with("not valid JSON"), "{letter}");
        } else {
            assert!(reason.contains("value"), "{letter}");
        }
    }
}

#[test]
fn mqtt_after_kill_9_the_session_redelivers_what_no_checkpoint_covered_and_nothing_is_lost() {
    if !mqtt::available() {
        return;
    }
    let prefix = unique_name("crash");
    let client_id = unique_name("sluice-e2e");
    mqtt::create_session(&client_id, &format!("{prefix}/in/+"), 120);
    publish_readings(&prefix, 0..450);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&prefix, &client_id)).unwrap();
    let state = dir.path().join("state");
    let seed = 20_261_127;
    let mut schedule = Lcg(seed);
    let mut child = start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest_checkpoint(&state).is_none() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended by itself");
        assert!(Instant::now() < deadline, "no checkpoint within a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
    let delay = schedule.next_millis(0, 300);
    std::thread::sleep(Duration::from_millis(delay));
    child.kill().unwrap();
    child.wait().unwrap();
    let before = committed(dir.path()).len();
    // Readings published while the pipeline is down wait in its session.
    publish_readings(&prefix, 450..700);
    let expected = expected(&prefix, 0..700);
    stop_when_complete(start(dir.path()), dir.path(), &expected);
    let rows = committed(dir.path());
    let missing: Vec<&i64> = expected.keys().filter(|id| !rows.contains_key(id)).collect();
    assert!(missing.is_empty(), "seed {seed}, kill {delay} ms after a checkpoint: lost {missing:?}");
    for (id, (row, _)) in &rows {
        assert_eq!(Some(row), expected.get(id), "row {id}");
    }
    let duplicates: usize = rows.values().map(|(_, times)| times - 1).sum();
    eprintln!(
        "seed {seed}, kill {delay} ms after a checkpoint: {before} rows committed before the kill, {} after; \
         {duplicates} written twice (at-least-once)",
        rows.len()
    );
}
