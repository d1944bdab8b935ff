//! Test support shared by every crate's tests: a real Kafka-protocol broker (`tansu`, with
//! SQLite storage in a temporary directory) on a free loopback port, and plain producer and
//! consumer helpers to put records in and read them back. Never a mock.
//!
//! For NATS JetStream and MQTT, whose servers run on the machine (`127.0.0.1:4222` and
//! `127.0.0.1:1883`, started by `.ci/run` when down), [`nats`] and [`mqtt`] hold clients that
//! create streams, publish and read back independently of the connectors; for Redis
//! (`127.0.0.1:6379`, also started by `.ci/run`), [`redis`] holds a client of a key space of
//! its own and a private server that a test may stop.
//!
//! The binary is found at `$SLUICE_TANSU`, `$HOME/.cache/sluice-tools/bin/tansu` (where
//! `.ci/run` installs it) or on `PATH`. When it is missing, [`Tansu::start`] panics if `CI` is
//! set and otherwise prints a loud warning and returns `None`, so the calling test skips.

pub mod mqtt;
pub mod nats;
pub mod redis;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A record to produce: key, payload and headers.
pub type Outgoing<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [(&'a str, &'a [u8])]);

/// A running `tansu` broker; killed on drop.
pub struct Tansu {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

/// One record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes.
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Tansu {
    /// Starts a broker, or returns `None` (after a loud warning) when the binary is missing
    /// and `CI` is not set.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_binary() else {
            let help = "tansu not found (looked at $SLUICE_TANSU, $HOME/.cache/sluice-tools/bin/tansu, PATH); \
                        install it with `cargo install tansu --version 0.6.0 --locked --no-default-features \
                        --features libsql --root $HOME/.cache/sluice-tools` or run .ci/run";
            if std::env::var_os("CI").is_some() {
                panic!("{help}");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPING KAFKA TESTS: {help}\n!!!!!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let mut broker = Self { child: None, binary, port: free_port(), dir };
        broker.spawn();
        Some(broker)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("create the broker log");
        let child = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "tansu did not start listening on port {} (exit: {exited:?}); its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's address for `brokers:` options, e.g. `127.0.0.1:40123`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// The folder the broker keeps its data in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the broker (as a crash would) and starts it again on the same port and data.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args(["topic", "create", name, "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run tansu topic create");
        assert!(
            output.status.success(),
            "creating topic {name} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Produces `records` (key, payload, headers) to `topic` and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, records: &[Outgoing<'_>]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("linger.ms", "5")
            .create()
            .expect("create a producer");
        for (key, payload, headers) in records {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            if !headers.is_empty() {
                let mut owned = OwnedHeaders::new();
                for (name, value) in *headers {
                    owned = owned.insert(Header { key: name, value: Some(*value) });
                }
                record = record.headers(owned);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, returned)) => {
                        record = returned;
                        producer.poll(Duration::from_millis(20));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("records acknowledged");
    }

    /// Every record of `topic` from the beginning up to the end offsets as of now, by partition
    /// and offset.
    pub fn consume_all(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "sluice-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("create a consumer");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        for partition in partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
            if high > low {
                assignment.add_partition_offset(topic, partition, Offset::Offset(low)).expect("assign");
                ends.push((partition, high));
            }
        }
        let mut records = Vec::new();
        if ends.is_empty() {
            return records;
        }
        consumer.assign(&assignment).expect("assign");
        let total: i64 = ends.iter().map(|(_, high)| high).sum();
        let mut seen = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ends.iter().any(|(p, high)| seen.get(p).copied().unwrap_or(-1) + 1 < *high) {
            assert!(
                Instant::now() < deadline,
                "reading {topic} back timed out after {} of ~{total} records",
                records.len()
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    seen.insert(message.partition(), message.offset());
                    let headers = message
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                        .unwrap_or_default();
                    records.push(Record {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
                Some(Err(error)) => eprintln!("test consumer: {error}"),
                None => {}
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_TANSU") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let home = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/sluice-tools/bin/tansu"));
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("tansu")).collect::<Vec<_>>());
    home.into_iter().chain(on_path.into_iter().flatten()).find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

/// Whether a server answers on `127.0.0.1:port`. When it does not, panics if `CI` is set
/// (CI starts the servers, so a missing one is a failure) and otherwise prints a loud warning
/// and returns false, so the calling test skips.
fn server_answers(port: u16, what: &str, start: &str) -> bool {
    let address = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok() {
        return true;
    }
    let help = format!("{what} does not answer on 127.0.0.1:{port}; start it with `{start}` or run .ci/run");
    if std::env::var_os("CI").is_some() {
        panic!("{help}");
    }
    eprintln!("\n!!!!!!!!\n!!! SKIPPING {what} TESTS: {help}\n!!!!!!!!\n");
    false
}

/// Waits until a server listens on `127.0.0.1:port`; panics after 10 s, naming `what`.
pub(crate) fn wait_for_listener(port: u16, what: &str) {
    let address = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a server process with SIGTERM (so it can save what it keeps) and waits for it.
pub(crate) fn terminate(child: Option<std::process::Child>) {
    if let Some(mut child) = child {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
}

/// A name no other test (or test run) uses, for streams, subjects and topics.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{}_{nanos:x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
