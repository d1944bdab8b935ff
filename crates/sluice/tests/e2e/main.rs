//! End-to-end tests of the `sluice` binary: real processes, real files, real threads and
//! sockets. Topic modules below; shared helpers here.

mod control;
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
mod redis;
mod registry_kafka;
mod schema_registry;
mod state_backend;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Starts a run with `start` up to `attempts` times, each killed with SIGKILL at a seeded moment
/// in `millis` (milliseconds after it started), calling `after_kill` after each kill. Stops early
/// when a run ends before its kill (it must have succeeded). Returns (attempt, delay) per kill;
/// the caller runs the final, uninterrupted resume.
pub fn kill_at_seeded_moments(
    start: impl Fn() -> Child,
    seed: u64,
    attempts: usize,
    millis: std::ops::Range<u64>,
    mut after_kill: impl FnMut(),
) -> Vec<(usize, Duration)> {
    let mut schedule = Lcg(seed);
    let mut kills = Vec::new();
    for attempt in 0..attempts {
        let delay = Duration::from_millis(schedule.next_millis(millis.start, millis.end));
        let mut child = start();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finish_run(child, "a run that ended before its kill");
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        after_kill();
        kills.push((attempt, delay));
    }
    kills
}

/// Runs a checkpointed pipeline (checkpoints in `state`) to its end through up to `attempts`
/// SIGKILLs: the first run is killed at a seeded moment in `first` milliseconds after it
/// starts, so a fast machine cannot finish it first; later ones at a seeded moment in `later`
/// milliseconds after their next checkpoint, so each run progresses. A kill that lands after the
/// final checkpoint is followed by a rerun that must only commit that checkpoint and say the
/// pipeline already ran to completion. Returns (delay, newest checkpoint) per kill.
pub fn kill_after_checkpoints_then_finish(
    start: impl Fn() -> Child,
    state: &Path,
    seed: u64,
    attempts: usize,
    first: std::ops::Range<u64>,
    later: std::ops::Range<u64>,
) -> Vec<(Duration, Option<u64>)> {
    let mut schedule = Lcg(seed);
    let mut kills = Vec::new();
    for attempt in 0..attempts {
        let before = latest_checkpoint(state);
        let mut child = start();
        let deadline = Instant::now() + Duration::from_secs(120);
        while attempt > 0 && latest_checkpoint(state) <= before && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no checkpoint within two minutes");
            std::thread::sleep(Duration::from_millis(10));
        }
        let range = if attempt == 0 { &first } else { &later };
        let delay = Duration::from_millis(schedule.next_millis(range.start, range.end));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finish_run(child, "a run that ended before its kill");
            return kills;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills.push((delay, latest_checkpoint(state)));
        if finished(state) {
            // The kill came after the final checkpoint, perhaps before the sinks committed it:
            // a rerun commits it and says the pipeline is done.
            let output = start().wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("already ran to completion") && stderr.contains("output is committed"),
                "{stderr}"
            );
            return kills;
        }
    }
    finish_run(start(), "the final resumed run");
    kills
}
