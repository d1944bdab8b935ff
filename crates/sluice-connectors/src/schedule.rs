//! How generator sources split numbered rows into replayable splits, assign them to workers and
//! pace them by wall clock.
//!
//! Rows (or events) are numbered from 0 and grouped into chunks of [`CHUNK`]. Chunk `k` belongs
//! to split `k % SPLITS`, and split `s` to worker `s % peers`: a fixed set of splits, the same at
//! any parallelism, so positions saved by one run can be resumed by a run with another number of
//! workers. A split's position is the number of the next row it will produce. A row's content
//! depends only on the seed and its number, so the union of all workers' output is the same
//! whatever the number of workers and whatever was restored.

use std::ops::Range;
use std::time::{Duration, Instant};

use sluice_runtime::connector::{SplitState, WorkerPosition};
use sluice_runtime::{Error, Result};

/// Rows per chunk: large enough to amortise bookkeeping, small enough to balance workers.
pub(crate) const CHUNK: u64 = 4096;

/// Number of splits of a generator source: fixed, so that positions do not depend on the
/// parallelism; more workers than this leaves some idle.
pub(crate) const SPLITS: u64 = 64;

/// One split this worker owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    /// Split number, in `0..SPLITS`.
    number: u64,
    /// Next row this split produces; always in one of the split's chunks.
    next: u64,
}

/// The next rows one worker should produce.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Total rows over all workers; `None` for unbounded.
    total: Option<u64>,
    /// Rows per second over all workers; `None` for as fast as possible.
    rate: Option<u64>,
    /// This worker's splits, in split-number order.
    splits: Vec<Split>,
    /// The row paced at the start instant: the lowest position of any split over all workers,
    /// so that a resumed run does not burst to catch up with the time it was down.
    pace_origin: u64,
    started: Instant,
}

/// What the worker should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Produce these consecutive rows, from the reader's split `split` (an index into its
    /// splits, not a split number).
    Rows {
        /// Index of the split in this reader's splits.
        split: usize,
        /// The rows.
        rows: Range<u64>,
    },
    /// Too early for the next row.
    Wait(Duration),
    /// This worker has no more rows.
    Done,
}

impl Schedule {
    /// A schedule for `worker`, starting now, resuming the splits found in `restore` and
    /// starting the others from their first row.
    pub(crate) fn new(
        worker: WorkerPosition,
        total: Option<u64>,
        rate: Option<u64>,
        restore: Option<&[SplitState]>,
    ) -> Result<Self> {
        let mut positions: Vec<u64> = (0..SPLITS).map(|number| number * CHUNK).collect();
        for state in restore.unwrap_or_default() {
            let (number, next) = parse_state(state)?;
            positions[number as usize] = next;
        }
        let pace_origin = match restore {
            Some(_) => positions.iter().copied().min().unwrap_or(0),
            None => 0,
        };
        let peers = worker.peers.max(1) as u64;
        let splits = (0..SPLITS)
            .filter(|number| number % peers == worker.index as u64)
            .map(|number| Split { number, next: positions[number as usize] })
            .collect();
        Ok(Self { total, rate, splits, pace_origin, started: Instant::now() })
    }

    /// How many splits this worker reads.
    pub(crate) fn splits(&self) -> usize {
        self.splits.len()
    }

    /// The position of each of this worker's splits.
    pub(crate) fn snapshot(&self) -> Vec<SplitState> {
        self.splits
            .iter()
            .map(|split| SplitState {
                split: split_name(split.number),
                position: split.next.to_le_bytes().to_vec(),
            })
            .collect()
    }

    /// Up to `max_rows` consecutive rows to produce now, or why there are none.
    pub(crate) fn step(&mut self, max_rows: usize) -> Step {
        self.step_at(max_rows, self.started.elapsed())
    }

    fn step_at(&mut self, max_rows: usize, elapsed: Duration) -> Step {
        // The split furthest behind goes first: rows come out in about the order of their
        // numbers, as pacing and event times expect.
        let total = self.total.unwrap_or(u64::MAX);
        let Some((index, split)) = self
            .splits
            .iter()
            .enumerate()
            .filter(|(_, split)| split.next < total)
            .min_by_key(|(_, s)| s.next)
        else {
            return Step::Done;
        };
        let start = split.next;
        let mut end =
            ((start / CHUNK + 1) * CHUNK).min(total).min(start.saturating_add(max_rows.max(1) as u64));
        if let Some(rate) = self.rate.filter(|rate| *rate > 0) {
            // Row n is due `(n - origin) / rate` seconds after the start.
            let paced = start.saturating_sub(self.pace_origin);
            let due_now =
                (elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000).saturating_add(1);
            let due_now = u64::try_from(due_now).unwrap_or(u64::MAX);
            if due_now <= paced {
                let due_at = Duration::from_nanos(
                    u64::try_from(u128::from(paced) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX),
                );
                return Step::Wait(due_at.saturating_sub(elapsed).max(Duration::from_micros(100)));
            }
            end = end.min(self.pace_origin.saturating_add(due_now));
        }
        // A split's next row stays inside one of its chunks: after its last chunk's end comes
        // the first row of its next chunk, `SPLITS` chunks later.
        self.splits[index].next =
            if end.is_multiple_of(CHUNK) { end.saturating_add((SPLITS - 1) * CHUNK) } else { end };
        Step::Rows { split: index, rows: start..end }
    }
}

/// The stable name of split `number`; it names the split count too, so that positions saved
/// with another split count are rejected rather than misread.
fn split_name(number: u64) -> String {
    format!("{number}-of-{SPLITS}")
}

/// The split number and next row of a saved position, checked.
fn parse_state(state: &SplitState) -> Result<(u64, u64)> {
    let invalid = |why: &str| {
        Error::user(format!(
            "cannot resume split \"{}\" from the checkpoint: {why}; the checkpoint was taken by a \
             different version or configuration of this source, so start the pipeline without it",
            state.split
        ))
    };
    let number = state
        .split
        .strip_suffix(&format!("-of-{SPLITS}"))
        .and_then(|number| number.parse::<u64>().ok())
        .filter(|number| *number < SPLITS)
        .ok_or_else(|| invalid(&format!("this source has splits \"0-of-{SPLITS}\" to \"{}\"", SPLITS - 1)))?;
    let bytes: [u8; 8] =
        state.position.as_slice().try_into().map_err(|_| invalid("the position is not 8 bytes long"))?;
    let next = u64::from_le_bytes(bytes);
    if (next / CHUNK) % SPLITS != number {
        return Err(invalid(&format!("row {next} does not belong to this split")));
    }
    Ok((number, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: usize, peers: usize) -> WorkerPosition {
        WorkerPosition { index, peers }
    }

    /// Runs `schedule` for at most `steps` steps of `max_rows`, collecting the rows.
    fn run(schedule: &mut Schedule, max_rows: usize, steps: usize, out: &mut Vec<u64>) {
        for _ in 0..steps {
            match schedule.step(max_rows) {
                Step::Rows { split, rows } => {
                    assert!(split < schedule.splits(), "split index {split} out of range");
                    out.extend(rows);
                }
                Step::Done => return,
                Step::Wait(_) => unreachable!("no rate"),
            }
        }
    }

    fn rows(index: usize, peers: usize, total: u64) -> Vec<u64> {
        let mut schedule = Schedule::new(worker(index, peers), Some(total), None, None).unwrap();
        let mut out = Vec::new();
        run(&mut schedule, 1000, usize::MAX, &mut out);
        out
    }

    #[test]
    fn workers_cover_every_row_once() {
        for peers in 1..5 {
            let mut all: Vec<u64> = (0..peers).flat_map(|w| rows(w, peers, 300_000)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..300_000).collect::<Vec<_>>(), "{peers} workers");
        }
    }

    #[test]
    fn resuming_at_another_parallelism_loses_and_repeats_nothing() {
        let total = 600_000;
        let mut all = Vec::new();
        let mut restore: Option<Vec<SplitState>> = None;
        // Each run stops after a few steps per worker, at odd row counts, and hands its
        // positions to the next run with another number of workers.
        for (run_number, peers) in [1, 2, 3, 1, 3, 2, 1].into_iter().enumerate() {
            let mut states = Vec::new();
            for index in 0..peers {
                let mut schedule =
                    Schedule::new(worker(index, peers), Some(total), None, restore.as_deref()).unwrap();
                let steps = if run_number == 6 { usize::MAX } else { 7 + index * 5 };
                run(&mut schedule, 777, steps, &mut all);
                states.extend(schedule.snapshot());
            }
            assert_eq!(states.len(), SPLITS as usize);
            restore = Some(states);
        }
        all.sort_unstable();
        assert_eq!(all, (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn more_workers_than_splits_leaves_some_idle() {
        let schedule = Schedule::new(worker(70, 80), Some(10), None, None).unwrap();
        assert_eq!(schedule.splits(), 0);
    }

    #[test]
    fn foreign_positions_are_rejected() {
        let state = |split: &str, position: Vec<u8>| SplitState { split: split.into(), position };
        for bad in [
            state("3-of-32", 0u64.to_le_bytes().to_vec()),
            state("64-of-64", 0u64.to_le_bytes().to_vec()),
            state("3-of-64", vec![1, 2]),
            state("3-of-64", 0u64.to_le_bytes().to_vec()),
        ] {
            let error = Schedule::new(worker(0, 1), None, None, Some(&[bad])).unwrap_err();
            assert!(error.to_string().contains("start the pipeline without it"), "{error}");
        }
    }

    #[test]
    fn pacing_waits_until_rows_are_due() {
        let mut schedule = Schedule::new(worker(0, 1), None, Some(1000), None).unwrap();
        assert_eq!(schedule.step_at(100, Duration::ZERO), Step::Rows { split: 0, rows: 0..1 });
        assert!(matches!(schedule.step_at(100, Duration::ZERO), Step::Wait(_)));
        assert_eq!(schedule.step_at(100, Duration::from_millis(10)), Step::Rows { split: 0, rows: 1..11 });
    }

    #[test]
    fn a_resumed_run_is_paced_from_where_it_resumed() {
        let mut first = Schedule::new(worker(0, 1), None, Some(1000), None).unwrap();
        assert!(matches!(first.step_at(100, Duration::from_secs(3600)), Step::Rows { .. }));
        let restore = first.snapshot();
        let mut resumed = Schedule::new(worker(0, 1), None, Some(1000), Some(&restore)).unwrap();
        // Split 0 resumes at row 100, the lowest position: it is due right away...
        assert_eq!(resumed.step_at(100, Duration::ZERO), Step::Rows { split: 0, rows: 100..101 });
        // ...and the rows after it are paced, not produced in a burst.
        assert!(matches!(resumed.step_at(100, Duration::ZERO), Step::Wait(_)));
    }
}
