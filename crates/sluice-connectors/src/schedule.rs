//! How generator sources split numbered rows over workers and pace them by wall clock.
//!
//! Rows (or events) are numbered from 0 and grouped into chunks of [`CHUNK`]; chunk `k` belongs
//! to worker `k % peers`. A row's content depends only on the seed and its number, so the union
//! of all workers' output is the same whatever the number of workers.

use std::ops::Range;
use std::time::{Duration, Instant};

use sluice_runtime::connector::WorkerPosition;

/// Rows per chunk: large enough to amortise bookkeeping, small enough to balance workers.
pub(crate) const CHUNK: u64 = 4096;

/// The next rows one worker should produce.
#[derive(Debug)]
pub(crate) struct Schedule {
    worker: WorkerPosition,
    /// Total rows over all workers; `None` for unbounded.
    total: Option<u64>,
    /// Next row number this worker owns.
    next: u64,
    /// Rows per second over all workers; `None` for as fast as possible.
    rate: Option<u64>,
    started: Instant,
}

/// What the worker should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Produce these rows (all owned by this worker, consecutive).
    Rows(Range<u64>),
    /// Too early for the next row.
    Wait(Duration),
    /// This worker has no more rows.
    Done,
}

impl Schedule {
    /// A schedule for `worker`, starting now.
    pub(crate) fn new(worker: WorkerPosition, total: Option<u64>, rate: Option<u64>) -> Self {
        let peers = worker.peers.max(1) as u64;
        let index = worker.index as u64 % peers;
        Self { worker, total, next: index * CHUNK, rate, started: Instant::now() }
    }

    /// Up to `max_rows` consecutive rows to produce now, or why there are none.
    pub(crate) fn step(&mut self, max_rows: usize) -> Step {
        self.step_at(max_rows, self.started.elapsed())
    }

    fn step_at(&mut self, max_rows: usize, elapsed: Duration) -> Step {
        let start = self.next;
        let mut end = (start / CHUNK + 1) * CHUNK;
        if let Some(total) = self.total {
            if start >= total {
                return Step::Done;
            }
            end = end.min(total);
        }
        end = end.min(start.saturating_add(max_rows.max(1) as u64));
        if let Some(rate) = self.rate.filter(|rate| *rate > 0) {
            // Row n is due `n / rate` seconds after the start.
            let due_now =
                (elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000).saturating_add(1);
            let due_now = u64::try_from(due_now).unwrap_or(u64::MAX);
            if due_now <= start {
                let due_at = Duration::from_nanos(
                    u64::try_from(u128::from(start) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX),
                );
                return Step::Wait(due_at.saturating_sub(elapsed).max(Duration::from_micros(100)));
            }
            end = end.min(due_now);
        }
        self.next = if end.is_multiple_of(CHUNK) { self.advance_chunk(end) } else { end };
        Step::Rows(start..end)
    }

    /// The first row of this worker's chunk after the one ending at `end`.
    fn advance_chunk(&self, end: u64) -> u64 {
        let peers = self.worker.peers.max(1) as u64;
        end.saturating_add((peers - 1) * CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(worker: usize, peers: usize, total: u64) -> Vec<u64> {
        let mut schedule = Schedule::new(WorkerPosition { index: worker, peers }, Some(total), None);
        let mut out = Vec::new();
        loop {
            match schedule.step(1000) {
                Step::Rows(range) => out.extend(range),
                Step::Done => return out,
                Step::Wait(_) => unreachable!("no rate"),
            }
        }
    }

    #[test]
    fn workers_cover_every_row_once() {
        for peers in 1..4 {
            let mut all: Vec<u64> = (0..peers).flat_map(|w| rows(w, peers, 10_000)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..10_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn pacing_waits_until_rows_are_due() {
        let worker = WorkerPosition { index: 0, peers: 1 };
        let mut schedule = Schedule::new(worker, None, Some(1000));
        assert_eq!(schedule.step_at(100, Duration::ZERO), Step::Rows(0..1));
        assert!(matches!(schedule.step_at(100, Duration::ZERO), Step::Wait(_)));
        assert_eq!(schedule.step_at(100, Duration::from_millis(10)), Step::Rows(1..11));
    }
}
