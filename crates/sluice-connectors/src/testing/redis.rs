//! A Redis client for tests: puts values in and reads keys, hashes and streams back,
//! independently of the `redis` connector (a plain synchronous connection), in a key space of
//! its own on the machine's server at `127.0.0.1:6379`; and [`Server`], a private
//! `redis-server` on a free port that a test may stop and start again.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{FromRedisValue, ToRedisArgs};

/// The machine's server.
pub const ADDRESS: &str = "127.0.0.1:6379";
/// The database the tests use on it.
pub const DB: u8 = 3;

/// Whether the machine's server answers. When it does not: panics if `CI` is set, otherwise
/// warns loudly and returns false, so the calling test skips.
pub fn available() -> bool {
    super::server_answers(6379, "Redis", "service redis-server start (see .ci/run)")
}

/// Keys under a prefix of their own on the machine's server (database [`DB`]), deleted on drop.
pub struct Keyspace {
    connection: redis::Connection,
    /// Every key of this key space starts with it, e.g. `sluice-test-123-0-9f2c:`.
    pub prefix: String,
}

impl Keyspace {
    /// A new key space, or `None` (after a loud warning) when no server answers and `CI` is
    /// not set; panics in CI.
    pub fn new() -> Option<Self> {
        if !available() {
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "sluice-test-{}-{}-{:04x}:",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let connection = connect(&format!("redis://{ADDRESS}/{DB}"));
        Some(Self { connection, prefix })
    }

    /// The URL of the server and database, for `url:` options.
    pub fn url(&self) -> String {
        format!("redis://{ADDRESS}/{DB}")
    }

    /// The prefix followed by `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Runs one command.
    pub fn command<T: FromRedisValue>(&mut self, name: &str, args: impl ToRedisArgs) -> T {
        redis::cmd(name).arg(args).query(&mut self.connection).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Every key of this key space, sorted.
    pub fn keys(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut self.connection)
                .expect("SCAN");
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// The Redis type of `key` (`string`, `hash`, `stream`, `none`).
    pub fn kind(&mut self, key: &str) -> String {
        self.command("TYPE", key)
    }

    /// The string value of `key`.
    pub fn get(&mut self, key: &str) -> Option<String> {
        self.command("GET", key)
    }

    /// The time `key` has left to live in milliseconds (-1: forever, -2: no such key).
    pub fn pttl(&mut self, key: &str) -> i64 {
        self.command("PTTL", key)
    }

    /// The fields of hash `key`.
    pub fn hash(&mut self, key: &str) -> BTreeMap<String, String> {
        self.command("HGETALL", key)
    }

    /// The entries of stream `key`, oldest first, each as its fields in the order written.
    pub fn stream(&mut self, key: &str) -> Vec<Vec<(String, String)>> {
        let entries: Vec<(String, Vec<(String, String)>)> =
            redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(&mut self.connection).expect("XRANGE");
        entries.into_iter().map(|(_, fields)| fields).collect()
    }
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut self.connection);
        }
    }
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
}

/// A private `redis-server` on a free loopback port, keeping nothing on disk; killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts a server, or returns `None` (after a loud warning) when `redis-server` is not
    /// installed and `CI` is not set; panics in CI.
    pub fn start() -> Option<Self> {
        let installed = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !installed {
            let help = "redis-server is not installed; install it with `apt-get install redis-server` or run .ci/run";
            if std::env::var_os("CI").is_some() {
                panic!("{help}");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPING REDIS RESTART TESTS: {help}\n!!!!!!!!\n");
            return None;
        }
        let mut server = Self { child: None, port: super::free_port() };
        server.spawn();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A connection to it.
    pub fn connect(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// Starts the process (again) and waits until it answers.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (as a crash would) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
