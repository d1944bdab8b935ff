//! Lifecycle: failures name the node and exit non-zero; SIGTERM stops an endless pipeline
//! gracefully with its output committed.

use std::time::Duration;

use super::*;

#[test]
fn unreadable_input_fails_with_the_node_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
name: missing
sources:
  - name: events
    connector: file
    options: {path: no-such-file.jsonl, format: jsonl}
    schema: [{name: id, type: int64}]
sinks:
  - name: out
    connector: blackhole
    inputs: [events]
"#,
    )
    .unwrap();
    let output = run_sluice(&["run", "pipeline.yaml", "-q"], dir.path());
    assert!(!output.status.success(), "a missing input file must fail the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node \"events\""), "{stderr}");
    assert!(stderr.contains("no-such-file.jsonl"), "{stderr}");
}

#[test]
fn sigterm_stops_an_endless_pipeline_and_commits_its_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
name: endless
epoch_ms: 50
sources:
  - name: ticks
    connector: datagen
    schema: [{name: n, type: int64, nullable: false}]
    options: {rows_per_second: 20000, fields: {n: {sequence: true}}}
sinks:
  - name: out
    connector: file
    inputs: [ticks]
    options: {path: out, format: jsonl}
"#,
    )
    .unwrap();
    let child = sluice()
        .args(["run", "pipeline.yaml", "-w", "2"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_success(&output, "graceful stop");
    let rows = read_json_lines(&dir.path().join("out"));
    assert!(rows.len() > 1000, "about 1.5 s at 20k rows/s, got {}", rows.len());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no in-progress files after a graceful stop: {leftovers:?}");
    // Every row was written once.
    let mut values: Vec<i64> = rows.iter().map(|r| r["n"].as_i64().unwrap()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), rows.len(), "no duplicates");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopping gracefully"), "{stderr}");
    // Nothing read before the stop is lost: the sink has every row the source emitted.
    let emitted: u64 = stderr
        .lines()
        .find(|line| line.starts_with("ticks "))
        .and_then(|line| line.split_whitespace().nth(3))
        .map(|count| count.replace(',', "").parse().unwrap())
        .unwrap_or_else(|| panic!("no summary line for the source:\n{stderr}"));
    assert_eq!(rows.len() as u64, emitted, "rows written = rows the source emitted");
}

#[test]
fn kill_9_never_leaves_a_half_written_visible_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
name: crashy
epoch_ms: 50
sources:
  - name: gen
    connector: datagen
    schema: [{name: n, type: int64, nullable: false}, {name: s, type: string}]
    options: {rows_per_second: 200000, fields: {s: {length: 40}}}
sinks:
  - name: out
    connector: file
    inputs: [gen]
    options: {path: out, format: jsonl, roll_interval_ms: 100}
"#,
    )
    .unwrap();
    let mut child = sluice()
        .args(["run", "pipeline.yaml", "-w", "2", "-q"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let files = visible_files(&dir.path().join("out"));
    assert!(!files.is_empty(), "files rolled every 100 ms should have been committed before the kill");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.ends_with('\n'), "{} ends mid-line", file.display());
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: torn line {line:?}: {e}", file.display()));
            assert!(row["n"].is_i64());
        }
    }
}
