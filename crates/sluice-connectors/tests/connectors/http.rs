//! The `http` sink against a real HTTP server written in the test, which fails on purpose
//! (5xx, 429 with Retry-After, 400, slow answers, a closed port) to prove retries, rate limits
//! and dead letters. Times are measured from the server's request log, never by sleeping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Value, json};
use sluice_runtime::connector::SinkWriter;

use crate::http_server::{Reply, Request, TestServer};
use crate::support::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    let names: StringArray = ids.iter().map(|i| (i % 4 != 0).then(|| format!("n\"{i}\n"))).collect();
    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids)), Arc::new(names)]).unwrap()
}

/// The JSON object the sink should send for record `id`, computed without Arrow.
fn expected_record(id: i64) -> Value {
    if id % 4 == 0 { json!({"id": id}) } else { json!({"id": id, "name": format!("n\"{id}\n")}) }
}

fn id_of(request: &Request) -> i64 {
    request.json()["id"].as_i64().expect("an id")
}

/// A fast retry policy, so that tests exercise retries without waiting for them.
fn fast_retry(max_attempts: u32) -> Value {
    json!({"max_attempts": max_attempts, "initial_backoff": "1ms", "max_backoff": "5ms"})
}

/// Options for `server` with `extra` merged in.
fn options(server: &TestServer, extra: Value) -> Value {
    let mut options = json!({"url": server.url("/hook"), "retry": fast_retry(3)});
    if let (Some(map), Value::Object(extra)) = (options.as_object_mut(), extra) {
        map.extend(extra);
    }
    options
}

/// A writer for worker 0 of 1; dead letters go to `dead`.
fn open(options: Value, dead: &Path) -> Box<dyn SinkWriter> {
    let sink = sink("http", options, Path::new("/nonexistent"));
    sink.open(sink_context_with_dead_letters(0, 1, schema(), dead)).expect("open the http sink")
}

fn sorted_ids(requests: &[Request]) -> Vec<i64> {
    let mut ids: Vec<i64> = requests.iter().map(id_of).collect();
    ids.sort();
    ids
}

#[test]
fn a_500_is_retried_and_each_record_delivered_once() {
    let server =
        TestServer::start(|request| if request.attempt == 1 { Reply::status(500) } else { Reply::ok() });
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let mut writer = open(options(&server, json!({})), &dead);
    writer.write(&batch(0..5)).unwrap();
    writer.finish().unwrap();
    let delivered = server.delivered();
    assert_eq!(sorted_ids(&delivered), (0..5).collect::<Vec<_>>(), "each record delivered exactly once");
    for request in &delivered {
        assert_eq!(request.json(), expected_record(id_of(request)));
        assert_eq!(request.attempt, 2, "delivered on the retry");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    assert_eq!(server.requests().len(), 10);
    assert!(dead_letter_lines(&dead).is_empty());
}

#[test]
fn a_429_retry_after_is_waited_for() {
    let server = TestServer::start(|request| {
        if request.attempt == 1 { Reply::status(429).header("Retry-After", "1") } else { Reply::ok() }
    });
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let mut writer = open(options(&server, json!({})), &dead);
    writer.write(&batch(0..3)).unwrap();
    writer.finish().unwrap();
    let requests = server.requests();
    assert_eq!(sorted_ids(&server.delivered()), [0, 1, 2]);
    for id in 0..3 {
        let attempts: Vec<&Request> = requests.iter().filter(|r| id_of(r) == id).collect();
        assert_eq!(attempts.len(), 2, "record {id}");
        let waited = attempts[1].at - attempts[0].at;
        // The backoff alone would be at most 5ms.
        assert!(waited >= Duration::from_secs(1), "record {id} was retried after {waited:?}, not 1s");
    }
}

#[test]
fn a_400_is_dead_lettered_at_once_with_its_status_and_response() {
    let server = TestServer::start(|request| {
        if id_of(request) == 3 {
            Reply::status(400).body(r#"{"error":"id 3 is not allowed"}"#)
        } else {
            Reply::ok()
        }
    });
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let mut writer = open(options(&server, json!({})), &dead);
    writer.write(&batch(0..6)).unwrap();
    writer.finish().unwrap();
    assert_eq!(sorted_ids(&server.delivered()), [0, 1, 2, 4, 5]);
    let tries_of_3 = server.requests().iter().filter(|r| id_of(r) == 3).count();
    assert_eq!(tries_of_3, 1, "a 400 is not retried");
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(serde_json::from_str::<Value>(letter["raw"].as_str().unwrap()).unwrap(), expected_record(3));
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["records"], 1);
    assert_eq!(letter["url"], server.url("/hook"));
    assert_eq!(letter["method"], "POST");
    assert_eq!(letter["response"], r#"{"error":"id 3 is not allowed"}"#);
    assert_eq!(
        (&letter["node"], &letter["kind"]),
        (&json!("out"), &json!("undeliverable")),
        "the sink's node name"
    );
    assert_eq!(
        letter["reason"],
        "rejected with HTTP 400 Bad Request, not retried (only 429, 5xx, timeouts and connection errors \
         are); the response was: {\"error\":\"id 3 is not allowed\"}"
    );
}

#[test]
fn always_500_is_dead_lettered_after_max_attempts() {
    let server = TestServer::start(|_| Reply::status(500).body("down"));
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let max_attempts = 4;
    let mut writer = open(options(&server, json!({"retry": fast_retry(max_attempts)})), &dead);
    writer.write(&batch(0..2)).unwrap();
    writer.finish().unwrap();
    let requests = server.requests();
    for id in 0..2 {
        let tries = requests.iter().filter(|r| id_of(r) == id).count();
        assert_eq!(tries, max_attempts as usize, "record {id}");
    }
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        assert_eq!(letter["status"], 500);
        assert_eq!(letter["attempts"], max_attempts);
        assert_eq!(letter["error"], "HTTP 500 Internal Server Error");
        assert_eq!(letter["response"], "down");
    }
}

#[test]
fn slow_answers_time_out_and_are_retried_then_dead_lettered() {
    let slow = Duration::from_millis(1_500);
    let server = TestServer::start(move |request| match (id_of(request), request.attempt) {
        (0, _) => Reply::ok().after(slow),
        (1, 1) => Reply::ok().after(slow),
        _ => Reply::ok(),
    });
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let mut writer = open(options(&server, json!({"timeout": "200ms", "retry": fast_retry(2)})), &dead);
    writer.write(&batch(0..3)).unwrap();
    writer.finish().unwrap();
    let requests = server.requests();
    let tries = |id| requests.iter().filter(|r| id_of(r) == id).count();
    assert_eq!((tries(0), tries(1), tries(2)), (2, 2, 1));
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(letters[0]["raw"].as_str().unwrap()).unwrap(),
        expected_record(0)
    );
    assert_eq!(letters[0]["status"], Value::Null);
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["error"], "timed out after 200ms (the `timeout` option)");
}

#[test]
fn a_closed_port_is_retried_then_dead_lettered() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut writer = open(json!({"url": url, "retry": fast_retry(3)}), &dead);
    writer.write(&batch(0..1)).unwrap();
    writer.finish().unwrap();
    let letters = dead_letter_lines(&dead);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 3);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.starts_with("could not connect"), "{error}");
    assert!(!error.contains(&url), "the URL is a field of its own, not part of the error: {error}");
}

#[test]
fn the_rate_limit_spaces_requests_evenly() {
    let server = TestServer::start(|_| Reply::ok());
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let rate = 25.0;
    let mut writer = open(options(&server, json!({"rate_limit": rate, "concurrency": 8})), &dead);
    writer.write(&batch(0..20)).unwrap();
    writer.finish().unwrap();
    let mut arrivals: Vec<_> = server.requests().iter().map(|request| request.at).collect();
    assert_eq!(arrivals.len(), 20);
    arrivals.sort();
    let first = arrivals[0];
    // Request i may leave no sooner than i intervals after the first; the client's clock and
    // the server's differ by a few milliseconds of delivery time at most.
    let tolerance = Duration::from_millis(15);
    for (i, arrival) in arrivals.iter().enumerate() {
        let earliest = Duration::from_secs_f64(i as f64 / rate);
        let at = *arrival - first;
        assert!(
            at + tolerance >= earliest,
            "request {i} arrived {at:?} after the first, before {earliest:?}"
        );
    }
}

#[test]
fn batch_bodies_are_json_arrays_of_at_most_batch_size_records() {
    let server = TestServer::start(|_| Reply::ok());
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let batch_size = 4;
    let mut writer = open(options(&server, json!({"body": "batch", "batch_size": batch_size})), &dead);
    writer.write(&batch(0..7)).unwrap();
    writer.write(&batch(7..10)).unwrap();
    // The end of an epoch sends the partial batch; so does the end of the run.
    writer.epoch_complete(1).unwrap();
    writer.write(&batch(10..13)).unwrap();
    writer.finish().unwrap();
    let mut records = Vec::new();
    let mut sizes = Vec::new();
    for request in server.requests() {
        let Value::Array(items) = request.json() else { panic!("not an array: {}", request.text()) };
        sizes.push(items.len());
        records.extend(items);
    }
    records.sort_by_key(|record| record["id"].as_i64());
    assert_eq!(records, (0..13).map(expected_record).collect::<Vec<_>>());
    let mut sizes_sorted = sizes.clone();
    sizes_sorted.sort();
    // 10 records in batches of 4 (4, 4 and 2 closed by the epoch's end), then 3 closed by finish.
    assert_eq!(sizes_sorted, [2, 3, 4, 4], "{sizes:?}");
}

#[test]
fn method_and_headers_are_sent() {
    let server = TestServer::start(|_| Reply::status(204));
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let headers = json!({"X-Team": "core", "Content-Type": "application/vnd.example+json"});
    let mut writer = open(options(&server, json!({"method": "PUT", "headers": headers})), &dead);
    writer.write(&batch(0..1)).unwrap();
    writer.finish().unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].header("x-team"), Some("core"));
    assert_eq!(requests[0].header("content-type"), Some("application/vnd.example+json"));
    assert!(dead_letter_lines(&dead).is_empty(), "a 204 is a delivery");
}

#[test]
fn prepare_returns_once_every_request_is_answered() {
    let server = TestServer::start(|_| Reply::ok().after(Duration::from_millis(100)));
    let (_dir, base) = temp();
    let dead = base.join("dead.jsonl");
    let mut writer = open(options(&server, json!({"concurrency": 2})), &dead);
    writer.write(&batch(0..6)).unwrap();
    assert_eq!(writer.prepare(1).unwrap(), Vec::<u8>::new());
    assert_eq!(server.answered(), 6, "a checkpoint must not cover requests still in flight");
    writer.write(&batch(6..8)).unwrap();
    writer.finish().unwrap();
    assert_eq!(server.answered(), 8);
}

#[test]
fn a_missing_environment_variable_fails_open_and_names_it() {
    let options = json!({
        "url": "http://127.0.0.1:9/hook",
        "headers": {"Authorization": "Bearer ${env:SLUICE_TEST_SURELY_UNSET_TOKEN}"}
    });
    let sink = sink("http", options, Path::new("/nonexistent"));
    let error = sink.open(sink_context(0, 1, schema())).err().expect("open fails");
    assert_eq!(
        error.to_string(),
        "options.headers.Authorization: environment variable SLUICE_TEST_SURELY_UNSET_TOKEN is not set; \
         export it before starting the pipeline"
    );
}

#[test]
fn a_dead_letter_that_cannot_be_written_fails_the_writer() {
    let server = TestServer::start(|_| Reply::status(400));
    let mut writer = open(options(&server, json!({})), Path::new("/dev/null/dead.jsonl"));
    writer.write(&batch(0..1)).unwrap();
    let error = writer.finish().expect_err("the dead letter could not be kept");
    assert!(error.report().contains("/dev/null"), "{}", error.report());
}
