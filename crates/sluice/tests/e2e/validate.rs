//! `sluice validate`: a table of specs and the exact problems reported, all at once, with paths
//! into the spec, positions inside SQL and suggestions; exit code 0/1; `--json`.

use super::*;

/// (spec, expected lines of `sluice validate spec.yaml`, without the `spec.yaml: ` prefix).
const CASES: &[(&str, &[&str])] = &[
    (
        r#"
name: good
sources:
  - {name: gen, connector: datagen, schema: [{name: price, type: int64}], options: {count: 5}}
processors:
  - {name: p, inputs: [gen], sql: "SELECT price * 2 AS doubled FROM gen WHERE price > 3"}
sinks:
  - {name: out, connector: blackhole, inputs: [p]}
"#,
        &[],
    ),
    (
        // Structural, connector and SQL problems in one spec: all reported in one run.
        r#"
name: bad
sources:
  - name: bids
    connector: nexmrk
  - name: gen
    connector: datagen
    schema: [{name: price, type: int64}]
    options: {rows_per_sec: 10}
  - name: gen2
    connector: datagen
    schema: [{name: price, type: int64}]
processors:
  - name: p
    inputs: [gen2]
    sql: |
      SELECT price,
             prise FROM gen2
  - name: q
    inputs: [gen2]
    sql: SELECT price FROM gne2
  - name: r
    inputs: [gen2]
    sql: SELECT price FROM gen2 ORDER BY price
  - name: s
    inputs: [gen2]
    sql: SELEC price FROM gen2
sinks:
  - name: out
    connector: blackhole
    inputs: [p, q, bdis]
"#,
        &[
            r#"sinks[0].inputs[2]: unknown input "bdis"; did you mean "bids"?"#,
            r#"sources[0].connector: unknown connector "nexmrk"; did you mean "nexmark"?"#,
            r#"sources[1].options.rows_per_sec: unknown option "rows_per_sec"; did you mean "rows_per_second"?"#,
            r#"processors[0].sql:2:8: unknown column "prise"; did you mean "price"?"#,
            r#"processors[1].sql:1:19: unknown table "gne2": a SQL processor reads the tables named in its `inputs` (gen2) and the views it creates; did you mean "gen2"?"#,
            r#"processors[2].sql:1:24: ORDER BY is not supported yet: a SQL processor runs stateless SQL (projections, filters, functions, CASE, CAST, UNNEST, UNION ALL) and one GROUP BY aggregation as the last step of its final query, windowed with TUMBLE, HOP or SESSION or updating per key"#,
            r#"processors[3].sql:1:1: syntax error: expected an SQL statement, found SELEC"#,
        ],
    ),
    (
        r#"
name: outputs
sources:
  - {name: nx, connector: nexmark, options: {events: 10}}
processors:
  - {name: p, inputs: [nx], sql: "SELECT 1 AS one FROM nx"}
  - {name: q, inputs: [nx.bids], sql: "SELECT price FROM nx.bids"}
sinks:
  - {name: out, connector: blackhole, inputs: [nx.bid]}
"#,
        &[
            r#"processors[0].inputs[0]: "nx" has several outputs; name one; write one of: nx.person, nx.auction, nx.bid"#,
            r#"processors[1].inputs[0]: "nx" has no output named "bids"; did you mean "bid"?"#,
        ],
    ),
    (
        r#"
name: cycle
sources:
  - {name: gen, connector: datagen, schema: [{name: n, type: int64}], options: {count: 1}}
processors:
  - {name: a, inputs: [gen, b], sql: "SELECT n FROM gen"}
  - {name: b, inputs: [a], sql: "SELECT n FROM a"}
sinks:
  - {name: out, connector: stdout, inputs: [a]}
"#,
        &[r#"processors[0].inputs[1]: cycle: a -> b -> a"#],
    ),
    (
        r#"
name: shared-folder
sources:
  - {name: gen, connector: datagen, schema: [{name: n, type: int64}], options: {count: 1}}
sinks:
  - {name: a, connector: file, inputs: [gen], options: {path: out}}
  - {name: b, connector: file, inputs: [gen], options: {path: ./out/}}
"#,
        &[
            r#"sinks[1].options: sink "b" writes to the same folder <dir>/out as sink "a"; give each sink its own destination"#,
        ],
    ),
    (
        r#"
name: no-event-time
sources:
  - {name: nx, connector: nexmark}
  - name: clocked
    connector: nexmark
    watermark: {column: date_time, max_out_of_orderness: 1s}
processors:
  - {name: cheap, inputs: [nx.bid], sql: "SELECT * FROM nx.bid WHERE price < 100"}
  - name: windows
    inputs: [cheap]
    sql: |
      SELECT window_start, window_end, COUNT(*) AS n
      FROM TABLE(HOP(TABLE cheap, DESCRIPTOR(date_time), INTERVAL '1' SECOND, INTERVAL '5' SECOND))
      GROUP BY window_start, window_end
  - name: fine
    inputs: [clocked.bid]
    sql: |
      SELECT window_start, window_end, COUNT(*) AS n
      FROM TABLE(TUMBLE(TABLE clocked.bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
      GROUP BY window_start, window_end
sinks:
  - {name: out, connector: blackhole, inputs: [windows]}
  - {name: out2, connector: blackhole, inputs: [fine]}
"#,
        &[
            r#"processors[1].sql:2:6: HOP windows close when the watermark passes their end, but no source this processor reads ("nx") declares event time, so they would only close when the input ends; add `watermark: {column: <timestamp column>, max_out_of_orderness: 5s}` to the source whose time the window groups by"#,
        ],
    ),
    (
        // Every bad option of a Redis lookup and sink at once; the URL's password is never shown.
        r#"
name: redis-options
sources:
  - {name: gen, connector: datagen, schema: [{name: id, type: int64}], options: {count: 1}}
lookups:
  - {name: users, connector: redis, options: {url: "redis://127.0.0.1:6379/0", key: "u:{uid}", cache: {ttl: 1}}, schema: [{name: id, type: int64}]}
sinks:
  - {name: out, connector: redis, inputs: [gen], options: {url: "redis://ann:secret@127.0.0.1:6379/x", mode: hash, key: id, ttl: forever}}
"#,
        &[
            r#"lookups[0].options.key: column "uid" is not in the schema; did you mean "id"?"#,
            r#"lookups[0].options.cache.ttl: invalid type: integer `1`, expected a string"#,
            r#"sinks[0].options.url: not a valid Redis URL: Invalid database number - InvalidClientConfig; e.g. redis://127.0.0.1:6379/0, or redis://user:password@host:6379/0"#,
            r#"sinks[0].options.key: "id" uses no column, so every record would have one key; write {id} for the value of column `id`, or e.g. `user:{id}`"#,
            r#"sinks[0].options.ttl: invalid duration "forever": write a number and a unit, like 500ms, 5s, 2m or 1h"#,
        ],
    ),
    (
        "name: [unclosed\n",
        &[
            "2:1: invalid YAML: did not find expected ',' or ']', while parsing a flow sequence at line 1 column 7",
        ],
    ),
];

#[test]
fn validate_reports_exactly_the_expected_problems() {
    for (index, (spec, expected)) in CASES.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spec.yaml"), spec).unwrap();
        let output = run_sluice(&["validate", "spec.yaml"], dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines: Vec<&str> = stdout.lines().collect();
        if expected.is_empty() {
            assert!(output.status.success(), "case {index} should be valid:\n{stdout}");
            assert_eq!(lines, ["spec.yaml: valid"]);
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "case {index}: exit code\n{stdout}");
        let summary = lines.pop().unwrap_or_default();
        let folder = dir.path().canonicalize().unwrap().display().to_string();
        let problems: Vec<String> = lines
            .iter()
            .map(|line| line.strip_prefix("spec.yaml: ").unwrap_or(line).replace(&folder, "<dir>"))
            .collect();
        assert_eq!(problems, *expected, "case {index}");
        let plural = if expected.len() == 1 { "" } else { "s" };
        assert_eq!(summary, format!("{} error{plural} found", expected.len()));
    }
}

#[test]
fn validate_json_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.yaml"), CASES[1].0).unwrap();
    let output = run_sluice(&["validate", "--json", "spec.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(report["valid"], false);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), CASES[1].1.len());
    let column = errors.iter().find(|e| e["path"] == "processors[0].sql").unwrap();
    assert_eq!(column["message"], "unknown column \"prise\"");
    assert_eq!(column["location"], serde_json::json!({"line": 2, "column": 8}));
    assert_eq!(column["suggestion"], "did you mean \"price\"?");

    std::fs::write(dir.path().join("good.yaml"), CASES[0].0).unwrap();
    let output = run_sluice(&["validate", "--json", "good.yaml"], dir.path());
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report, serde_json::json!({"valid": true, "errors": []}));
}

#[test]
fn run_refuses_an_invalid_spec_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.yaml"), CASES[1].0).unwrap();
    let output = run_sluice(&["run", "spec.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown column \"prise\""), "{stderr}");
    assert!(stderr.contains("nothing was run"), "{stderr}");
}
