//! A NATS JetStream client for tests: creates streams, publishes, and reads a stream back by
//! sequence (through the stream's message API, not through a consumer), independently of the
//! `nats` connector. Talks to the machine's server at `127.0.0.1:4222`.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};

/// The server the tests use.
pub const URL: &str = "nats://127.0.0.1:4222";

/// A message to publish: subject, payload and headers.
pub type Outgoing = (String, Vec<u8>, Vec<(String, String)>);

/// One message read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Headers with their first value, sorted.
    pub headers: Vec<(String, String)>,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A connection to the test server; streams it created are deleted on drop.
pub struct JetStream {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
    created: Vec<String>,
}

impl JetStream {
    /// Connects, or returns `None` (after a loud warning) when no server answers and `CI` is
    /// not set; panics in CI.
    pub fn connect() -> Option<Self> {
        if !super::server_answers(4222, "NATS", "service nats-server start (see .ci/run)") {
            return None;
        }
        Some(Self::connect_to(URL))
    }

    /// Connects to the server at `url` (which must answer).
    pub fn connect_to(url: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start a runtime");
        let client = runtime.block_on(async_nats::connect(url)).expect("connect to NATS");
        let js = {
            let _inside = runtime.enter();
            jetstream::new(client)
        };
        Self { js, runtime, created: Vec::new() }
    }

    /// Creates stream `name` capturing `subjects` (replacing one of that name).
    pub fn create_stream(&mut self, name: &str, subjects: &[&str]) {
        self.create_stream_stored(name, subjects, stream::StorageType::Memory);
    }

    /// Creates stream `name` kept on disk, so that it outlives a server restart.
    pub fn create_file_stream(&mut self, name: &str, subjects: &[&str]) {
        self.create_stream_stored(name, subjects, stream::StorageType::File);
    }

    fn create_stream_stored(&mut self, name: &str, subjects: &[&str], storage: stream::StorageType) {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.runtime.block_on(async {
            let _ = self.js.delete_stream(name).await;
            self.js.create_stream(config).await.expect("create a stream")
        });
        self.created.push(name.to_owned());
    }

    /// Publishes messages `(subject, payload, headers)` and waits for their acknowledgements;
    /// returns their stream sequences.
    pub fn publish(&self, messages: &[Outgoing]) -> Vec<u64> {
        self.runtime.block_on(async {
            let mut acks = Vec::with_capacity(messages.len());
            let mut sequences = Vec::with_capacity(messages.len());
            for (subject, payload, headers) in messages {
                let mut map = HeaderMap::new();
                for (name, value) in headers {
                    map.insert(name.as_str(), value.as_str());
                }
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), map, payload.clone().into())
                    .await
                    .expect("publish");
                acks.push(ack);
                if acks.len() >= 1000 {
                    for ack in acks.drain(..) {
                        sequences.push(ack.await.expect("publish acknowledged").sequence);
                    }
                }
            }
            for ack in acks {
                sequences.push(ack.await.expect("publish acknowledged").sequence);
            }
            sequences
        })
    }

    /// Publishes payloads without headers to one subject.
    pub fn publish_payloads(&self, subject: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
        let messages: Vec<Outgoing> =
            payloads.iter().map(|p| (subject.to_owned(), p.clone(), Vec::new())).collect();
        self.publish(&messages)
    }

    /// Every message stream `name` holds, in sequence order.
    pub fn messages(&self, name: &str) -> Vec<Stored> {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.expect("get the stream");
            let state = stream.info().await.expect("stream info").state.clone();
            let mut stored = Vec::new();
            if state.messages == 0 {
                return stored;
            }
            for sequence in state.first_sequence..=state.last_sequence {
                let Ok(message) = stream.get_raw_message(sequence).await else { continue };
                let mut headers: Vec<(String, String)> = message
                    .headers
                    .iter()
                    .filter_map(|(name, values)| {
                        Some((name.to_string(), values.first()?.as_str().to_owned()))
                    })
                    .collect();
                headers.sort();
                stored.push(Stored {
                    sequence,
                    subject: message.subject.to_string(),
                    payload: message.payload.to_vec(),
                    headers,
                    timestamp: i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                });
            }
            stored
        })
    }
}

impl Drop for JetStream {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.created) {
            let _ = self.runtime.block_on(self.js.delete_stream(&name));
        }
    }
}

/// A `nats-server` with JetStream of a test's own on a free loopback port, storing streams in a
/// temporary folder across restarts; stopped on drop. For tests that restart the server.
pub struct PrivateServer {
    child: Option<std::process::Child>,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Starts a server, or returns `None` (after a loud warning) when `nats-server` is not
    /// installed and `CI` is not set.
    pub fn start() -> Option<Self> {
        if !std::path::Path::new(BINARY).exists() {
            let help =
                format!("{BINARY} is missing; install it with `apt-get install nats-server` or run .ci/run");
            if std::env::var_os("CI").is_some() {
                panic!("{help}");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPING NATS SERVER RESTART TESTS: {help}\n!!!!!!!!\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut server = Self { child: None, port: super::free_port(), dir };
        server.spawn();
        Some(server)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("create the server log");
        let child = std::process::Command::new(BINARY)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        super::wait_for_listener(self.port, "the private NATS server");
    }

    /// Stops the server with SIGTERM, waits `down`, and starts it again on the same port.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn stop(&mut self) {
        super::terminate(self.child.take());
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

const BINARY: &str = "/usr/sbin/nats-server";
