//! Bad records go to the dead-letter destination with their reason; nothing is lost and the
//! counts add up, under each `on_error` policy.

use super::*;

const GOOD: usize = 6;
const LINES: &[&str] = &[
    r#"{"id": 1, "name": "a", "score": 1.5}"#,
    r#"{"id": 2, "name": "b", "score": 2}"#,
    r#"not json at all"#,
    r#"{"id": "three", "name": "c", "score": 3.0}"#,
    r#"{"id": 4, "name": null, "score": 4.0}"#,
    r#"{"name": "missing id", "score": 5.0}"#,
    r#"{"id": 6, "name": "f", "score": null}"#,
    r#"{"id": 7, "name": "g", "score": 7.0"#,
    r#"{"id": 8, "name": "h", "score": 8.0}"#,
    r#"{"id": 9, "name": "i", "score": 9.0}"#,
];

fn spec(policy: &str) -> String {
    format!(
        r#"
name: dlq
dead_letter: {{path: dead}}
sources:
  - name: records
    connector: file
    options: {{path: input.jsonl, format: jsonl}}
    schema:
      - {{name: id, type: int64, nullable: false}}
      - {{name: name, type: string}}
      - {{name: score, type: float64}}
    on_error: {policy}
processors:
  - name: pass
    inputs: [records]
    sql: SELECT id, name, score * 2 AS doubled FROM records
sinks:
  - name: out
    connector: file
    inputs: [pass]
    options: {{path: out, format: jsonl}}
"#
    )
}

fn setup(policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), spec(policy)).unwrap();
    std::fs::write(dir.path().join("input.jsonl"), LINES.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn dead_letter_policy_keeps_every_bad_line_with_its_reason() {
    let dir = setup("dead_letter");
    let output = run_sluice(&["run", "pipeline.yaml", "-w", "2"], dir.path());
    assert_success(&output, "run");
    let rows = read_json_lines(&dir.path().join("out"));
    let mut ids: Vec<i64> = rows.iter().map(|row| row["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 4, 6, 8, 9]);
    assert_eq!(rows.len(), GOOD);

    let letters = read_json_lines(&dir.path().join("dead/records"));
    assert_eq!(letters.len() + rows.len(), LINES.len(), "good + dead letters = lines read");
    let mut positions: Vec<String> =
        letters.iter().map(|l| l["position"].as_str().unwrap().to_owned()).collect();
    positions.sort();
    let input = dir.path().join("input.jsonl");
    let expected: Vec<String> =
        [3, 4, 6, 8].iter().map(|line| format!("{}:{line}", input.display())).collect();
    assert_eq!(positions, expected);
    for letter in &letters {
        let line: usize = letter["position"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(letter["raw"].as_str().unwrap(), LINES[line - 1], "raw bytes are kept as they were");
        let reason = letter["reason"].as_str().unwrap();
        match line {
            3 => assert!(reason.starts_with("not valid JSON: "), "{reason}"),
            4 => assert!(reason.contains(r#"failed to parse "three" as Int64"#), "{reason}"),
            6 => assert!(reason.contains("id"), "a missing required field is named: {reason}"),
            _ => assert!(!reason.is_empty()),
        }
        assert_eq!(letter["node"], "records");
        assert_eq!(letter["kind"], "bad_record");
        assert_eq!(letter["pipeline"], "dlq");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad records from \"records\": 4 sent to the dead-letter destination, 0 dropped"),
        "summary counts bad records:\n{stderr}"
    );
}

#[test]
fn drop_policy_counts_but_keeps_nothing() {
    let dir = setup("drop");
    let output = run_sluice(&["run", "pipeline.yaml", "-w", "1"], dir.path());
    assert_success(&output, "run");
    assert_eq!(read_json_lines(&dir.path().join("out")).len(), GOOD);
    assert!(!dir.path().join("dead").exists(), "drop writes no dead letters");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0 sent to the dead-letter destination, 4 dropped"), "{stderr}");
}

#[test]
fn fail_policy_stops_at_the_first_bad_line_and_names_it() {
    let dir = setup("fail");
    let output = run_sluice(&["run", "pipeline.yaml", "-w", "1"], dir.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node \"records\": bad record at "), "{stderr}");
    assert!(stderr.contains("input.jsonl:3"), "{stderr}");
}

#[test]
fn a_dead_letter_sink_receives_every_bad_line_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let text = spec("dead_letter").replace(
        "dead_letter: {path: dead}",
        "dead_letter: {path: dead, connector: file, options: {path: dead-letter-sink, format: jsonl}}",
    );
    std::fs::write(dir.path().join("pipeline.yaml"), text).unwrap();
    std::fs::write(dir.path().join("input.jsonl"), LINES.join("\n") + "\n").unwrap();
    let output = run_sluice(&["run", "pipeline.yaml", "-w", "2"], dir.path());
    assert_success(&output, "run");
    assert_eq!(read_json_lines(&dir.path().join("out")).len(), GOOD);
    assert!(!dir.path().join("dead").exists(), "with a sink, the folder only takes what the sink cannot");
    let letters = read_json_lines(&dir.path().join("dead-letter-sink"));
    let mut raws: Vec<&str> = letters.iter().map(|l| l["raw"].as_str().unwrap()).collect();
    raws.sort_unstable();
    let mut expected: Vec<&str> = [3, 4, 6, 8].iter().map(|line| LINES[line - 1]).collect();
    expected.sort_unstable();
    assert_eq!(raws, expected);
    for letter in &letters {
        assert_eq!(
            (&letter["pipeline"], &letter["node"], &letter["kind"]),
            (&"dlq".into(), &"records".into(), &"bad_record".into())
        );
        assert!(letter["position"].as_str().unwrap().contains("input.jsonl:"), "{letter}");
        assert!(!letter["reason"].as_str().unwrap().is_empty() && letter["time"].is_string(), "{letter}");
    }
}
