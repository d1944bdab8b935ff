//! The same pipeline gives the same output on 1 worker, 2 workers and 2 processes.

use std::path::Path;

use super::*;

const SPEC: &str = r#"
name: parallel
sources:
  - name: nexmark
    connector: nexmark
    options: {events: 60000, seed: 3}
processors:
  - name: priced
    inputs: [nexmark.bid]
    key_by: bidder
    sql: |
      SELECT auction, bidder, price, upper(channel) AS channel,
             CASE WHEN price > 1000 THEN 'high' ELSE 'low' END AS band
      FROM nexmark.bid
      WHERE auction % 7 = 0
  - name: sellers
    inputs: [nexmark.auction]
    sql: SELECT id, seller, category FROM nexmark.auction WHERE category = 12
sinks:
  - name: bids_out
    connector: file
    inputs: [priced]
    options: {path: bids, format: jsonl}
  - name: auctions_out
    connector: file
    inputs: [sellers]
    options: {path: auctions, format: jsonl}
"#;

fn write_spec(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, SPEC).expect("write spec");
    path
}

fn outputs(dir: &Path) -> (Vec<String>, Vec<String>) {
    (canonical(&read_json_lines(&dir.join("bids"))), canonical(&read_json_lines(&dir.join("auctions"))))
}

#[test]
fn one_worker_two_workers_and_two_processes_agree() {
    let single = tempfile::tempdir().unwrap();
    write_spec(single.path());
    assert_success(&run_sluice(&["run", "pipeline.yaml", "--workers", "1", "-q"], single.path()), "1 worker");
    let expected = outputs(single.path());
    assert!(
        expected.0.len() > 100 && !expected.1.is_empty(),
        "the pipeline should produce rows: {}",
        expected.0.len()
    );

    let threads = tempfile::tempdir().unwrap();
    write_spec(threads.path());
    assert_success(
        &run_sluice(&["run", "pipeline.yaml", "--workers", "2", "-q"], threads.path()),
        "2 workers",
    );
    assert_eq!(outputs(threads.path()), expected, "2 workers differ from 1");

    let cluster = tempfile::tempdir().unwrap();
    write_spec(cluster.path());
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let children: Vec<_> = (0..2)
        .map(|process| {
            sluice()
                .args(["run", "pipeline.yaml", "--workers", "1", "-q", "--processes", "2"])
                .args(["--process-id", &process.to_string(), "--peers", &peers])
                .current_dir(cluster.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start process")
        })
        .collect();
    for child in children {
        assert_success(&child.wait_with_output().expect("wait"), "cluster process");
    }
    assert_eq!(outputs(cluster.path()), expected, "2 processes differ from 1 worker");
    // Both processes wrote part files: the work really was split.
    assert_eq!(
        visible_files(&cluster.path().join("bids"))
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy()[..10].to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "expected part files from both workers"
    );
}

/// Regression: a failure in one process stopped only that process's sources, so a cluster with
/// an endless source hung forever. Now the failed process leaves the cluster and every process
/// exits non-zero, the failed one naming the node and the cause.
#[test]
fn a_failure_in_one_process_stops_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
name: cluster-failure
epoch_ms: 50
sources:
  - name: g
    connector: datagen
    schema: [{name: a, type: int64, nullable: false}]
    options: {rows_per_second: 1000, fields: {a: {sequence: true}}}
processors:
  - name: p
    inputs: [g]
    sql: SELECT 10 / (a - 5) AS x FROM g
sinks:
  - name: out
    connector: blackhole
    inputs: [p]
"#,
    )
    .unwrap();
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let mut children: Vec<_> = (0..2)
        .map(|process| {
            sluice()
                .args(["run", "pipeline.yaml", "--workers", "1", "-q", "--processes", "2"])
                .args(["--process-id", &process.to_string(), "--peers", &peers])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start process")
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while children.iter_mut().any(|child| child.try_wait().unwrap().is_none()) {
        if std::time::Instant::now() > deadline {
            for child in &mut children {
                let _ = child.kill();
            }
            panic!("the cluster did not stop within 60 s after a failure");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let outputs: Vec<_> = children.into_iter().map(|child| child.wait_with_output().unwrap()).collect();
    for output in &outputs {
        assert!(!output.status.success(), "every process must report the failure");
    }
    let stderr: String = outputs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
    assert!(stderr.contains("node \"p\": SQL failed on a batch: Divide by zero"), "{stderr}");
}
