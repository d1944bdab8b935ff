//! The control plane as users run it: a real `sluice server` / `sluice up` process on loopback,
//! pipelines created and deployed over HTTP and run as supervised worker processes. A worker
//! killed with SIGKILL is restarted from its checkpoint, a killed control plane leaves its
//! pipelines running and adopts them on restart, and the final output equals an uninterrupted
//! run's, row for row.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// Nexmark at a fixed rate (about 6 s of data), bids counted per auction per 1 s tumbling
/// window: stateful, so a restart that lost or repeated state would change the counts.
const SPEC: &str = r#"name: bids
epoch_ms: 100
checkpoints: {interval: 1s, location: state}
sources:
  - name: nx
    connector: nexmark
    options: {events: 150000, events_per_second: 25000, seed: 5}
    watermark: {column: date_time, max_out_of_orderness: 500ms}
processors:
  - name: per_auction
    inputs: [nx.bid]
    sql: |
      SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
      FROM TABLE(TUMBLE(TABLE nx.bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
      GROUP BY auction, window_start, window_end
sinks:
  - {name: counts, connector: file, inputs: [per_auction], options: {path: out, format: jsonl}}
"#;

/// A control-plane process.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    /// The admin token printed on first start.
    pub(crate) token: Option<String>,
}

impl Server {
    pub(crate) fn start(command: &str, data_dir: &Path, port: u16) -> Server {
        Self::spawn(command, data_dir, port, Stdio::inherit(), "warn", &[])
    }

    /// Like [`Server::start`], its log (stderr, at debug level) into `log`.
    fn start_logging(command: &str, data_dir: &Path, port: u16, log: &Path) -> Server {
        let file = std::fs::File::create(log).unwrap();
        Self::spawn(command, data_dir, port, Stdio::from(file), "debug", &[])
    }

    fn spawn(
        command: &str,
        data_dir: &Path,
        port: u16,
        stderr: Stdio,
        level: &str,
        extra: &[&str],
    ) -> Server {
        let mut child = sluice()
            .args([command, "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the control plane");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut token = None;
        // On first start the token comes first; the last line says it is up.
        for line in lines.by_ref() {
            let line = line.expect("read server output");
            if let Some(found) = line.split_whitespace().find(|word| word.starts_with("slc_")) {
                token.get_or_insert_with(|| found.to_string());
            }
            if line.starts_with("Sluice is up") {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Server { child, port, token };
        wait_until(Duration::from_secs(20), "the API answers", || {
            server.call("GET", "/api/v1/health", None, None).0 == 200
        });
        server
    }

    /// `method path` with `token`; the status and the JSON body (or the text as a string).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        http(self.port, method, path, token, body)
    }

    /// SIGKILL now (the work is in `Drop`).
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Server {
    /// SIGKILL, also when a test fails: nothing of the control plane may outlive the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI with `home` as its home (where `sluice login` saves credentials): whether it
/// succeeded, and its stdout followed by its stderr.
fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let output = sluice().args(args).env("HOME", home).env_remove("SLUICE_URL").output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
    )
}

/// A minimal HTTP/1.1 client: one request per connection.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return (0, Value::Null) };
    let (content_type, body) = body.unwrap_or(("application/json", ""));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request += &format!("Authorization: Bearer {token}\r\n");
    }
    request += "\r\n";
    request += body;
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return (0, Value::Null);
    }
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return (0, Value::Null) };
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status, body)
}

fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn pipeline_files(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("teams/default/pipelines").join(name)
}

/// Committed rows of an uninterrupted `sluice run` of `SPEC`.
fn uninterrupted() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), SPEC).unwrap();
    finish_run(spawn_run(dir.path(), &["--workers", "2"]), "the uninterrupted run");
    canonical(&read_json_lines(&dir.path().join("out")))
}

#[test]
fn a_killed_worker_restarts_from_its_checkpoint_and_a_killed_control_plane_adopts_it() {
    let expected = std::thread::spawn(uninterrupted);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start("server", data.path(), port);
    let token = server.token.clone().expect("the first start prints an admin token");
    let token = Some(token.as_str());
    let base = "/api/v1/teams/default/pipelines";

    // A spec with broken SQL is refused with the planner's diagnostic.
    let broken = SPEC.replace("COUNT(*) AS bids", "COUNT(*) AS bids, nope");
    let (status, body) = server.call("POST", base, token, Some(("application/yaml", &broken)));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"]["errors"][0]["path"].as_str().unwrap().starts_with("processors[0]"),
        "{body}"
    );

    let (status, body) = server.call("POST", base, token, Some(("application/yaml", SPEC)));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.call(
        "POST",
        &format!("{base}/bids/deploy"),
        token,
        Some(("application/json", r#"{"parallelism": 2}"#)),
    );
    assert_eq!(status, 202, "{body}");

    let files = pipeline_files(data.path(), "bids");
    let get = || server.call("GET", &format!("{base}/bids"), token, None).1;
    wait_until(Duration::from_secs(60), "the worker has a complete checkpoint", || {
        get()["state"] == "running" && latest_checkpoint(&files.join("checkpoints")).is_some()
    });
    let first = get()["worker"]["pid"].as_i64().unwrap();
    assert!(std::process::Command::new("kill").args(["-9", &first.to_string()]).status().unwrap().success());
    wait_until(Duration::from_secs(30), "a new worker runs", || {
        let pipeline = get();
        pipeline["state"] == "running" && pipeline["worker"]["pid"].as_i64().is_some_and(|pid| pid != first)
    });
    let second = get()["worker"]["pid"].as_i64().unwrap();

    // The control plane dies; its worker does not.
    server.kill();
    assert!(alive(second), "the worker outlives the control plane");
    let server = Server::start("server", data.path(), port);
    assert!(server.token.is_none(), "a restart prints no new token");
    let get = || server.call("GET", &format!("{base}/bids"), token, None).1;
    assert_eq!(get()["worker"]["pid"].as_i64(), Some(second), "adopted, not restarted");
    wait_until(Duration::from_secs(120), "the pipeline finishes", || get()["state"] == "stopped");

    let (_, events) = server.call("GET", &format!("{base}/bids/events"), token, None);
    let transitions: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}→{}", e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        transitions,
        [
            "created→deploying",
            "deploying→running",
            "running→recovering",
            "recovering→deploying",
            "deploying→running",
            "running→stopped"
        ],
        "{events}"
    );
    let last = &events.as_array().unwrap()[5]["reason"];
    assert!(last.as_str().unwrap().contains("sources ended"), "{last}");
    assert_eq!(get()["desired"], "stopped", "a finished pipeline is not started again");
    let (status, listed) = server.call("GET", &format!("{base}/bids/checkpoints"), token, None);
    assert_eq!(status, 200, "{listed}");
    let newest = &listed["checkpoints"][0];
    assert_eq!(
        (newest["complete"].as_bool(), newest["finished"].as_bool()),
        (Some(true), Some(true)),
        "{listed}"
    );
    assert!(
        newest["bytes"].as_u64().unwrap() > 0 && !newest["parts"].as_array().unwrap().is_empty(),
        "{newest}"
    );
    assert_eq!(newest["workers"], 2);

    let committed = canonical(&read_json_lines(&files.join("out")));
    let expected = expected.join().unwrap();
    assert!(!expected.is_empty());
    assert_eq!(committed.len(), expected.len(), "rows lost or duplicated across the kill");
    assert_eq!(committed, expected);
    server.kill();
}

#[test]
fn sluice_up_runs_the_demo_pipeline_and_stops_it_on_request() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start("up", data.path(), free_port());
    let token = server.token.clone().expect("the first start prints an admin token");
    let token = Some(token.as_str());
    let path = "/api/v1/teams/default/pipelines/demo-payments";
    let out = pipeline_files(data.path(), "demo-payments").join("out");
    wait_until(Duration::from_secs(60), "the demo commits output", || {
        server.call("GET", path, token, None).1["state"] == "running" && !read_json_lines(&out).is_empty()
    });
    for row in read_json_lines(&out) {
        assert!(row["amount"].as_f64().unwrap() > 4000.0, "{row}");
    }
    let (status, body) = server.call("POST", &format!("{path}/stop"), token, None);
    assert_eq!(status, 202, "{body}");
    wait_until(Duration::from_secs(30), "the demo stops", || {
        server.call("GET", path, token, None).1["state"] == "stopped"
    });
    let (status, body) = server.call("GET", path, None, None);
    assert_eq!(status, 401, "{body}");
    server.kill();
}

#[test]
fn the_cli_logs_in_applies_idempotently_and_drives_a_pipeline() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start("server", data.path(), port);
    let token = server.token.clone().unwrap();
    let cli = |args: &[&str]| cli(home.path(), args);
    let (ok, text) = cli(&["login", &format!("http://127.0.0.1:{port}"), "--token", "slc_wrong"]);
    assert!(!ok && text.contains("401"), "{text}");
    let (ok, text) = cli(&["login", &format!("http://127.0.0.1:{port}"), "--token", &token]);
    assert!(ok && text.contains("as admin"), "{text}");
    let saved = home.path().join(".config/sluice/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);

    let specs = tempfile::tempdir().unwrap();
    std::fs::write(specs.path().join("bids.yaml"), SPEC).unwrap();
    let apply = [&["apply", "-f"][..], &[specs.path().to_str().unwrap()]].concat();
    let (ok, text) = cli(&apply);
    assert!(ok && text.contains("pipeline bids created"), "{text}");
    let (ok, text) = cli(&apply);
    assert!(ok && text.contains("pipeline bids unchanged (version 1)"), "{text}");
    std::fs::write(specs.path().join("bids.yaml"), SPEC.replace("seed: 5", "seed: 6")).unwrap();
    let (ok, text) = cli(&apply);
    assert!(ok && text.contains("pipeline bids updated to version 2"), "{text}");
    std::fs::write(
        specs.path().join("bids.yaml"),
        SPEC.replace("COUNT(*) AS bids", "COUNT(*) AS bids, nope"),
    )
    .unwrap();
    let (ok, text) = cli(&apply);
    assert!(!ok && text.contains("422") && text.contains("processors[0].sql"), "{text}");

    let (ok, text) = cli(&["pipelines", "deploy", "bids", "--parallelism", "2"]);
    assert!(ok && text.contains("bids"), "{text}");
    let state = || {
        let (_, text) = cli(&["pipelines", "get", "bids", "-o", "json"]);
        serde_json::from_str::<Value>(&text)
            .map(|v| v[0]["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "the pipeline runs", || state() == "running");
    let (ok, text) = cli(&["pipelines", "list"]);
    assert!(ok && text.lines().any(|l| l.starts_with("bids") && l.contains("running")), "{text}");
    let (ok, text) = cli(&["pipelines", "savepoint", "bids"]);
    assert!(ok, "{text}");
    wait_until(Duration::from_secs(30), "the pipeline stops", || state() == "stopped");
    let (ok, text) = cli(&["pipelines", "events", "bids"]);
    assert!(ok && text.contains("savepointing") && text.contains("stopped"), "{text}");
    let (ok, text) = cli(&["pipelines", "checkpoints", "bids", "-o", "json"]);
    let listed: Value = serde_json::from_str(&text).unwrap_or_default();
    let (_, pipeline) = cli(&["pipelines", "get", "bids", "-o", "json"]);
    let pipeline: Value = serde_json::from_str(&pipeline).unwrap();
    assert!(ok && listed["savepoints"][0]["path"] == pipeline[0]["last_savepoint"], "{text}\n{pipeline}");
    let (ok, text) = cli(&["pipelines", "stop", "bids"]);
    assert!(!ok && text.contains("409"), "{text}");
    let (ok, text) = cli(&["pipelines", "delete", "bids"]);
    assert!(ok, "{text}");
    assert!(!pipeline_files(data.path(), "bids").exists(), "its files are gone");
    server.kill();
}

/// A connection (a PostgreSQL profile whose URL is a team secret) is applied with the
/// pipeline that names it from one folder; the worker writes through it; a change that would
/// break the pipeline and the deletion of the connection in use are refused.
#[test]
fn a_connection_applied_with_its_pipeline_reaches_the_worker() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start("server", data.path(), port);
    let token = server.token.clone().unwrap();
    let cli = |args: &[&str]| cli(home.path(), args);
    let (ok, text) = cli(&["login", &format!("http://127.0.0.1:{port}"), "--token", &token]);
    assert!(ok, "{text}");
    let password = "conn-pw-8c1e55";
    let url = format!("postgres://postgres:{password}@127.0.0.1:5432/test");
    let (status, body) = server.call(
        "PUT",
        "/api/v1/teams/default/secrets/warehouse",
        Some(&token),
        Some(("application/json", &serde_json::json!({ "value": url }).to_string())),
    );
    assert_eq!(status, 200, "{body}");
    let table = format!("conn_rows_{}", std::process::id());
    let folder = tempfile::tempdir().unwrap();
    let connection = "name: warehouse
connector: postgres
description: the analytics database
options: {url_env: SLUICE_SECRET_WAREHOUSE, create_table: true}
";
    std::fs::write(folder.path().join("warehouse.yaml"), connection).unwrap();
    let spec = format!(
        "name: loader
sources:
  - name: src
    connector: datagen
    schema: [{{name: n, type: int64, nullable: false}}]
    options: {{count: 700, seed: 4}}
sinks:
  - {{name: db, connection: warehouse, inputs: [src], options: {{table: public.{table}}}}}
"
    );
    // Named to sort before the connection: connections are applied first anyway.
    std::fs::write(folder.path().join("a-loader.yaml"), &spec).unwrap();
    let apply = [&["apply", "--deploy", "-f"][..], &[folder.path().to_str().unwrap()]].concat();
    let (ok, text) = cli(&apply);
    assert!(ok, "{text}");
    let lines: Vec<&str> = text.lines().map(|l| l.rsplit(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        ["connection warehouse created", "pipeline loader created", "pipeline loader deployed"],
        "{text}"
    );
    let base = "/api/v1/teams/default/pipelines/loader";
    wait_until(Duration::from_secs(60), "the pipeline finishes", || {
        server.call("GET", base, Some(&token), None).1["state"] == "stopped"
    });
    let rows = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc"])
        .arg(format!("SELECT COUNT(*), COUNT(DISTINCT n) FROM public.{table}; DROP TABLE public.{table};"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).lines().next(), Some("700|700"), "{rows:?}");

    let (ok, text) = cli(&apply);
    assert!(
        ok && text.contains("connection warehouse unchanged") && text.contains("loader unchanged"),
        "{text}"
    );
    let (ok, text) = cli(&["connections", "list"]);
    assert!(ok && text.lines().any(|l| l.starts_with("warehouse") && l.contains("postgres")), "{text}");
    let (ok, text) = cli(&["connections", "get", "warehouse", "-o", "json"]);
    let got: Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(ok && got["used_by"] == serde_json::json!(["loader"]), "{text}");
    assert!(!text.contains(password), "{text}");

    // The real connector check runs against the pipeline with the new settings.
    std::fs::write(
        folder.path().join("warehouse.yaml"),
        connection.replace("create_table: true", "batch_size: many"),
    )
    .unwrap();
    let (ok, text) = cli(&apply);
    assert!(
        !ok && text.contains("422")
            && text.contains("pipeline loader version 1: sinks[0].options.batch_size"),
        "{text}"
    );
    let (ok, text) = cli(&["connections", "delete", "warehouse"]);
    assert!(!ok && text.contains("409") && text.contains("loader"), "{text}");
    for file in [
        pipeline_files(data.path(), "loader").join("spec-v1.yaml"),
        pipeline_files(data.path(), "loader").join("worker.log"),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(password), "{} shows the secret", file.display());
    }
    let written =
        std::fs::read_to_string(pipeline_files(data.path(), "loader").join("spec-v1.yaml")).unwrap();
    assert!(
        written.contains("url_env: SLUICE_SECRET_WAREHOUSE") && !written.contains("connection"),
        "{written}"
    );
    server.kill();
}

/// A team secret reaches the worker that names it (a PostgreSQL URL with a password; the local
/// server trusts loopback, so the password is carried but not checked) and nothing the platform
/// shows or logs contains it.
#[test]
fn a_secret_reaches_its_worker_and_nothing_shows_it() {
    let data = tempfile::tempdir().unwrap();
    let server_log = data.path().join("server.log");
    let port = free_port();
    let server = Server::start_logging("server", data.path(), port, &server_log);
    let token = server.token.clone().unwrap();
    let token = Some(token.as_str());
    let password = "s3cr3t-pw-4b1d9e";
    let table = format!("secret_rows_{}", std::process::id());
    let url = format!("postgres://postgres:{password}@127.0.0.1:5432/test");
    let mut shown = Vec::new();
    let (status, body) = server.call(
        "PUT",
        "/api/v1/teams/default/secrets/warehouse",
        token,
        Some(("application/json", &serde_json::json!({ "value": url }).to_string())),
    );
    assert_eq!(status, 200, "{body}");
    shown.push(body);
    let spec = format!(
        "name: warehouse
sources:
  - name: src
    connector: datagen
    schema: [{{name: n, type: int64, nullable: false}}]
    options: {{count: 500, seed: 3}}
sinks:
  - name: db
    connector: postgres
    inputs: [src]
    options: {{url_env: SLUICE_SECRET_WAREHOUSE, table: public.{table}, create_table: true}}
"
    );
    let base = "/api/v1/teams/default/pipelines";
    let (status, body) = server.call("POST", base, token, Some(("application/yaml", &spec)));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.call("POST", &format!("{base}/warehouse/deploy"), token, None);
    assert_eq!(status, 202, "{body}");
    wait_until(Duration::from_secs(60), "the pipeline finishes", || {
        server.call("GET", &format!("{base}/warehouse"), token, None).1["state"] == "stopped"
    });
    let rows = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc"])
        .arg(format!("SELECT COUNT(*) FROM public.{table}; DROP TABLE public.{table};"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).lines().next(),
        Some("500"),
        "the worker used the secret URL"
    );
    for path in ["", "/events", "/versions", "/logs"] {
        shown.push(server.call("GET", &format!("{base}/warehouse{path}"), token, None).1);
    }
    shown.push(server.call("GET", "/api/v1/teams/default/secrets", token, None).1);
    shown.push(server.call("GET", "/api/v1/audit", token, None).1);
    for body in &shown {
        assert!(!body.to_string().contains(password), "{body}");
    }
    drop(server);
    let files = pipeline_files(data.path(), "warehouse");
    for file in
        [server_log, files.join("worker.log"), files.join("spec-v1.yaml"), files.join("runs/1.status.json")]
    {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(password), "{} shows the secret", file.display());
    }
}

/// A worker that does not stop when asked (its HTTP sink waits on a server that never answers)
/// is killed after `--stop-timeout`, and the pipeline ends up stopped.
#[test]
fn a_worker_that_does_not_stop_in_time_is_killed() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        "server",
        data.path(),
        free_port(),
        Stdio::inherit(),
        "warn",
        &["--stop-timeout", "2s"],
    );
    let token = server.token.clone().unwrap();
    let token = Some(token.as_str());
    let spec = format!(
        "name: stuck
sources:
  - name: src
    connector: datagen
    schema: [{{name: n, type: int64}}]
    options: {{count: 10, seed: 1}}
sinks:
  - name: hook
    connector: http
    inputs: [src]
    options: {{url: 'http://127.0.0.1:{silent_port}/hook', timeout: 600s}}
"
    );
    let base = "/api/v1/teams/default/pipelines";
    assert_eq!(server.call("POST", base, token, Some(("application/yaml", &spec))).0, 201);
    assert_eq!(server.call("POST", &format!("{base}/stuck/deploy"), token, None).0, 202);
    let get = || server.call("GET", &format!("{base}/stuck"), token, None).1;
    wait_until(Duration::from_secs(30), "the worker runs", || get()["state"] == "running");
    // Give the sink time to send its request and block on it.
    std::thread::sleep(Duration::from_secs(1));
    let pid = get()["worker"]["pid"].as_i64().unwrap();
    let asked = Instant::now();
    assert_eq!(server.call("POST", &format!("{base}/stuck/stop"), token, None).0, 202);
    wait_until(Duration::from_secs(30), "the pipeline stops", || get()["state"] == "stopped");
    assert!(asked.elapsed() >= Duration::from_secs(2), "killed before the timeout: {:?}", asked.elapsed());
    assert!(!alive(pid), "the worker is gone");
    let (_, events) = server.call("GET", &format!("{base}/stuck/events"), token, None);
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("stopping"), Some("stopped")), "{events}");
}

/// `GET path` with `token`: the status, the response head and the body as text.
fn get_text(port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the control plane");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request += &format!("Authorization: Bearer {token}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `(records out of node `src`, records in of node `out`)` in a metrics answer.
fn source_and_sink(metrics: &Value) -> (u64, u64) {
    let nodes = metrics["nodes"].as_array().cloned().unwrap_or_default();
    let counter = |name: &str, key: &str| {
        nodes.iter().find(|n| n["name"] == name).and_then(|n| n[key].as_u64()).unwrap_or(0)
    };
    (counter("src", "records_out"), counter("out", "records_in"))
}

/// A rate-limited generator writing to a file: its metrics endpoint reports what its worker
/// counts, growing while it runs, with the sink never ahead of the source; after a graceful stop
/// the last snapshot's counts equal the rows committed. Prometheus sees the same nodes and is
/// for platform admins only; the CLI shows the metrics and manages the dataset the pipeline
/// registered.
#[test]
fn pipeline_metrics_follow_the_running_worker_and_match_its_output() {
    let data = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    let out = output.path().join("out");
    let port = free_port();
    let server = Server::start("server", data.path(), port);
    let admin = server.token.clone().unwrap();
    let token = Some(admin.as_str());
    let spec = format!(
        "name: ticks
sources:
  - name: src
    connector: datagen
    schema: [{{name: n, type: int64, nullable: false}}]
    options: {{rows_per_second: 400, seed: 11}}
sinks:
  - {{name: out, connector: file, inputs: [src], options: {{path: '{}', format: jsonl}}}}
",
        out.display()
    );
    let base = "/api/v1/teams/default/pipelines";
    let metrics_path = format!("{base}/ticks/metrics");
    let (status, body) = server.call("POST", base, token, Some(("application/yaml", &spec)));
    assert_eq!(status, 201, "{body}");
    let (status, before) = server.call("GET", &metrics_path, token, None);
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["nodes"], serde_json::json!([]), "{before}");
    assert_eq!(before["message"], "no metrics yet: the pipeline has not run");

    let (status, body) = server.call("POST", &format!("{base}/ticks/deploy"), token, None);
    assert_eq!(status, 202, "{body}");
    let metrics = || server.call("GET", &metrics_path, token, None).1;
    wait_until(Duration::from_secs(60), "the source has emitted records", || {
        source_and_sink(&metrics()).0 > 0
    });
    let first = metrics();
    std::thread::sleep(Duration::from_millis(2500));
    let second = metrics();
    let ((source_1, sink_1), (source_2, sink_2)) = (source_and_sink(&first), source_and_sink(&second));
    assert!(sink_1 <= source_1 && sink_2 <= source_2, "a sink ahead of its source:\n{first}\n{second}");
    assert!(source_2 > source_1 && sink_2 > sink_1, "counts do not grow:\n{first}\n{second}");
    assert!(second["at_ms"].as_i64() > first["at_ms"].as_i64(), "the snapshot is not rewritten: {second}");
    assert_eq!(second["state"], "running");
    let age = second["age_ms"].as_i64().unwrap();
    assert!((0..10_000).contains(&age), "a stale snapshot: {second}");
    let nodes: Vec<(&str, &str)> = second["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["role"].as_str().unwrap()))
        .collect();
    assert_eq!(nodes, [("src", "source"), ("out", "sink")]);
    assert!(second["nodes"][0]["records_out_per_second"].as_f64().unwrap() > 0.0, "{second}");

    // Prometheus: the pipeline's state and node lines for an admin; 403 for anyone else.
    let (status, head, text) = get_text(port, "/api/v1/metrics", token);
    assert_eq!(status, 200, "{text}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(
        text.lines()
            .any(|l| l == "sluice_pipeline_state{team=\"default\",pipeline=\"ticks\",state=\"running\"} 1"),
        "{text}"
    );
    let exported = |prefix: &str| -> u64 {
        let line =
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let exported_source = exported(
        "sluice_node_records_out_total{team=\"default\",pipeline=\"ticks\",node=\"src\",role=\"source\"} ",
    );
    let exported_sink = exported(
        "sluice_node_records_in_total{team=\"default\",pipeline=\"ticks\",node=\"out\",role=\"sink\"} ",
    );
    assert!(exported_source >= source_2 && exported_sink <= exported_source, "{text}");
    let call = |method: &str, path: &str, body: &str| {
        server.call(method, path, token, Some(("application/json", body)))
    };
    assert_eq!(call("POST", "/api/v1/users", r#"{"name": "vera"}"#).0, 201);
    assert_eq!(call("PUT", "/api/v1/teams/default/members/vera", r#"{"role": "viewer"}"#).0, 200);
    let (status, issued) = call("POST", "/api/v1/tokens", r#"{"user": "vera"}"#);
    assert_eq!(status, 201, "{issued}");
    let viewer = issued["token"].as_str().unwrap();
    let (status, _, text) = get_text(port, "/api/v1/metrics", Some(viewer));
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        server.call("GET", &metrics_path, Some(viewer), None).0,
        200,
        "viewers see their team's metrics"
    );

    // The CLI: metrics as a table and as JSON; the dataset the deploy registered.
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| cli(home.path(), args);
    let (ok, text) = cli(&["login", &format!("http://127.0.0.1:{port}"), "--token", &admin]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&["pipelines", "metrics", "ticks"]);
    assert!(ok && text.starts_with("pipeline ticks: running, run 1"), "{text}");
    let row =
        |name: &str| text.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_string);
    let src = row("src").unwrap_or_else(|| panic!("no src row in\n{text}"));
    assert_eq!(src.split_whitespace().nth(1), Some("source"), "{text}");
    let records_out: u64 = src.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(records_out >= source_2, "{text}");
    assert!(row("out").is_some_and(|l| l.contains(" sink ")), "{text}");
    let (ok, text) = cli(&["pipelines", "metrics", "ticks", "-o", "json"]);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(ok && parsed["nodes"][1]["name"] == "out" && parsed["pipeline"] == "ticks", "{text}");

    let dataset = format!("file:{}", out.display());
    let (ok, text) = cli(&["datasets", "list"]);
    assert!(ok && text.lines().any(|l| l.starts_with(&dataset) && l.contains("default")), "{text}");
    assert_eq!(call("POST", "/api/v1/teams", r#"{"name": "risk"}"#).0, 201);
    let get = || {
        let (ok, text) = cli(&["datasets", "get", &dataset, "-o", "json"]);
        assert!(ok, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let (ok, text) = cli(&["datasets", "grant", &dataset, "--team", "risk", "--read", "--write"]);
    assert!(ok && text.contains("readers:        risk") && text.contains("writers:        risk"), "{text}");
    let (ok, text) = cli(&["datasets", "revoke", &dataset, "--team", "risk", "--write"]);
    assert!(ok, "{text}");
    let granted = get();
    assert_eq!(
        (&granted["readers"], &granted["writers"]),
        (&serde_json::json!(["risk"]), &serde_json::json!([]))
    );
    let (ok, text) = cli(&["datasets", "grant", &dataset, "--team", "risk"]);
    assert!(!ok && text.contains("--read"), "an access is required: {text}");
    let (ok, text) = cli(&["datasets", "describe", &dataset, "--classification", "internal"]);
    assert!(ok, "{text}");
    let described = get();
    assert_eq!(described["classification"], "internal");
    assert_eq!(described["description"], granted["description"], "what was not given is kept");
    let (ok, text) = cli(&["datasets", "get", "kafka:nothing"]);
    assert!(!ok && text.contains("404"), "{text}");

    // After a graceful stop, the final snapshot counts exactly what was committed.
    let (status, body) = server.call("POST", &format!("{base}/ticks/stop"), token, None);
    assert_eq!(status, 202, "{body}");
    wait_until(Duration::from_secs(60), "the pipeline stops", || {
        server.call("GET", &format!("{base}/ticks"), token, None).1["state"] == "stopped"
    });
    let last = metrics();
    assert_eq!((last["state"].as_str(), last["ended"].as_bool()), (Some("stopped"), Some(true)), "{last}");
    assert!(last["message"].as_str().unwrap().contains("last metrics of run 1"), "{last}");
    let (source, sink) = source_and_sink(&last);
    let committed = read_json_lines(&out).len() as u64;
    assert!(source >= source_2, "{last}");
    assert_eq!((source, sink), (committed, committed), "{last}");
    server.kill();
}
