//! The Kafka source and sink against a real broker (`tansu` on loopback).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use serde_json::{Value, json};
use sluice_connectors::testing::{Outgoing, Tansu};
use sluice_runtime::connector::SplitState;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

fn schema() -> Vec<FieldSpec> {
    vec![
        field("id", DataType::Int64, false),
        field("name", DataType::Utf8, true),
        field("k", DataType::Utf8, true),
        field("part", DataType::Int32, false),
        field("off", DataType::Int64, false),
        field("trace", DataType::Utf8, true),
        field("ts", DataType::Timestamp, true),
    ]
}

fn metadata() -> Value {
    json!({"k": "key", "part": "partition", "off": "offset", "trace": "header:trace", "ts": "timestamp"})
}

/// `count` records `{"id": i, "name": "n<i>"}` keyed `key<i % 7>` with header `trace: t<i>`.
fn produce_numbered(broker: &Tansu, topic: &str, from: i64, count: i64) {
    let records: Vec<(String, String, String)> = (from..from + count)
        .map(|i| {
            (format!("key{}", i % 7), json!({"id": i, "name": format!("n{i}")}).to_string(), format!("t{i}"))
        })
        .collect();
    let headers: Vec<[(&str, &[u8]); 1]> =
        records.iter().map(|(_, _, t)| [("trace", t.as_bytes())]).collect();
    let borrowed: Vec<Outgoing<'_>> = records
        .iter()
        .zip(&headers)
        .map(|((k, p, _), h)| (Some(k.as_bytes()), Some(p.as_bytes()), &h[..]))
        .collect();
    broker.produce(topic, &borrowed);
}

fn ids(rows: &[serde_json::Map<String, Value>]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn the_source_reads_every_partition_once_over_workers_with_message_metadata() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("orders", 3);
    produce_numbered(&broker, "orders", 0, 300);
    let dir = tempfile::tempdir().unwrap();
    let fields = schema();
    let options =
        json!({"brokers": broker.brokers(), "topic": "orders", "stop_at": "latest", "metadata": metadata()});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let mut rows = Vec::new();
    for index in 0..2 {
        let drained = drain(source.as_ref(), index, 2, vec![true], &dir.path().join("dl.jsonl"));
        rows.extend(json_values(&drained.outputs[0]));
    }
    assert_eq!(ids(&rows), (0..300).collect::<Vec<_>>());
    // The metadata columns agree with what the broker holds, read independently.
    let stored = broker.consume_all("orders");
    assert_eq!(stored.len(), 300);
    let by_position: BTreeMap<(i64, i64), &sluice_connectors::testing::Record> =
        stored.iter().map(|r| ((r.partition as i64, r.offset), r)).collect();
    for row in &rows {
        let position = (row["part"].as_i64().unwrap(), row["off"].as_i64().unwrap());
        let record = by_position[&position];
        let payload: Value = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(payload["id"], row["id"]);
        assert_eq!(record.key.as_deref(), row["k"].as_str().map(str::as_bytes));
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["trace"], format!("t{id}"));
        assert!(row["ts"].is_string(), "timestamp column: {row:?}");
    }
    assert!(!dir.path().join("dl.jsonl").exists());
}

#[test]
fn bad_records_go_to_dead_letters_with_their_reason_and_position() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("mixed", 1);
    let payloads: Vec<Option<&[u8]>> = vec![
        Some(br#"{"id": 1, "name": "a"}"#),
        Some(b"{not json"),
        Some(br#"{"id": "two"}"#),
        None,
        Some(br#"{"name": "no id"}"#),
        Some(br#"{"id": 6}"#),
    ];
    let records: Vec<Outgoing<'_>> = payloads.iter().map(|p| (None, *p, &[][..])).collect();
    broker.produce("mixed", &records);
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options = json!({"brokers": broker.brokers(), "topic": "mixed", "stop_at": "latest"});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let dead = dir.path().join("dl.jsonl");
    let drained = drain(source.as_ref(), 0, 1, vec![true], &dead);
    assert_eq!(ids(&json_values(&drained.outputs[0])), [1, 6]);
    let letters = dead_letter_lines(&dead);
    let positions: Vec<&str> = letters.iter().map(|l| l["position"].as_str().unwrap()).collect();
    assert_eq!(positions, ["kafka mixed/0@1", "kafka mixed/0@2", "kafka mixed/0@3", "kafka mixed/0@4"]);
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("not valid JSON"), "{reasons:?}");
    assert!(reasons[2].contains("no payload"), "{reasons:?}");
    assert!(reasons[3].contains("id"), "{reasons:?}");
    assert_eq!(letters[0]["raw"], "{not json");
}

#[test]
fn positions_resume_exactly_at_another_parallelism() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("events", 4);
    produce_numbered(&broker, "events", 0, 400);
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![field("id", DataType::Int64, false)];
    let options = json!({"brokers": broker.brokers(), "topic": "events", "stop_at": "latest"});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let dead = dir.path().join("dl.jsonl");
    // One worker reads part of the data and checkpoints.
    let context = source_context(0, 1, vec![true], Default::default(), &dead, Arc::default());
    let mut reader = source.open(context).unwrap();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    while seen.len() < 100 {
        reader.poll(30, &mut out).unwrap();
        for batch in out.drain(..) {
            seen.extend(ids(&json_values(&[batch.batch])));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen.len() < 400, "read {} records before the checkpoint", seen.len());
    let restore = Arc::new(reader.snapshot().unwrap());
    drop(reader);
    // More data arrives; three workers resume from the checkpoint.
    produce_numbered(&broker, "events", 400, 100);
    for index in 0..3 {
        let resumed =
            run_and_snapshot(source.as_ref(), (index, 3), Some(restore.clone()), 1000, 100, false, &dead);
        seen.extend(ids(&json_values(&resumed.outputs[0])));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..500).collect::<Vec<_>>(), "every record exactly once");
}

#[test]
fn start_positions_latest_timestamp_and_group() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("log", 2);
    produce_numbered(&broker, "log", 0, 50);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let fields = vec![field("id", DataType::Int64, false), field("ts", DataType::Int64, false)];
    let read = |options: Value| {
        let mut options = options;
        options["brokers"] = json!(broker.brokers());
        options["topic"] = json!("log");
        options["metadata"] = json!({"ts": "timestamp"});
        let source = source("kafka", options, Some(&fields), false, dir.path());
        json_values(&drain(source.as_ref(), 0, 1, vec![true], &dead).outputs[0])
    };
    // `latest` with a bounded read: nothing, the end is the start.
    assert!(read(json!({"start": "latest", "stop_at": "latest"})).is_empty());
    // By timestamp: exactly the records stamped at or after it, as the broker stamped them.
    let all = read(json!({"stop_at": "latest"}));
    let mut stamps: Vec<i64> = all.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    stamps.sort_unstable();
    let middle = stamps[stamps.len() / 2];
    let expected: Vec<i64> =
        ids(&all.iter().filter(|r| r["ts"].as_i64().unwrap() >= middle).cloned().collect::<Vec<_>>());
    let after = read(json!({"start": "timestamp", "start_timestamp": middle, "stop_at": "latest"}));
    assert_eq!(ids(&after), expected);
    // `group`: committed positions are where the next reader of the group starts.
    let options = json!({
        "brokers": broker.brokers(), "topic": "log", "group_id": "g1", "start": "group", "stop_at": "latest",
    });
    let grouped = source("kafka", options, Some(&fields[..1]), false, dir.path());
    let mut read_first = Vec::new();
    {
        let context = source_context(0, 1, vec![true], Default::default(), &dead, Arc::default());
        let mut reader = grouped.open(context).unwrap();
        let mut out = Vec::new();
        while read_first.len() < 10 {
            reader.poll(10, &mut out).unwrap();
            for batch in out.drain(..) {
                read_first.extend(ids(&json_values(&[batch.batch])));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let positions = reader.snapshot().unwrap();
        reader.positions_committed(&positions).unwrap();
        // The commit is asynchronous: give the consumer a moment to send it.
        std::thread::sleep(Duration::from_millis(500));
    }
    let rest = ids(&json_values(&drain(grouped.as_ref(), 0, 1, vec![true], &dead).outputs[0]));
    assert!(rest.len() < 50, "the second reader started after the committed offsets");
    let mut together: Vec<i64> = read_first.iter().chain(&rest).copied().collect();
    together.sort_unstable();
    assert_eq!(together, (0..50).collect::<Vec<_>>(), "the group resumes where it committed: {read_first:?}");
}

#[test]
fn the_sink_writes_keys_and_headers_and_partitions_by_key() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("out", 3);
    let dir = tempfile::tempdir().unwrap();
    let options =
        json!({"brokers": broker.brokers(), "topic": "out", "key": "user", "headers": {"x-id": "id"}});
    let sink = sink("kafka", options, dir.path());
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("user", ArrowType::Utf8, true),
    ]));
    let users: Vec<Option<String>> =
        (0..200).map(|i| (i % 13 != 0).then(|| format!("u{}", i % 11))).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..200)), Arc::new(StringArray::from(users.clone()))],
    )
    .unwrap();
    let mut writer = sink.open(sink_context(0, 1, schema)).unwrap();
    writer.write(&batch.slice(0, 120)).unwrap();
    writer.write(&batch.slice(120, 80)).unwrap();
    writer.finish().unwrap();
    let records = broker.consume_all("out");
    assert_eq!(records.len(), 200);
    let mut partitions_of_key: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    let mut seen = Vec::new();
    for record in &records {
        let payload: Value = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        let id = payload["id"].as_i64().unwrap();
        assert_eq!(record.key.as_deref(), users[id as usize].as_deref().map(str::as_bytes), "record {id}");
        assert_eq!(record.headers, [("x-id".to_owned(), Some(id.to_string().into_bytes()))]);
        if let Some(key) = &record.key {
            partitions_of_key.entry(key.clone()).or_default().insert(record.partition);
        }
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    assert!(
        partitions_of_key.values().all(|p| p.len() == 1),
        "a key in one partition: {partitions_of_key:?}"
    );
    let used: BTreeSet<i32> = partitions_of_key.values().flatten().copied().collect();
    assert!(used.len() > 1, "11 keys spread over partitions: {used:?}");
}

#[test]
fn the_source_rides_out_a_broker_restart() {
    let Some(mut broker) = Tansu::start() else { return };
    broker.create_topic("steady", 2);
    produce_numbered(&broker, "steady", 0, 200);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let fields = vec![field("id", DataType::Int64, false)];
    let options = json!({"brokers": broker.brokers(), "topic": "steady"});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let context = source_context(0, 1, vec![true], Default::default(), &dead, Arc::default());
    let mut reader = source.open(context).unwrap();
    let mut out = Vec::new();
    let mut seen: Vec<i64> = Vec::new();
    let mut poll_until = |reader: &mut Box<dyn sluice_runtime::connector::SourceReader>, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < count {
            assert!(std::time::Instant::now() < deadline, "read {} of {count}", seen.len());
            reader.poll(100, &mut out).unwrap();
            for batch in out.drain(..) {
                seen.extend(ids(&json_values(&[batch.batch])));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    poll_until(&mut reader, 200);
    broker.restart(Duration::from_secs(2));
    produce_numbered(&broker, "steady", 200, 100);
    poll_until(&mut reader, 300);
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<_>>(), "nothing lost or repeated across the restart");
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let Some(broker) = Tansu::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![field("id", DataType::Int64, false)];
    let source = source(
        "kafka",
        json!({"brokers": broker.brokers(), "topic": "nope"}),
        Some(&fields),
        false,
        dir.path(),
    );
    let context =
        source_context(0, 1, vec![true], Default::default(), &dir.path().join("dl"), Arc::default());
    let error = source.open(context).err().unwrap().to_string();
    assert!(error.contains("`nope` does not exist") && error.contains("create it first"), "{error}");
    let sink = sink("kafka", json!({"brokers": broker.brokers(), "topic": "nope"}), dir.path());
    let schema = Arc::new(Schema::new(vec![Field::new("id", ArrowType::Int64, false)]));
    let error = sink.open(sink_context(0, 1, schema.clone())).err().unwrap().to_string();
    assert!(error.contains("`nope` does not exist"), "{error}");
    broker.create_topic("there", 1);
    let sink = self::sink(
        "kafka",
        json!({"brokers": broker.brokers(), "topic": "there", "key": "user"}),
        dir.path(),
    );
    let error = sink.open(sink_context(0, 1, schema)).err().unwrap().to_string();
    assert!(
        error.contains("options.key names column `user`") && error.contains("columns are: id"),
        "{error}"
    );
}

#[test]
fn bad_kafka_configs_get_exact_diagnostics() {
    let fields = schema();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"topic": "t"}),
            vec![
                "options.brokers: missing required option \"brokers\"; list the bootstrap brokers, e.g. `brokers: 127.0.0.1:9092`",
            ],
        ),
        (
            json!({"brokers": "b:1"}),
            vec![
                "options: missing required option \"topic\"; set `topic`, `topics` (a list) or `topic_pattern` (a regular expression)",
            ],
        ),
        (
            json!({"brokers": "b:1", "topic": "t", "topic_pattern": "x"}),
            vec!["options: set only one of `topic`, `topics` and `topic_pattern`"],
        ),
        (json!({"brokers": "b:1", "topic_pattern": "(unclosed"}), vec![]),
        (json!({"brokers": "b:1", "topic": "t", "start": "beginning"}), vec![]),
        (
            json!({"brokers": "b:1", "topic": "t", "start": "timestamp"}),
            vec![
                "options.start_timestamp: `start: timestamp` needs `start_timestamp`: milliseconds since the Unix epoch, or an RFC 3339 time such as 2026-01-31T08:00:00Z",
            ],
        ),
        (
            json!({"brokers": "b:1", "topic": "t", "start": "timestamp", "start_timestamp": "yesterday"}),
            vec![],
        ),
        (
            json!({"brokers": "b:1", "topic": "t", "start_timestamp": 5}),
            vec![
                "options.start_timestamp: only used with `start: timestamp`; set `start: timestamp` or remove `start_timestamp`",
            ],
        ),
        (
            json!({"brokers": "b:1", "topic": "t", "metadata": {"k": "keys", "nope": "key", "id": "offset"}}),
            vec![
                "options.metadata.k: unknown metadata \"keys\"; use one of key, topic, partition, offset, timestamp, headers or header:NAME",
                "options.metadata.nope: the schema has no column `nope`; declare the column in `schema:` with its type",
            ],
        ),
        (
            json!({"brokers": "b:1", "topic": "t", "metadata": {"name": "partition"}}),
            vec![
                "options.metadata.name: metadata `partition` fills a column of type `int32` or `int64`, but `name` is Utf8",
            ],
        ),
        (json!({"brokers": "b:1", "topic": "t", "format": "raw"}), vec![]),
        (
            json!({"brokers": "b:1", "topic": "t", "properties": {"enable.auto.commit": true}}),
            vec![
                "options.properties.enable.auto.commit: Sluice sets `enable.auto.commit` itself: offsets are committed after each checkpoint",
            ],
        ),
        (json!({"brokers": "b:1", "topic": "t", "partitions": 3}), vec![]),
    ];
    for (options, expected) in cases {
        let errors = source_errors("kafka", options.clone(), Some(&fields), false);
        assert!(!errors.is_empty(), "{options} should be rejected");
        if !expected.is_empty() {
            assert_eq!(errors, expected, "{options}");
        } else {
            // Messages from other libraries: check the path and that the value is named.
            let path = errors[0].split(':').next().unwrap();
            assert!(path.starts_with("options"), "{options}: {errors:?}");
        }
    }
    let no_schema = source_errors("kafka", json!({"brokers": "b:1", "topic": "t"}), None, false);
    assert_eq!(
        no_schema,
        [
            "schema: the kafka source needs a schema; declare `schema:` with the payload's fields (and any metadata columns)"
        ]
    );
    let sink_cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"brokers": "b:1"}), vec!["options.topic: missing required option \"topic\""]),
        (json!({"brokers": "b", "topic": "t", "format": "xml"}), vec![]),
        (
            json!({"brokers": "b:1", "topic": "t", "properties": {"bootstrap.servers": "x:1"}}),
            vec![
                "options.properties.bootstrap.servers: Sluice sets `bootstrap.servers` itself: set `brokers`",
            ],
        ),
    ];
    for (options, expected) in sink_cases {
        let errors = sink_errors("kafka", options.clone());
        assert!(!errors.is_empty(), "{options} should be rejected");
        if !expected.is_empty() {
            assert_eq!(errors, expected, "{options}");
        }
    }
}

#[test]
fn split_positions_are_named_by_topic_and_partition() {
    // The checkpoint format: a split per partition, the next offset as decimal text.
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("named", 2);
    produce_numbered(&broker, "named", 0, 10);
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![field("id", DataType::Int64, false)];
    let options = json!({"brokers": broker.brokers(), "topic": "named", "stop_at": "latest"});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let done = run_and_snapshot(source.as_ref(), (0, 1), None, 10_000, 100, false, &dir.path().join("dl"));
    let stored = broker.consume_all("named");
    let mut expected: Vec<SplitState> = (0..2)
        .map(|p| {
            let next = stored.iter().filter(|r| r.partition == p).map(|r| r.offset + 1).max().unwrap_or(0);
            SplitState { split: format!("named:{p}"), position: next.to_string().into_bytes() }
        })
        .collect();
    let mut snapshot = done.snapshot;
    snapshot.sort_by(|a, b| a.split.cmp(&b.split));
    expected.sort_by(|a, b| a.split.cmp(&b.split));
    assert_eq!(snapshot, expected);
}

/// Avro's zig-zag varint of a `long`, from the specification, to check the sink's bytes.
fn avro_long(value: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

#[test]
fn avro_written_by_the_sink_is_the_specified_encoding_and_the_source_reads_it_back() {
    let Some(broker) = Tansu::start() else { return };
    broker.create_topic("avro", 2);
    let dir = tempfile::tempdir().unwrap();
    let writer_schema = r#"{"type": "record", "name": "Order", "fields": [
        {"name": "name", "type": ["null", "string"]}, {"name": "id", "type": "long"}]}"#;
    let avro = json!({"schema": writer_schema});
    let sink_options = json!({"brokers": broker.brokers(), "topic": "avro", "format": "avro", "avro": avro});
    let sink = sink("kafka", sink_options, dir.path());
    let stream = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("name", ArrowType::Utf8, true),
    ]));
    let ids: Vec<i64> = (0..200).map(|i| i * 1_000_003 - 50_000).collect();
    let names: StringArray = ids.iter().map(|i| (i % 3 != 0).then(|| format!("n{i}"))).collect();
    let batch =
        RecordBatch::try_new(stream.clone(), vec![Arc::new(Int64Array::from(ids.clone())), Arc::new(names)])
            .unwrap();
    let mut writer = sink.open(sink_context(0, 1, stream)).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();

    // Each message is the bare encoding of one record of the declared writer schema.
    let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
    for id in &ids {
        let mut bytes = Vec::new();
        if id % 3 == 0 {
            avro_long(0, &mut bytes);
        } else {
            let name = format!("n{id}");
            avro_long(1, &mut bytes);
            avro_long(name.len() as i64, &mut bytes);
            bytes.extend_from_slice(name.as_bytes());
        }
        avro_long(*id, &mut bytes);
        expected.insert(bytes);
    }
    let stored: BTreeSet<Vec<u8>> =
        broker.consume_all("avro").into_iter().map(|record| record.payload.unwrap()).collect();
    assert_eq!(stored, expected);

    let fields = vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)];
    let options = json!({"brokers": broker.brokers(), "topic": "avro", "stop_at": "latest", "format": "avro", "avro": avro});
    let source = source("kafka", options, Some(&fields), false, dir.path());
    let rows = union(source.as_ref(), 2, 0, &dir.path().join("dl.jsonl"));
    assert_eq!(rows, sorted_lines(&[batch]));
    assert!(!dir.path().join("dl.jsonl").exists());
}
