//! Test support: store fixtures over a local directory and a real `s3s-fs` server.

use std::path::PathBuf;

pub use sluice_state::testing::{BUCKET, S3sFs};
use sluice_state::{CheckpointStore, StoreOptions};

/// Where a test's stores live: how to open one by name, and where its files are on disk (so tests
/// can damage objects behind the store's back).
pub trait Backend {
    /// Opens (a new writer handle on) the store called `name`.
    fn open(&self, name: &str) -> CheckpointStore;
    /// The directory on disk holding the objects of the store called `name`.
    fn files(&self, name: &str) -> PathBuf;
}

/// Stores in subdirectories of a temporary directory.
pub struct LocalBackend {
    dir: tempfile::TempDir,
}

impl LocalBackend {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create a temporary directory") }
    }
}

impl Backend for LocalBackend {
    fn open(&self, name: &str) -> CheckpointStore {
        let location = self.files(name);
        CheckpointStore::open(location.to_str().expect("temporary paths are UTF-8"), &StoreOptions::default())
            .expect("open a local store")
    }

    fn files(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Backend for S3sFs {
    fn open(&self, name: &str) -> CheckpointStore {
        CheckpointStore::open(&format!("s3://{BUCKET}/runs/{name}"), &self.options())
            .expect("open an S3 store")
    }

    fn files(&self, name: &str) -> PathBuf {
        self.root().join(BUCKET).join("runs").join(name)
    }
}
