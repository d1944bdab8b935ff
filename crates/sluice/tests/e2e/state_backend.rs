//! The RocksDB state backend through the real binary: an updating GROUP BY and a regular join
//! whose state lives in RocksDB survive `kill -9` at seeded moments, and their checkpoints
//! restore into the other backend at another parallelism. The reference is one uninterrupted
//! run with state in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// Nexmark bids at a fixed rate (about 6 s of data) counted per auction: an updating result,
/// one row per auction each epoch it changes; and every auction joined with its seller.
const SPEC: &str = r#"
name: bids-per-auction
epoch_ms: 100
checkpoints: {interval: 1s, location: checkpoints}
state: {backend: rocksdb, path: rocks}
sources:
  - name: nx
    connector: nexmark
    options: {events: 150000, events_per_second: 25000, seed: 5}
processors:
  - name: per_auction
    inputs: [nx.bid]
    sql: |
      SELECT auction, COUNT(*) AS bids, MAX(price) AS top, COUNT(DISTINCT bidder) AS bidders
      FROM nx.bid GROUP BY auction
  - name: sellers
    inputs: [nx.person, nx.auction]
    sql: |
      SELECT P.id AS seller, P.name, A.id AS auction, A.reserve
      FROM nx.person AS P JOIN nx.auction AS A ON P.id = A.seller
sinks:
  - {name: out, connector: file, inputs: [per_auction], options: {path: out, format: jsonl}}
  - {name: joined, connector: file, inputs: [sellers], options: {path: joined, format: jsonl}}
"#;

fn pipeline_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), SPEC).unwrap();
    dir
}

/// The final row per auction. Every column only grows, so the final row of a key is its
/// largest; rows of earlier epochs (and, after a restart, of replayed ones) are older values.
fn final_rows(dir: &Path) -> BTreeMap<i64, Value> {
    let mut last: BTreeMap<i64, Value> = BTreeMap::new();
    for row in read_json_lines(&dir.join("out")) {
        let auction = row["auction"].as_i64().expect("auction");
        let newer = last.get(&auction).is_none_or(|seen| seen["bids"].as_i64() < row["bids"].as_i64());
        if newer {
            last.insert(auction, row);
        }
    }
    last
}

/// The final row per auction, and the joined rows (canonical, sorted).
type Output = (BTreeMap<i64, Value>, Vec<String>);

fn output(dir: &Path) -> Output {
    (final_rows(dir), canonical(&read_json_lines(&dir.join("joined"))))
}

fn reference() -> &'static Output {
    static REFERENCE: std::sync::OnceLock<Output> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = pipeline_dir();
        finish_run(
            spawn_run(dir.path(), &["-w", "2", "--state-backend", "memory"]),
            "uninterrupted run in memory",
        );
        let (rows, joined) = output(dir.path());
        let bids: i64 = rows.values().map(|row| row["bids"].as_i64().unwrap()).sum();
        assert!(
            rows.len() > 1000 && bids > 100_000,
            "a meaningful reference: {} auctions, {bids} bids",
            rows.len()
        );
        // Nexmark makes 3 auctions per 50 events, each sold by a person generated before it:
        // every auction finds its seller exactly once.
        let auctions: std::collections::BTreeSet<i64> = read_json_lines(&dir.path().join("joined"))
            .iter()
            .map(|row| row["auction"].as_i64().expect("auction"))
            .collect();
        assert_eq!(
            (joined.len(), auctions.len()),
            (150_000 * 3 / 50, 150_000 * 3 / 50),
            "joined rows, auctions"
        );
        (rows, joined)
    })
}

fn assert_same_as_reference(dir: &Path, what: &str) {
    let (actual, joined) = output(dir);
    let (expected, expected_joined) = reference();
    if &joined != expected_joined {
        let missing = expected_joined.iter().filter(|row| joined.binary_search(row).is_err()).count();
        let mut unique = joined.clone();
        unique.dedup();
        panic!(
            "{what}: the join committed {} rows, expected {}: {missing} missing, {} duplicated",
            joined.len(),
            expected_joined.len(),
            joined.len() - unique.len()
        );
    }
    let differing: Vec<_> =
        expected.iter().filter(|(auction, row)| actual.get(auction) != Some(row)).take(3).collect();
    assert!(
        differing.is_empty() && actual.len() == expected.len(),
        "{what}: {} auctions, expected {}; first differing expected rows: {differing:?}",
        actual.len(),
        expected.len()
    );
}

#[test]
fn rocksdb_state_survives_kill_9_at_seeded_moments() {
    let seed = 20_261_126;
    let dir = pipeline_dir();
    // After each kill, the killed run's RocksDB files are still there: state really lived on disk.
    let databases_left = || {
        for operator in ["per_auction", "sellers"] {
            let database = dir.path().join(format!("rocks/{operator}/worker-0/CURRENT"));
            assert!(database.is_file(), "no RocksDB database at {}", database.display());
        }
    };
    let kills =
        kill_at_seeded_moments(|| spawn_run(dir.path(), &["-w", "2"]), seed, 3, 800..2_400, databases_left);
    finish_run(spawn_run(dir.path(), &["-w", "2"]), "the final resumed run");
    assert!(kills.len() >= 2, "seed {seed}: the schedule must kill at least twice: {kills:?}");
    assert_same_as_reference(dir.path(), &format!("seed {seed}, kills {kills:?}"));
    assert!(!dir.path().join("rocks/per_auction/worker-0").exists(), "a clean exit removes the working copy");
}

#[test]
fn rocksdb_checkpoints_restore_into_memory_at_another_parallelism() {
    let dir = pipeline_dir();
    let checkpoints = dir.path().join("checkpoints");
    let mut child = spawn_run(dir.path(), &["-w", "1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while latest_checkpoint(&checkpoints).is_none_or(|id| id < 2) {
        assert!(child.try_wait().unwrap().is_none(), "exited before its second checkpoint");
        assert!(std::time::Instant::now() < deadline, "no checkpoint after a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    finish_run(
        spawn_run(dir.path(), &["-w", "3", "--state-backend", "memory"]),
        "resume in memory at 3 workers",
    );
    assert_same_as_reference(dir.path(), "rocksdb at 1 worker, killed, resumed in memory at 3");
}
