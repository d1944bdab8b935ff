//! End-to-end tests of the `sluice` binary: real processes, real files, real threads and
//! sockets. Topic modules below; shared helpers here.

mod dead_letters;
mod examples;
mod golden;
mod http;
mod kafka;
mod lifecycle;
mod mqtt;
mod nats;
mod parallel;
mod postgres;
mod recovery;
mod state_backend;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

/// A command running the `sluice` binary under test.
pub fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.env("NO_COLOR", "1").env_remove("RUST_LOG");
    command
}

/// Runs `sluice` with `args`, returning its output.
pub fn run_sluice(args: &[&str], dir: &Path) -> Output {
    sluice().args(args).current_dir(dir).output().expect("start sluice")
}

/// `sluice run pipeline.yaml -q` with `args` in `dir`, its stderr captured: add environment
/// variables, then spawn (or use [`spawn_run`]).
pub fn run_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = sluice();
    command
        .args(["run", "pipeline.yaml", "-q"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Starts `sluice run pipeline.yaml -q` with `args` in `dir`.
pub fn spawn_run(dir: &Path, args: &[&str]) -> Child {
    run_command(dir, args).spawn().expect("start sluice")
}

/// Waits for a run started with [`spawn_run`] and asserts it succeeded.
pub fn finish_run(child: Child, what: &str) {
    let output = child.wait_with_output().expect("wait for sluice");
    assert_success(&output, what);
}

/// Asserts the process succeeded, showing its stderr otherwise.
pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Copies directory `from` into a fresh temporary directory and returns it.
pub fn copy_to_temp(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(from, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// Visible (non-hidden) files of a directory, sorted.
pub fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_file() && !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Every JSON line of every visible file in `dir` (recursively for one level of folders).
pub fn read_json_lines(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    for file in visible_files(dir) {
        let text = std::fs::read_to_string(&file).expect("read output file");
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            rows.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: bad JSON line {line:?}: {e}", file.display())),
            );
        }
    }
    rows
}

/// Rows rendered canonically and sorted, for order-insensitive comparison.
pub fn canonical(rows: &[Value]) -> Vec<String> {
    let mut rendered: Vec<String> =
        rows.iter().map(|row| serde_json::to_string(row).expect("render")).collect();
    rendered.sort();
    rendered
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The newest complete checkpoint (one with a manifest) in the checkpoint folder `state`.
pub fn latest_checkpoint(state: &Path) -> Option<u64> {
    std::fs::read_dir(state)
        .ok()?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let id = path.file_name()?.to_str()?.strip_prefix("chk-")?.parse().ok()?;
            path.join("_manifest.json").is_file().then_some(id)
        })
        .max()
}

/// A small deterministic generator for the kill schedule (the seed is printed on failure).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number of milliseconds in `low..high`.
    pub fn next_millis(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        low + (self.0 >> 33) % (high - low)
    }
}

/// Whether the newest complete checkpoint in `state` is a finished run's final one.
pub fn finished(state: &Path) -> bool {
    let Some(id) = latest_checkpoint(state) else { return false };
    let folder = std::fs::read_dir(state)
        .unwrap()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| {
            path.file_name().and_then(|n| n.to_str()?.strip_prefix("chk-")?.parse().ok()) == Some(id)
        })
        .unwrap();
    let manifest = std::fs::read_to_string(folder.join("_manifest.json")).unwrap();
    serde_json::from_str::<Value>(&manifest).unwrap()["finished"] == json!(true)
}
