//! The NATS JetStream source and sink against the machine's server (`127.0.0.1:4222`), each
//! test on streams and subjects of its own; plus the option checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use serde_json::{Value, json};
use sluice_connectors::testing::nats::{JetStream, Outgoing, URL};
use sluice_connectors::testing::unique_name;
use sluice_runtime::connector::SourceStatus;
use sluice_spec::{DataType, FieldSpec};

use crate::support::*;

/// `count` messages `{"id": i, "name": "n<i>"}` on `<prefix>.<i % 3>` with header `trace: t<i>`.
fn numbered(prefix: &str, from: i64, count: i64) -> Vec<Outgoing> {
    (from..from + count)
        .map(|i| {
            let payload = json!({"id": i, "name": format!("n{i}")}).to_string().into_bytes();
            (format!("{prefix}.{}", i % 3), payload, vec![("trace".to_owned(), format!("t{i}"))])
        })
        .collect()
}

fn ids(rows: &[serde_json::Map<String, Value>]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

fn id_schema() -> Vec<FieldSpec> {
    vec![field("id", DataType::Int64, false), field("name", DataType::Utf8, true)]
}

#[test]
fn the_source_reads_subject_filters_over_workers_with_message_metadata() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("SRC"), unique_name("src"));
    nats.create_stream(&stream, &[&format!("{prefix}.>")]);
    nats.publish(&numbered(&prefix, 0, 300));
    let dir = tempfile::tempdir().unwrap();
    let mut fields = id_schema();
    fields.extend([
        field("subj", DataType::Utf8, false),
        field("seq", DataType::Int64, false),
        field("ts", DataType::Timestamp, false),
        field("trace", DataType::Utf8, true),
    ]);
    let options = json!({
        "url": URL, "stream": stream, "stop_at": "latest",
        "subjects": [format!("{prefix}.0"), format!("{prefix}.1"), format!("{prefix}.2")],
        "metadata": {"subj": "subject", "seq": "sequence", "ts": "timestamp", "trace": "header:trace"},
    });
    let source = source("nats", options, Some(&fields), false, dir.path());
    assert!(source.replayable());
    let mut rows = Vec::new();
    let mut splits = Vec::new();
    for index in 0..2 {
        let context =
            source_context(index, 2, vec![true], Default::default(), &dir.path().join("dl"), Arc::default());
        let mut reader = source.open(context).unwrap();
        splits.push(reader.splits());
        let mut out = Vec::new();
        while reader.poll(1000, &mut out).unwrap() != SourceStatus::Finished {
            std::thread::sleep(Duration::from_millis(5));
        }
        rows.extend(json_values(&out.into_iter().map(|b| b.batch).collect::<Vec<_>>()));
    }
    assert_eq!(splits, [2, 1], "three filters dealt to two workers");
    assert_eq!(ids(&rows), (0..300).collect::<Vec<_>>());
    // The metadata columns agree with what the server holds, read independently.
    let stored: BTreeMap<u64, _> = nats.messages(&stream).into_iter().map(|m| (m.sequence, m)).collect();
    assert_eq!(stored.len(), 300);
    for row in &rows {
        let message = &stored[&row["seq"].as_u64().unwrap()];
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(payload["id"], row["id"]);
        assert_eq!(row["subj"], message.subject.as_str());
        assert_eq!(row["trace"], format!("t{}", row["id"]));
        let ts = chrono::NaiveDateTime::parse_from_str(row["ts"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(ts, message.timestamp, "{row:?}");
    }
}

/// A split with messages still on the server is backlogged (so never idle for watermarks,
/// however long a slowed-down reader has been silent); once everything is read, it is not.
#[test]
fn a_split_is_backlogged_while_the_server_holds_messages_it_has_not_read() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("BACKLOG"), unique_name("backlog"));
    nats.create_stream(&stream, &[&format!("{prefix}.>")]);
    nats.publish(&numbered(&prefix, 0, 500));
    let dir = tempfile::tempdir().unwrap();
    let options = json!({"url": URL, "stream": stream});
    let source = source("nats", options, Some(&id_schema()), false, dir.path());
    let context =
        source_context(0, 1, vec![true], Default::default(), &dir.path().join("dl"), Arc::default());
    let mut reader = source.open(context).unwrap();
    let mut out = Vec::new();
    let mut read = 0;
    let mut backlogged_midway = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read < 500 {
        assert!(std::time::Instant::now() < deadline, "read {read} of 500");
        reader.poll(50, &mut out).unwrap();
        read += out.drain(..).map(|b| b.batch.num_rows()).sum::<usize>();
        if (1..500).contains(&read) {
            backlogged_midway |= reader.backlogged(0);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(backlogged_midway, "part-way through the 500 messages the split must be backlogged");
    assert!(!reader.backlogged(0), "every message is read: nothing is pending");
    assert_eq!(reader.lag(), Some(0));
}

/// Options, declared schema, expected diagnostics.
type SourceCase<'a> = (Value, Option<&'a [FieldSpec]>, Vec<&'a str>);

#[test]
fn bad_records_go_to_dead_letters_with_their_reason_and_position() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, subject) = (unique_name("BAD"), unique_name("bad"));
    nats.create_stream(&stream, &[&subject]);
    let payloads: Vec<Vec<u8>> =
        [&br#"{"id": 1, "name": "a"}"#[..], b"{not json", br#"{"id": "two"}"#, b"", br#"{"id": 5}"#]
            .iter()
            .map(|p| p.to_vec())
            .collect();
    nats.publish_payloads(&subject, &payloads);
    let dir = tempfile::tempdir().unwrap();
    let options = json!({"url": URL, "stream": stream, "stop_at": "latest"});
    let source = source("nats", options, Some(&id_schema()), false, dir.path());
    let dead = dir.path().join("dl.jsonl");
    let drained = drain(source.as_ref(), 0, 1, vec![true], &dead);
    assert_eq!(ids(&json_values(&drained.outputs[0])), [1, 5]);
    let letters = dead_letter_lines(&dead);
    let positions: Vec<&str> = letters.iter().map(|l| l["position"].as_str().unwrap()).collect();
    assert_eq!(positions, [2, 3, 4].map(|seq| format!("nats {stream}@{seq} ({subject})")), "{letters:?}");
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("not valid JSON"), "{reasons:?}");
    assert!(reasons[1].contains("id"), "{reasons:?}");
    assert!(reasons[2].contains("empty"), "{reasons:?}");
    assert_eq!(letters[0]["raw"], "{not json");
}

#[test]
fn positions_resume_exactly_at_any_parallelism() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("REPLAY"), unique_name("replay"));
    nats.create_stream(&stream, &[&format!("{prefix}.>")]);
    nats.publish(&numbered(&prefix, 0, 3000));
    let (_dir, base) = temp();
    let dl = base.join("dl");
    let filters: Vec<String> = (0..3).map(|i| format!("{prefix}.{i}")).collect();
    for options in [
        json!({"url": URL, "stream": stream, "stop_at": "latest", "subjects": filters}),
        json!({"url": URL, "stream": stream, "stop_at": "latest"}),
    ] {
        let source = source("nats", options.clone(), Some(&id_schema()), false, &base);
        let expected = union(source.as_ref(), 1, 0, &dl);
        assert_eq!(expected.len(), 3000);
        for (seed, history) in [&[1, 2, 3][..], &[3, 1], &[2, 3, 1, 2]].iter().enumerate() {
            let rows = rows_over_restores(source.as_ref(), 0, history, seed as u64, false, &dl);
            assert_eq!(rows.len(), expected.len(), "{options}, runs {history:?}");
            assert!(rows == expected, "{options}, runs {history:?}: other rows");
        }
    }
    assert!(!dl.exists(), "no dead letters");
}

#[test]
fn start_positions_latest_sequence_and_time() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, subject) = (unique_name("START"), unique_name("start"));
    nats.create_stream(&stream, &[&subject]);
    let first: Vec<Vec<u8>> = (0..20).map(|i| json!({"id": i}).to_string().into_bytes()).collect();
    let sequences = nats.publish_payloads(&subject, &first);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let fields = vec![field("id", DataType::Int64, false)];
    let read = |extra: Value| {
        let mut options = json!({"url": URL, "stream": stream, "stop_at": "latest"});
        options.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let source = source("nats", options, Some(&fields), false, dir.path());
        ids(&json_values(&drain(source.as_ref(), 0, 1, vec![true], &dead).outputs[0]))
    };
    assert_eq!(read(json!({"start": "latest"})), Vec::<i64>::new(), "the end is the start");
    assert_eq!(read(json!({"start": "sequence", "start_sequence": sequences[15]})), [15, 16, 17, 18, 19]);
    let stored = nats.messages(&stream);
    let cut = stored[12].timestamp;
    let expected: Vec<i64> = stored
        .iter()
        .filter(|m| m.timestamp >= cut)
        .map(|m| m.sequence as i64 - sequences[0] as i64)
        .collect();
    assert_eq!(read(json!({"start": "time", "start_time": cut})), expected);
    // `latest` pins the end at the start: messages published later are read by an unbounded
    // reader that started before them.
    let options = json!({"url": URL, "stream": stream, "start": "latest"});
    let source = source("nats", options, Some(&fields), false, dir.path());
    let context = source_context(0, 1, vec![true], Default::default(), &dead, Arc::default());
    let mut reader = source.open(context).unwrap();
    let later: Vec<Vec<u8>> = (100..105).map(|i| json!({"id": i}).to_string().into_bytes()).collect();
    nats.publish_payloads(&subject, &later);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for _ in 0..500 {
        reader.poll(100, &mut out).unwrap();
        seen.extend(ids(&json_values(&out.drain(..).map(|b| b.batch).collect::<Vec<_>>())));
        if seen.len() >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen, [100, 101, 102, 103, 104]);
    assert!(!dead.exists());
}

#[test]
fn a_missing_stream_or_server_is_a_clear_error() {
    let Some(nats) = JetStream::connect() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fields = vec![field("id", DataType::Int64, false)];
    let open = |options: Value| {
        let source = source("nats", options, Some(&fields), false, dir.path());
        let context =
            source_context(0, 1, vec![true], Default::default(), &dir.path().join("dl"), Arc::default());
        source.open(context).err().expect("opening fails").to_string()
    };
    let missing = open(json!({"url": URL, "stream": "NO_SUCH_STREAM_HERE"}));
    assert!(missing.contains("`NO_SUCH_STREAM_HERE`") && missing.contains("create it first"), "{missing}");
    let mut nats = nats;
    let (stream, subject) = (unique_name("FILTER"), unique_name("filter"));
    nats.create_stream(&stream, &[&format!("{subject}.*")]);
    let source = source(
        "nats",
        json!({"url": URL, "stream": stream, "subject": "elsewhere.>"}),
        Some(&fields),
        false,
        dir.path(),
    );
    let context =
        source_context(0, 1, vec![true], Default::default(), &dir.path().join("dl"), Arc::default());
    let mut reader = source.open(context).unwrap();
    let mut out = Vec::new();
    let outside = loop {
        match reader.poll(10, &mut out) {
            Err(error) => break error.to_string(),
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(outside.contains("cannot read JetStream stream") && outside.contains("elsewhere.>"), "{outside}");
    let port = free_port();
    let down = open(json!({"url": format!("nats://127.0.0.1:{port}"), "stream": "S"}));
    assert!(down.contains(&format!("cannot connect to the NATS server nats://127.0.0.1:{port}")), "{down}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rows(ids: std::ops::Range<i64>, subject: impl Fn(i64) -> String) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Int64, false),
        Field::new("subject", ArrowType::Utf8, true),
        Field::new("trace", ArrowType::Utf8, true),
        Field::new("key", ArrowType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(ids.clone().map(&subject))),
            Arc::new(StringArray::from_iter(ids.clone().map(|i| (i % 2 == 0).then(|| format!("t{i}"))))),
            Arc::new(StringArray::from_iter_values(ids.map(|i| format!("k{i}")))),
        ],
    )
    .unwrap()
}

#[test]
fn the_sink_publishes_every_row_with_subjects_and_headers_from_columns() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, prefix) = (unique_name("SINK"), unique_name("sink"));
    nats.create_stream(&stream, &[&format!("{prefix}.>")]);
    let dir = tempfile::tempdir().unwrap();
    let options = json!({"url": URL, "subject_column": "subject", "headers": {"trace": "trace"}});
    let sink = sink("nats", options, dir.path());
    let batch = rows(0..2500, |i| format!("{prefix}.{}", i % 4));
    let dead = dir.path().join("dl.jsonl");
    let mut writer = sink.open(sink_context_with_dead_letters(0, 1, batch.schema(), &dead)).unwrap();
    writer.write(&batch.slice(0, 1200)).unwrap();
    writer.prepare(1).unwrap();
    // Everything before a checkpoint is acknowledged, so it is in the stream.
    assert_eq!(nats.messages(&stream).len(), 1200);
    writer.write(&batch.slice(1200, 1300)).unwrap();
    writer.finish().unwrap();
    let stored = nats.messages(&stream);
    assert_eq!(stored.len(), 2500);
    for message in &stored {
        let row: Value = serde_json::from_slice(&message.payload).unwrap();
        let id = row["id"].as_i64().unwrap();
        assert_eq!(message.subject, format!("{prefix}.{}", id % 4));
        let trace: Vec<(String, String)> =
            if id % 2 == 0 { vec![("trace".into(), format!("t{id}"))] } else { vec![] };
        assert_eq!(message.headers, trace, "{row}");
    }
    let mut ids: Vec<i64> = stored
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..2500).collect::<Vec<_>>());
    assert!(!dead.exists());
}

#[test]
fn message_ids_make_the_stream_drop_rows_written_again() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, subject) = (unique_name("DEDUP"), unique_name("dedup"));
    nats.create_stream(&stream, &[&subject]);
    let dir = tempfile::tempdir().unwrap();
    let options = json!({"url": URL, "subject": subject, "message_id": "key"});
    let sink = sink("nats", options, dir.path());
    let batch = rows(0..500, |_| String::new());
    // A run writes 300 rows and crashes; the resumed run writes them again, and the rest.
    for range in [0..300, 0..500] {
        let mut writer = sink.open(sink_context(0, 1, batch.schema())).unwrap();
        writer.write(&batch.slice(range.start, range.end - range.start)).unwrap();
        writer.finish().unwrap();
    }
    let stored = nats.messages(&stream);
    let ids: Vec<i64> = stored
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..500).collect::<Vec<_>>(), "each row once, in order");
    assert!(stored.iter().all(|m| m.headers.iter().any(|(name, _)| name == "Nats-Msg-Id")));
}

#[test]
fn rows_without_a_subject_are_dead_letters_and_a_missing_stream_is_an_error() {
    let Some(mut nats) = JetStream::connect() else { return };
    let (stream, subject) = (unique_name("NOSUBJ"), unique_name("nosubj"));
    nats.create_stream(&stream, &[&subject]);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let by_column = sink("nats", json!({"url": URL, "subject_column": "subject"}), dir.path());
    let batch = rows(0..4, |i| match i {
        1 => String::new(),
        2 => "a.*".to_owned(),
        _ => subject.clone(),
    });
    let mut writer = by_column.open(sink_context_with_dead_letters(0, 1, batch.schema(), &dead)).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    assert_eq!(nats.messages(&stream).len(), 2);
    let reasons: Vec<String> =
        dead_letter_lines(&dead).iter().map(|l| l["reason"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        reasons,
        [
            "cannot publish: the subject is empty",
            "cannot publish: \"a.*\" holds a wildcard; messages are published to one subject",
        ]
    );
    let fixed = sink("nats", json!({"url": URL, "subject": "no.stream.captures.this"}), dir.path());
    let error = fixed.open(sink_context(0, 1, batch.schema())).err().expect("no stream").to_string();
    assert!(error.contains("no JetStream stream") && error.contains("no.stream.captures.this"), "{error}");
}

#[test]
fn bad_nats_configs_get_exact_diagnostics() {
    let fields = id_schema();
    let cases: Vec<SourceCase> = vec![
        (
            json!({}),
            None,
            vec![
                "options.stream: missing required option \"stream\"; name the JetStream stream to read, e.g. `stream: ORDERS`",
                "schema: the nats source needs a schema; declare `schema:` with the payload's fields (and any metadata columns)",
            ],
        ),
        (
            json!({"stream": "ORDERS", "url": "http://x", "strat": "earliest"}),
            Some(&fields),
            vec!["options.strat: unknown option \"strat\"; did you mean \"start\"?"],
        ),
        (
            json!({"stream": "a.b", "url": "nats://user:pw@host:4222", "subjects": ["o.*", "o.eu", "x..y"]}),
            Some(&fields),
            vec![
                "options.url: credentials do not belong in the URL, where they would be shown; set `user` and `password` (or `token`), e.g. `password: ${env:NATS_PASSWORD}`",
                "options.stream: \"a.b\" is not a stream name (no spaces, dots, `*`, `>`, slashes)",
                "options.subjects[1]: \"o.eu\" overlaps \"o.*\": a message on both would be read twice; use filters that no subject matches together, or one wider filter",
                "options.subjects[2]: \"x..y\" is not a valid subject: it has an empty token (`..` or a dot at an end)",
            ],
        ),
        (
            json!({"stream": "S", "url": "localhost", "subject": "a", "subjects": ["b"], "user": "u"}),
            Some(&fields),
            vec![
                "options.url: \"localhost\" is not a NATS server address; write e.g. `nats://127.0.0.1:4222` or `nats://n1:4222,nats://n2:4222`",
                "options.password: `user` is set but `password` is not; set `password`, e.g. `password: ${env:NATS_PASSWORD}`",
                "options: set only one of `subject` and `subjects`",
            ],
        ),
        (
            json!({"stream": "S", "start": "sequence", "start_time": 5, "token": "${NATS_TOKEN}", "password": "p"}),
            Some(&fields),
            vec![
                "options.token: \"${NATS_TOKEN}\" is not a reference Sluice knows; write ${env:NAME} to use the environment variable NAME",
                "options.token: set either `token` or `user` and `password`, not both",
                "options.start_time: only used with `start: time`; set `start: time` or remove `start_time`",
                "options.start_sequence: `start: sequence` needs `start_sequence`: the first stream sequence to read",
            ],
        ),
        (
            json!({"stream": "S", "start": "time", "start_time": "yesterday", "stop_at": "end"}),
            Some(&fields),
            vec!["options.stop_at: unknown variant `end`, expected `never` or `latest`"],
        ),
        (
            json!({"stream": "S", "start": "time", "start_time": "yesterday", "start_sequence": 0}),
            Some(&fields),
            vec![
                "options.start_sequence: only used with `start: sequence`; set `start: sequence` or remove `start_sequence`",
                "options.start_time: \"yesterday\" is not an RFC 3339 time (premature end of input); write e.g. 2026-01-31T08:00:00Z",
            ],
        ),
        (
            json!({"stream": "S", "format": "raw", "metadata": {"name": "subject", "id": "offset", "x": "sequence"}}),
            Some(&fields),
            vec![
                "options.metadata.id: unknown metadata \"offset\"; use one of subject, sequence, timestamp, headers or header:NAME",
                "options.metadata.x: the schema has no column `x`; declare the column in `schema:` with its type",
                "options.format: format `raw` puts the whole payload in one column, so the schema (without metadata columns) must have exactly one column of type `utf8` or `binary`; it has `id` (Int64)",
            ],
        ),
        (
            json!({"stream": "S", "metadata": {"name": "sequence"}}),
            Some(&fields),
            vec![
                "options.metadata.name: metadata `sequence` fills a column of type `int64` or `uint64`, but `name` is Utf8",
            ],
        ),
    ];
    for (options, schema, expected) in cases {
        assert_eq!(source_errors("nats", options.clone(), schema, false), expected, "{options}");
    }
    let sink_cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({}),
            vec![
                "options.subject: missing required option \"subject\"; set `subject` (one subject) or `subject_column` (a column holding each row's subject)",
            ],
        ),
        (
            json!({"subject": "out.*", "headers": {"Nats-Msg-Id": "id", "bad name": "x"}, "format": "xml"}),
            vec!["options.format: unknown variant `xml`, expected one of `json`, `csv`, `raw`, `avro`"],
        ),
        (
            json!({"subject": "out", "format": "avro"}),
            vec![
                "options.format: the nats connector does not read or write Avro yet; use json, csv or raw here; Avro messages are supported on the kafka connector",
            ],
        ),
        (
            json!({"subject": "out.*", "headers": {"Nats-Msg-Id": "id", "bad name": "x"}}),
            vec![
                "options.subject: \"out.*\" holds a wildcard; messages are published to one subject",
                "options.headers.Nats-Msg-Id: \"Nats-Msg-Id\" cannot be a header name here (no ':', spaces or line breaks; Nats-Msg-Id is set with `message_id`)",
                "options.headers.bad name: \"bad name\" cannot be a header name here (no ':', spaces or line breaks; Nats-Msg-Id is set with `message_id`)",
            ],
        ),
        (
            json!({"subject": "out", "subject_column": "s", "token": "t", "user": "u", "password": "p"}),
            vec![
                "options.token: set either `token` or `user` and `password`, not both",
                "options: set only one of `subject` and `subject_column`",
            ],
        ),
    ];
    for (options, expected) in sink_cases {
        assert_eq!(sink_errors("nats", options.clone()), expected, "{options}");
    }
}

#[test]
fn the_source_and_the_sink_go_on_across_a_server_restart() {
    let Some(mut server) = sluice_connectors::testing::nats::PrivateServer::start() else { return };
    let url = server.url();
    let (stream, subject, out) = (unique_name("RESTART"), unique_name("restart"), unique_name("rout"));
    {
        let mut setup = JetStream::connect_to(&url);
        setup.create_file_stream(&stream, &[&subject]);
        setup.create_file_stream(&format!("{stream}_OUT"), &[&out]);
        setup.publish_payloads(
            &subject,
            &(0..100).map(|i| json!({"id": i}).to_string().into_bytes()).collect::<Vec<_>>(),
        );
        // Dropping `setup` would delete the streams: forget them instead.
        std::mem::forget(setup);
    }
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dl.jsonl");
    let fields = vec![field("id", DataType::Int64, false)];
    let source = source("nats", json!({"url": url, "stream": stream}), Some(&fields), false, dir.path());
    let mut reader =
        source.open(source_context(0, 1, vec![true], Default::default(), &dead, Arc::default())).unwrap();
    let sink = sink("nats", json!({"url": url, "subject": out}), dir.path());
    let read_some = |reader: &mut Box<dyn sluice_runtime::connector::SourceReader>, count: usize| {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < count && std::time::Instant::now() < deadline {
            reader.poll(1000, &mut out).unwrap();
            seen.extend(ids(&json_values(&out.drain(..).map(|b| b.batch).collect::<Vec<_>>())));
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    };
    assert_eq!(read_some(&mut reader, 100), (0..100).collect::<Vec<_>>());
    let batch = rows(0..50, |_| String::new());
    let mut writer = sink.open(sink_context(0, 1, batch.schema())).unwrap();
    writer.write(&batch).unwrap();
    writer.prepare(1).unwrap();
    server.restart(Duration::from_millis(500));
    let nats = JetStream::connect_to(&url);
    nats.publish_payloads(
        &subject,
        &(100..150).map(|i| json!({"id": i}).to_string().into_bytes()).collect::<Vec<_>>(),
    );
    let mut after = read_some(&mut reader, 50);
    after.sort_unstable();
    assert_eq!(
        after,
        (100..150).collect::<Vec<_>>(),
        "the source goes on after the restart, from where it was"
    );
    let batch = rows(50..100, |_| String::new());
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let ids: Vec<i64> = nats
        .messages(&format!("{stream}_OUT"))
        .iter()
        .map(|m| serde_json::from_slice::<Value>(&m.payload).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>(), "the sink goes on after the restart");
    assert!(!dead.exists());
}
