//! What `sluice run --metrics-file` writes: a snapshot of every node's counters each second
//! while the pipeline runs and once more when it ends, with rates and busy fractions over the
//! interval since the previous snapshot. The control plane serves these files (see
//! `sluice_control::metrics` for the format).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_control::metrics::{CheckpointMark, MetricsSnapshot, NodeMetrics, NodeRole};
use sluice_runtime::Runtime;
use sluice_runtime::metrics::{self as runtime_metrics, OperatorSnapshot};

/// How often a snapshot is written.
const INTERVAL: Duration = Duration::from_secs(1);

/// Writes snapshots of one run to one file.
pub struct MetricsFile {
    path: PathBuf,
    workers: usize,
    started: Instant,
    previous: Vec<OperatorSnapshot>,
    previous_at: Instant,
    /// Whether the last write failed (a failure is logged once, not every second).
    failing: bool,
}

impl MetricsFile {
    /// Snapshots for a run on `workers` worker threads that starts now.
    pub fn new(path: PathBuf, workers: usize) -> Self {
        let now = Instant::now();
        Self { path, workers, started: now, previous: Vec::new(), previous_at: now, failing: false }
    }

    /// Writes a snapshot of `runtime` every second until `ended` says the run is over (a message
    /// or a closed channel), then a final one.
    pub fn run(mut self, runtime: &Runtime, ended: Receiver<()>) {
        loop {
            let last = !matches!(ended.recv_timeout(INTERVAL), Err(RecvTimeoutError::Timeout));
            let checkpoint = runtime.latest_checkpoint().map(|manifest| CheckpointMark {
                id: manifest.checkpoint,
                created_at_ms: manifest.created_at_ms,
                duration_ms: manifest.duration_ms,
            });
            let snapshot = self.next(runtime.metrics().snapshot(), checkpoint, last);
            match snapshot.write(&self.path) {
                Ok(()) => self.failing = false,
                Err(error) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(%error, path = %self.path.display(), "cannot write the metrics file; retrying every second");
                }
                Err(_) => {}
            }
            if last {
                return;
            }
        }
    }

    /// The snapshot of `current` counters, taken now.
    fn next(
        &mut self,
        current: Vec<OperatorSnapshot>,
        checkpoint: Option<CheckpointMark>,
        ended: bool,
    ) -> MetricsSnapshot {
        let now = Instant::now();
        let interval = now - self.previous_at;
        let nodes = nodes(&self.previous, &current, interval, self.workers);
        (self.previous, self.previous_at) = (current, now);
        MetricsSnapshot {
            at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.as_millis() as i64),
            uptime_ms: (now - self.started).as_millis() as u64,
            interval_ms: interval.as_millis() as u64,
            workers: self.workers,
            ended,
            checkpoint,
            nodes,
        }
    }
}

/// Every node's counters in `current`, with rates and busy fractions over the `interval` since
/// `previous` (empty for the run's first snapshot: every counter started at zero).
fn nodes(
    previous: &[OperatorSnapshot],
    current: &[OperatorSnapshot],
    interval: Duration,
    workers: usize,
) -> Vec<NodeMetrics> {
    let seconds = interval.as_secs_f64();
    let per_second = |now: u64, before: u64| {
        if seconds > 0.0 { now.saturating_sub(before) as f64 / seconds } else { 0.0 }
    };
    current
        .iter()
        .map(|node| {
            let before = previous.iter().find(|p| p.name == node.name);
            let (records_in, records_out, busy) =
                before.map_or((0, 0, Duration::ZERO), |b| (b.records_in, b.records_out, b.busy));
            let capacity = seconds * workers.max(1) as f64;
            NodeMetrics {
                name: node.name.clone(),
                role: role(node.role),
                records_in: node.records_in,
                records_out: node.records_out,
                bytes_in: node.bytes_in,
                bytes_out: node.bytes_out,
                state_bytes: node.state_bytes,
                lag: node.lag,
                busy_seconds: node.busy.as_secs_f64(),
                busy: if capacity > 0.0 {
                    node.busy.saturating_sub(busy).as_secs_f64() / capacity
                } else {
                    0.0
                },
                records_in_per_second: per_second(node.records_in, records_in),
                records_out_per_second: per_second(node.records_out, records_out),
            }
        })
        .collect()
}

fn role(role: runtime_metrics::NodeRole) -> NodeRole {
    match role {
        runtime_metrics::NodeRole::Source => NodeRole::Source,
        runtime_metrics::NodeRole::Processor => NodeRole::Processor,
        runtime_metrics::NodeRole::Sink => NodeRole::Sink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str, records_in: u64, records_out: u64, busy_ms: u64) -> OperatorSnapshot {
        OperatorSnapshot {
            name: name.into(),
            role: runtime_metrics::NodeRole::Processor,
            records_in,
            records_out,
            bytes_in: records_in * 8,
            bytes_out: records_out * 8,
            busy: Duration::from_millis(busy_ms),
            state_bytes: 64,
            lag: 3,
        }
    }

    #[test]
    fn rates_and_busy_cover_the_interval_not_the_whole_run() {
        let before = [operator("a", 1000, 500, 4000)];
        let now = [operator("a", 1300, 600, 4500)];
        let nodes = nodes(&before, &now, Duration::from_millis(500), 2);
        let a = &nodes[0];
        assert_eq!(
            (a.records_in, a.records_out, a.bytes_in, a.state_bytes, a.lag),
            (1300, 600, 10400, 64, 3)
        );
        assert_eq!((a.records_in_per_second, a.records_out_per_second), (600.0, 200.0));
        // 500 ms busy over 2 workers × 500 ms.
        assert_eq!(a.busy, 0.5);
        assert_eq!(a.busy_seconds, 4.5);
        assert_eq!(a.role, NodeRole::Processor);
    }

    #[test]
    fn the_first_snapshot_counts_from_the_start_of_the_run() {
        let nodes = nodes(&[], &[operator("a", 50, 40, 100)], Duration::from_secs(2), 1);
        assert_eq!((nodes[0].records_in_per_second, nodes[0].records_out_per_second), (25.0, 20.0));
        assert_eq!(nodes[0].busy, 0.05);
        let nodes = super::nodes(&[], &[operator("a", 50, 40, 100)], Duration::ZERO, 1);
        assert_eq!((nodes[0].records_in_per_second, nodes[0].busy), (0.0, 0.0), "no interval, no rate");
    }

    #[test]
    fn successive_snapshots_rate_each_interval_and_the_file_holds_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.metrics.json");
        let mut file = MetricsFile::new(path.clone(), 1);
        let first = file.next(vec![operator("a", 100, 100, 0)], None, false);
        std::thread::sleep(Duration::from_millis(20));
        let second = file.next(vec![operator("a", 100, 100, 0)], None, true);
        assert!(first.nodes[0].records_in_per_second > 0.0);
        assert_eq!(second.nodes[0].records_in_per_second, 0.0, "nothing arrived since the first");
        assert!(second.uptime_ms >= first.uptime_ms + 20 && second.interval_ms >= 20, "{second:?}");
        assert!(second.ended && !first.ended);
        second.write(&path).unwrap();
        assert_eq!(MetricsSnapshot::read(&path).unwrap(), Some(second));
    }
}
