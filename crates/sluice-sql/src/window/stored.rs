//! [`StoredUpdating`]: the state of an updating (non-windowed) GROUP BY kept in RocksDB instead
//! of memory, for pipelines whose `state.backend` is `rocksdb`.
//!
//! Each key is one RocksDB entry under its key group: the key in Arrow's row format maps to
//! `(hash, last update, accumulator state)`, the state being DataFusion's accumulator state
//! columns of that one group in Arrow's row format. A batch is applied with one multi-get of its
//! distinct keys, DataFusion's accumulators over just those keys, and one write batch. Only the
//! keys updated since the last emit are held in memory.
//!
//! State TTL works as in memory: a key not updated for the TTL is forgotten. An expired entry
//! is treated as absent when read, and a sweep deletes expired entries at most once per half TTL.
//!
//! Snapshots have the same rows as the in-memory state's (see [`super::aggregate`]), so a
//! checkpoint taken with one backend restores with the other.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::{ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{Int64Type, SchemaRef, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result as DfResult};
use sluice_runtime::exchange::key_group;
use sluice_state::KeyedStore;

use super::aggregate::STATE_COLUMNS;
use super::groups::{Aggregates, KeyIndex};

/// An updating aggregation's state in RocksDB; see the module documentation.
pub(crate) struct StoredUpdating {
    store: KeyedStore,
    aggregates: Arc<Aggregates>,
    /// Accumulator state columns ↔ bytes.
    state_rows: RowConverter,
    /// Keys updated since the last emit, and when.
    changed: KeyIndex,
    changed_at: Vec<i64>,
    /// When expired entries were last deleted.
    last_sweep: i64,
}

/// Updated keys, their ids in order, and their aggregate values (one array per aggregate).
pub(crate) type Changed = (KeyIndex, Vec<u32>, Vec<ArrayRef>);

/// Keys of one key group on their way into a snapshot chunk.
#[derive(Default)]
struct Chunk {
    group: Option<u32>,
    bytes: usize,
    hashes: Vec<u64>,
    keys: Vec<Vec<u8>>,
    lasts: Vec<i64>,
    states: Vec<Vec<u8>>,
}

/// Bytes before the accumulator state in a stored value: hash and last update.
const HEADER: usize = 16;

impl StoredUpdating {
    /// An empty state in `dir` (anything there is removed).
    pub(crate) fn open(
        dir: &std::path::Path,
        aggregates: Arc<Aggregates>,
        keys: &RowConverter,
    ) -> DfResult<Self> {
        let fields: Vec<SortField> =
            aggregates.state_fields()?.iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let state_rows = RowConverter::new(fields).map_err(|e| {
            DataFusionError::Plan(format!(
                "the rocksdb state backend cannot store this aggregation's state ({e}); use \
                 `state: {{backend: memory}}` for this pipeline"
            ))
        })?;
        let store = KeyedStore::open_empty(dir).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Self {
            store,
            aggregates,
            state_rows,
            changed: KeyIndex::new(keys),
            changed_at: Vec::new(),
            last_sweep: i64::MIN,
        })
    }

    /// Adds a pre-aggregation batch whose rows have keys `keys` with hashes `hashes`, at time
    /// `now`; `groups` is scratch space of one entry per row. `converter` made `keys`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        columns: &[ArrayRef],
        keys: &Rows,
        hashes: &[u64],
        groups: &mut [usize],
        now: i64,
        ttl: Option<i64>,
        converter: &RowConverter,
    ) -> DfResult<()> {
        let mut local = KeyIndex::new(converter);
        for (row, group) in groups.iter_mut().enumerate() {
            *group = local.intern(hashes[row], keys.row(row)) as usize;
        }
        let mut accumulators = self.aggregates.create()?;
        let found = self.get(&local)?;
        let mut loaded_ids = Vec::new();
        let mut loaded = Vec::new();
        for (id, value) in found.iter().enumerate() {
            if let Some(value) = value {
                let (_, last, state) = decode(value)?;
                if alive(last, now, ttl) {
                    loaded_ids.push(id);
                    loaded.push(state);
                }
            }
        }
        if !loaded.is_empty() {
            let parser = self.state_rows.parser();
            let state = self.state_rows.convert_rows(loaded.iter().map(|bytes| parser.parse(bytes)))?;
            accumulators.merge(&state, &loaded_ids, local.len())?;
        }
        accumulators.update(columns, groups, None, local.len())?;
        let state = self.state_rows.convert_columns(&accumulators.state()?)?;
        let values: Vec<Vec<u8>> =
            (0..local.len()).map(|id| encode(local.hash(id as u32), now, state.row(id).data())).collect();
        self.store
            .write((0..local.len()).map(|id| {
                let id32 = id as u32;
                (group_of(local.hash(id32)), local.row(id32).data(), Some(values[id].as_slice()))
            }))
            .map_err(external)?;
        for id in 0..local.len() as u32 {
            let changed = self.changed.intern(local.hash(id), local.row(id)) as usize;
            if changed == self.changed_at.len() {
                self.changed_at.push(now);
            }
            self.changed_at[changed] = now;
        }
        Ok(())
    }

    /// The keys updated since the last call and their current aggregate values, forgetting
    /// which keys were updated; `None` if none was.
    pub(crate) fn take_changed(&mut self, converter: &RowConverter) -> DfResult<Option<Changed>> {
        if self.changed.len() == 0 {
            return Ok(None);
        }
        let keys = std::mem::replace(&mut self.changed, KeyIndex::new(converter));
        self.changed_at.clear();
        let found = self.get(&keys)?;
        let mut states = Vec::with_capacity(found.len());
        for value in &found {
            let value = value.as_deref().ok_or_else(|| {
                DataFusionError::Internal("an updated key is missing from the RocksDB state".into())
            })?;
            states.push(decode(value)?.2);
        }
        let parser = self.state_rows.parser();
        let state = self.state_rows.convert_rows(states.iter().map(|bytes| parser.parse(bytes)))?;
        let mut accumulators = self.aggregates.create()?;
        let ids: Vec<usize> = (0..keys.len()).collect();
        accumulators.merge(&state, &ids, keys.len())?;
        let values = accumulators.evaluate_all()?;
        let ids = (0..keys.len() as u32).collect();
        Ok(Some((keys, ids, values)))
    }

    /// Forgets keys not updated for `ttl` as of `now`: they are no longer reported as updated,
    /// and (at most once per half TTL) their entries are deleted.
    pub(crate) fn expire(&mut self, now: i64, ttl: i64, converter: &RowConverter) -> DfResult<()> {
        let keep: Vec<bool> = self.changed_at.iter().map(|last| alive(*last, now, Some(ttl))).collect();
        if keep.iter().any(|kept| !kept) {
            self.changed.retain(converter, &keep);
            let mut index = 0;
            self.changed_at.retain(|_| {
                index += 1;
                keep[index - 1]
            });
        }
        if now.saturating_sub(self.last_sweep) < (ttl / 2).max(1) {
            return Ok(());
        }
        self.last_sweep = now;
        let mut expired: Vec<(u32, Vec<u8>)> = Vec::new();
        self.store
            .scan(|group, key, value| {
                let (_, last, _) = decode(value).map_err(|e| corrupt(self.store.dir(), &e))?;
                if !alive(last, now, Some(ttl)) {
                    expired.push((group, key.to_vec()));
                }
                Ok(())
            })
            .map_err(external)?;
        self.store.write(expired.iter().map(|(group, key)| (*group, key.as_slice(), None))).map_err(external)
    }

    /// Every live key as snapshot rows with `schema` (see [`STATE_COLUMNS`]), passed to
    /// `emit` in chunks with their key group, in key-group order: each chunk holds keys of one
    /// key group only and about `chunk_bytes` of them (one key more at most), so that no more
    /// than one chunk is in memory.
    pub(crate) fn snapshot(
        &self,
        schema: &SchemaRef,
        (now, ttl): (i64, Option<i64>),
        chunk_bytes: usize,
        mut emit: impl FnMut(u32, RecordBatch) -> DfResult<()>,
    ) -> DfResult<()> {
        let mut chunk = Chunk::default();
        let mut flush = |chunk: &mut Chunk| -> DfResult<()> {
            let Some(group) = chunk.group else { return Ok(()) };
            let rows = self.chunk_rows(schema, std::mem::take(chunk))?;
            emit(group, rows)
        };
        self.store
            .scan(|group, key, value| {
                let (hash, last, state) = decode(value).map_err(|e| corrupt(self.store.dir(), &e))?;
                if !alive(last, now, ttl) {
                    return Ok(());
                }
                if chunk.group.is_some_and(|current| current != group) || chunk.bytes >= chunk_bytes {
                    flush(&mut chunk).map_err(|e| corrupt(self.store.dir(), &e))?;
                }
                chunk.group = Some(group);
                chunk.bytes += HEADER + key.len() + state.len();
                chunk.hashes.push(hash);
                chunk.keys.push(key.to_vec());
                chunk.lasts.push(last);
                chunk.states.push(state.to_vec());
                Ok(())
            })
            .map_err(external)?;
        flush(&mut chunk)
    }

    fn chunk_rows(&self, schema: &SchemaRef, chunk: Chunk) -> DfResult<RecordBatch> {
        let n = chunk.hashes.len();
        let parser = self.state_rows.parser();
        let state = self.state_rows.convert_rows(chunk.states.iter().map(|bytes| parser.parse(bytes)))?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(chunk.hashes)),
            Arc::new(chunk.keys.iter().map(|k| Some(k.as_slice())).collect::<BinaryArray>()),
            Arc::new(Int64Array::from(vec![0; n])),
            Arc::new(Int64Array::from(vec![0; n])),
            Arc::new(BooleanArray::from(vec![false; n])),
            Arc::new(Int64Array::from(chunk.lasts)),
        ];
        columns.extend(state);
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Adds snapshot rows (as [`StoredUpdating::snapshot`] or the in-memory state writes them).
    pub(crate) fn restore(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let hashes = batch.column(0).as_primitive::<UInt64Type>();
        let keys = batch.column(1).as_binary::<i32>();
        let lasts = batch.column(5).as_primitive::<Int64Type>();
        let state = self.state_rows.convert_columns(&batch.columns()[STATE_COLUMNS.len()..])?;
        let values: Vec<Vec<u8>> = (0..batch.num_rows())
            .map(|row| encode(hashes.value(row), lasts.value(row), state.row(row).data()))
            .collect();
        self.store
            .write(
                (0..batch.num_rows())
                    .map(|row| (group_of(hashes.value(row)), keys.value(row), Some(values[row].as_slice()))),
            )
            .map_err(external)
    }

    /// Approximate size in bytes: RocksDB's estimate plus the updated keys held in memory.
    pub(crate) fn size(&self) -> usize {
        self.store.size() as usize + self.changed.size() + self.changed_at.len() * 8
    }

    fn get(&self, keys: &KeyIndex) -> DfResult<Vec<Option<Vec<u8>>>> {
        let lookups: Vec<(u32, &[u8])> =
            (0..keys.len() as u32).map(|id| (group_of(keys.hash(id)), keys.row(id).data())).collect();
        self.store.get_many(&lookups).map_err(external)
    }
}

/// The key group of a key hash, as the store numbers them.
fn group_of(hash: u64) -> u32 {
    key_group(hash) as u32
}

/// Whether a key last updated at `last` is still alive at `now` (the in-memory state keeps a
/// key while `last + ttl > now`).
fn alive(last: i64, now: i64, ttl: Option<i64>) -> bool {
    ttl.is_none_or(|ttl| last.saturating_add(ttl) > now)
}

fn encode(hash: u64, last_update: i64, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + state.len());
    value.extend_from_slice(&hash.to_le_bytes());
    value.extend_from_slice(&last_update.to_le_bytes());
    value.extend_from_slice(state);
    value
}

fn decode(value: &[u8]) -> DfResult<(u64, i64, &[u8])> {
    match (value.get(..8), value.get(8..HEADER)) {
        (Some(hash), Some(last)) => Ok((
            u64::from_le_bytes(hash.try_into().expect("invariant: an 8-byte slice")),
            i64::from_le_bytes(last.try_into().expect("invariant: an 8-byte slice")),
            &value[HEADER..],
        )),
        _ => Err(DataFusionError::Internal(format!(
            "a RocksDB state value has {} bytes, fewer than its {HEADER}-byte header",
            value.len()
        ))),
    }
}

fn external(error: sluice_state::Error) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

fn corrupt(dir: &std::path::Path, error: &DataFusionError) -> sluice_state::Error {
    sluice_state::Error::LocalState { dir: dir.display().to_string(), reason: error.to_string() }
}
