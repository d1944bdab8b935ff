//! [`Aggregation`]: the stateful processor of a GROUP BY aggregation.
//!
//! Every input batch first runs through the stateless query before the aggregation (views,
//! WHERE, the key and argument expressions); every emitted batch runs through the stateless
//! query after it (HAVING, the SELECT list). In between:
//!
//! **Windowed** (`TUMBLE`, `HOP`, `SESSION`): rows are added to the windows of their event
//! time. A window's rows are emitted, one per key, when the watermark reaches its end
//! (`window_end <= watermark`; `window_end` is exclusive); at [`END_OF_TIME`] every window is
//! emitted. A record is *late* when a window it belongs to has already been emitted and
//! `window_end + allowed_lateness <= watermark`: it is reported to the dead-letter
//! destination with its event time, the watermark, the window and the allowed lateness, and
//! left out of that window (a HOP record still counts in its other, open windows). A record
//! for an emitted window that is still within the allowed lateness updates the window, and
//! the window's updated row for that key is emitted again at the next watermark or end of
//! epoch (downstream sees both rows; the later one is current). A record whose event time is
//! NULL is dead-lettered too. Sessions are tracked per GROUP BY key (the session's
//! `PARTITION BY` columns); two rows are in one session when their event times are at most the
//! gap apart, and a session is `[first event, last event + gap)`.
//!
//! **Updating** (no window): an upsert stream keyed by the GROUP BY columns. At the end of
//! each epoch, one row per key updated in that epoch is emitted with the key's current values;
//! a later row for a key replaces the earlier one. With a state TTL, a key not updated for
//! that long is forgotten (no row is emitted for it; a later record starts it afresh). The
//! clock is the watermark once one has arrived, otherwise the wall clock.
//!
//! With `state.backend: rocksdb`, an updating aggregation keeps its state in RocksDB (see
//! [`super::stored`]); windows and sessions stay in memory, since the watermark bounds them.
//!
//! **Keys and state.** The runtime exchanges the input by the GROUP BY keys (see
//! [`Processor::key_by`]); the state of a key lives in the key group of the key's hash, and a
//! snapshot holds, per key group, one Arrow IPC stream of rows `(hash, key, window start,
//! window end, emitted, last update, accumulator state...)`, where `key` is the key in Arrow's
//! row format and the accumulator state is DataFusion's (`GroupsAccumulator::state`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, NullArray, RecordBatch, UInt32Array,
    UInt64Array,
};
use arrow::compute::{cast, concat_batches, take, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result as DfResult};
use sluice_runtime::dead_letter::DeadLetter;
use sluice_runtime::exchange::{MAX_KEY_GROUPS, key_group};
use sluice_runtime::processor::{
    END_OF_TIME, EventTime, KeyGroupState, KeyHasher, Processor, ProcessorContext, SnapshotWriter,
    StateBackend,
};
use sluice_runtime::{Error, Result};

use super::groups::{AccumulatorSet, Aggregates, KeyIndex, NONE};
use super::stored::StoredUpdating;
use super::tvf::{TimeColumn, WindowKind, event_times};
use crate::diagnose::clean;
use crate::key::{NO_KEY_HASH, hash_columns};
use crate::processor::StatelessQuery;

/// What one column of the aggregation's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputColumn {
    /// The window's start.
    WindowStart,
    /// The window's (exclusive) end.
    WindowEnd,
    /// GROUP BY key `n` (not counting window columns).
    Key(usize),
    /// Aggregate `n`.
    Aggregate(usize),
}

/// Whether and how rows are windowed.
#[derive(Debug, Clone)]
pub(crate) enum Windowing {
    /// Windows of event time.
    Window {
        /// Which windows.
        kind: WindowKind,
        /// How the time column stores time (the window columns' type follows it).
        time: TimeColumn,
    },
    /// No window: an updating result per key.
    Updating,
}

/// Everything an [`Aggregation`] needs, shared by the instances of all workers.
pub(crate) struct AggregationPlan {
    /// Input batches → pre-aggregation batches (time, keys, arguments).
    pub(crate) pre: StatelessQuery,
    /// Column of the event time in the pre-aggregation batch (windowed only).
    pub(crate) time: Option<usize>,
    /// Columns of the GROUP BY keys (not window columns) in the pre-aggregation batch.
    pub(crate) keys: Vec<usize>,
    /// Their types.
    pub(crate) key_types: Vec<DataType>,
    /// The aggregate functions.
    pub(crate) aggregates: Arc<Aggregates>,
    /// Windows, or none.
    pub(crate) windowing: Windowing,
    /// What each column of an emitted batch holds.
    pub(crate) columns: Vec<OutputColumn>,
    /// Schema of emitted batches, as the query after the aggregation reads them.
    pub(crate) emitted: SchemaRef,
    /// Emitted batches → output batches (HAVING, SELECT list).
    pub(crate) post: StatelessQuery,
    /// One per input.
    pub(crate) key_hashers: Vec<Arc<dyn KeyHasher>>,
    /// In milliseconds.
    pub(crate) allowed_lateness: i64,
    /// In milliseconds.
    pub(crate) state_ttl: Option<i64>,
    /// Per pre-aggregation column, its readable field for dead letters (`None`: left out).
    pub(crate) display: Vec<Option<Field>>,
}

/// A GROUP BY aggregation over a stream; see the module documentation for what it emits.
pub(crate) struct Aggregation {
    plan: Arc<AggregationPlan>,
    converter: RowConverter,
    state: State,
    watermark: EventTime,
    context: Option<ProcessorContext>,
    hashes: Vec<u64>,
    groups: Vec<usize>,
}

enum State {
    /// TUMBLE and HOP: open windows by start.
    Fixed(BTreeMap<i64, Window>),
    Sessions(Sessions),
    Updating(Updating),
    /// Updating, with the state in RocksDB.
    Stored(StoredUpdating),
}

struct Window {
    keys: KeyIndex,
    accumulators: AccumulatorSet,
    /// Emitted already (kept for allowed lateness).
    fired: bool,
    /// Keys updated since the window was emitted.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
}

struct Sessions {
    keys: KeyIndex,
    /// Per key id, its sessions sorted by start.
    sessions: Vec<Vec<Session>>,
    /// One group per session.
    accumulators: AccumulatorSet,
    groups: usize,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    start: i64,
    end: i64,
    group: u32,
    fired: bool,
    dirty: bool,
}

struct Updating {
    keys: KeyIndex,
    accumulators: AccumulatorSet,
    last_update: Vec<i64>,
    changed: Vec<u32>,
    is_changed: Vec<bool>,
}

/// Column names of a snapshot row, before the accumulator state.
pub(crate) const STATE_COLUMNS: [&str; 6] = ["hash", "key", "start", "end", "emitted", "last_update"];

impl Aggregation {
    /// A fresh instance with no state.
    pub(crate) fn new(plan: Arc<AggregationPlan>) -> DfResult<Self> {
        let converter = converter(&plan.key_types)?;
        let state = match &plan.windowing {
            Windowing::Window { kind: WindowKind::Session { .. }, .. } => State::Sessions(Sessions {
                keys: KeyIndex::new(&converter),
                sessions: Vec::new(),
                accumulators: plan.aggregates.create()?,
                groups: 0,
            }),
            Windowing::Window { .. } => State::Fixed(BTreeMap::new()),
            Windowing::Updating => State::Updating(Updating {
                keys: KeyIndex::new(&converter),
                accumulators: plan.aggregates.create()?,
                last_update: Vec::new(),
                changed: Vec::new(),
                is_changed: Vec::new(),
            }),
        };
        Ok(Self {
            plan,
            converter,
            state,
            watermark: EventTime::MIN,
            context: None,
            hashes: Vec::new(),
            groups: Vec::new(),
        })
    }

    fn kind(&self) -> Option<&WindowKind> {
        match &self.plan.windowing {
            Windowing::Window { kind, .. } => Some(kind),
            Windowing::Updating => None,
        }
    }

    /// The clock of state TTL: the watermark, or the wall clock before the first one.
    fn now(&self) -> i64 {
        if self.watermark > EventTime::MIN {
            return self.watermark;
        }
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    /// Adds one pre-aggregation batch.
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = if self.plan.keys.is_empty() {
            vec![Arc::new(NullArray::new(rows))]
        } else {
            self.plan.keys.iter().map(|c| Arc::clone(batch.column(*c))).collect()
        };
        let keys = self.converter.convert_columns(&key_columns).map_err(|e| failed(&e.into()))?;
        if self.plan.keys.is_empty() {
            self.hashes.clear();
            self.hashes.resize(rows, NO_KEY_HASH);
        } else {
            hash_columns(&key_columns, &mut self.hashes).map_err(|e| failed(&e))?;
        }
        self.groups.clear();
        self.groups.resize(rows, 0);
        match self.plan.windowing.clone() {
            Windowing::Updating => self.add_updating(batch, &keys),
            Windowing::Window { kind: WindowKind::Session { gap, .. }, .. } => {
                self.add_sessions(batch, &keys, gap)
            }
            Windowing::Window { kind, .. } => self.add_fixed(batch, &keys, &kind),
        }
    }

    fn add_updating(&mut self, batch: &RecordBatch, keys: &Rows) -> Result<()> {
        let now = self.now();
        if let State::Stored(stored) = &mut self.state {
            let (hashes, groups) = (&self.hashes, &mut self.groups);
            return stored
                .add(batch.columns(), keys, hashes, groups, now, self.plan.state_ttl, &self.converter)
                .map_err(|e| failed(&e));
        }
        let State::Updating(state) = &mut self.state else { return Err(wrong_state()) };
        for (row, group) in self.groups.iter_mut().enumerate() {
            let id = state.keys.intern(self.hashes[row], keys.row(row));
            if id as usize == state.last_update.len() {
                state.last_update.push(now);
                state.is_changed.push(false);
            }
            state.last_update[id as usize] = now;
            if !state.is_changed[id as usize] {
                state.is_changed[id as usize] = true;
                state.changed.push(id);
            }
            *group = id as usize;
        }
        state
            .accumulators
            .update(batch.columns(), &self.groups, None, state.keys.len())
            .map_err(|e| failed(&e))
    }

    fn add_fixed(&mut self, batch: &RecordBatch, keys: &Rows, kind: &WindowKind) -> Result<()> {
        let rows = batch.num_rows();
        let times = self.times(batch)?;
        let (lateness, watermark, size, step) =
            (self.plan.allowed_lateness, self.watermark, kind.size(), kind.step());
        let closed = |start: i64| start.saturating_add(size).saturating_add(lateness) <= watermark;
        let mut accepted = vec![true; rows];
        let mut late = Vec::new();
        let (mut lowest, mut highest) = (i64::MAX, i64::MIN);
        for row in 0..rows {
            let Some(time) = times[row] else {
                accepted[row] = false;
                late.push((row, "its event time is NULL".to_owned()));
                continue;
            };
            let last = kind.last_start(time);
            lowest = lowest.min(last);
            highest = highest.max(last);
            let dropped: Vec<(i64, i64)> =
                kind.windows_of(time).filter(|(start, _)| closed(*start)).collect();
            if !dropped.is_empty() {
                let all = dropped.len() as i64 == kind.windows_of(time).count() as i64;
                accepted[row] &= !all;
                late.push((row, self.late_reason(time, &dropped, all)));
            }
        }
        let mut starts: Vec<i64> = if lowest == highest {
            vec![lowest]
        } else {
            let mut starts: Vec<i64> = times.iter().flatten().map(|t| kind.last_start(*t)).collect();
            starts.sort_unstable();
            starts.dedup();
            starts
        };
        if lowest > highest {
            starts.clear();
        }
        let mut windows: Vec<i64> = starts
            .iter()
            .flat_map(|last| (0..kind.windows_per_row()).map(move |k| last - k * step))
            .filter(|start| !closed(*start))
            .collect();
        windows.sort_unstable();
        windows.dedup();
        let State::Fixed(open) = &mut self.state else { return Err(wrong_state()) };
        let mut mask = vec![false; rows];
        for start in windows {
            let mut count = 0;
            for row in 0..rows {
                let inside = accepted[row] && times[row].is_some_and(|t| start <= t && t < start + size);
                mask[row] = inside;
                count += usize::from(inside);
            }
            if count == 0 {
                continue;
            }
            let window = match open.entry(start) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Window {
                    keys: KeyIndex::new(&self.converter),
                    accumulators: self.plan.aggregates.create().map_err(|e| failed(&e))?,
                    fired: false,
                    dirty: Vec::new(),
                    is_dirty: Vec::new(),
                }),
            };
            for (row, inside) in mask.iter().enumerate() {
                if *inside {
                    let id = window.keys.intern(self.hashes[row], keys.row(row));
                    self.groups[row] = id as usize;
                    if window.fired {
                        window.is_dirty.resize(window.keys.len(), false);
                        if !window.is_dirty[id as usize] {
                            window.is_dirty[id as usize] = true;
                            window.dirty.push(id);
                        }
                    }
                } else {
                    self.groups[row] = 0;
                }
            }
            let filter = (count < rows).then(|| BooleanArray::from(mask.clone()));
            window
                .accumulators
                .update(batch.columns(), &self.groups, filter.as_ref(), window.keys.len())
                .map_err(|e| failed(&e))?;
        }
        self.report_late(batch, late)
    }

    fn add_sessions(&mut self, batch: &RecordBatch, keys: &Rows, gap: i64) -> Result<()> {
        let rows = batch.num_rows();
        let times = self.times(batch)?;
        let (lateness, watermark) = (self.plan.allowed_lateness, self.watermark);
        let State::Sessions(state) = &mut self.state else { return Err(wrong_state()) };
        let mut accepted = vec![true; rows];
        let mut late = Vec::new();
        // Groups merged into others in this batch: (from, into).
        let mut merges: Vec<(u32, u32)> = Vec::new();
        for row in 0..rows {
            let Some(time) = times[row] else {
                accepted[row] = false;
                late.push((row, "its event time is NULL".to_owned()));
                continue;
            };
            let id = state.keys.intern(self.hashes[row], keys.row(row)) as usize;
            if id == state.sessions.len() {
                state.sessions.push(Vec::new());
            }
            let sessions = &mut state.sessions[id];
            let (low, high) = (time, time.saturating_add(gap));
            // Sessions within the gap of this event (Flink's inclusive intersection).
            let first = sessions.partition_point(|s| s.end < low);
            let last = sessions.partition_point(|s| s.start <= high);
            let (start, end) = sessions[first..last.max(first)]
                .iter()
                .fold((low, high), |(a, b), s| (a.min(s.start), b.max(s.end)));
            if end.saturating_add(lateness) <= watermark {
                accepted[row] = false;
                late.push((row, late_session_reason(time, watermark, (start, end), lateness)));
                continue;
            }
            let group = if first >= last {
                let group = state.groups as u32;
                state.groups += 1;
                sessions.insert(first, Session { start, end, group, fired: false, dirty: false });
                group
            } else {
                let fired = sessions[first..last].iter().any(|s| s.fired);
                let target = sessions[first].group;
                for merged in &sessions[first + 1..last] {
                    merges.push((merged.group, target));
                }
                sessions.drain(first + 1..last);
                sessions[first] = Session { start, end, group: target, fired, dirty: fired };
                target
            };
            self.groups[row] = group as usize;
        }
        if accepted.iter().any(|a| *a) {
            let filter = accepted.iter().any(|a| !a).then(|| BooleanArray::from(accepted.clone()));
            state
                .accumulators
                .update(batch.columns(), &self.groups, filter.as_ref(), state.groups)
                .map_err(|e| failed(&e))?;
        }
        if !merges.is_empty() {
            let mut target: Vec<u32> = (0..state.groups as u32).collect();
            for (from, into) in merges {
                target[from as usize] = into;
            }
            let resolve = |mut g: u32| {
                while target[g as usize] != g {
                    g = target[g as usize];
                }
                g
            };
            let resolved: Vec<u32> = (0..state.groups as u32).map(resolve).collect();
            state.compact(&resolved).map_err(|e| failed(&e))?;
        }
        self.report_late(batch, late)
    }

    fn times(&self, batch: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let column =
            self.plan.time.ok_or_else(|| Error::internal("windowed aggregation without a time column"))?;
        event_times(batch.column(column)).map_err(|e| failed(&e))
    }

    fn late_reason(&self, time: i64, dropped: &[(i64, i64)], all: bool) -> String {
        let windows: Vec<String> =
            dropped.iter().rev().map(|(s, e)| format!("[{}, {})", timestamp(*s), timestamp(*e))).collect();
        let rest = if all { String::new() } else { "; it still counts in its later windows".to_owned() };
        format!(
            "late record: event time {} is in window {} which closed: the watermark {} has passed the \
             window end plus the allowed lateness ({} ms){rest}",
            timestamp(time),
            windows.join(", "),
            timestamp(self.watermark),
            self.plan.allowed_lateness
        )
    }

    /// Reports rows of `batch` to the dead-letter destination.
    fn report_late(&mut self, batch: &RecordBatch, late: Vec<(usize, String)>) -> Result<()> {
        if late.is_empty() {
            return Ok(());
        }
        let context =
            self.context.as_mut().ok_or_else(|| Error::internal("the SQL processor was not opened"))?;
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = self
            .plan
            .display
            .iter()
            .zip(batch.columns())
            .filter_map(|(field, column)| Some((field.clone()?, Arc::clone(column))))
            .unzip();
        let display =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| failed(&e.into()))?;
        for (row, reason) in late {
            let raw = row_json(&display.slice(row, 1));
            let position = format!("SQL aggregation on worker {}", context.worker.index);
            context.dead_letters.report(DeadLetter { position, raw, reason })?;
        }
        Ok(())
    }

    /// Builds the emitted batch for keys `ids` of `keys`, with their windows, and runs the query
    /// after the aggregation on it.
    fn emit(
        &self,
        windows: Option<(&[i64], &[i64])>,
        keys: &KeyIndex,
        ids: &[u32],
        values: Vec<ArrayRef>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let plan = &*self.plan;
        let key_columns = if plan.keys.is_empty() {
            Vec::new()
        } else {
            self.converter.convert_rows(ids.iter().map(|id| keys.row(*id))).map_err(|e| failed(&e.into()))?
        };
        let window_column = |values: &[i64]| -> Result<ArrayRef> {
            let Windowing::Window { time, .. } = &plan.windowing else {
                return Err(Error::internal("window column in an updating aggregation"));
            };
            let native: Int64Array = values.iter().map(|v| Some(time.to_native(*v))).collect();
            cast(&native, &time.window_type()).map_err(|e| failed(&e.into()))
        };
        let mut columns = Vec::with_capacity(plan.columns.len());
        for (column, field) in plan.columns.iter().zip(plan.emitted.fields()) {
            let array = match (column, windows) {
                (OutputColumn::WindowStart, Some((starts, _))) => window_column(starts)?,
                (OutputColumn::WindowEnd, Some((_, ends))) => window_column(ends)?,
                (OutputColumn::Key(k), _) => Arc::clone(&key_columns[*k]),
                (OutputColumn::Aggregate(a), _) => Arc::clone(&values[*a]),
                _ => return Err(Error::internal("window column without a window")),
            };
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type()).map_err(|e| failed(&e.into()))?
            };
            columns.push(array);
        }
        let batch =
            RecordBatch::try_new(Arc::clone(&plan.emitted), columns).map_err(|e| failed(&e.into()))?;
        out.extend(plan.post.run(0, &batch).map_err(|e| failed(&e))?);
        Ok(())
    }

    /// Emits the updated rows of windows or sessions that were emitted before.
    fn emit_updates(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let size = self.kind().map_or(0, WindowKind::size);
        match &mut self.state {
            State::Fixed(open) => {
                let mut emitted = Vec::new();
                for (start, window) in open.iter_mut().filter(|(_, w)| !w.dirty.is_empty()) {
                    let mut ids = std::mem::take(&mut window.dirty);
                    ids.sort_unstable();
                    window.is_dirty.iter_mut().for_each(|d| *d = false);
                    let values = window.accumulators.values_of(&ids).map_err(|e| failed(&e))?;
                    emitted.push((*start, ids, values));
                }
                for (start, ids, values) in emitted {
                    let Some(window) = self.fixed_window(start) else { continue };
                    let (starts, ends) = (vec![start; ids.len()], vec![start + size; ids.len()]);
                    self.emit(Some((&starts, &ends)), &window.keys, &ids, values, out)?;
                }
                Ok(())
            }
            State::Sessions(_) => self.fire_sessions(out, false),
            State::Stored(stored) => match stored.take_changed(&self.converter).map_err(|e| failed(&e))? {
                Some((keys, ids, values)) => self.emit(None, &keys, &ids, values, out),
                None => Ok(()),
            },
            State::Updating(state) => {
                if state.changed.is_empty() {
                    return Ok(());
                }
                let mut ids = std::mem::take(&mut state.changed);
                ids.sort_unstable();
                state.is_changed.iter_mut().for_each(|c| *c = false);
                let values = state.accumulators.values_of(&ids).map_err(|e| failed(&e))?;
                let State::Updating(state) = &self.state else { return Err(wrong_state()) };
                self.emit(None, &state.keys, &ids, values, out)
            }
        }
    }

    fn fixed_window(&self, start: i64) -> Option<&Window> {
        match &self.state {
            State::Fixed(open) => open.get(&start),
            _ => None,
        }
    }

    /// Emits every window the watermark has passed and drops those past allowed lateness.
    fn fire_fixed(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let (size, lateness, watermark) =
            (self.kind().map_or(0, WindowKind::size), self.plan.allowed_lateness, self.watermark);
        let State::Fixed(open) = &mut self.state else { return Err(wrong_state()) };
        let due: Vec<i64> = open
            .iter()
            .take_while(|(start, _)| start.saturating_add(size) <= watermark)
            .filter(|(_, w)| !w.fired)
            .map(|(start, _)| *start)
            .collect();
        for start in due {
            let State::Fixed(open) = &mut self.state else { return Err(wrong_state()) };
            let keep = start.saturating_add(size).saturating_add(lateness) > watermark;
            let (window, values) = if keep {
                let Some(window) = open.get_mut(&start) else { continue };
                let ids: Vec<u32> = (0..window.keys.len() as u32).collect();
                window.fired = true;
                let values = window.accumulators.values_of(&ids).map_err(|e| failed(&e))?;
                (None, values)
            } else {
                let Some(mut window) = open.remove(&start) else { continue };
                let values = window.accumulators.evaluate_all().map_err(|e| failed(&e))?;
                (Some(window), values)
            };
            let window = match &window {
                Some(window) => window,
                None => self.fixed_window(start).ok_or_else(wrong_state)?,
            };
            let ids: Vec<u32> = (0..window.keys.len() as u32).collect();
            let (starts, ends) = (vec![start; ids.len()], vec![start + size; ids.len()]);
            self.emit(Some((&starts, &ends)), &window.keys, &ids, values, out)?;
        }
        let State::Fixed(open) = &mut self.state else { return Err(wrong_state()) };
        open.retain(|start, _| start.saturating_add(size).saturating_add(lateness) > watermark);
        Ok(())
    }

    /// Emits sessions the watermark has passed (or, with `only_updates`... all due ones) and
    /// drops those past allowed lateness.
    fn fire_sessions(&mut self, out: &mut Vec<RecordBatch>, drop_closed: bool) -> Result<()> {
        let (lateness, watermark) = (self.plan.allowed_lateness, self.watermark);
        let State::Sessions(state) = &mut self.state else { return Err(wrong_state()) };
        let (mut ids, mut groups, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, sessions) in state.sessions.iter_mut().enumerate() {
            for session in sessions.iter_mut().filter(|s| s.end <= watermark && (!s.fired || s.dirty)) {
                session.fired = true;
                session.dirty = false;
                ids.push(key as u32);
                groups.push(session.group);
                starts.push(session.start);
                ends.push(session.end);
            }
        }
        if !ids.is_empty() {
            let values = state.accumulators.values_of(&groups).map_err(|e| failed(&e))?;
            let State::Sessions(state) = &self.state else { return Err(wrong_state()) };
            self.emit(Some((&starts, &ends)), &state.keys, &ids, values, out)?;
        }
        if drop_closed {
            let State::Sessions(state) = &mut self.state else { return Err(wrong_state()) };
            let closed = |s: &Session| s.end.saturating_add(lateness) <= watermark;
            if state.sessions.iter().flatten().any(closed) {
                let mut mapping: Vec<u32> = (0..state.groups as u32).collect();
                for session in state.sessions.iter().flatten().filter(|s| closed(s)) {
                    mapping[session.group as usize] = NONE;
                }
                for sessions in &mut state.sessions {
                    sessions.retain(|s| !closed(s));
                }
                state.compact(&mapping).map_err(|e| failed(&e))?;
            }
        }
        Ok(())
    }

    /// Forgets keys of an updating aggregation not updated for the state TTL.
    fn expire(&mut self, now: i64) -> Result<()> {
        let Some(ttl) = self.plan.state_ttl else { return Ok(()) };
        if let State::Stored(stored) = &mut self.state {
            return stored.expire(now, ttl, &self.converter).map_err(|e| failed(&e));
        }
        let State::Updating(state) = &mut self.state else { return Ok(()) };
        let keep: Vec<bool> = state.last_update.iter().map(|t| t.saturating_add(ttl) > now).collect();
        if keep.iter().all(|k| *k) {
            return Ok(());
        }
        let mut mapping = Vec::with_capacity(keep.len());
        let mut next = 0;
        for kept in &keep {
            mapping.push(if *kept { next } else { NONE });
            next += u32::from(*kept);
        }
        state.accumulators.remap(&mapping, next as usize).map_err(|e| failed(&e))?;
        state.keys.retain(&self.converter, &keep);
        let mut index = 0;
        state.last_update.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        state.changed = state
            .changed
            .iter()
            .filter_map(|id| Some(mapping[*id as usize]).filter(|m| *m != NONE))
            .collect();
        state.is_changed = vec![false; next as usize];
        for id in &state.changed {
            state.is_changed[*id as usize] = true;
        }
        Ok(())
    }

    /// The in-memory state as rows, all key groups together (stored state is snapshotted by
    /// [`StoredUpdating::snapshot`]).
    fn state_rows(&mut self) -> DfResult<Option<RecordBatch>> {
        let schema = self.state_schema()?;
        let mut parts = Vec::new();
        let part = |keys: &KeyIndex,
                    ids: &[u32],
                    starts: Vec<i64>,
                    ends: Vec<i64>,
                    fired: Vec<bool>,
                    last: Vec<i64>,
                    state: Vec<ArrayRef>|
         -> DfResult<RecordBatch> {
            let hashes: UInt64Array = ids.iter().map(|id| Some(keys.hash(*id))).collect();
            let key_bytes: BinaryArray = ids.iter().map(|id| Some(keys.row(*id).data())).collect();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(hashes),
                Arc::new(key_bytes),
                Arc::new(Int64Array::from(starts)),
                Arc::new(Int64Array::from(ends)),
                Arc::new(BooleanArray::from(fired)),
                Arc::new(Int64Array::from(last)),
            ];
            columns.extend(state);
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        };
        let size = self.kind().map_or(0, WindowKind::size);
        match &mut self.state {
            State::Fixed(open) => {
                for (start, window) in open.iter_mut() {
                    let n = window.keys.len();
                    let ids: Vec<u32> = (0..n as u32).collect();
                    let state = window.accumulators.state()?;
                    let fired = vec![window.fired; n];
                    parts.push(part(
                        &window.keys,
                        &ids,
                        vec![*start; n],
                        vec![start + size; n],
                        fired,
                        vec![0; n],
                        state,
                    )?);
                }
            }
            State::Sessions(sessions) => {
                let state = sessions.accumulators.state()?;
                let listed: Vec<(u32, Session)> = sessions
                    .sessions
                    .iter()
                    .enumerate()
                    .flat_map(|(key, list)| list.iter().map(move |s| (key as u32, *s)))
                    .collect();
                let ids: Vec<u32> = listed.iter().map(|(k, _)| *k).collect();
                let picks = UInt32Array::from(listed.iter().map(|(_, s)| s.group).collect::<Vec<_>>());
                let state = state.iter().map(|c| take(c, &picks, None)).collect::<Result<Vec<_>, _>>()?;
                let starts = listed.iter().map(|(_, s)| s.start).collect();
                let ends = listed.iter().map(|(_, s)| s.end).collect();
                let fired = listed.iter().map(|(_, s)| s.fired).collect();
                parts.push(part(&sessions.keys, &ids, starts, ends, fired, vec![0; ids.len()], state)?);
            }
            State::Updating(updating) => {
                let n = updating.keys.len();
                let ids: Vec<u32> = (0..n as u32).collect();
                let state = updating.accumulators.state()?;
                let last = updating.last_update.clone();
                parts.push(part(&updating.keys, &ids, vec![0; n], vec![0; n], vec![false; n], last, state)?);
            }
            State::Stored(_) => return Err(DataFusionError::Internal("stored state read as memory".into())),
        }
        let parts: Vec<RecordBatch> = parts.into_iter().filter(|p| p.num_rows() > 0).collect();
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&schema, &parts)?))
    }

    fn state_schema(&self) -> DfResult<SchemaRef> {
        let mut fields = vec![
            Field::new(STATE_COLUMNS[0], DataType::UInt64, false),
            Field::new(STATE_COLUMNS[1], DataType::Binary, false),
            Field::new(STATE_COLUMNS[2], DataType::Int64, false),
            Field::new(STATE_COLUMNS[3], DataType::Int64, false),
            Field::new(STATE_COLUMNS[4], DataType::Boolean, false),
            Field::new(STATE_COLUMNS[5], DataType::Int64, false),
        ];
        for (i, field) in self.plan.aggregates.state_fields()?.iter().enumerate() {
            fields.push(Field::new(format!("s{i}"), field.data_type().clone(), true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Adds state rows saved by [`Aggregation::state_rows`].
    fn restore_rows(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let width = self.plan.aggregates.state_width()?;
        if batch.num_columns() != STATE_COLUMNS.len() + width {
            return Err(DataFusionError::Execution(format!(
                "the saved state has {} columns, this query keeps {}; was the SQL changed?",
                batch.num_columns(),
                STATE_COLUMNS.len() + width
            )));
        }
        let hashes = batch.column(0).as_primitive::<UInt64Type>();
        let key_bytes = batch.column(1).as_binary::<i32>();
        let starts = batch.column(2).as_primitive::<Int64Type>();
        let ends = batch.column(3).as_primitive::<Int64Type>();
        let fired = batch.column(4).as_boolean();
        let last = batch.column(5).as_primitive::<Int64Type>();
        let state: Vec<ArrayRef> = batch.columns()[STATE_COLUMNS.len()..].to_vec();
        let parser = self.converter.parser();
        let aggregates = Arc::clone(&self.plan.aggregates);
        match &mut self.state {
            State::Fixed(open) => {
                let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
                for row in 0..batch.num_rows() {
                    by_window.entry(starts.value(row)).or_default().push(row as u32);
                }
                for (start, rows) in by_window {
                    let window = match open.entry(start) {
                        std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                        std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Window {
                            keys: KeyIndex::new(&self.converter),
                            accumulators: aggregates.create()?,
                            fired: false,
                            dirty: Vec::new(),
                            is_dirty: Vec::new(),
                        }),
                    };
                    let ids: Vec<usize> = rows
                        .iter()
                        .map(|r| {
                            let r = *r as usize;
                            window.fired |= fired.value(r);
                            window.keys.intern(hashes.value(r), parser.parse(key_bytes.value(r))) as usize
                        })
                        .collect();
                    let picks = UInt32Array::from(rows);
                    let picked =
                        state.iter().map(|c| take(c, &picks, None)).collect::<Result<Vec<_>, _>>()?;
                    window.accumulators.merge(&picked, &ids, window.keys.len())?;
                }
            }
            State::Sessions(sessions) => {
                let mut groups = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    let id =
                        sessions.keys.intern(hashes.value(row), parser.parse(key_bytes.value(row))) as usize;
                    if id == sessions.sessions.len() {
                        sessions.sessions.push(Vec::new());
                    }
                    let group = sessions.groups as u32;
                    sessions.groups += 1;
                    let session = Session {
                        start: starts.value(row),
                        end: ends.value(row),
                        group,
                        fired: fired.value(row),
                        dirty: false,
                    };
                    let list = &mut sessions.sessions[id];
                    let at = list.partition_point(|s| s.start < session.start);
                    list.insert(at, session);
                    groups.push(group as usize);
                }
                sessions.accumulators.merge(&state, &groups, sessions.groups)?;
            }
            State::Updating(updating) => {
                let mut ids = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    let id =
                        updating.keys.intern(hashes.value(row), parser.parse(key_bytes.value(row))) as usize;
                    if id == updating.last_update.len() {
                        updating.last_update.push(last.value(row));
                        updating.is_changed.push(false);
                    }
                    ids.push(id);
                }
                updating.accumulators.merge(&state, &ids, updating.keys.len())?;
            }
            State::Stored(stored) => stored.restore(batch)?,
        }
        Ok(())
    }
}

impl Sessions {
    /// Renumbers session groups: `mapping[g]` is the group `g` merges into, or [`NONE`] to drop
    /// it; group ids become dense again.
    fn compact(&mut self, mapping: &[u32]) -> DfResult<()> {
        let mut dense = vec![NONE; mapping.len()];
        let mut next = 0u32;
        for target in mapping.iter().filter(|t| **t != NONE) {
            if dense[*target as usize] == NONE {
                dense[*target as usize] = next;
                next += 1;
            }
        }
        let final_mapping: Vec<u32> =
            mapping.iter().map(|t| if *t == NONE { NONE } else { dense[*t as usize] }).collect();
        self.accumulators.remap(&final_mapping, next as usize)?;
        for session in self.sessions.iter_mut().flatten() {
            session.group = final_mapping[session.group as usize];
        }
        self.groups = next as usize;
        Ok(())
    }
}

impl Processor for Aggregation {
    fn output_schema(&self) -> SchemaRef {
        self.plan.post.output_schema()
    }

    fn process(&mut self, input: usize, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let prepared = self.plan.pre.run(input, &batch).map_err(|e| failed(&e))?;
        for batch in &prepared {
            self.add(batch)?;
        }
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn Processor> {
        let fresh = Aggregation::new(Arc::clone(&self.plan))
            .expect("invariant: the aggregation's key types and accumulators were created once at planning");
        Box::new(fresh)
    }

    fn is_stateful(&self) -> bool {
        true
    }

    fn key_by(&self) -> Vec<Arc<dyn KeyHasher>> {
        self.plan.key_hashers.clone()
    }

    fn open(&mut self, context: ProcessorContext) -> Result<()> {
        if let (State::Updating(_), StateBackend::RocksDb { dir }) = (&self.state, &context.state) {
            let stored = StoredUpdating::open(dir, Arc::clone(&self.plan.aggregates), &self.converter)
                .map_err(|e| Error::user(clean(&e.to_string())))?;
            self.state = State::Stored(stored);
        }
        self.context = Some(context);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        match self.state {
            State::Fixed(_) => {
                self.emit_updates(out)?;
                self.fire_fixed(out)
            }
            State::Sessions(_) => self.fire_sessions(out, true),
            State::Updating(_) | State::Stored(_) => {
                if watermark == END_OF_TIME {
                    return self.emit_updates(out);
                }
                self.expire(watermark)
            }
        }
    }

    fn end_of_epoch(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self.state {
            State::Fixed(_) => self.emit_updates(out),
            State::Sessions(_) => self.fire_sessions(out, false),
            State::Updating(_) | State::Stored(_) => {
                self.emit_updates(out)?;
                let now = self.now();
                self.expire(now)
            }
        }
    }

    fn snapshot(&mut self, out: &mut dyn SnapshotWriter) -> Result<()> {
        if let State::Stored(stored) = &self.state {
            let schema = self.state_schema().map_err(|e| failed(&e))?;
            let clock = (self.now(), self.plan.state_ttl);
            return stored
                .snapshot(&schema, clock, out.chunk_bytes(), |group, rows| write_chunk(out, group, &rows))
                .map_err(|e| failed(&e));
        }
        let Some(rows) = self.state_rows().map_err(|e| failed(&e))? else {
            return Ok(());
        };
        let hashes = rows.column(0).as_primitive::<UInt64Type>();
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); MAX_KEY_GROUPS as usize];
        for (row, hash) in hashes.values().iter().enumerate() {
            by_group[key_group(*hash) as usize].push(row as u32);
        }
        for (group, rows_of_group) in by_group.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            let part =
                take_record_batch(&rows, &UInt32Array::from(rows_of_group)).map_err(|e| failed(&e.into()))?;
            write_chunk(out, group as u32, &part).map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    fn restore(&mut self, states: Vec<KeyGroupState>) -> Result<()> {
        for state in states {
            let corrupt = |e: &dyn std::fmt::Display| {
                Error::user(format!("the saved state of key group {} cannot be read: {e}", state.key_group))
            };
            let reader = StreamReader::try_new(Cursor::new(&state.bytes), None).map_err(|e| corrupt(&e))?;
            for batch in reader {
                let batch = batch.map_err(|e| corrupt(&e))?;
                self.restore_rows(&batch).map_err(|e| corrupt(&clean(&e.message())))?;
            }
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        match &self.state {
            State::Fixed(open) => open.values().map(|w| w.keys.size() + w.accumulators.size()).sum(),
            State::Sessions(s) => {
                s.keys.size() + s.accumulators.size() + s.groups * std::mem::size_of::<Session>()
            }
            State::Updating(u) => u.keys.size() + u.accumulators.size() + u.last_update.len() * 8,
            State::Stored(stored) => stored.size(),
        }
    }
}

/// Writes snapshot rows of key group `group` to `out` as one Arrow IPC stream.
fn write_chunk(out: &mut dyn SnapshotWriter, group: u32, rows: &RecordBatch) -> DfResult<()> {
    let mut writer = StreamWriter::try_new(Vec::new(), &rows.schema())?;
    writer.write(rows)?;
    let bytes = writer.into_inner()?;
    out.write(group, &bytes).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn converter(key_types: &[DataType]) -> DfResult<RowConverter> {
    let fields = if key_types.is_empty() {
        vec![SortField::new(DataType::Null)]
    } else {
        key_types.iter().map(|t| SortField::new(t.clone())).collect()
    };
    Ok(RowConverter::new(fields)?)
}

fn failed(error: &DataFusionError) -> Error {
    Error::user(format!("SQL aggregation failed on a batch: {}", clean(&error.find_root().message())))
}

fn wrong_state() -> Error {
    Error::internal("aggregation state does not match its plan")
}

fn late_session_reason(time: i64, watermark: i64, (start, end): (i64, i64), lateness: i64) -> String {
    format!(
        "late record: event time {} falls in session [{}, {}) which closed: the watermark {} has \
         passed the session end plus the allowed lateness ({lateness} ms)",
        timestamp(time),
        timestamp(start),
        timestamp(end),
        timestamp(watermark)
    )
}

/// An event time for messages: ISO 8601 in UTC, or the raw milliseconds when out of range.
fn timestamp(millis: i64) -> String {
    match arrow::temporal_conversions::timestamp_ms_to_datetime(millis) {
        Some(time) => time.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
        None => format!("{millis} ms"),
    }
}

/// One row as a JSON object.
fn row_json(row: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    let written = writer.write(row).and_then(|()| writer.finish());
    let mut bytes = match written {
        Ok(()) => writer.into_inner(),
        Err(error) => format!("{{\"unprintable\": \"{error}\"}}").into_bytes(),
    };
    while bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    bytes
}
