//! Where operators keep keyed state while a pipeline runs: in memory (the default) or in a
//! RocksDB database on local disk, for state larger than memory ([`StateBackend`]).
//!
//! A [`KeyedStore`] is a working copy, not a durable one: checkpoints remain the only durable
//! copy of state. A store is opened empty (any files left by an earlier run are removed), filled
//! from a checkpoint by the operator's restore, and deleted when it is dropped. It keeps no
//! write-ahead log, since a crash restarts from the last checkpoint anyway.
//!
//! Keys are stored under their key group (a big-endian `u16` prefix), so the entries of one key
//! group are contiguous and [`KeyedStore::scan`] yields them grouped in key-group order, which is
//! what a snapshot partitioned by key group needs.

use std::path::{Path, PathBuf};

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::error::{Error, Result};

/// Where a pipeline's operators keep keyed state while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// In memory: fastest; state must fit in memory.
    #[default]
    Memory,
    /// RocksDB databases under `dir` (one per operator and worker): state may exceed memory.
    RocksDb {
        /// Working directory; its contents are scratch and are replaced on every start.
        dir: PathBuf,
    },
}

impl StateBackend {
    /// The same backend for one operator instance: RocksDB gets its own directory
    /// `<dir>/<operator>/worker-<index>`.
    pub fn for_instance(&self, operator: &str, worker: usize) -> StateBackend {
        match self {
            StateBackend::Memory => StateBackend::Memory,
            StateBackend::RocksDb { dir } => {
                StateBackend::RocksDb { dir: dir.join(operator).join(format!("worker-{worker}")) }
            }
        }
    }

    /// Where an instance with this backend (see [`for_instance`](Self::for_instance)) writes
    /// its checkpoint parts before uploading them, so that a part larger than memory never is
    /// in memory: `<instance dir>.spill` for RocksDB, `None` (parts are built in memory) for
    /// memory.
    pub fn spill_dir(&self) -> Option<PathBuf> {
        match self {
            StateBackend::Memory => None,
            StateBackend::RocksDb { dir } => Some(dir.with_extension("spill")),
        }
    }

    /// The backend's name as the spec spells it.
    pub fn name(&self) -> &'static str {
        match self {
            StateBackend::Memory => "memory",
            StateBackend::RocksDb { .. } => "rocksdb",
        }
    }
}

/// A key-value store on local disk for the keyed state of one operator instance; see the
/// module documentation.
pub struct KeyedStore {
    db: Option<DB>,
    dir: PathBuf,
    write: WriteOptions,
}

impl KeyedStore {
    /// Opens an empty store in `dir`, removing anything there first.
    pub fn open_empty(dir: &Path) -> Result<Self> {
        let failed = |e: &dyn std::fmt::Display| {
            local_error(
                dir,
                format!("cannot open RocksDB: {e}; set `state.path` to a folder this process can write"),
            )
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| failed(&e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_max_background_jobs(2);
        let db = DB::open(&options, dir).map_err(|e| failed(&e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(Self { db: Some(db), dir: dir.to_owned(), write })
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("invariant: the database is only taken out in Drop")
    }

    /// The values of `keys` (each with its key group), in the same order; `None` where absent.
    pub fn get_many(&self, keys: &[(u32, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        let stored: Vec<Vec<u8>> = keys.iter().map(|(group, key)| stored_key(*group, key)).collect();
        self.db()
            .multi_get(&stored)
            .into_iter()
            .map(|value| value.map_err(|e| local_error(&self.dir, format!("read failed: {e}"))))
            .collect()
    }

    /// Applies `changes` atomically: `(key group, key, Some(value))` puts, `None` deletes.
    pub fn write<'a>(
        &self,
        changes: impl IntoIterator<Item = (u32, &'a [u8], Option<&'a [u8]>)>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (group, key, value) in changes {
            let key = stored_key(group, key);
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.db()
            .write_opt(batch, &self.write)
            .map_err(|e| local_error(&self.dir, format!("write failed: {e}")))
    }

    /// Calls `visit(key group, key, value)` for every entry, in key-group order and key order
    /// within a group, as of the moment the scan starts.
    pub fn scan(&self, mut visit: impl FnMut(u32, &[u8], &[u8]) -> Result<()>) -> Result<()> {
        for entry in self.db().iterator(IteratorMode::From(&[], Direction::Forward)) {
            let (key, value) = entry.map_err(|e| local_error(&self.dir, format!("scan failed: {e}")))?;
            let Some((group, key)) = key.split_first_chunk::<2>() else {
                return Err(local_error(&self.dir, "a key without its key group prefix".into()));
            };
            visit(u32::from(u16::from_be_bytes(*group)), key, &value)?;
        }
        Ok(())
    }

    /// Calls `visit(key, value)` for every entry of key group `group` whose key starts with
    /// `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        group: u32,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let start = stored_key(group, prefix);
        for entry in self.db().iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = entry.map_err(|e| local_error(&self.dir, format!("scan failed: {e}")))?;
            if !key.starts_with(&start) {
                break;
            }
            visit(&key[2..], &value)?;
        }
        Ok(())
    }

    /// Deletes every entry.
    pub fn clear(&self) -> Result<()> {
        let mut keys = Vec::new();
        for entry in self.db().iterator(IteratorMode::Start) {
            let (key, _) = entry.map_err(|e| local_error(&self.dir, format!("scan failed: {e}")))?;
            keys.push(key);
        }
        let mut batch = WriteBatch::default();
        keys.iter().for_each(|key| batch.delete(key));
        self.db()
            .write_opt(batch, &self.write)
            .map_err(|e| local_error(&self.dir, format!("write failed: {e}")))
    }

    /// Approximate size of the state in bytes: live data on disk plus memtables.
    pub fn size(&self) -> u64 {
        let property = |name: &str| self.db().property_int_value(name).ok().flatten().unwrap_or(0);
        property("rocksdb.estimate-live-data-size") + property("rocksdb.cur-size-all-mem-tables")
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for KeyedStore {
    fn drop(&mut self) {
        drop(self.db.take());
        // Scratch only: checkpoints hold the durable copy. Failing to clean up is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn local_error(dir: &Path, reason: String) -> Error {
    Error::LocalState { dir: dir.display().to_string(), reason }
}

fn stored_key(group: u32, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 2);
    stored.extend_from_slice(&(group as u16).to_be_bytes());
    stored.extend_from_slice(key);
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_deletes_and_scans_in_key_group_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op/worker-0");
        let store = KeyedStore::open_empty(&path).unwrap();
        store
            .write([
                (7, &b"b"[..], Some(&b"2"[..])),
                (300, &b"a"[..], Some(&b"3"[..])),
                (7, &b"a"[..], Some(&b"1"[..])),
                (0, &b"z"[..], Some(&b"0"[..])),
            ])
            .unwrap();
        let got = store.get_many(&[(7, b"a"), (7, b"z"), (300, b"a"), (0, b"a")]).unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"3".to_vec()), None]);
        store.write([(7, &b"a"[..], None)]).unwrap();
        let mut seen = Vec::new();
        store
            .scan(|group, key, value| {
                seen.push((group, key.to_vec(), value.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, b"z".to_vec(), b"0".to_vec()),
                (7, b"b".to_vec(), b"2".to_vec()),
                (300, b"a".to_vec(), b"3".to_vec()),
            ]
        );
        let mut in_group_7 = Vec::new();
        store
            .scan_prefix(7, b"", |key, value| {
                in_group_7.push((key.to_vec(), value.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(in_group_7, vec![(b"b".to_vec(), b"2".to_vec())]);
        store.write([(7, &b"ba"[..], Some(&b"4"[..])), (7, &b"c"[..], Some(&b"5"[..]))]).unwrap();
        let mut prefixed = Vec::new();
        store
            .scan_prefix(7, b"b", |key, _| {
                prefixed.push(key.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(prefixed, vec![b"b".to_vec(), b"ba".to_vec()]);
        store.clear().unwrap();
        let mut left = 0;
        store
            .scan(|_, _, _| {
                left += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(left, 0);
        drop(store);
        assert!(!path.exists(), "the working directory is removed with the store");
    }

    #[test]
    fn opening_discards_what_an_earlier_run_left() {
        let dir = tempfile::tempdir().unwrap();
        // A killed run leaves its files behind.
        std::fs::write(dir.path().join("000042.sst"), b"left over").unwrap();
        let store = KeyedStore::open_empty(dir.path()).unwrap();
        assert!(!dir.path().join("000042.sst").exists());
        assert_eq!(store.get_many(&[(1, b"k")]).unwrap(), vec![None]);
    }

    #[test]
    fn instance_directories_are_per_operator_and_worker() {
        let backend = StateBackend::RocksDb { dir: PathBuf::from("/tmp/state") };
        assert_eq!(
            backend.for_instance("counts", 3),
            StateBackend::RocksDb { dir: PathBuf::from("/tmp/state/counts/worker-3") }
        );
        assert_eq!(StateBackend::Memory.for_instance("counts", 3), StateBackend::Memory);
        let instance = backend.for_instance("counts", 3);
        assert_eq!(instance.spill_dir(), Some(PathBuf::from("/tmp/state/counts/worker-3.spill")));
        assert_eq!(StateBackend::Memory.spill_dir(), None);
    }
}
