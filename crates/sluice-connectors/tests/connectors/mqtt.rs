//! The MQTT source and sink against the machine's broker (Mosquitto on `127.0.0.1:1883`), each
//! test on topics and client ids of its own; plus the option checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use serde_json::{Value, json};
use sluice_connectors::testing::mqtt::{self, Subscriber, URL};
use sluice_connectors::testing::unique_name;
use sluice_runtime::connector::{SourceReader, SourceStatus, SplitState};
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn schema() -> Vec<FieldSpec> {
    vec![field("id", DataType::Int64, false), field("topic", DataType::Utf8, false)]
}

fn payloads(ids: std::ops::Range<i64>) -> Vec<Vec<u8>> {
    ids.map(|i| json!({"id": i}).to_string().into_bytes()).collect()
}

/// Polls `reader` until it returned `count` rows (or 20 s passed), then 300 ms more so that
/// extra rows would show; returns their ids and topics, in order.
fn read(reader: &mut dyn SourceReader, count: usize) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    let mut out = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(20);
    let mut reached = false;
    while Instant::now() < deadline {
        if !reached && rows.len() >= count {
            reached = true;
            deadline = Instant::now() + Duration::from_millis(300);
        }
        match reader.poll(1000, &mut out).unwrap() {
            SourceStatus::Idle(delay) => std::thread::sleep(delay),
            SourceStatus::Ready => {}
            SourceStatus::Finished => break,
        }
        for batch in out.drain(..) {
            let ids = batch.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            let topics = batch.batch.column(1).as_any().downcast_ref::<StringArray>().unwrap().clone();
            rows.extend(ids.iter().zip(topics.iter()).map(|(i, t)| (i.unwrap(), t.unwrap().to_owned())));
        }
    }
    rows
}

fn ids(rows: &[(i64, String)]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids
}

fn options(topic: &str, client_id: &str) -> Value {
    json!({"url": URL, "topic": topic, "client_id": client_id, "session_expiry": "30s", "metadata": {"topic": "topic"}})
}

#[test]
fn the_source_reads_a_filter_with_topics_and_bad_records_go_to_dead_letters() {
    if !mqtt::available() {
        return;
    }
    let prefix = unique_name("sensors");
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let source = source(
        "mqtt",
        options(&format!("{prefix}/+"), &unique_name("src")),
        Some(&schema()),
        false,
        dir.path(),
    );
    assert!(!source.replayable());
    let mut reader =
        source.open(source_context(0, 2, vec![true], Default::default(), &dead, Arc::default())).unwrap();
    let idle =
        source.open(source_context(1, 2, vec![true], Default::default(), &dead, Arc::default())).unwrap();
    assert_eq!((reader.splits(), idle.splits()), (1, 0), "worker 0 reads");
    mqtt::publish(&format!("{prefix}/a"), &payloads(0..100));
    mqtt::publish(&format!("{prefix}/b"), &[b"{not json".to_vec(), br#"{"id": "x"}"#.to_vec()]);
    mqtt::publish(&format!("{prefix}/b"), &payloads(100..150));
    mqtt::publish(&format!("{prefix}/c/deeper"), &payloads(1000..1001));
    let rows = read(reader.as_mut(), 150);
    assert_eq!(ids(&rows), (0..150).collect::<Vec<_>>());
    for (id, topic) in &rows {
        assert_eq!(topic, &format!("{prefix}/{}", if *id < 100 { "a" } else { "b" }));
    }
    drop(reader);
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["position"], format!("mqtt {prefix}/b"));
    assert_eq!(letters[0]["raw"], "{not json");
    assert!(letters[0]["reason"].as_str().unwrap().starts_with("not valid JSON"), "{letters:?}");
    assert!(letters[1]["reason"].as_str().unwrap().contains("id"), "{letters:?}");
}

fn checkpointing_reader(
    source: &dyn sluice_runtime::connector::Source,
    dead: &std::path::Path,
) -> Box<dyn SourceReader> {
    let mut context = source_context(0, 1, vec![true], Default::default(), dead, Arc::default());
    context.checkpointing = true;
    source.open(context).unwrap()
}

#[test]
fn messages_are_acknowledged_only_after_their_checkpoint_so_a_crash_redelivers_the_rest() {
    if !mqtt::available() {
        return;
    }
    let topic = unique_name("acks");
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let source = source("mqtt", options(&topic, &unique_name("session")), Some(&schema()), false, dir.path());
    let mut first = checkpointing_reader(source.as_ref(), &dead);
    mqtt::publish(&topic, &payloads(0..50));
    assert_eq!(ids(&read(first.as_mut(), 50)), (0..50).collect::<Vec<_>>());
    let checkpoint: Vec<SplitState> = first.snapshot().unwrap();
    mqtt::publish(&topic, &payloads(50..80));
    assert_eq!(ids(&read(first.as_mut(), 30)), (50..80).collect::<Vec<_>>());
    let _uncommitted = first.snapshot().unwrap();
    // The first checkpoint completes; the process dies before the second does.
    first.positions_committed(&checkpoint).unwrap();
    drop(first);
    // Published while the pipeline is down: the persistent session queues them.
    mqtt::publish(&topic, &payloads(80..90));
    let mut second = checkpointing_reader(source.as_ref(), &dead);
    let again = read(second.as_mut(), 40);
    assert_eq!(ids(&again), (50..90).collect::<Vec<_>>(), "what the checkpoint did not cover comes again");
    // This time everything is committed: a third start gets nothing old.
    let all = second.snapshot().unwrap();
    second.positions_committed(&all).unwrap();
    drop(second);
    let mut third = checkpointing_reader(source.as_ref(), &dead);
    mqtt::publish(&topic, &payloads(90..91));
    assert_eq!(ids(&read(third.as_mut(), 1)), [90], "only the new message");
    assert!(!dead.exists());
}

#[test]
fn without_checkpoints_messages_are_acknowledged_as_they_are_read() {
    if !mqtt::available() {
        return;
    }
    let topic = unique_name("noacks");
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let source = source("mqtt", options(&topic, &unique_name("session")), Some(&schema()), false, dir.path());
    let mut first =
        source.open(source_context(0, 1, vec![true], Default::default(), &dead, Arc::default())).unwrap();
    mqtt::publish(&topic, &payloads(0..20));
    assert_eq!(read(first.as_mut(), 20).len(), 20);
    drop(first);
    let mut second =
        source.open(source_context(0, 1, vec![true], Default::default(), &dead, Arc::default())).unwrap();
    mqtt::publish(&topic, &payloads(20..21));
    assert_eq!(ids(&read(second.as_mut(), 1)), [20]);
}

fn rows(ids: std::ops::Range<i64>, topic: impl Fn(i64) -> Option<String>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("topic", ArrowType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter(ids.map(topic))),
        ],
    )
    .unwrap()
}

#[test]
fn the_sink_publishes_every_row_to_its_topic_and_waits_for_the_broker() {
    if !mqtt::available() {
        return;
    }
    let prefix = unique_name("out");
    let subscriber = Subscriber::start(&format!("{prefix}/#"));
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    // Fewer rows per run than Mosquitto queues for one subscriber (1,000 by default), and each
    // run's rows received before the next starts: a subscriber slowed by a busy machine must not
    // make the broker drop what the sink delivered.
    const ROWS: i64 = 900;
    let mut received = Vec::new();
    for (run, qos) in [1, 0].into_iter().enumerate() {
        let sink = sink("mqtt", json!({"url": URL, "topic_column": "topic", "qos": qos}), dir.path());
        let batch = rows(0..ROWS, |i| match i {
            7 => None,
            _ => Some(format!("{prefix}/q{qos}/{}", i % 3)),
        });
        let mut writer = sink.open(sink_context_with_dead_letters(0, 1, batch.schema(), &dead)).unwrap();
        writer.write(&batch.slice(0, 300)).unwrap();
        writer.prepare(1).unwrap();
        writer.write(&batch.slice(300, 600)).unwrap();
        writer.finish().unwrap();
        received = subscriber.wait_for((run + 1) * (ROWS as usize - 1), Duration::from_secs(20));
    }
    for qos in [1, 0] {
        let mut ids: Vec<i64> = Vec::new();
        for message in received.iter().filter(|m| m.topic.starts_with(&format!("{prefix}/q{qos}/"))) {
            let row: Value = serde_json::from_slice(&message.payload).unwrap();
            let id = row["id"].as_i64().unwrap();
            assert_eq!(message.topic, format!("{prefix}/q{qos}/{}", id % 3));
            ids.push(id);
        }
        ids.sort_unstable();
        let expected: Vec<i64> = (0..ROWS).filter(|i| *i != 7).collect();
        assert_eq!(ids, expected, "QoS {qos}");
    }
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l["reason"] == "the topic column is NULL" && l["raw"] == r#"{"id":7}"#));
}

#[test]
fn retained_messages_reach_later_subscribers() {
    if !mqtt::available() {
        return;
    }
    let topic = unique_name("retained");
    let dir = tempfile::tempdir().unwrap();
    let sink = sink("mqtt", json!({"url": URL, "topic": topic, "retain": true}), dir.path());
    let batch = rows(0..5, |_| None);
    let mut writer = sink.open(sink_context(0, 1, batch.schema())).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let later = Subscriber::start(&topic);
    let received = later.wait_for(1, Duration::from_secs(5));
    mqtt::clear_retained(std::slice::from_ref(&topic));
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].retain);
    assert_eq!(received[0].payload, br#"{"id":4}"#);
}

/// Options, declared schema, expected diagnostics.
type SourceCase<'a> = (Value, Option<&'a [FieldSpec]>, Vec<&'a str>);

#[test]
fn bad_mqtt_configs_get_exact_diagnostics() {
    let fields = schema();
    let cases: Vec<SourceCase> = vec![
        (
            json!({}),
            None,
            vec![
                "options.topic: missing required option \"topic\"; set `topic` (a filter such as `sensors/+/temp`) or `topics` (a list)",
                "schema: the mqtt source needs a schema; declare `schema:` with the payload's fields (and any metadata columns)",
            ],
        ),
        (
            json!({"topic": "a", "qos": "1", "sesion_expiry": "1h"}),
            Some(&fields),
            vec![
                "options.qos: invalid type: string \"1\", expected u8",
                "options.sesion_expiry: unknown option \"sesion_expiry\"; did you mean \"session_expiry\"?",
            ],
        ),
        (
            json!({"url": "mqtts://broker:8883", "topics": ["a/#/b", "c+"], "qos": 2, "session_expiry": "0s"}),
            Some(&fields),
            vec![
                "options.url: \"mqtts://broker:8883\": TLS is not supported by the mqtt connector yet; use mqtt://host:port; write e.g. `mqtt://127.0.0.1:1883`",
                "options.topics[0]: \"a/#/b\" is not a valid filter: `#` may only be the last level",
                "options.topics[1]: \"c+\" is not a valid filter: `+` and `#` must fill a whole level",
                "options.qos: QoS 2 is not supported; use 1 (at least once, with Sluice's checkpoints) or 0",
                "options.session_expiry: must be at least 1s (the session must outlive a restart) and under 136 years",
            ],
        ),
        (
            json!({"url": "mqtt://u:p@host:1883", "topic": "t", "topics": [], "password": "${env:MQTT_PW}", "qos": 5}),
            Some(&fields),
            vec![
                "options.url: credentials do not belong in the URL, where they would be shown; set `user` and `password`; write e.g. `mqtt://127.0.0.1:1883`",
                "options.user: `password` is set but `user` is not",
                "options: set only one of `topic` and `topics`",
                "options.qos: 5 is not an MQTT QoS; use 1 (at least once) or 0 (at most once)",
            ],
        ),
        (
            json!({"url": "127.0.0.1:1883", "topic": "t", "session_expiry": "soon", "metadata": {"id": "topic", "x": "retain"}}),
            Some(&fields),
            vec![
                "options.url: \"127.0.0.1:1883\" is not an MQTT broker address; write e.g. `mqtt://127.0.0.1:1883`",
                "options.session_expiry: invalid duration \"soon\": write a number and a unit, like 500ms, 5s, 2m or 1h",
                "options.metadata.id: metadata `topic` fills a column of type `utf8`, but `id` is Int64",
                "options.metadata.x: unknown metadata \"retain\"; the only one is `topic`",
            ],
        ),
        (
            json!({"topic": "t", "format": "avro"}),
            Some(&fields),
            vec![
                "options.format: the mqtt connector does not read or write Avro yet; use json, csv or raw here; Avro messages are supported on the kafka connector",
            ],
        ),
    ];
    for (options, schema, expected) in cases {
        assert_eq!(source_errors("mqtt", options.clone(), schema, false), expected, "{options}");
    }
    let sink_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"qos": 1}),
            vec![
                "options.topic: missing required option \"topic\"; set `topic` (one topic) or `topic_column` (a column holding each row's topic)",
            ],
        ),
        (
            json!({"topic": "a/+", "retain": "yes"}),
            vec!["options.retain: invalid type: string \"yes\", expected a boolean"],
        ),
        (
            json!({"topic": "a/+", "topic_column": "t", "user": "${env:}", "password": "p", "client_id": ""}),
            vec![
                "options.user: \"\" in \"${env:}\" is not an environment variable name (letters, digits and '_', not starting with a digit)",
                "options: set only one of `topic` and `topic_column`",
                "options.client_id: must be 1 to 100 characters long",
            ],
        ),
        (
            json!({"topic": "a/+", "qos": 2}),
            vec![
                "options.topic: \"a/+\" holds a wildcard; messages are published to one topic",
                "options.qos: QoS 2 is not supported; use 1 (at least once, with Sluice's checkpoints) or 0",
            ],
        ),
        (
            json!({"topic": "a", "format": "avro"}),
            vec![
                "options.format: the mqtt connector does not read or write Avro yet; use json, csv or raw here; Avro messages are supported on the kafka connector",
            ],
        ),
    ];
    for (options, expected) in sink_cases {
        assert_eq!(sink_errors("mqtt", options.clone()), expected, "{options}");
    }
}

#[test]
fn the_source_reconnects_after_a_broker_restart_and_its_session_goes_on() {
    let Some(mut broker) = mqtt::PrivateBroker::start() else { return };
    let topic = unique_name("restart");
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let mut options = options(&topic, &unique_name("session"));
    options["url"] = json!(format!("mqtt://127.0.0.1:{}", broker.port));
    let source = source("mqtt", options, Some(&schema()), false, dir.path());
    let mut reader = checkpointing_reader(source.as_ref(), &dead);
    mqtt::publish_to(broker.port, &topic, &payloads(0..30));
    assert_eq!(ids(&read(reader.as_mut(), 30)), (0..30).collect::<Vec<_>>());
    let checkpoint = reader.snapshot().unwrap();
    reader.positions_committed(&checkpoint).unwrap();
    // Let the acknowledgements reach the broker before it goes down.
    std::thread::sleep(Duration::from_millis(300));
    broker.restart(Duration::from_millis(500));
    // Published before the reader is back: the restored session queues them.
    mqtt::publish_to(broker.port, &topic, &payloads(30..50));
    assert_eq!(
        ids(&read(reader.as_mut(), 20)),
        (30..50).collect::<Vec<_>>(),
        "nothing acknowledged comes again"
    );
    drop(reader);
    assert!(!dead.exists());
}

#[test]
fn the_sink_fails_the_run_when_its_connection_is_lost() {
    let Some(mut broker) = mqtt::PrivateBroker::start() else { return };
    let topic = unique_name("lost");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let sink = sink("mqtt", json!({"url": url, "topic": topic}), dir.path());
    let batch = rows(0..10, |_| None);
    let mut writer = sink.open(sink_context(0, 1, batch.schema())).unwrap();
    writer.write(&batch).unwrap();
    writer.prepare(1).unwrap();
    broker.restart(Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(300));
    // Its clean session is gone with the connection: going on could lose messages, so it stops.
    let error = writer.write(&batch).and_then(|()| writer.prepare(2).map(drop)).unwrap_err().to_string();
    assert!(
        error.contains(&format!("publishing to the MQTT broker at {url} failed: the connection was lost")),
        "{error}"
    );
}
