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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start a runtime");
        let client = runtime.block_on(async_nats::connect(URL)).expect("connect to NATS");
        let js = {
            let _inside = runtime.enter();
            jetstream::new(client)
        };
        Some(Self { js, runtime, created: Vec::new() })
    }

    /// Creates stream `name` capturing `subjects` (replacing one of that name).
    pub fn create_stream(&mut self, name: &str, subjects: &[&str]) {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: stream::StorageType::Memory,
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
