//! Test support shared by every crate's tests: a real `s3s-fs` S3-compatible server on a free
//! loopback port, serving a temporary directory with one bucket. Never a mock: tests that
//! need S3 talk to this server over HTTP.
//!
//! The binary is found at `$SLUICE_S3S_FS`, `$HOME/.cache/sluice-tools/bin/s3s-fs` (where
//! `.ci/run` installs it) or on `PATH`. When it is missing, [`S3sFs::start`] panics if `CI`
//! is set and otherwise prints a loud warning and returns `None`, so the calling test skips.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::StoreOptions;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "sluice-test";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "sluice-test-secret";
/// The bucket folder created inside the server's root directory.
pub const BUCKET: &str = "checkpoints";

/// A running `s3s-fs`; killed on drop.
pub struct S3sFs {
    child: Child,
    endpoint: String,
    root: tempfile::TempDir,
}

impl S3sFs {
    /// Starts the server, or returns `None` (after a loud warning) when the binary is missing
    /// and `CI` is not set.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_binary() else {
            let help = "s3s-fs not found (looked at $SLUICE_S3S_FS, $HOME/.cache/sluice-tools/bin/s3s-fs, PATH); \
                        install it with `cargo install s3s-fs --version 0.14.1 --locked --features binary \
                        --root $HOME/.cache/sluice-tools` or run .ci/run";
            if std::env::var_os("CI").is_some() {
                panic!("{help}");
            }
            eprintln!("\n!!!!!!!!\n!!! SKIPPING S3 TESTS: {help}\n!!!!!!!!\n");
            return None;
        };
        let root = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir(root.path().join(BUCKET)).expect("create the bucket folder");
        let port = free_port();
        let log = std::fs::File::create(root.path().join("s3s-fs.log")).expect("create the server log");
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut server = Self { child, endpoint: format!("http://127.0.0.1:{port}"), root };
        server.wait_until_listening(port);
        Some(server)
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            let exited = self.child.try_wait().expect("poll s3s-fs");
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.root.path().join("s3s-fs.log")).unwrap_or_default();
                panic!("s3s-fs did not start listening on port {port} (exit: {exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory the server serves; [`BUCKET`] is a folder in it.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Options to reach this server.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".to_owned()),
            access_key_id: Some(ACCESS_KEY.to_owned()),
            secret_access_key: Some(SECRET_KEY.to_owned()),
            allow_http: false,
        }
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_S3S_FS") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let home = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/sluice-tools/bin/s3s-fs"));
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("s3s-fs")).collect::<Vec<_>>());
    home.into_iter().chain(on_path.into_iter().flatten()).find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}
