//! The `http` sink through the binary: a SQL filter into an HTTP sink against a server written
//! in the test that fails on purpose. Every record that passes the filter arrives at least
//! once or is in the dead-letter folder, with checkpoints on; the secret in a header reaches
//! the server but never the logs, the output or the dead letters.

use super::*;

#[path = "../../../sluice-connectors/tests/connectors/http_server.rs"]
mod http_server;

use http_server::{Reply, Request, TestServer};

const RECORDS: i64 = 300;
const SECRET: &str = "tok-3f9a1c-never-print-me";

/// What the server does with record `id`: a 400 for multiples of 7, always a 503 for other
/// multiples of 11, a 500 on the first attempt of other multiples of 3, else a 200.
fn reply(request: &Request, id: i64) -> Reply {
    // Servers echo credentials in errors more often than they should.
    let echo = format!("rejected {}", request.header("authorization").unwrap_or("no credentials"));
    if id % 7 == 0 {
        Reply::status(400).body(echo)
    } else if id % 11 == 0 {
        Reply::status(503).body(echo)
    } else if id % 3 == 0 && request.attempt == 1 {
        Reply::status(500).body(echo)
    } else {
        Reply::ok()
    }
}

fn amount(id: i64) -> i64 {
    (id * 37) % 100
}

fn spec(url: &str) -> String {
    format!(
        r#"
name: webhook
dead_letter: {{path: dead}}
checkpoints: {{interval: 1s, location: state}}
sources:
  - name: orders
    connector: file
    options: {{path: orders.jsonl}}
    schema:
      - {{name: id, type: int64, nullable: false}}
      - {{name: amount, type: int64, nullable: false}}
processors:
  - name: big
    inputs: [orders]
    sql: SELECT id, amount FROM orders WHERE amount >= 50
sinks:
  - name: hook
    connector: http
    inputs: [big]
    options:
      url: {url}
      headers: {{Authorization: "Bearer ${{env:SLUICE_E2E_HTTP_TOKEN}}"}}
      timeout: 2s
      retry: {{max_attempts: 3, initial_backoff: 1ms, max_backoff: 10ms}}
"#
    )
}

#[test]
fn filtered_records_reach_the_server_at_least_once_and_failures_are_dead_letters() {
    let server = TestServer::start(|request| {
        let id = request.json()["id"].as_i64().unwrap_or(-1);
        reply(request, id)
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(&server.url("/orders"))).unwrap();
    let lines: Vec<String> =
        (0..RECORDS).map(|id| format!(r#"{{"id": {id}, "amount": {}}}"#, amount(id))).collect();
    std::fs::write(dir.path().join("orders.jsonl"), lines.join("\n") + "\n").unwrap();

    let output = sluice()
        .args(["run", "pipeline.yaml", "-w", "2"])
        .current_dir(dir.path())
        .env("SLUICE_E2E_HTTP_TOKEN", SECRET)
        .env("RUST_LOG", "debug")
        .output()
        .expect("start sluice");
    assert_success(&output, "run");

    // Expected outcomes, from the filter and the server's rules, not from the sink.
    let passing: Vec<i64> = (0..RECORDS).filter(|&id| amount(id) >= 50).collect();
    let rejected: Vec<i64> = passing.iter().copied().filter(|id| id % 7 == 0 || id % 11 == 0).collect();
    let deliverable: Vec<i64> = passing.iter().copied().filter(|id| !rejected.contains(id)).collect();
    assert!(!rejected.is_empty() && deliverable.len() > 100, "the data exercises both paths");

    let mut delivered: Vec<i64> =
        server.delivered().iter().map(|request| request.json()["id"].as_i64().unwrap()).collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, deliverable, "every deliverable record arrives at least once");
    for request in server.requests() {
        assert_eq!(request.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
        assert_eq!(request.json()["amount"].as_i64(), Some(amount(request.json()["id"].as_i64().unwrap())));
    }

    let letters = read_json_lines(&dir.path().join("dead/hook"));
    let mut dead: Vec<i64> = letters
        .iter()
        .map(|letter| {
            let raw: Value = serde_json::from_str(letter["raw"].as_str().unwrap()).unwrap();
            raw["id"].as_i64().unwrap()
        })
        .collect();
    dead.sort();
    assert_eq!(dead, rejected, "every rejected record is a dead letter, once");
    for letter in &letters {
        let raw: Value = serde_json::from_str(letter["raw"].as_str().unwrap()).unwrap();
        let id = raw["id"].as_i64().unwrap();
        let (status, attempts) = if id % 7 == 0 { (400, 1) } else { (503, 3) };
        assert_eq!(
            (letter["status"].as_i64(), letter["attempts"].as_i64()),
            (Some(status), Some(attempts)),
            "{letter}"
        );
        assert_eq!(letter["url"], server.url("/orders"));
        assert_eq!(letter["response"], "rejected Bearer ***", "the echoed secret is redacted");
        assert_eq!(letter["pipeline"], "webhook");
    }

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP request failed; retrying"), "debug logs are on:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "bad records from \"hook\": {} sent to the dead-letter destination",
            rejected.len()
        )),
        "the summary counts the sink's dead letters:\n{stderr}"
    );
    let mut dead_files = String::new();
    for file in visible_files(&dir.path().join("dead/hook")) {
        dead_files.push_str(&std::fs::read_to_string(file).unwrap());
    }
    for (what, text) in [("stdout", &*stdout), ("stderr", &*stderr), ("dead letters", &dead_files)] {
        assert!(!text.contains(SECRET), "the secret leaked into {what}");
    }
}

#[test]
fn a_missing_secret_fails_the_run_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec("http://127.0.0.1:9/orders")).unwrap();
    std::fs::write(dir.path().join("orders.jsonl"), "{\"id\": 1, \"amount\": 60}\n").unwrap();
    let output = sluice()
        .args(["run", "pipeline.yaml", "-w", "1"])
        .current_dir(dir.path())
        .env_remove("SLUICE_E2E_HTTP_TOKEN")
        .output()
        .expect("start sluice");
    assert!(!output.status.success(), "the run must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "node \"hook\": options.headers.Authorization: environment variable SLUICE_E2E_HTTP_TOKEN is not set"
        ),
        "{stderr}"
    );
}
