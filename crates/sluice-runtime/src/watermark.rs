//! Event-time watermarks: generated per source split, carried in band as [`Mark`]s, and
//! min-merged wherever streams meet. Pure bookkeeping, no timely: the operators feed it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::batch::Mark;
use crate::error::{Error, Result};
use crate::processor::{END_OF_TIME, EventTime};

/// How a source derives watermarks from its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// The event-time column, per source output: its index in that output's schema.
    pub columns: Vec<Option<usize>>,
    /// Watermark = largest event time seen minus this.
    pub max_out_of_orderness: Duration,
    /// A split silent for this long stops holding the watermark back; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// The event time of every row of `column` in milliseconds since the Unix epoch; `None` for
/// null rows. Timestamps of any unit and whole milliseconds (`Int64`) are event times.
pub fn event_times(column: &ArrayRef) -> Result<Vec<Option<EventTime>>> {
    let divide =
        |values: Vec<Option<i64>>, by: i64| values.into_iter().map(move |v| v.map(|v| v.div_euclid(by)));
    Ok(match column.data_type() {
        DataType::Timestamp(unit, _) => {
            let raw: Vec<Option<i64>> = match unit {
                TimeUnit::Second => {
                    column.as_primitive::<arrow::datatypes::TimestampSecondType>().iter().collect()
                }
                TimeUnit::Millisecond => {
                    column.as_primitive::<arrow::datatypes::TimestampMillisecondType>().iter().collect()
                }
                TimeUnit::Microsecond => {
                    column.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().iter().collect()
                }
                TimeUnit::Nanosecond => {
                    column.as_primitive::<arrow::datatypes::TimestampNanosecondType>().iter().collect()
                }
            };
            match unit {
                TimeUnit::Second => raw.into_iter().map(|v| v.map(|v| v.saturating_mul(1000))).collect(),
                TimeUnit::Millisecond => raw,
                TimeUnit::Microsecond => divide(raw, 1_000).collect(),
                TimeUnit::Nanosecond => divide(raw, 1_000_000).collect(),
            }
        }
        DataType::Int64 => column.as_primitive::<Int64Type>().iter().collect(),
        other => {
            return Err(Error::user(format!(
                "the event-time column has type {other}; it must be a timestamp or whole milliseconds (int64)"
            )));
        }
    })
}

/// The largest event time in `column`, ignoring nulls.
pub fn max_event_time(column: &ArrayRef) -> Result<Option<EventTime>> {
    if column.null_count() == column.len() {
        return Ok(None);
    }
    Ok(event_times(column)?.into_iter().flatten().max())
}

/// One source reader's watermark: the minimum over its active splits of (largest event time
/// seen - max out-of-orderness).
#[derive(Debug)]
pub struct SourceWatermark {
    delay: i64,
    idle_timeout: Option<Duration>,
    splits: Vec<SplitProgress>,
    current: Option<EventTime>,
}

#[derive(Debug, Clone, Copy)]
struct SplitProgress {
    max_event_time: Option<EventTime>,
    last_active: Instant,
}

/// What a source's watermark is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceWatermarkState {
    /// Some active split has no event time yet: no watermark.
    Pending,
    /// Every split is idle (or there is none): do not hold event time back.
    Idle,
    /// The watermark.
    At(EventTime),
}

impl SourceWatermark {
    /// A generator for `strategy`'s delay and idle timeout.
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            delay: max_out_of_orderness.as_millis() as i64,
            idle_timeout,
            splits: Vec::new(),
            current: None,
        }
    }

    /// Records that split `split` (of `splits` now read) produced rows with largest event time
    /// `max` (None: no event time in them) at `now`.
    pub fn observe(&mut self, split: usize, splits: usize, max: Option<EventTime>, now: Instant) {
        self.resize(splits, now);
        if let Some(progress) = self.splits.get_mut(split) {
            progress.last_active = now;
            if let Some(max) = max {
                progress.max_event_time = Some(progress.max_event_time.map_or(max, |seen| seen.max(max)));
            }
        }
    }

    fn resize(&mut self, splits: usize, now: Instant) {
        if self.splits.len() < splits {
            self.splits.resize(splits, SplitProgress { max_event_time: None, last_active: now });
        } else {
            self.splits.truncate(splits);
        }
    }

    /// The watermark with `splits` splits at `now`; never moves backwards. A split silent for
    /// the idle timeout is idle unless `backlogged` says it has records still to read.
    pub fn state(
        &mut self,
        splits: usize,
        now: Instant,
        backlogged: impl Fn(usize) -> bool,
    ) -> SourceWatermarkState {
        self.resize(splits, now);
        let mut lowest: Option<EventTime> = None;
        for (split, progress) in self.splits.iter().enumerate() {
            let idle =
                self.idle_timeout.is_some_and(|timeout| now.duration_since(progress.last_active) >= timeout)
                    && !backlogged(split);
            if idle {
                continue;
            }
            let Some(max) = progress.max_event_time else {
                return SourceWatermarkState::Pending;
            };
            let watermark = max.saturating_sub(self.delay);
            lowest = Some(lowest.map_or(watermark, |low| low.min(watermark)));
        }
        match lowest {
            None => SourceWatermarkState::Idle,
            Some(watermark) => {
                let watermark = self.current.map_or(watermark, |current| current.max(watermark));
                self.current = Some(watermark);
                SourceWatermarkState::At(watermark)
            }
        }
    }
}

/// Merges the marks arriving on an operator's inputs into one watermark: the minimum over
/// inputs of the minimum over each input's senders. A sender not heard from yet holds the
/// watermark back; an idle sender (or input) does not, except from [`END_OF_TIME`]: the end of
/// the input needs every sender's end, since an idle sender may still send records.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    inputs: Vec<InputMarks>,
    current: Option<EventTime>,
    last_announced: Option<Option<EventTime>>,
}

#[derive(Debug, Clone)]
struct InputMarks {
    expected: usize,
    senders: HashMap<u32, Option<EventTime>>,
}

/// The merged state of an operator's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Some sender has not announced a watermark yet.
    Pending,
    /// Every input is idle.
    Idle,
    /// The merged watermark.
    At(EventTime),
}

impl WatermarkTracker {
    /// A tracker for inputs with `expected_senders[i]` senders each, starting at `initial`
    /// (a restored watermark) if given.
    pub fn new(expected_senders: Vec<usize>, initial: Option<EventTime>) -> Self {
        let inputs = expected_senders
            .into_iter()
            .map(|expected| InputMarks { expected, senders: HashMap::new() })
            .collect();
        Self { inputs, current: initial, last_announced: None }
    }

    /// The merged watermark so far (monotonic), if any.
    pub fn current(&self) -> Option<EventTime> {
        self.current
    }

    /// Applies `mark` from input `input`; returns the merged watermark if it advanced.
    pub fn observe(&mut self, input: usize, mark: Mark) -> Option<EventTime> {
        let state = self.inputs.get_mut(input)?;
        state.senders.insert(mark.sender, mark.watermark);
        match self.merged() {
            Merged::At(watermark) if self.current.is_none_or(|current| watermark > current) => {
                self.current = Some(watermark);
                Some(watermark)
            }
            _ => None,
        }
    }

    /// The merged state of all inputs now.
    pub fn merged(&self) -> Merged {
        let mut lowest: Option<EventTime> = None;
        let (mut any_active, mut any_idle) = (false, false);
        for input in &self.inputs {
            if input.senders.len() < input.expected {
                return Merged::Pending;
            }
            for watermark in input.senders.values() {
                match watermark {
                    Some(watermark) => {
                        any_active = true;
                        lowest = Some(lowest.map_or(*watermark, |low| low.min(*watermark)));
                    }
                    None => any_idle = true,
                }
            }
        }
        match (any_active, lowest) {
            (true, Some(END_OF_TIME)) if any_idle => Merged::Idle,
            (true, Some(watermark)) => Merged::At(watermark),
            _ => Merged::Idle,
        }
    }

    /// The mark this operator should send downstream as `sender`, if it differs from the
    /// last one sent: its watermark, or idle when all inputs are idle.
    pub fn announcement(&mut self, sender: u32) -> Option<Mark> {
        let now = match self.merged() {
            Merged::Pending => return None,
            Merged::Idle => None,
            Merged::At(_) => self.current,
        };
        if self.last_announced == Some(now) {
            return None;
        }
        self.last_announced = Some(now);
        Some(Mark { sender, watermark: now })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};

    use super::*;

    fn mark(sender: u32, watermark: Option<i64>) -> Mark {
        Mark { sender, watermark }
    }

    #[test]
    fn tracker_waits_for_every_sender_then_takes_the_minimum() {
        let mut tracker = WatermarkTracker::new(vec![2, 1], None);
        assert_eq!(tracker.observe(0, mark(0, Some(100))), None);
        assert_eq!(tracker.observe(1, mark(0, Some(50))), None, "sender 1 of input 0 not heard yet");
        assert_eq!(tracker.observe(0, mark(1, Some(70))), Some(50));
        assert_eq!(tracker.observe(1, mark(0, Some(200))), Some(70));
        assert_eq!(tracker.observe(0, mark(1, Some(60))), None, "never moves backwards");
        assert_eq!(tracker.current(), Some(70));
    }

    #[test]
    fn idle_senders_do_not_hold_back_and_all_idle_is_announced() {
        let mut tracker = WatermarkTracker::new(vec![2], None);
        tracker.observe(0, mark(0, Some(10)));
        assert_eq!(tracker.observe(0, mark(1, None)), Some(10));
        assert_eq!(tracker.announcement(3), Some(mark(3, Some(10))));
        assert_eq!(tracker.announcement(3), None, "unchanged");
        tracker.observe(0, mark(0, None));
        assert_eq!(tracker.merged(), Merged::Idle);
        assert_eq!(tracker.announcement(3), Some(mark(3, None)));
        assert_eq!(tracker.observe(0, mark(1, Some(5))), None, "behind the current watermark");
        assert_eq!(tracker.observe(0, mark(1, Some(15))), Some(15));
    }

    #[test]
    fn the_end_needs_every_sender_even_idle_ones() {
        // A source without event time sends idle marks; one of its senders ends while the
        // others still send records: that is not the end of the input.
        let mut tracker = WatermarkTracker::new(vec![2, 1], None);
        tracker.observe(0, mark(0, None));
        tracker.observe(0, mark(1, None));
        tracker.observe(1, mark(0, None));
        assert_eq!(tracker.observe(0, mark(0, Some(END_OF_TIME))), None);
        assert_eq!(tracker.merged(), Merged::Idle);
        assert_eq!(tracker.observe(1, mark(0, Some(END_OF_TIME))), None, "input 0 sender 1 is still idle");
        assert_eq!(tracker.observe(0, mark(1, Some(END_OF_TIME))), Some(END_OF_TIME));
        // Finite watermarks still pass idle senders by.
        let mut tracker = WatermarkTracker::new(vec![2], None);
        tracker.observe(0, mark(0, None));
        assert_eq!(tracker.observe(0, mark(1, Some(42))), Some(42));
    }

    #[test]
    fn source_watermark_is_min_over_active_splits() {
        let start = Instant::now();
        let mut source = SourceWatermark::new(Duration::from_millis(10), Some(Duration::from_secs(5)));
        let none = |_| false;
        assert_eq!(source.state(0, start, none), SourceWatermarkState::Idle, "no split: idle");
        source.observe(0, 2, Some(1_000), start);
        assert_eq!(source.state(2, start, none), SourceWatermarkState::Pending, "split 1 has no data yet");
        source.observe(1, 2, Some(500), start);
        assert_eq!(source.state(2, start, none), SourceWatermarkState::At(490));
        let later = start + Duration::from_secs(6);
        source.observe(0, 2, Some(2_000), later);
        assert_eq!(source.state(2, later, none), SourceWatermarkState::At(1_990), "split 1 went idle");
        source.observe(1, 2, Some(600), later);
        assert_eq!(source.state(2, later, none), SourceWatermarkState::At(1_990), "never moves backwards");
    }

    #[test]
    fn a_silent_split_with_records_still_to_read_is_not_idle() {
        let start = Instant::now();
        let mut source = SourceWatermark::new(Duration::from_millis(10), Some(Duration::from_secs(5)));
        source.observe(0, 2, Some(1_000), start);
        source.observe(1, 2, Some(500), start);
        let later = start + Duration::from_secs(6);
        source.observe(0, 2, Some(2_000), later);
        // Split 1 was silent past the timeout, but its reader is behind: it holds event time.
        assert_eq!(source.state(2, later, |split| split == 1), SourceWatermarkState::At(490));
        // Once it has caught up (nothing left to read), silence makes it idle again.
        assert_eq!(source.state(2, later, |_| false), SourceWatermarkState::At(1_990));
    }

    #[test]
    fn event_times_convert_units_and_keep_nulls() {
        let micros: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1_500_999), None, Some(-1)]));
        assert_eq!(event_times(&micros).unwrap(), vec![Some(1_500), None, Some(-1)]);
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![Some(3), Some(9), None]));
        assert_eq!(max_event_time(&millis).unwrap(), Some(9));
        let text: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["x"]));
        assert!(event_times(&text).unwrap_err().to_string().contains("timestamp"));
    }
}
