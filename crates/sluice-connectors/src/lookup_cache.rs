//! The cache of lookup tables that read an external system (PostgreSQL, Redis): looked-up rows,
//! and keys without a row, kept for a time to live in one cache shared by all workers, and the
//! `cache` option that configures it.
//!
//! When the cache is full, expired entries go first, then the older half. Tables using it tell
//! callers not to cache on top ([`LookupTable::reuse_for`] is zero), so a row is never older
//! than the time to live.
//!
//! [`LookupTable::reuse_for`]: sluice_runtime::processor::LookupTable::reuse_for

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, make_array};
use arrow::compute::{cast, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use serde::Deserialize;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::options;

/// Caching of looked-up rows (and of keys without a row), shared by all workers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOptions {
    /// How long a looked-up row or miss is reused, e.g. `30s`; default `60s`; `0s` disables
    /// the cache.
    pub ttl: Option<String>,
    /// Keys kept at most; when full, expired entries go, then the older half; default 100,000.
    pub max_entries: Option<usize>,
}

/// Option names under `cache`.
pub const CACHE_OPTIONS: &[&str] = &["ttl", "max_entries"];

/// The checked `cache` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// Zero turns the cache off.
    pub ttl: Duration,
    pub max_entries: usize,
}

impl CacheSettings {
    /// The settings from the raw `cache` option at `options.cache`; problems are added to
    /// `diagnostics` and replaced by defaults.
    pub(crate) fn check(value: Option<&serde_json::Value>, diagnostics: &mut Vec<Diagnostic>) -> Self {
        let cache = match value {
            Some(value) => match options::parse::<CacheOptions>(value, CACHE_OPTIONS, "options.cache") {
                Ok(cache) => cache,
                Err(errors) => {
                    diagnostics.extend(errors);
                    CacheOptions::default()
                }
            },
            None => CacheOptions::default(),
        };
        let ttl = match cache.ttl.as_deref().map(sluice_spec::parse_duration) {
            None => Duration::from_secs(60),
            Some(Ok(ttl)) => ttl,
            Some(Err(message)) => {
                diagnostics.push(Diagnostic::new("options.cache.ttl", message));
                Duration::ZERO
            }
        };
        if cache.max_entries == Some(0) {
            diagnostics.push(
                Diagnostic::new("options.cache.max_entries", "must be at least 1")
                    .suggest("set `ttl: 0s` to turn the cache off"),
            );
        }
        Self { ttl, max_entries: cache.max_entries.unwrap_or(100_000) }
    }
}

/// Rows of one lookup table by key, with the time each was loaded.
pub(crate) struct LookupCache {
    schema: SchemaRef,
    key_index: usize,
    settings: CacheSettings,
    /// Encodes keys (the key column's type).
    keys: RowConverter,
    /// Encodes whole rows.
    rows: RowConverter,
    entries: Mutex<HashMap<OwnedRow, Cached>>,
}

/// A cached row, or the knowledge that the key has none.
struct Cached {
    row: Option<OwnedRow>,
    loaded: Instant,
}

impl LookupCache {
    /// A cache of rows of `schema`, keyed by column `key_index`.
    pub(crate) fn new(schema: SchemaRef, key_index: usize, settings: CacheSettings) -> Result<Self> {
        let keys = RowConverter::new(vec![SortField::new(schema.field(key_index).data_type().clone())])?;
        let rows = RowConverter::new(
            schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect(),
        )?;
        Ok(Self { schema, key_index, settings, keys, rows, entries: Mutex::new(HashMap::new()) })
    }

    /// The rows whose key is one of `keys` (nulls match nothing), at most one per key: those
    /// cached and not expired, and the others from `fetch`, which is called at most once, with
    /// the distinct missing keys cast to the key column's type, and returns their rows (of the
    /// cache's schema, in any order; when a key repeats, its last row wins; a key without a row
    /// has no match, which is cached as well). Keys that cannot be cast are an error naming
    /// `system`, e.g. `Redis`.
    pub(crate) fn lookup(
        &self,
        system: &str,
        keys: &dyn Array,
        fetch: impl FnOnce(&ArrayRef) -> Result<RecordBatch>,
    ) -> Result<RecordBatch> {
        let key = self.schema.field(self.key_index);
        let keys: ArrayRef = make_array(keys.to_data());
        let keys = &if keys.data_type() == key.data_type() {
            keys
        } else {
            cast(&keys, key.data_type()).map_err(|e| {
                Error::user(format!(
                    "cannot look up keys of type {} in {system}, whose key column \"{}\" is of type {}: {e}",
                    keys.data_type(),
                    key.name(),
                    key.data_type()
                ))
            })?
        };
        let encoded = self.keys.convert_columns(std::slice::from_ref(keys))?;
        let now = Instant::now();
        let mut found: Vec<OwnedRow> = Vec::new();
        let mut missing: Vec<u32> = Vec::new();
        {
            let entries = self.entries.lock().map_err(|_| poisoned())?;
            let mut seen = HashSet::new();
            for index in 0..keys.len() {
                if keys.is_null(index) || !seen.insert(encoded.row(index)) {
                    continue;
                }
                match entries.get(&encoded.row(index).owned()) {
                    Some(cached) if now.duration_since(cached.loaded) < self.settings.ttl => {
                        found.extend(cached.row.clone());
                    }
                    _ => missing.push(index as u32),
                }
            }
        }
        if !missing.is_empty() {
            let wanted = take(keys, &UInt32Array::from(missing.clone()), None)?;
            let fetched = fetch(&wanted)?;
            let fetched_keys = self.keys.convert_columns(&[fetched.column(self.key_index).clone()])?;
            let fetched_rows = self.rows.convert_columns(fetched.columns())?;
            // The last row of a repeated key wins.
            let by_key: HashMap<_, usize> =
                (0..fetched.num_rows()).map(|i| (fetched_keys.row(i), i)).collect();
            let caching = !self.settings.ttl.is_zero();
            let mut entries = self.entries.lock().map_err(|_| poisoned())?;
            if caching {
                self.make_room(&mut entries, missing.len(), now);
            }
            for index in missing {
                let key = encoded.row(index as usize);
                let row = by_key.get(&key).map(|i| fetched_rows.row(*i).owned());
                found.extend(row.clone());
                if caching {
                    entries.insert(key.owned(), Cached { row, loaded: now });
                }
            }
        }
        if found.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let columns = self.rows.convert_rows(found.iter().map(OwnedRow::row))?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Makes room for `adding` entries: drops expired ones, then the older half if needed.
    fn make_room(&self, entries: &mut HashMap<OwnedRow, Cached>, adding: usize, now: Instant) {
        if entries.len() + adding <= self.settings.max_entries {
            return;
        }
        entries.retain(|_, cached| now.duration_since(cached.loaded) < self.settings.ttl);
        if entries.len() + adding <= self.settings.max_entries {
            return;
        }
        let mut loaded: Vec<Instant> = entries.values().map(|c| c.loaded).collect();
        let middle = loaded.len() / 2;
        let (_, median, _) = loaded.select_nth_unstable(middle);
        let median = *median;
        entries.retain(|_, cached| cached.loaded > median);
    }
}

fn poisoned() -> Error {
    Error::internal("a thread panicked while holding a lookup table's cache")
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec()))],
        )
        .unwrap()
    }

    fn keys(ids: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(ids.to_vec()))
    }

    #[test]
    fn rows_and_misses_are_fetched_once_per_distinct_key_and_then_cached() {
        let settings = CacheSettings { ttl: Duration::from_secs(60), max_entries: 100 };
        let cache = LookupCache::new(schema(), 0, settings).unwrap();
        let fetched = Cell::new(Vec::new());
        let fetch = |wanted: &ArrayRef| {
            let wanted: Vec<i64> = wanted.as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
            fetched.set(wanted);
            // Key 1 twice: the last row wins. Key 3 has no row.
            Ok(rows(&[1, 2, 1], &["old", "bob", "ann"]))
        };
        let found = cache.lookup("test", &keys(&[Some(1), None, Some(2), Some(1), Some(3)]), fetch).unwrap();
        assert_eq!(fetched.take(), [1, 2, 3]);
        assert_eq!(found, rows(&[1, 2], &["ann", "bob"]));
        let again = cache
            .lookup("test", &keys(&[Some(3), Some(2)]), |_| panic!("everything is cached, misses included"))
            .unwrap();
        assert_eq!(again, rows(&[2], &["bob"]));
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_a_full_cache_drops_the_older_half() {
        let off =
            LookupCache::new(schema(), 0, CacheSettings { ttl: Duration::ZERO, max_entries: 10 }).unwrap();
        let calls = Cell::new(0);
        for _ in 0..2 {
            off.lookup("test", &keys(&[Some(1)]), |_| {
                calls.set(calls.get() + 1);
                Ok(rows(&[1], &["a"]))
            })
            .unwrap();
        }
        assert_eq!(calls.get(), 2);
        let small =
            LookupCache::new(schema(), 0, CacheSettings { ttl: Duration::from_secs(60), max_entries: 4 })
                .unwrap();
        for id in 0..6 {
            small.lookup("test", &keys(&[Some(id)]), |_| Ok(rows(&[id], &["x"]))).unwrap();
        }
        assert!(small.entries.lock().unwrap().len() <= 4);
    }
}
