//! A JSON Lines or CSV file as a lookup table: read whole into memory, indexed by its key
//! column, and read again when the file changes (checked at most once per reload interval).
//!
//! Lines are decoded as the file source decodes them. Bad lines are skipped with a warning (a
//! lookup table has no dead-letter sink); rows with a null key are never matched; when keys
//! repeat, the last row wins. A reload that fails (the file is missing or half written) keeps
//! the previous contents and is retried at the next check.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, ArrayRef, UInt32Array, make_array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use sluice_runtime::processor::LookupTable;
use sluice_runtime::{Error, Result};

use super::SourceConfig;
use super::source::{Cursor, LineDecoder};
use super::storage::Location;

/// Lines decoded per batch while loading.
const LOAD_BATCH_LINES: usize = 8192;

/// A file read as a table keyed by one column.
pub struct FileLookup {
    config: SourceConfig,
    key: String,
    key_index: usize,
    reload_interval: Duration,
    table: RwLock<Arc<Table>>,
    /// When the file was last checked for changes.
    checked: Mutex<Instant>,
}

/// One loaded version of the file.
struct Table {
    rows: RecordBatch,
    /// Row-format key to row index.
    index: HashMap<Box<[u8]>, u32>,
    /// Encodes keys the same way as `index`.
    converter: RowConverter,
    /// The file's modification time and length when it was read.
    version: Option<(SystemTime, u64)>,
}

impl std::fmt::Debug for FileLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLookup").field("path", &self.config.location).field("key", &self.key).finish()
    }
}

impl FileLookup {
    /// Reads the file of `config` keyed by column `key`, to be checked for changes at most
    /// every `reload_interval`.
    pub(crate) fn open(config: SourceConfig, key: &str, reload_interval: Duration) -> Result<Self> {
        let key_index = config.schema.index_of(key).map_err(|_| {
            Error::user(format!("the lookup key \"{key}\" is not a column of {}", config.location))
        })?;
        let table = load(&config, key_index)?;
        Ok(Self {
            config,
            key: key.to_owned(),
            key_index,
            reload_interval,
            table: RwLock::new(Arc::new(table)),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// The current table, reloaded first if the file changed and a check is due.
    fn current(&self) -> Result<Arc<Table>> {
        let due = {
            let mut checked = self.checked.lock().map_err(|_| poisoned())?;
            let due = checked.elapsed() >= self.reload_interval;
            if due {
                *checked = Instant::now();
            }
            due
        };
        let table = self.table.read().map_err(|_| poisoned())?.clone();
        if !due {
            return Ok(table);
        }
        let path = &self.config.location;
        let version = match file_version(path) {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(file = %path, %error, "cannot check the lookup file; keeping its last contents");
                return Ok(table);
            }
        };
        if table.version == Some(version) {
            return Ok(table);
        }
        match load(&self.config, self.key_index) {
            Ok(fresh) => {
                tracing::info!(file = %path, rows = fresh.rows.num_rows(), "reloaded the lookup file");
                let fresh = Arc::new(fresh);
                *self.table.write().map_err(|_| poisoned())? = fresh.clone();
                Ok(fresh)
            }
            Err(error) => {
                tracing::warn!(
                    file = %path,
                    error = %error.report(),
                    "cannot reload the lookup file; keeping its last contents"
                );
                Ok(table)
            }
        }
    }
}

impl LookupTable for FileLookup {
    fn schema(&self) -> SchemaRef {
        self.config.schema.clone()
    }

    fn key_column(&self) -> &str {
        &self.key
    }

    fn lookup(&self, keys: &dyn Array) -> Result<RecordBatch> {
        let table = self.current()?;
        let key_type = self.config.schema.field(self.key_index).data_type();
        let keys: ArrayRef = make_array(keys.to_data());
        let keys = if keys.data_type() == key_type {
            keys
        } else {
            cast(&keys, key_type).map_err(|e| {
                Error::user(format!(
                    "cannot look up keys of type {} in {}, whose key \"{}\" is of type {key_type}: {e}",
                    keys.data_type(),
                    self.config.location,
                    self.key
                ))
            })?
        };
        let encoded = table.converter.convert_columns(std::slice::from_ref(&keys))?;
        let mut seen = HashSet::new();
        let mut matches = Vec::new();
        for row in 0..keys.len() {
            if keys.is_null(row) {
                continue;
            }
            if let Some(&found) = table.index.get(encoded.row(row).as_ref())
                && seen.insert(found)
            {
                matches.push(found);
            }
        }
        Ok(take_record_batch(&table.rows, &UInt32Array::from(matches))?)
    }
}

fn poisoned() -> Error {
    Error::internal("a thread panicked while holding the lookup table's lock")
}

/// The file's modification time and length: what says it changed.
fn file_version(path: &Location) -> std::io::Result<(SystemTime, u64)> {
    let Some(path) = path.local_path() else {
        return Err(std::io::Error::other(format!("{path} is not a local file")));
    };
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.modified()?, metadata.len()))
}

/// Reads and indexes the whole file.
fn load(config: &SourceConfig, key_index: usize) -> Result<Table> {
    let path = &config.location;
    // Taken before reading, so that a write during the read is seen at the next check.
    let version = file_version(path).map_err(|e| Error::external(format!("reading {path}"), e))?;
    let Some(format) = config.format.text() else {
        return Err(Error::internal("a file lookup table was configured to read Parquet"));
    };
    let decoder = LineDecoder::new(config, format);
    let mut cursor = Cursor::start(path);
    let mut batches = Vec::new();
    let mut bad_lines = 0u64;
    let mut first_bad = None;
    loop {
        let lines = cursor.read_lines(LOAD_BATCH_LINES, false, decoder.skips_header())?;
        if lines.is_empty() {
            break;
        }
        let batch = decoder.decode(&lines, &mut |line, _raw, reason| {
            bad_lines += 1;
            first_bad.get_or_insert_with(|| format!("line {line}: {reason}"));
            Ok(())
        })?;
        batches.extend(batch);
    }
    if let Some(first) = first_bad {
        tracing::warn!(file = %path, bad_lines, first, "skipped bad lines of the lookup file");
    }
    let rows = concat_batches(&config.schema, &batches)?;
    let key = rows.column(key_index);
    let converter = RowConverter::new(vec![SortField::new(key.data_type().clone())])?;
    let encoded = converter.convert_columns(std::slice::from_ref(key))?;
    let row_count = u32::try_from(rows.num_rows()).map_err(|_| {
        Error::user(format!("{} has more than {} rows, too many for a lookup table", path, u32::MAX))
    })?;
    let mut index = HashMap::with_capacity(rows.num_rows());
    for row in 0..row_count {
        if key.is_valid(row as usize) {
            // Later rows replace earlier ones with the same key.
            index.insert(Box::<[u8]>::from(encoded.row(row as usize).as_ref()), row);
        }
    }
    Ok(Table { rows, index, converter, version: Some(version) })
}
