//! Per-operator metrics: records and bytes in and out, batches, busy time. One registry per
//! process, shared by all its workers; counters are relaxed atomics updated once per batch.
//! `sluice run` prints them as a summary table and, with `--metrics-file`, writes them every
//! second for the control plane to serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What kind of node an operator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Produces records from outside.
    Source,
    /// Transforms records.
    Processor,
    /// Sends records outside.
    Sink,
}

impl NodeRole {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Source => "source",
            NodeRole::Processor => "processor",
            NodeRole::Sink => "sink",
        }
    }
}

/// Counters of one pipeline node, summed over this process's workers.
#[derive(Debug)]
pub struct OperatorMetrics {
    /// Node name from the spec.
    pub name: String,
    /// Node role.
    pub role: NodeRole,
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted.
    pub records_out: AtomicU64,
    /// Arrow memory size of batches received.
    pub bytes_in: AtomicU64,
    /// Arrow memory size of batches emitted.
    pub bytes_out: AtomicU64,
    /// Batches received.
    pub batches_in: AtomicU64,
    /// Time spent inside the operator's logic, in nanoseconds, over all workers.
    pub busy_nanos: AtomicU64,
    /// Size of the operator's state, in bytes, over all workers (stateful processors).
    pub state_bytes: AtomicU64,
    /// Records a source holds that its readers have not read yet, over all workers (sources
    /// that know it, such as Kafka's consumer lag).
    pub lag: AtomicU64,
}

impl OperatorMetrics {
    fn new(name: &str, role: NodeRole) -> Self {
        Self {
            name: name.to_owned(),
            role,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            batches_in: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            lag: AtomicU64::new(0),
        }
    }

    /// Replaces one worker's contribution to the state size: it was `before`, it is `now`.
    pub fn update_state_bytes(&self, before: u64, now: u64) {
        replace_contribution(&self.state_bytes, before, now);
    }

    /// Replaces one worker's contribution to the source lag: it was `before`, it is `now`.
    pub fn update_lag(&self, before: u64, now: u64) {
        replace_contribution(&self.lag, before, now);
    }

    /// Counts a received batch of `rows` rows and `bytes` bytes.
    pub fn record_in(&self, rows: usize, bytes: usize) {
        self.records_in.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.batches_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an emitted batch.
    pub fn record_out(&self, rows: usize, bytes: usize) {
        self.records_out.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds busy time measured from `start` until now.
    pub fn busy_since(&self, start: Instant) {
        self.busy_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// A point-in-time copy of the counters.
    pub fn snapshot(&self) -> OperatorSnapshot {
        OperatorSnapshot {
            name: self.name.clone(),
            role: self.role,
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one operator's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// Node name.
    pub name: String,
    /// Node role.
    pub role: NodeRole,
    /// Records received.
    pub records_in: u64,
    /// Records emitted.
    pub records_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes emitted.
    pub bytes_out: u64,
    /// Busy time over all workers.
    pub busy: Duration,
    /// State size in bytes over all workers.
    pub state_bytes: u64,
    /// Unread records of a source over all workers, where known.
    pub lag: u64,
}

/// A gauge summed over workers: one worker's part changes from `before` to `now`.
fn replace_contribution(gauge: &AtomicU64, before: u64, now: u64) {
    if now >= before {
        gauge.fetch_add(now - before, Ordering::Relaxed);
    } else {
        gauge.fetch_sub(before - now, Ordering::Relaxed);
    }
}

/// All operators' metrics of one process, in pipeline order.
#[derive(Debug, Default, Clone)]
pub struct MetricsRegistry {
    operators: Vec<Arc<OperatorMetrics>>,
}

impl MetricsRegistry {
    /// Registers a node and returns its counters.
    pub fn register(&mut self, name: &str, role: NodeRole) -> Arc<OperatorMetrics> {
        let metrics = Arc::new(OperatorMetrics::new(name, role));
        self.operators.push(metrics.clone());
        metrics
    }

    /// Counters of the node named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<OperatorMetrics>> {
        self.operators.iter().find(|m| m.name == name)
    }

    /// Snapshots of every operator, in registration order.
    pub fn snapshot(&self) -> Vec<OperatorSnapshot> {
        self.operators.iter().map(|m| m.snapshot()).collect()
    }

    /// Records emitted by all sources so far.
    pub fn source_records(&self) -> u64 {
        self.total(NodeRole::Source, |m| &m.records_out)
    }

    /// Records received by all sinks so far.
    pub fn sink_records(&self) -> u64 {
        self.total(NodeRole::Sink, |m| &m.records_in)
    }

    fn total(&self, role: NodeRole, counter: impl Fn(&OperatorMetrics) -> &AtomicU64) -> u64 {
        self.operators.iter().filter(|m| m.role == role).map(|m| counter(m).load(Ordering::Relaxed)).sum()
    }
}
