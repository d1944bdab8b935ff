//! [`StoredRows`]: the kept rows of a regular join (one without a time bound, whose state only
//! `state_ttl` bounds) in RocksDB, for pipelines whose `state.backend` is `rocksdb`.
//!
//! Each kept row is one entry under its key's key group: `[side][key length][key][sequence]`
//! (the key in Arrow's row format, big-endian length and sequence) maps to
//! `[matched][update time][row]`, the row being the side's columns in Arrow's row format. The
//! rows of one key and side are contiguous, so a probe is one prefix scan.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result as DfResult};
use sluice_state::KeyedStore;

/// One kept row, as read back.
pub(crate) struct KeptRow {
    /// Its entry's key (without the key group).
    pub(crate) id: Vec<u8>,
    /// Whether it has found a partner (kept for the snapshot format, which outer window and
    /// interval joins share; always false for the inner regular joins stored here).
    pub(crate) matched: bool,
    /// The watermark when it was kept (`i64::MIN` before the first one).
    pub(crate) updated: i64,
    /// The row in Arrow's row format.
    pub(crate) row: Vec<u8>,
}

/// A change to apply: key group, entry key, new value (`None` deletes).
pub(crate) type Change = (u32, Vec<u8>, Option<Vec<u8>>);

/// Both sides' kept rows in RocksDB; see the module documentation.
pub(crate) struct StoredRows {
    store: KeyedStore,
    /// Each side's columns ↔ Arrow's row format.
    rows: [RowConverter; 2],
    next_sequence: u64,
}

impl StoredRows {
    /// An empty store in `dir` (anything there is removed) for sides with `schemas`.
    pub(crate) fn open(dir: &std::path::Path, schemas: [&SchemaRef; 2]) -> DfResult<Self> {
        let converter = |schema: &SchemaRef| {
            let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
            RowConverter::new(fields).map_err(|e| {
                DataFusionError::Plan(format!(
                    "the rocksdb state backend cannot store this join's rows ({e}); use \
                     `state: {{backend: memory}}` for this pipeline"
                ))
            })
        };
        let rows = [converter(schemas[0])?, converter(schemas[1])?];
        let store = KeyedStore::open_empty(dir).map_err(external)?;
        Ok(Self { store, rows, next_sequence: 0 })
    }

    /// The rows of `side` (a batch of the side's schema) in Arrow's row format.
    pub(crate) fn encode(&self, side: usize, batch: &RecordBatch) -> DfResult<Rows> {
        Ok(self.rows[side].convert_columns(batch.columns())?)
    }

    /// Rows of `side` in Arrow's row format, back as the side's columns.
    pub(crate) fn decode<'a>(
        &self,
        side: usize,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> DfResult<Vec<ArrayRef>> {
        let parser = self.rows[side].parser();
        Ok(self.rows[side].convert_rows(rows.into_iter().map(|row| parser.parse(row)))?)
    }

    /// The kept rows of `side` with key `key` (in key group `group`), oldest first.
    pub(crate) fn rows_of(&self, group: u32, side: usize, key: &[u8]) -> DfResult<Vec<KeptRow>> {
        let mut found = Vec::new();
        self.store
            .scan_prefix(group, &prefix(side, key), |id, value| {
                found.push(kept(id, value).map_err(|e| corrupt(&self.store, &e))?);
                Ok(())
            })
            .map_err(external)?;
        Ok(found)
    }

    /// The change that keeps a new row of `side` with key `key`.
    pub(crate) fn insert(
        &mut self,
        group: u32,
        side: usize,
        key: &[u8],
        matched: bool,
        updated: i64,
        row: &[u8],
    ) -> Change {
        let mut id = prefix(side, key);
        id.extend_from_slice(&self.next_sequence.to_be_bytes());
        self.next_sequence += 1;
        (group, id, Some(value(matched, updated, row)))
    }

    /// Applies `changes` atomically.
    pub(crate) fn write(&self, changes: &[Change]) -> DfResult<()> {
        self.store
            .write(changes.iter().map(|(group, key, value)| (*group, key.as_slice(), value.as_deref())))
            .map_err(external)
    }

    /// Calls `visit(key group, side, key, row)` for every kept row, in key-group order and with
    /// the rows of one key and side together.
    pub(crate) fn scan(
        &self,
        mut visit: impl FnMut(u32, usize, &[u8], KeptRow) -> DfResult<()>,
    ) -> DfResult<()> {
        self.store
            .scan(|group, id, value| {
                let row = kept(id, value).map_err(|e| corrupt(&self.store, &e))?;
                let (side, key) = split(id).map_err(|e| corrupt(&self.store, &e))?;
                visit(group, side, key, row).map_err(|e| corrupt(&self.store, &e))
            })
            .map_err(external)
    }

    /// Forgets every row.
    pub(crate) fn clear(&self) -> DfResult<()> {
        self.store.clear().map_err(external)
    }

    /// Approximate size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.store.size() as usize
    }
}

fn prefix(side: usize, key: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(key.len() + 13);
    prefix.push(side as u8);
    prefix.extend_from_slice(&(key.len() as u32).to_be_bytes());
    prefix.extend_from_slice(key);
    prefix
}

/// The side and key of an entry key.
fn split(id: &[u8]) -> DfResult<(usize, &[u8])> {
    let length = id.get(1..5).ok_or_else(|| short("entry key", id.len()))?;
    let length = u32::from_be_bytes(length.try_into().expect("invariant: a 4-byte slice")) as usize;
    let key = id.get(5..5 + length).ok_or_else(|| short("entry key", id.len()))?;
    Ok((usize::from(id[0]), key))
}

fn value(matched: bool, updated: i64, row: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(row.len() + 9);
    value.push(u8::from(matched));
    value.extend_from_slice(&updated.to_le_bytes());
    value.extend_from_slice(row);
    value
}

fn kept(id: &[u8], value: &[u8]) -> DfResult<KeptRow> {
    let updated = value.get(1..9).ok_or_else(|| short("value", value.len()))?;
    Ok(KeptRow {
        id: id.to_vec(),
        matched: value[0] != 0,
        updated: i64::from_le_bytes(updated.try_into().expect("invariant: an 8-byte slice")),
        row: value[9..].to_vec(),
    })
}

fn short(what: &str, length: usize) -> DataFusionError {
    DataFusionError::Internal(format!("a RocksDB join state {what} of {length} bytes is too short"))
}

fn external(error: sluice_state::Error) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

fn corrupt(store: &KeyedStore, error: &DataFusionError) -> sluice_state::Error {
    sluice_state::Error::LocalState { dir: store.dir().display().to_string(), reason: error.to_string() }
}
