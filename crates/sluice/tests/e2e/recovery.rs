//! Fault tolerance through the real binary: a pipeline with a window aggregation and a window
//! join, checkpointing every second, is killed with SIGKILL at seeded random moments and
//! resumed; stopped and resumed at 1, 2 and 3 workers and then as 2 processes; and
//! checkpointed to a real S3-compatible server. Each time the committed output must equal,
//! row for row, that of one uninterrupted run.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use sluice_state::testing::{ACCESS_KEY, BUCKET, S3sFs, SECRET_KEY};

use super::*;

/// Nexmark at a fixed rate (about 8 s of data), bids counted per auction per 1 s tumbling
/// window, and persons joined with the auctions they opened in the same window.
const SPEC: &str = r#"
name: recovery
epoch_ms: 100
checkpoints: {interval: 1s, location: state}
sources:
  - name: nx
    connector: nexmark
    options: {events: 200000, events_per_second: 25000, seed: 11}
    watermark: {column: date_time, max_out_of_orderness: 500ms}
processors:
  - name: bids_per_auction
    inputs: [nx.bid]
    sql: |
      SELECT auction, window_start, window_end, COUNT(*) AS bids, MAX(price) AS top
      FROM TABLE(TUMBLE(TABLE nx.bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
      GROUP BY auction, window_start, window_end
  - name: new_sellers
    inputs: [nx.person, nx.auction]
    sql: |
      SELECT P.id, P.name, A.id AS auction, P.window_start
      FROM (SELECT * FROM TABLE(TUMBLE(TABLE nx.person, DESCRIPTOR(date_time), INTERVAL '1' SECOND))) P
      JOIN (SELECT * FROM TABLE(TUMBLE(TABLE nx.auction, DESCRIPTOR(date_time), INTERVAL '1' SECOND))) A
      ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end
sinks:
  - {name: counts, connector: file, inputs: [bids_per_auction], options: {path: out/counts, format: jsonl}}
  - {name: sellers, connector: file, inputs: [new_sellers], options: {path: out/sellers, format: jsonl}}
"#;

fn pipeline_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), SPEC).unwrap();
    dir
}

/// Committed rows of both sinks, canonical and sorted; fails if a hidden (uncommitted) part
/// is all there is or if a row is not valid JSON.
fn committed(dir: &Path) -> (Vec<String>, Vec<String>) {
    (
        canonical(&read_json_lines(&dir.join("out/counts"))),
        canonical(&read_json_lines(&dir.join("out/sellers"))),
    )
}

/// The output of one uninterrupted run, computed once.
fn reference() -> &'static (Vec<String>, Vec<String>) {
    static REFERENCE: std::sync::OnceLock<(Vec<String>, Vec<String>)> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = pipeline_dir();
        finish_run(spawn_run(dir.path(), &["-w", "2"]), "uninterrupted run");
        let output = committed(dir.path());
        assert!(
            output.0.len() > 1000 && output.1.len() > 10,
            "a meaningful reference: {:?}",
            (output.0.len(), output.1.len())
        );
        output
    })
}

fn assert_same_as_reference(dir: &Path, what: &str) {
    let (counts, sellers) = committed(dir);
    let (expected_counts, expected_sellers) = reference();
    for (name, actual, expected) in
        [("counts", &counts, expected_counts), ("sellers", &sellers, expected_sellers)]
    {
        if actual != expected {
            let missing = expected.iter().filter(|row| actual.binary_search(row).is_err()).count();
            let mut unique = actual.clone();
            unique.dedup();
            panic!(
                "{what}: sink {name} committed {} rows, expected {}: {missing} missing, {} duplicated",
                actual.len(),
                expected.len(),
                actual.len() - unique.len()
            );
        }
    }
}

#[test]
fn kill_9_at_seeded_moments_then_resume_gives_the_uninterrupted_output() {
    let seed = 20_261_125;
    let dir = pipeline_dir();
    let restarts = kill_at_seeded_moments(|| spawn_run(dir.path(), &["-w", "2"]), seed, 4, 600..2_600, || {});
    let resumed = Instant::now();
    finish_run(spawn_run(dir.path(), &["-w", "2"]), "the final resumed run");
    assert!(restarts.len() >= 2, "seed {seed}: the schedule must kill at least twice: {restarts:?}");
    assert_same_as_reference(dir.path(), &format!("seed {seed}, kills {restarts:?}"));
    eprintln!("killed at {restarts:?}; the last resume ran {:?}", resumed.elapsed());
}

/// Waits until `child` has completed a checkpoint in `state` newer than the newest one there
/// when it started, so that it is running with its signal handler in place and has made
/// progress. Panics if it exits first or takes a minute.
fn wait_for_new_checkpoint(child: &mut Child, state: &Path, before: Option<u64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest_checkpoint(state) <= before {
        assert!(child.try_wait().unwrap().is_none(), "{what}: exited before its first checkpoint");
        assert!(Instant::now() < deadline, "{what}: no new checkpoint in {} after a minute", state.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a run, lets it complete one new checkpoint, then sends SIGTERM: the run takes a
/// final checkpoint (exported as a savepoint if asked) and stops.
fn run_until_a_checkpoint_then_stop(dir: &Path, args: &[&str], what: &str) {
    let state = dir.join("state");
    let before = latest_checkpoint(&state);
    let mut child = spawn_run(dir, args);
    wait_for_new_checkpoint(&mut child, &state, before, what);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    finish_run(child, what);
}

#[test]
fn rescaling_through_stops_from_1_to_2_to_3_workers_then_2_processes() {
    let dir = pipeline_dir();
    run_until_a_checkpoint_then_stop(dir.path(), &["-w", "1"], "1 worker");
    run_until_a_checkpoint_then_stop(dir.path(), &["-w", "2"], "2 workers");
    run_until_a_checkpoint_then_stop(dir.path(), &["-w", "3"], "3 workers");
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let processes: Vec<Child> = (0..2)
        .map(|id| {
            spawn_run(
                dir.path(),
                &["-w", "1", "--processes", "2", "--process-id", &id.to_string(), "--peers", &peers],
            )
        })
        .collect();
    for (id, process) in processes.into_iter().enumerate() {
        finish_run(process, &format!("process {id} of 2"));
    }
    assert_same_as_reference(dir.path(), "1 → 2 → 3 workers → 2 processes");
}

#[test]
fn a_savepoint_resumes_at_another_parallelism() {
    let dir = pipeline_dir();
    let savepoint = dir.path().join("savepoint");
    let savepoint = savepoint.to_str().unwrap();
    run_until_a_checkpoint_then_stop(
        dir.path(),
        &["-w", "2", "--stop-with-savepoint", savepoint],
        "stop with savepoint",
    );
    assert!(Path::new(savepoint).is_dir(), "the savepoint was written");
    // A fresh checkpoint location: only the savepoint carries the state over.
    let args = ["-w", "3", "--from-savepoint", savepoint, "--checkpoint-dir", "state-after-savepoint"];
    finish_run(spawn_run(dir.path(), &args), "resume from the savepoint");
    assert_same_as_reference(dir.path(), "savepoint at 2 workers, resumed at 3");
}

#[test]
fn checkpoints_to_s3_survive_a_kill_9() {
    let Some(server) = S3sFs::start() else { return };
    let dir = pipeline_dir();
    let location = format!("s3://{BUCKET}/pipelines/recovery");
    let start_s3 = |args: &[&str]| {
        sluice()
            .args(["run", "pipeline.yaml", "-q", "-w", "2", "--checkpoint-dir", &location])
            .args(args)
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice")
    };
    // The server stores objects as files, so the test can see the manifests arrive.
    let stored = server.root().join(BUCKET).join("pipelines/recovery");
    let mut child = start_s3(&[]);
    wait_for_new_checkpoint(&mut child, &stored, None, "run on S3");
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    finish_run(start_s3(&[]), "resume from S3");
    assert!(!dir.path().join("state").exists(), "nothing went to the local default location");
    assert_same_as_reference(dir.path(), "kill -9 with checkpoints on S3");
}

/// The file sinks on S3 (credentials from the standard AWS variables), killed with SIGKILL
/// after a checkpoint and resumed: the objects committed under the prefixes are exactly the
/// uninterrupted run's output, and no staging object is left.
#[test]
fn file_sinks_on_s3_survive_a_kill_9_exactly() {
    let Some(server) = S3sFs::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = SPEC
        .replace("path: out/counts", &format!("path: \"s3://{BUCKET}/out/counts\""))
        .replace("path: out/sellers", &format!("path: \"s3://{BUCKET}/out/sellers\""));
    std::fs::write(dir.path().join("pipeline.yaml"), spec).unwrap();
    let start_s3 = || {
        sluice()
            .args(["run", "pipeline.yaml", "-q", "-w", "2"])
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice")
    };
    let mut child = start_s3();
    wait_for_new_checkpoint(&mut child, &dir.path().join("state"), None, "run writing to S3");
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    finish_run(start_s3(), "resume writing to S3");
    // The server keeps objects as files: read what was committed without Sluice.
    let out = server.root().join(BUCKET).join("out");
    assert!(!dir.path().join("out").exists(), "nothing went to a local folder");
    let (counts, sellers) =
        (canonical(&read_json_lines(&out.join("counts"))), canonical(&read_json_lines(&out.join("sellers"))));
    let (expected_counts, expected_sellers) = reference();
    assert_eq!(counts.len(), expected_counts.len(), "counts on S3: every row once");
    assert!(&counts == expected_counts, "counts on S3 differ from the uninterrupted run");
    assert!(&sellers == expected_sellers, "sellers on S3 differ from the uninterrupted run");
    for folder in ["counts", "sellers"] {
        let staged: Vec<String> = std::fs::read_dir(out.join(folder))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(staged.is_empty(), "{folder}: staging objects left: {staged:?}");
    }
}
