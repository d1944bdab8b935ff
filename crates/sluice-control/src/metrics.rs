//! Pipeline metrics as the control plane sees them: the snapshot file a worker rewrites every
//! second while it runs (`sluice run --metrics-file`; both sides of that file format live here,
//! as the status file's do in [`crate::supervisor`]), and the Prometheus text exposition of
//! every pipeline's state and latest snapshot.

use std::fmt::{Display, Write as _};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lifecycle::State;
use crate::store::PipelineRecord;

/// What one worker process measured, as of one moment of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Time since the run started, in milliseconds.
    pub uptime_ms: u64,
    /// Time since the previous snapshot (since the run started, for the first), in
    /// milliseconds: the interval rates and busy fractions are computed over.
    pub interval_ms: u64,
    /// Worker threads of the process.
    pub workers: usize,
    /// Written as the run ended: no newer snapshot of this run will follow.
    pub ended: bool,
    /// The newest checkpoint this run completed, if any.
    pub checkpoint: Option<CheckpointMark>,
    /// Every node of the pipeline, in pipeline order.
    pub nodes: Vec<NodeMetrics>,
}

/// A completed checkpoint, as a snapshot names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMark {
    /// The checkpoint's id.
    pub id: u64,
    /// When it was started, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// How long it took until every part was durable, in milliseconds.
    pub duration_ms: u64,
}

/// What a node does in its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Reads records from outside.
    Source,
    /// Transforms records.
    Processor,
    /// Writes records outside.
    Sink,
}

impl NodeRole {
    /// Lowercase name, as in the snapshot file.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Source => "source",
            NodeRole::Processor => "processor",
            NodeRole::Sink => "sink",
        }
    }
}

/// One node's counters, summed over the process's worker threads. Counters count from the start
/// of the run (a restarted worker starts again from zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// The node's name in the spec.
    pub name: String,
    /// What it does.
    pub role: NodeRole,
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Arrow memory size of the batches received.
    pub bytes_in: u64,
    /// Arrow memory size of the batches emitted.
    pub bytes_out: u64,
    /// Size of its state (stateful processors).
    pub state_bytes: u64,
    /// Records its sources hold that it has not read yet, where the source knows (e.g. Kafka
    /// consumer lag); 0 otherwise.
    pub lag: u64,
    /// Time spent in its logic over all worker threads since the run started, in seconds.
    pub busy_seconds: f64,
    /// Share of the interval its worker threads spent in its logic: 0 idle, 1 every worker
    /// busy with it all the time.
    pub busy: f64,
    /// Records received per second over the interval.
    pub records_in_per_second: f64,
    /// Records emitted per second over the interval.
    pub records_out_per_second: f64,
}

impl MetricsSnapshot {
    /// Writes the snapshot to `path` through a temporary file in the same folder, renamed into
    /// place: a reader sees the previous snapshot or this one, never part of one.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        let temporary = temporary_path(path);
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path)
    }

    /// The snapshot at `path`; `None` when there is no file.
    pub fn read(path: &Path) -> io::Result<Option<MetricsSnapshot>> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        serde_json::from_slice(&text).map(Some).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a metrics snapshot: {error}", path.display()),
            )
        })
    }
}

/// `.NAME.tmp` beside `path`: the same folder, so the rename never crosses file systems.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// The media type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every pipeline's state and restarts, and the counters and gauges of each node in its latest
/// snapshot (if it has one), in the Prometheus text exposition format.
pub fn exposition(pipelines: &[(PipelineRecord, Option<MetricsSnapshot>)]) -> String {
    let mut out = Exposition::default();
    for (pipeline, _) in pipelines {
        let labels = [("team", pipeline.team.as_str()), ("pipeline", pipeline.name.as_str())];
        let family = out.family(
            "sluice_pipeline_state",
            "gauge",
            "Lifecycle state of the pipeline: 1 for the state it is in, 0 for the others.",
        );
        for state in State::ALL {
            let current = u8::from(state == pipeline.actual.state);
            family.sample(&[labels[0], labels[1], ("state", state.name())], current);
        }
        out.family(
            "sluice_pipeline_restarts",
            "gauge",
            "Restarts after failures since the pipeline last ran healthily.",
        )
        .sample(&labels, pipeline.actual.restarts);
        out.family("sluice_pipeline_runs_total", "counter", "Worker processes started for the pipeline.")
            .sample(&labels, pipeline.actual.runs);
    }
    for (pipeline, snapshot) in pipelines {
        let Some(snapshot) = snapshot else { continue };
        let labels = [("team", pipeline.team.as_str()), ("pipeline", pipeline.name.as_str())];
        out.family(
            "sluice_pipeline_metrics_timestamp_seconds",
            "gauge",
            "When the current run's latest metrics snapshot was taken, in seconds since the Unix epoch.",
        )
        .sample(&labels, seconds(snapshot.at_ms as f64));
        if let Some(checkpoint) = &snapshot.checkpoint {
            out.family(
                "sluice_pipeline_checkpoint_timestamp_seconds",
                "gauge",
                "When the newest checkpoint of the current run was started, in seconds since the Unix epoch.",
            )
            .sample(&labels, seconds(checkpoint.created_at_ms as f64));
        }
        for node in &snapshot.nodes {
            let labels = [labels[0], labels[1], ("node", node.name.as_str()), ("role", node.role.as_str())];
            let counters: [(&'static str, &'static str, &dyn Display); 5] = [
                (
                    "sluice_node_records_in_total",
                    "Records the node received in the current run.",
                    &node.records_in,
                ),
                (
                    "sluice_node_records_out_total",
                    "Records the node emitted in the current run.",
                    &node.records_out,
                ),
                (
                    "sluice_node_bytes_in_total",
                    "Arrow bytes the node received in the current run.",
                    &node.bytes_in,
                ),
                (
                    "sluice_node_bytes_out_total",
                    "Arrow bytes the node emitted in the current run.",
                    &node.bytes_out,
                ),
                (
                    "sluice_node_busy_seconds_total",
                    "Time the node's worker threads spent in its logic in the current run.",
                    &node.busy_seconds,
                ),
            ];
            for (name, help, value) in counters {
                out.family(name, "counter", help).sample(&labels, value);
            }
            out.family(
                "sluice_node_lag_records",
                "gauge",
                "Records the source holds that it has not read yet (0 when the source cannot tell).",
            )
            .sample(&labels, node.lag);
            out.family("sluice_node_state_bytes", "gauge", "Size of the node's state.")
                .sample(&labels, node.state_bytes);
        }
    }
    out.render()
}

fn seconds(millis: f64) -> f64 {
    millis / 1000.0
}

/// Metric families in the order they were first named, each with its samples: the format wants
/// every sample of a family together, under its `# HELP` and `# TYPE` lines.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: String,
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str) -> &mut Family {
        let index = match self.families.iter().position(|family| family.name == name) {
            Some(index) => index,
            None => {
                self.families.push(Family { name, kind, help, samples: String::new() });
                self.families.len() - 1
            }
        };
        &mut self.families[index]
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for family in &self.families {
            let _ = writeln!(text, "# HELP {} {}", family.name, escape_help(family.help));
            let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
            text += &family.samples;
        }
        text
    }
}

impl Family {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        let labels: Vec<String> =
            labels.iter().map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value))).collect();
        let _ = writeln!(self.samples, "{}{{{}}} {value}", self.name, labels.join(","));
    }
}

/// A label value as the text format quotes it: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    escape(value, true)
}

/// `# HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    escape(text, false)
}

fn escape(text: &str, quotes: bool) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quotes => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actual, Desired};

    fn pipeline(team: &str, name: &str, state: State) -> PipelineRecord {
        PipelineRecord {
            team: team.into(),
            name: name.into(),
            latest_version: 1,
            deployed_version: Some(1),
            desired: Desired::Running,
            pending: None,
            parallelism: 2,
            generation: 1,
            resume_from: None,
            actual: Actual {
                state,
                reason: String::new(),
                worker: None,
                runs: 3,
                restarts: 2,
                retry_at: None,
                last_savepoint: None,
            },
            created_by: "dev".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn node(name: &str, role: NodeRole, records: u64) -> NodeMetrics {
        NodeMetrics {
            name: name.into(),
            role,
            records_in: records,
            records_out: records + 1,
            bytes_in: 10,
            bytes_out: 20,
            state_bytes: 30,
            lag: 40,
            busy_seconds: 1.5,
            busy: 0.25,
            records_in_per_second: 100.0,
            records_out_per_second: 100.0,
        }
    }

    fn snapshot(nodes: Vec<NodeMetrics>) -> MetricsSnapshot {
        MetricsSnapshot {
            at_ms: 1_700_000_000_250,
            uptime_ms: 5000,
            interval_ms: 1000,
            workers: 2,
            ended: false,
            checkpoint: Some(CheckpointMark { id: 4, created_at_ms: 1_700_000_000_000, duration_ms: 12 }),
            nodes,
        }
    }

    /// A sample line parsed back the way a scraper reads it: the metric name, the label pairs
    /// with their escapes undone, and the value.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let open = line.find('{').expect("labels");
        let name = line[..open].to_string();
        let mut labels = Vec::new();
        let mut chars = line[open + 1..].chars();
        loop {
            let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().expect("closing quote") {
                    '\\' => match chars.next().expect("escaped character") {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("\\{other} is not an escape of the text format: {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("a raw line feed in a label value: {line}"),
                    c => value.push(c),
                }
            }
            labels.push((label, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("{other:?} after a label value: {line}"),
            }
        }
        let rest: String = chars.collect();
        let value = rest.strip_prefix(' ').expect("a space before the value").parse().expect("a number");
        (name, labels, value)
    }

    #[test]
    fn label_values_with_quotes_backslashes_and_line_feeds_read_back_as_written() {
        let awkward = "a\"b\\c\nd}e,f=g";
        let text = exposition(&[(
            pipeline("t", "p", State::Running),
            Some(snapshot(vec![node(awkward, NodeRole::Sink, 7)])),
        )]);
        let line = text
            .lines()
            .find(|line| line.starts_with("sluice_node_records_in_total{"))
            .unwrap_or_else(|| panic!("no records_in line in\n{text}"));
        let (name, labels, value) = parse_sample(line);
        assert_eq!(name, "sluice_node_records_in_total");
        let expected = [("team", "t"), ("pipeline", "p"), ("node", awkward), ("role", "sink")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(labels, expected);
        assert_eq!(value, 7.0);
    }

    #[test]
    fn every_family_is_announced_once_and_its_samples_follow_it() {
        let pipelines = [
            (
                pipeline("a", "one", State::Running),
                Some(snapshot(vec![node("src", NodeRole::Source, 5), node("out", NodeRole::Sink, 4)])),
            ),
            (pipeline("b", "two", State::Stopped), None),
            (pipeline("b", "three", State::Failed), Some(snapshot(vec![node("src", NodeRole::Source, 9)]))),
        ];
        let text = exposition(&pipelines);
        let mut announced: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let name = help.split(' ').next().unwrap().to_string();
                assert!(!announced.contains(&name), "{name} announced twice:\n{text}");
                announced.push(name.clone());
                current = name;
            } else if let Some(kind) = line.strip_prefix("# TYPE ") {
                let (name, kind) = kind.split_once(' ').unwrap();
                assert_eq!(name, current);
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            } else {
                let (name, _, value) = parse_sample(line);
                assert_eq!(name, current, "a sample outside its family:\n{text}");
                assert!(value.is_finite());
            }
        }
        // One state line per state per pipeline, exactly one of them 1.
        let states: Vec<(Vec<(String, String)>, f64)> = text
            .lines()
            .filter(|line| line.starts_with("sluice_pipeline_state{"))
            .map(parse_sample)
            .map(|(_, labels, value)| (labels, value))
            .collect();
        assert_eq!(states.len(), 3 * State::ALL.len());
        let on: Vec<String> = states
            .iter()
            .filter(|(_, value)| *value == 1.0)
            .map(|(labels, _)| format!("{}/{}", labels[1].1, labels[2].1))
            .collect();
        assert_eq!(on, ["one/running", "two/stopped", "three/failed"]);
        // Node lines only for pipelines with a snapshot.
        let sources = text.lines().filter(|line| line.starts_with("sluice_node_records_out_total{")).count();
        assert_eq!(sources, 3);
        assert!(!text.contains("pipeline=\"two\",node="), "{text}");
        assert!(
            text.contains(
                "sluice_pipeline_metrics_timestamp_seconds{team=\"a\",pipeline=\"one\"} 1700000000.25\n"
            ),
            "{text}"
        );
        assert!(text.contains("sluice_node_busy_seconds_total{team=\"a\",pipeline=\"one\",node=\"src\",role=\"source\"} 1.5\n"), "{text}");
        assert!(text.contains("sluice_pipeline_restarts{team=\"b\",pipeline=\"two\"} 2\n"), "{text}");
    }

    #[test]
    fn a_snapshot_is_replaced_whole_and_a_missing_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.metrics.json");
        assert_eq!(MetricsSnapshot::read(&path).unwrap(), None);
        let first = snapshot(vec![node("src", NodeRole::Source, 1)]);
        first.write(&path).unwrap();
        assert_eq!(MetricsSnapshot::read(&path).unwrap(), Some(first));
        let second = MetricsSnapshot { ended: true, ..snapshot(vec![node("src", NodeRole::Source, 2)]) };
        second.write(&path).unwrap();
        assert_eq!(MetricsSnapshot::read(&path).unwrap(), Some(second));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1.metrics.json"], "no temporary file is left behind");
        std::fs::write(&path, "{\"at_ms\": 1").unwrap();
        let error = MetricsSnapshot::read(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
