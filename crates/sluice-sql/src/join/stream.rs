//! [`StreamJoin`]: joins two keyed streams. Each side's rows are kept per key in arrival
//! batches ("chunks"); a new batch is matched against the other side's rows of the same keys in
//! one pass, its pairs are gathered with `take`/`interleave` into one batch for the residual
//! condition and the steps above the join, and its rows are kept until [`Timing`] says no
//! partner can arrive any more (or, for a regular join, until the key has been quiet for the
//! state TTL). Watermarks drive eviction, and with it the NULL-padded rows of an outer join.
//!
//! State is snapshotted per key group, each group's rows of both sides as Arrow IPC, so it can
//! be restored at another parallelism.
//!
//! With `state.backend: rocksdb`, a regular join (always inner: the planner rejects outer
//! joins without a time bound) keeps its rows in RocksDB instead (see [`super::stored`]);
//! window and interval joins stay in memory, since the watermark bounds them. The stored join
//! gives the same results: a key whose rows the state TTL has expired matches nothing from the
//! moment the watermark passes its expiry, as in memory, while the rows themselves are deleted
//! by a sweep at most once per half TTL and before a new row of the same key is kept.
//! Snapshots have the same format with either backend.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions};
use arrow::compute::{cast, interleave_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result as DfResult};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::exchange::key_group;
use sluice_runtime::processor::{
    END_OF_TIME, EventTime, KeyGroupState, KeyHasher, Processor, ProcessorContext, SnapshotWriter,
    StateBackend,
};
use sluice_runtime::{Error, Result};

use super::output::{Output, take_rows};
use super::stored::{Change, KeptRow as StoredRow, StoredRows};
use super::timing::{Timing, times};
use super::{KeyExprs, Side, failed};
use crate::PlanOptions;

/// Version byte of the snapshot format.
const SNAPSHOT_VERSION: u8 = 1;

/// A planned stream join; shared by every worker's instance.
pub(crate) struct StreamJoinPlan {
    sides: [Side; 2],
    keys: KeyExprs,
    /// Key types (the left side's) in Arrow's row format.
    converter: RowConverter,
    timing: Timing,
    outer: Option<usize>,
    output: Output,
    hashers: Vec<Arc<dyn KeyHasher>>,
    lateness: i64,
    ttl: Option<i64>,
}

impl StreamJoinPlan {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sides: [Side; 2],
        keys: KeyExprs,
        timing: Timing,
        outer: Option<usize>,
        output: Output,
        hashers: Vec<Arc<dyn KeyHasher>>,
        options: &PlanOptions,
    ) -> DfResult<Self> {
        let fields = keys[0]
            .iter()
            .map(|key| Ok(SortField::new(key.data_type(&sides[0].schema)?)))
            .collect::<DfResult<Vec<_>>>()?;
        let converter = RowConverter::new(fields)?;
        let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let lateness = millis(options.allowed_lateness);
        let ttl = options.state_ttl.map(millis);
        Ok(Self { sides, keys, converter, timing, outer, output, hashers, lateness, ttl })
    }

    /// Keys, key hashes and event times of side `side`'s rows.
    fn probe(&self, side: usize, batch: &RecordBatch) -> DfResult<Probe> {
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.keys[side].len());
        for (key, field) in self.keys[side].iter().zip(self.converter_types()) {
            let column = key.evaluate(batch)?.into_array(rows)?;
            columns.push(if column.data_type() == &field { column } else { cast(&column, &field)? });
        }
        let mut hashes = Vec::new();
        crate::key::hash_columns(&columns, &mut hashes)?;
        let mut valid = vec![true; rows];
        for column in &columns {
            if let Some(nulls) = column.logical_nulls() {
                valid.iter_mut().zip(nulls.iter()).for_each(|(v, present)| *v &= present);
            }
        }
        let keys = self.converter.convert_columns(&columns)?;
        let times = match self.time_expr(side) {
            Some(expr) => Some(times(expr, batch)?),
            None => None,
        };
        Ok(Probe { keys, hashes, valid, times })
    }

    fn converter_types(&self) -> Vec<DataType> {
        self.keys[0].iter().map(|k| k.data_type(&self.sides[0].schema).unwrap_or(DataType::Null)).collect()
    }

    fn time_expr(&self, side: usize) -> Option<&Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        match &self.timing {
            Timing::Window { end } => Some(&end[side]),
            Timing::Interval { time, .. } => Some(&time[side]),
            Timing::Unbounded => None,
        }
    }

    /// The watermark at which a row of `side` with time `time` can match nothing new.
    fn expiry(&self, side: usize, time: i64) -> i64 {
        match self.timing {
            Timing::Window { .. } => time.saturating_sub(1),
            Timing::Interval { lower, upper, .. } => {
                if side == 0 {
                    time.saturating_sub(lower)
                } else {
                    time.saturating_add(upper)
                }
            }
            Timing::Unbounded => i64::MAX,
        }
    }

    /// The watermark from which a new row of `side` with time `time` is late: some of its
    /// partners may be gone.
    fn late_from(&self, time: i64) -> i64 {
        match self.timing {
            Timing::Window { .. } => time.saturating_sub(1),
            _ => time,
        }
    }

    /// Whether a row of `side` at `time` and a row of the other side at `other` may match.
    fn within(&self, side: usize, time: i64, other: i64) -> bool {
        match self.timing {
            Timing::Interval { lower, upper, .. } => {
                let (left, right) = if side == 0 { (time, other) } else { (other, time) };
                (lower..=upper).contains(&left.saturating_sub(right))
            }
            _ => true,
        }
    }
}

struct Probe {
    keys: Rows,
    hashes: Vec<u64>,
    valid: Vec<bool>,
    times: Option<Vec<Option<i64>>>,
}

/// A batch of one side's rows, kept while any of its rows is.
struct Chunk {
    batch: RecordBatch,
    /// Event time of each row (its window end for a window join; 0 without timing).
    time: Vec<i64>,
    /// Whether each row has found a partner (outer joins emit the others with NULLs).
    matched: Vec<bool>,
    live: usize,
    bytes: usize,
}

/// One key's rows.
struct KeyEntry {
    key: OwnedRow,
    rows: Vec<(u32, u32)>,
    /// Watermark when the key last got a row (for the state TTL); `i64::MIN` before any.
    updated: i64,
}

/// The rows one side keeps.
#[derive(Default)]
struct SideState {
    chunks: Vec<Option<Chunk>>,
    free: Vec<u32>,
    keys: HashMap<u64, Vec<KeyEntry>>,
    /// When to look at a key's rows again: watermark → key hashes.
    timers: BTreeMap<i64, Vec<u64>>,
    rows: usize,
    bytes: usize,
}

impl SideState {
    fn add_chunk(&mut self, batch: RecordBatch, time: Vec<i64>, matched: Vec<bool>) -> u32 {
        let bytes = batch.get_array_memory_size() + time.len() * 9;
        self.bytes += bytes;
        let chunk = Chunk { batch, time, matched, live: 0, bytes };
        match self.free.pop() {
            Some(slot) => {
                self.chunks[slot as usize] = Some(chunk);
                slot
            }
            None => {
                self.chunks.push(Some(chunk));
                (self.chunks.len() - 1) as u32
            }
        }
    }

    fn chunk(&self, id: u32) -> &Chunk {
        self.chunks[id as usize].as_ref().expect("invariant: a kept row's chunk is kept")
    }

    fn chunk_mut(&mut self, id: u32) -> &mut Chunk {
        self.chunks[id as usize].as_mut().expect("invariant: a kept row's chunk is kept")
    }

    /// Keeps row `row` of chunk `chunk` under `key`; returns the key's `updated`, as it was.
    fn add_row(&mut self, chunk: u32, row: u32, hash: u64, key: Row<'_>, updated: i64) -> i64 {
        self.chunk_mut(chunk).live += 1;
        self.rows += 1;
        let entries = self.keys.entry(hash).or_default();
        let index = match entries.iter().position(|e| e.key.row() == key) {
            Some(index) => index,
            None => {
                entries.push(KeyEntry { key: key.owned(), rows: Vec::new(), updated: i64::MIN });
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        entry.rows.push((chunk, row));
        let previous = entry.updated;
        entry.updated = previous.max(updated);
        previous
    }

    fn add_timer(&mut self, at: i64, hash: u64) {
        let hashes = self.timers.entry(at).or_default();
        if hashes.last() != Some(&hash) {
            hashes.push(hash);
        }
    }

    fn matches<'a>(&'a self, hash: u64, key: Row<'a>) -> impl Iterator<Item = (u32, u32)> + 'a {
        let entries = self.keys.get(&hash).map(Vec::as_slice).unwrap_or_default();
        entries.iter().filter(move |e| e.key.row() == key).flat_map(|e| e.rows.iter().copied())
    }

    /// Rows `refs` of the kept chunks, as one batch.
    fn gather(&self, schema: &SchemaRef, refs: &[(u32, u32)]) -> DfResult<RecordBatch> {
        let mut positions: HashMap<u32, usize> = HashMap::new();
        let mut batches = Vec::new();
        let indices: Vec<(usize, usize)> = refs
            .iter()
            .map(|(chunk, row)| {
                let position = *positions.entry(*chunk).or_insert_with(|| {
                    batches.push(&self.chunk(*chunk).batch);
                    batches.len() - 1
                });
                (position, *row as usize)
            })
            .collect();
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(schema)));
        }
        Ok(interleave_record_batch(&batches, &indices)?)
    }

    /// Drops the rows of the keys whose timers are at or before `due` for which `drop` says
    /// so; returns the dropped rows that never matched. Their chunks stay until
    /// [`SideState::release`].
    fn expire(&mut self, due: i64, mut drop: impl FnMut(&KeyEntry, i64) -> bool) -> Vec<(u32, u32)> {
        let later = self.timers.split_off(&due.saturating_add(1));
        let fired = std::mem::replace(&mut self.timers, later);
        let mut unmatched = Vec::new();
        for hash in fired.into_values().flatten() {
            let Some(entries) = self.keys.get_mut(&hash) else { continue };
            for entry in entries.iter_mut() {
                let mut kept = Vec::with_capacity(entry.rows.len());
                for &(chunk, row) in &entry.rows {
                    let state =
                        self.chunks[chunk as usize].as_mut().expect("invariant: a kept row's chunk is kept");
                    if drop(entry, state.time[row as usize]) {
                        state.live -= 1;
                        self.rows -= 1;
                        if !state.matched[row as usize] {
                            unmatched.push((chunk, row));
                        }
                    } else {
                        kept.push((chunk, row));
                    }
                }
                entry.rows = kept;
            }
            entries.retain(|entry| !entry.rows.is_empty());
            if entries.is_empty() {
                self.keys.remove(&hash);
            }
        }
        unmatched
    }

    /// Frees chunks without kept rows.
    fn release(&mut self) {
        for (id, slot) in self.chunks.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|chunk| chunk.live == 0) {
                self.bytes -= slot.take().map_or(0, |chunk| chunk.bytes);
                self.free.push(id as u32);
            }
        }
    }
}

/// A kept row (chunk, row) with its key's update time, as snapshots list them.
type KeptRow = ((u32, u32), i64);

/// One worker's instance of a stream join.
pub(crate) struct StreamJoin {
    plan: Arc<StreamJoinPlan>,
    state: [SideState; 2],
    /// A regular join's rows in RocksDB, instead of `state`.
    stored: Option<StoredRows>,
    /// The first watermark, which rows kept before it count as their update time.
    first_watermark: Option<EventTime>,
    /// The horizon of the last sweep of expired stored rows.
    last_sweep: i64,
    watermark: Option<EventTime>,
    dead_letters: Option<DeadLetterSink>,
}

impl StreamJoin {
    pub(crate) fn new(plan: Arc<StreamJoinPlan>) -> Self {
        Self {
            plan,
            state: Default::default(),
            stored: None,
            first_watermark: None,
            last_sweep: i64::MIN,
            watermark: None,
            dead_letters: None,
        }
    }

    /// The watermark that state follows: the input watermark minus the allowed lateness.
    fn horizon(&self) -> Option<i64> {
        self.watermark.map(|w| if w == END_OF_TIME { w } else { w.saturating_sub(self.plan.lateness) })
    }

    fn side_batch(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let plan = Arc::clone(&self.plan);
        let probe = plan.probe(side, &batch).map_err(|e| failed("join key", &e))?;
        let horizon = self.horizon();
        let other = &self.state[1 - side];
        let (mut new_rows, mut partners) = (Vec::new(), Vec::new());
        let (mut eligible, mut unmatched, mut late) = (Vec::new(), Vec::new(), Vec::new());
        for row in 0..batch.num_rows() {
            let time = match &probe.times {
                Some(times) => times[row],
                None => Some(0),
            };
            let Some(time) = time.filter(|_| probe.valid[row]) else {
                // A NULL key or time matches nothing, ever.
                unmatched.push(row as u32);
                continue;
            };
            if probe.times.is_some() && horizon.is_some_and(|h| plan.late_from(time) <= h) {
                late.push(row as u32);
                continue;
            }
            for (chunk, other_row) in other.matches(probe.hashes[row], probe.keys.row(row)) {
                if plan.within(side, time, other.chunk(chunk).time[other_row as usize]) {
                    new_rows.push(row as u32);
                    partners.push((chunk, other_row));
                }
            }
            eligible.push((row as u32, time));
        }
        let mut matched = vec![false; batch.num_rows()];
        if !new_rows.is_empty() {
            self.emit_pairs(side, &batch, &new_rows, &partners, &mut matched, out)
                .map_err(|e| failed("SQL join", &e))?;
        }
        self.dead_letter(side, &batch, &late)?;
        self.keep(side, batch.clone(), &probe, eligible, &mut matched, &mut unmatched, horizon);
        if plan.outer == Some(side) && !unmatched.is_empty() {
            let columns = take_rows(&batch, &unmatched).map_err(|e| failed("SQL join", &e))?;
            let joined = plan.output.unmatched(side, columns).map_err(|e| failed("SQL join", &e))?;
            plan.output.emit(joined, out).map_err(|e| failed("SQL join", &e))?;
        }
        Ok(())
    }

    /// Emits the pairs of new rows `new_rows` of `side` with kept rows `partners` of the other
    /// side that pass the residual condition, and marks which rows found a partner.
    fn emit_pairs(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        new_rows: &[u32],
        partners: &[(u32, u32)],
        matched: &mut [bool],
        out: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        let plan = &*self.plan;
        let other = 1 - side;
        let mine = take_rows(batch, new_rows)?;
        let theirs = self.state[other].gather(&plan.sides[other].schema, partners)?.columns().to_vec();
        let joined =
            if side == 0 { plan.output.pairs(mine, theirs)? } else { plan.output.pairs(theirs, mine)? };
        let mask = plan.output.residual(&joined)?;
        if plan.outer == Some(side) {
            for (index, row) in new_rows.iter().enumerate() {
                matched[*row as usize] |= mask.value(index);
            }
        } else if plan.outer == Some(other) {
            for (index, (chunk, row)) in partners.iter().enumerate() {
                if mask.value(index) {
                    self.state[other].chunk_mut(*chunk).matched[*row as usize] = true;
                }
            }
        }
        let passed = arrow::compute::filter_record_batch(&joined, &mask)?;
        plan.output.emit(passed, out)
    }

    /// Keeps the `eligible` rows (with their times) that may still find partners; the others,
    /// if unmatched, join `unmatched`.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &mut self,
        side: usize,
        batch: RecordBatch,
        probe: &Probe,
        eligible: Vec<(u32, i64)>,
        matched: &mut Vec<bool>,
        unmatched: &mut Vec<u32>,
        horizon: Option<i64>,
    ) {
        let plan = Arc::clone(&self.plan);
        let timed = probe.times.is_some();
        let keep: Vec<(u32, i64)> = eligible
            .into_iter()
            .filter(|(row, time)| {
                let expired = timed && horizon.is_some_and(|h| plan.expiry(side, *time) <= h);
                if expired && !matched[*row as usize] {
                    unmatched.push(*row);
                }
                !expired
            })
            .collect();
        if keep.is_empty() {
            return;
        }
        let mut times = vec![0; batch.num_rows()];
        keep.iter().for_each(|(row, time)| times[*row as usize] = *time);
        let updated = self.watermark.unwrap_or(i64::MIN);
        let state = &mut self.state[side];
        let chunk = state.add_chunk(batch, times, std::mem::take(matched));
        for (row, time) in keep {
            let hash = probe.hashes[row as usize];
            let previous = state.add_row(chunk, row, hash, probe.keys.row(row as usize), updated);
            if timed {
                state.add_timer(plan.expiry(side, time), hash);
            } else if let (Some(ttl), true) = (plan.ttl, previous != updated && updated != i64::MIN) {
                state.add_timer(updated.saturating_add(ttl), hash);
            }
        }
    }

    fn dead_letter(&mut self, side: usize, batch: &RecordBatch, rows: &[u32]) -> Result<()> {
        let Some(sink) = &mut self.dead_letters else { return Ok(()) };
        if rows.is_empty() {
            return Ok(());
        }
        let indices = arrow::array::UInt32Array::from(rows.to_vec());
        let late =
            arrow::compute::take_record_batch(batch, &indices).map_err(|e| failed("SQL join", &e.into()))?;
        let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
        writer.write(&late).and_then(|()| writer.finish()).map_err(|e| failed("SQL join", &e.into()))?;
        let text = String::from_utf8_lossy(&writer.into_inner()).into_owned();
        let name = if side == 0 { "left" } else { "right" };
        for line in text.lines() {
            sink.report(DeadLetter {
                position: format!("join, {name} side"),
                raw: line.as_bytes().to_vec(),
                reason: "late row: its event time is at or below the watermark (minus the allowed \
                         lateness), so rows it should join with may already be gone"
                    .into(),
            })?;
        }
        Ok(())
    }

    /// Drops the rows the watermark has made unmatchable, emitting outer rows without partners.
    fn expire(&mut self, out: &mut Vec<RecordBatch>) -> DfResult<()> {
        let Some(horizon) = self.horizon() else { return Ok(()) };
        let plan = Arc::clone(&self.plan);
        for side in 0..2 {
            let state = &mut self.state[side];
            let unmatched = match (&plan.timing, plan.ttl) {
                (Timing::Unbounded, _) if horizon == END_OF_TIME => {
                    *state = SideState::default();
                    continue;
                }
                (Timing::Unbounded, Some(ttl)) => {
                    state.expire(horizon, |entry, _| entry.updated.saturating_add(ttl) <= horizon)
                }
                (Timing::Unbounded, None) => continue,
                _ => state.expire(horizon, |_, time| plan.expiry(side, time) <= horizon),
            };
            if plan.outer == Some(side) && !unmatched.is_empty() {
                let rows = state.gather(&plan.sides[side].schema, &unmatched)?;
                let joined = plan.output.unmatched(side, rows.columns().to_vec())?;
                plan.output.emit(joined, out)?;
            }
            state.release();
        }
        Ok(())
    }

    /// Gives keys kept before the first watermark that watermark as their update time.
    fn stamp_first_updates(&mut self, watermark: i64) {
        let Some(ttl) = self.plan.ttl else { return };
        for state in &mut self.state {
            let mut due = Vec::new();
            for (hash, entries) in &mut state.keys {
                for entry in entries.iter_mut().filter(|e| e.updated == i64::MIN) {
                    entry.updated = watermark;
                    due.push(*hash);
                }
            }
            due.into_iter().for_each(|hash| state.add_timer(watermark.saturating_add(ttl), hash));
        }
    }

    fn snapshot_groups(&self, out: &mut dyn SnapshotWriter) -> DfResult<()> {
        let mut groups: BTreeMap<u32, [Vec<KeptRow>; 2]> = BTreeMap::new();
        for (side, state) in self.state.iter().enumerate() {
            for (hash, entries) in &state.keys {
                let group = groups.entry(key_group(*hash) as u32).or_default();
                for entry in entries {
                    group[side].extend(entry.rows.iter().map(|r| (*r, entry.updated)));
                }
            }
        }
        for (key_group, sides) in groups {
            let mut encoded = [Vec::new(), Vec::new()];
            for (side, rows) in sides.iter().enumerate().filter(|(_, rows)| !rows.is_empty()) {
                encoded[side] = self.encode(side, rows)?;
            }
            write_chunk(out, key_group, &key_group_bytes(self.watermark, encoded))?;
        }
        Ok(())
    }

    /// Rows of `side` as IPC: the side's columns, then each row's time, matched flag and its
    /// key's update time.
    fn encode(&self, side: usize, rows: &[KeptRow]) -> DfResult<Vec<u8>> {
        let state = &self.state[side];
        let refs: Vec<(u32, u32)> = rows.iter().map(|(r, _)| *r).collect();
        let batch = state.gather(&self.plan.sides[side].schema, &refs)?;
        let time: Int64Array = refs.iter().map(|(c, r)| state.chunk(*c).time[*r as usize]).collect();
        let matched: BooleanArray =
            refs.iter().map(|(c, r)| Some(state.chunk(*c).matched[*r as usize])).collect();
        let updated: Int64Array = rows.iter().map(|(_, u)| *u).collect();
        encode_side(&self.plan.sides[side].schema, batch.columns().to_vec(), time, matched, updated)
    }

    fn restore_group(&mut self, state: &KeyGroupState) -> DfResult<()> {
        let corrupt =
            || DataFusionError::Execution(format!("join state of key group {} is corrupt", state.key_group));
        let bytes = state.bytes.as_slice();
        if bytes.first() != Some(&SNAPSHOT_VERSION) || bytes.len() < 9 {
            return Err(corrupt());
        }
        let watermark = i64::from_le_bytes(bytes[1..9].try_into().map_err(|_| corrupt())?);
        if watermark != i64::MIN {
            self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        }
        let mut rest = &bytes[9..];
        for side in 0..2 {
            let length = rest.get(..8).ok_or_else(corrupt)?;
            let length = u64::from_le_bytes(length.try_into().map_err(|_| corrupt())?) as usize;
            let encoded = rest.get(8..8 + length).ok_or_else(corrupt)?;
            rest = &rest[8 + length..];
            if length > 0 {
                for batch in StreamReader::try_new(Cursor::new(encoded), None)? {
                    self.restore_rows(side, batch?)?;
                }
            }
        }
        Ok(())
    }

    fn restore_rows(&mut self, side: usize, batch: RecordBatch) -> DfResult<()> {
        let columns = batch.num_columns() - 3;
        let column = |i: usize| Arc::clone(batch.column(i));
        let time = column(columns);
        let matched = column(columns + 1);
        let updated = column(columns + 2);
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let rows = RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.sides[side].schema),
            batch.columns()[..columns].to_vec(),
            &options,
        )?;
        let probe = self.plan.probe(side, &rows)?;
        let time: Vec<i64> = datafusion::common::cast::as_int64_array(&time)?.values().to_vec();
        let matched: Vec<bool> =
            datafusion::common::cast::as_boolean_array(&matched)?.values().iter().collect();
        let updated = datafusion::common::cast::as_int64_array(&updated)?.values().to_vec();
        if self.stored.is_some() {
            return self.stored_restore(side, &rows, &probe, &matched, &updated);
        }
        let plan = Arc::clone(&self.plan);
        let state = &mut self.state[side];
        let chunk = state.add_chunk(rows, time.clone(), matched);
        for row in 0..time.len() {
            let hash = probe.hashes[row];
            state.add_row(chunk, row as u32, hash, probe.keys.row(row), updated[row]);
            if probe.times.is_some() {
                state.add_timer(plan.expiry(side, time[row]), hash);
            } else if let (Some(ttl), true) = (plan.ttl, updated[row] != i64::MIN) {
                state.add_timer(updated[row].saturating_add(ttl), hash);
            }
        }
        Ok(())
    }
}

/// The regular join over [`StoredRows`] (`state.backend: rocksdb`); see the module documentation.
impl StreamJoin {
    fn stored(&self) -> DfResult<&StoredRows> {
        self.stored.as_ref().ok_or_else(|| DataFusionError::Internal("join state is not in RocksDB".into()))
    }

    fn stored_batch(&mut self, side: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> DfResult<()> {
        let plan = Arc::clone(&self.plan);
        let probe = plan.probe(side, &batch)?;
        let horizon = self.horizon();
        let other = 1 - side;
        // The batch's rows by key; rows with a NULL key match nothing, ever, and an inner join
        // does not keep them.
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut keys: Vec<(u32, &[u8], Vec<u32>)> = Vec::new();
        for row in 0..batch.num_rows() {
            if !probe.valid[row] {
                continue;
            }
            let key = probe.keys.row(row).data();
            let at = *index.entry(key).or_insert_with(|| {
                keys.push((key_group(probe.hashes[row]) as u32, key, Vec::new()));
                keys.len() - 1
            });
            keys[at].2.push(row as u32);
        }
        let stored = self.stored()?;
        let alive = |rows: &[StoredRow]| alive(rows, plan.ttl, self.first_watermark, horizon);
        let (mut partners, mut new_rows, mut pairs_with) = (Vec::new(), Vec::new(), Vec::new());
        let mut changes: Vec<Change> = Vec::new();
        for (group, key, rows) in &keys {
            let found = stored.rows_of(*group, other, key)?;
            if !found.is_empty() && alive(&found) {
                let first = partners.len() as u32;
                partners.extend(found);
                for row in rows {
                    for partner in first..partners.len() as u32 {
                        new_rows.push(*row);
                        pairs_with.push(partner);
                    }
                }
            }
            if plan.ttl.is_some() {
                // The TTL may have expired this key's own rows: they go before it gets new ones.
                let own = stored.rows_of(*group, side, key)?;
                if !own.is_empty() && !alive(&own) {
                    changes.extend(own.into_iter().map(|row| (*group, row.id, None)));
                }
            }
        }
        if !new_rows.is_empty() {
            let theirs = stored.decode(other, partners.iter().map(|row| row.row.as_slice()))?;
            let picks = arrow::array::UInt32Array::from(pairs_with.clone());
            let theirs = theirs
                .iter()
                .map(|column| arrow::compute::take(column, &picks, None))
                .collect::<Result<Vec<_>, _>>()?;
            let mine = take_rows(&batch, &new_rows)?;
            let joined =
                if side == 0 { plan.output.pairs(mine, theirs)? } else { plan.output.pairs(theirs, mine)? };
            let mask = plan.output.residual(&joined)?;
            plan.output.emit(arrow::compute::filter_record_batch(&joined, &mask)?, out)?;
        }
        let encoded = stored.encode(side, &batch)?;
        let updated = self.watermark.unwrap_or(i64::MIN);
        let stored = self.stored.as_mut().ok_or_else(|| DataFusionError::Internal("no join state".into()))?;
        for (group, key, rows) in &keys {
            for row in rows {
                let row = *row as usize;
                changes.push(stored.insert(*group, side, key, false, updated, encoded.row(row).data()));
            }
        }
        stored.write(&changes)
    }

    fn stored_watermark(&mut self, watermark: EventTime) -> DfResult<()> {
        self.watermark = Some(watermark);
        if watermark == END_OF_TIME {
            // Nothing can match any more.
            return self.stored()?.clear();
        }
        let (Some(ttl), Some(horizon)) = (self.plan.ttl, self.horizon()) else { return Ok(()) };
        if horizon.saturating_sub(self.last_sweep) >= (ttl / 2).max(1) {
            self.sweep(horizon)?;
        }
        Ok(())
    }

    /// Deletes the rows of keys the TTL has expired at `horizon`.
    fn sweep(&mut self, horizon: i64) -> DfResult<()> {
        let stored = self.stored()?;
        let alive = |rows: &[StoredRow]| alive(rows, self.plan.ttl, self.first_watermark, Some(horizon));
        let mut changes: Vec<Change> = Vec::new();
        let flush = |group: u32, rows: &mut Vec<StoredRow>, changes: &mut Vec<Change>| {
            if !alive(rows) {
                changes.extend(rows.drain(..).map(|row| (group, row.id, None)));
            }
            rows.clear();
        };
        let mut current: Option<(u32, usize, Vec<u8>)> = None;
        let mut rows = Vec::new();
        stored.scan(|group, side, key, row| {
            if current.as_ref().is_some_and(|(g, s, k)| (*g, *s, k.as_slice()) != (group, side, key)) {
                let (g, _, _) = current.take().expect("invariant: checked just above");
                flush(g, &mut rows, &mut changes);
            }
            if current.is_none() {
                current = Some((group, side, key.to_vec()));
            }
            rows.push(row);
            Ok(())
        })?;
        if let Some((group, _, _)) = current {
            flush(group, &mut rows, &mut changes);
        }
        stored.write(&changes)?;
        self.last_sweep = horizon;
        Ok(())
    }

    /// The stored rows in the in-memory join's snapshot format, in chunks of one key group and
    /// about [`SnapshotWriter::chunk_bytes`] each (one row more at most), so that no more than
    /// one chunk is in memory.
    fn stored_snapshot(&self, out: &mut dyn SnapshotWriter) -> DfResult<()> {
        let stored = self.stored()?;
        let plan = &self.plan;
        let chunk_bytes = out.chunk_bytes();
        let stamp = |updated: i64| {
            if updated == i64::MIN { self.first_watermark.unwrap_or(updated) } else { updated }
        };
        let encode = |side: usize, rows: &[StoredRow]| -> DfResult<Vec<u8>> {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let columns = stored.decode(side, rows.iter().map(|row| row.row.as_slice()))?;
            let time = Int64Array::from(vec![0; rows.len()]);
            let matched: BooleanArray = rows.iter().map(|row| Some(row.matched)).collect();
            let updated: Int64Array = rows.iter().map(|row| stamp(row.updated)).collect();
            encode_side(&plan.sides[side].schema, columns, time, matched, updated)
        };
        let mut finish = |group: u32, sides: [Vec<StoredRow>; 2]| -> DfResult<()> {
            let encoded = [encode(0, &sides[0])?, encode(1, &sides[1])?];
            write_chunk(out, group, &key_group_bytes(self.watermark, encoded))
        };
        // The key group, its rows of each side so far, and their size.
        let mut current: Option<(u32, [Vec<StoredRow>; 2], usize)> = None;
        stored.scan(|group, side, _, row| {
            if current.as_ref().is_some_and(|(g, _, bytes)| *g != group || *bytes >= chunk_bytes) {
                let (g, sides, _) = current.take().expect("invariant: checked just above");
                finish(g, sides)?;
            }
            let (_, sides, bytes) = current.get_or_insert_with(|| (group, Default::default(), 0));
            *bytes += row.id.len() + row.row.len() + 9;
            sides[side].push(row);
            Ok(())
        })?;
        if let Some((group, sides, _)) = current {
            finish(group, sides)?;
        }
        Ok(())
    }

    /// Keeps restored rows of `side` in RocksDB.
    fn stored_restore(
        &mut self,
        side: usize,
        rows: &RecordBatch,
        probe: &Probe,
        matched: &[bool],
        updated: &[i64],
    ) -> DfResult<()> {
        let stored = self.stored.as_mut().ok_or_else(|| DataFusionError::Internal("no join state".into()))?;
        let encoded = stored.encode(side, rows)?;
        let changes: Vec<Change> = (0..rows.num_rows())
            .map(|row| {
                let group = key_group(probe.hashes[row]) as u32;
                stored.insert(
                    group,
                    side,
                    probe.keys.row(row).data(),
                    matched[row],
                    updated[row],
                    encoded.row(row).data(),
                )
            })
            .collect();
        stored.write(&changes)
    }
}

/// Whether a key whose kept rows on one side are `rows` is still alive at `horizon`: the state
/// TTL has not expired it (rows kept before the first watermark count as updated at it).
fn alive(rows: &[StoredRow], ttl: Option<i64>, first_watermark: Option<i64>, horizon: Option<i64>) -> bool {
    let (Some(ttl), Some(horizon)) = (ttl, horizon) else { return true };
    let stamp = |updated: i64| if updated == i64::MIN { first_watermark.unwrap_or(updated) } else { updated };
    let updated = rows.iter().map(|row| stamp(row.updated)).max().unwrap_or(i64::MIN);
    updated == i64::MIN || updated.saturating_add(ttl) > horizon
}

/// One side's kept rows as an IPC stream: its columns, then each row's time, matched flag and
/// its key's update time.
fn encode_side(
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
    time: Int64Array,
    matched: BooleanArray,
    updated: Int64Array,
) -> DfResult<Vec<u8>> {
    let schema = snapshot_schema(schema);
    columns.extend([Arc::new(time) as ArrayRef, Arc::new(matched), Arc::new(updated)]);
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

fn write_chunk(out: &mut dyn SnapshotWriter, key_group: u32, bytes: &[u8]) -> DfResult<()> {
    out.write(key_group, bytes).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// A snapshot of one key group: format version, watermark, then each side's IPC stream with
/// its length (empty for no rows).
fn key_group_bytes(watermark: Option<EventTime>, sides: [Vec<u8>; 2]) -> Vec<u8> {
    let mut bytes = vec![SNAPSHOT_VERSION];
    bytes.extend(watermark.unwrap_or(i64::MIN).to_le_bytes());
    for encoded in sides {
        bytes.extend((encoded.len() as u64).to_le_bytes());
        bytes.extend(encoded);
    }
    bytes
}

fn snapshot_schema(side: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = side.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("__sluice_time", DataType::Int64, false));
    fields.push(Field::new("__sluice_matched", DataType::Boolean, false));
    fields.push(Field::new("__sluice_updated", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

impl Processor for StreamJoin {
    fn output_schema(&self) -> SchemaRef {
        self.plan.output.schema()
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        for side in 0..2 {
            if self.plan.sides[side].input != input {
                continue;
            }
            for rows in self.plan.sides[side].rows(&batch)? {
                if self.stored.is_some() {
                    self.stored_batch(side, rows, out).map_err(|e| failed("SQL join", &e))?;
                } else {
                    self.side_batch(side, rows, out)?;
                }
            }
        }
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(Self::new(Arc::clone(&self.plan)))
    }

    fn is_stateful(&self) -> bool {
        true
    }

    fn key_by(&self) -> Vec<Arc<dyn KeyHasher>> {
        self.plan.hashers.clone()
    }

    fn open(&mut self, context: ProcessorContext) -> Result<()> {
        if let (Timing::Unbounded, StateBackend::RocksDb { dir }, None) =
            (&self.plan.timing, &context.state, &self.stored)
        {
            let schemas = [&self.plan.sides[0].schema, &self.plan.sides[1].schema];
            let stored = StoredRows::open(dir, schemas).map_err(|e| Error::user(e.to_string()))?;
            self.stored = Some(stored);
        }
        self.dead_letters = Some(context.dead_letters);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        if self.watermark.is_none() && watermark != END_OF_TIME {
            self.stamp_first_updates(watermark);
            self.first_watermark = Some(watermark);
        }
        if self.stored.is_some() {
            return self.stored_watermark(watermark).map_err(|e| failed("SQL join", &e));
        }
        self.watermark = Some(watermark);
        self.expire(out).map_err(|e| failed("SQL join", &e))
    }

    fn snapshot(&mut self, out: &mut dyn SnapshotWriter) -> Result<()> {
        let written =
            if self.stored.is_some() { self.stored_snapshot(out) } else { self.snapshot_groups(out) };
        written.map_err(|e| Error::internal(format!("join snapshot failed: {e}")))
    }

    fn restore(&mut self, states: Vec<KeyGroupState>) -> Result<()> {
        for state in &states {
            self.restore_group(state).map_err(|e| Error::internal(format!("join restore failed: {e}")))?;
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        match &self.stored {
            Some(stored) => stored.size(),
            None => self.state.iter().map(|s| s.bytes + s.rows * 16).sum(),
        }
    }
}
