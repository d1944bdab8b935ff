//! Every example under `examples/` validates and runs, so none of them rots. The demo that
//! `sluice up` deploys is unbounded: it is validated here and run by the control-plane tests.

use super::*;

#[test]
fn every_example_validates_and_runs() {
    let examples = repo_root().join("examples");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&examples).expect("examples folder") {
        let folder = entry.expect("entry").path();
        if !folder.join("pipeline.yaml").is_file() {
            continue;
        }
        let dir = copy_to_temp(&folder);
        let validated = run_sluice(&["validate", "pipeline.yaml"], dir.path());
        assert_success(&validated, &format!("validate {}", folder.display()));
        if folder.ends_with("demo") {
            continue;
        }
        let output = run_sluice(&["run", "pipeline.yaml", "--workers", "2"], dir.path());
        assert_success(&output, &format!("run {}", folder.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("finished in"), "{}: no summary:\n{stderr}", folder.display());
        ran.push(folder.file_name().unwrap().to_string_lossy().into_owned());
    }
    ran.sort();
    assert_eq!(ran, ["clicks", "fan-out-fan-in", "nexmark-currency", "nexmark-hot-items"], "examples found");
}

#[test]
fn clicks_example_output_matches_a_hand_computed_result() {
    let dir = copy_to_temp(&repo_root().join("examples/clicks"));
    assert_success(&run_sluice(&["run", "pipeline.yaml", "-q"], dir.path()), "run clicks");
    let mut lines: Vec<String> = Vec::new();
    let mut headers = 0;
    for file in visible_files(&dir.path().join("out")) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            if line.starts_with("user_id,") {
                headers += 1;
            } else {
                lines.push(line.to_owned());
            }
        }
    }
    lines.sort();
    assert!(headers >= 1, "csv output has a header");
    // By hand from data/clicks.jsonl: purchases only; two lines are bad (see dead letters).
    assert_eq!(
        lines,
        [
            "1,/shop/shoes,large,120.5,2024-03-01T10:00:00,SHOP",
            "2,/shop/hats,medium,25.0,2024-03-01T11:00:00,SHOP",
            "3,/shop/socks,small,4.99,2024-03-01T12:00:00,SHOP",
            "4,/shop/shoes,small,0.0,2024-03-01T13:00:00,SHOP",
        ]
    );
    assert_eq!(read_json_lines(&dir.path().join("dead-letters/clicks")).len(), 2);
}
