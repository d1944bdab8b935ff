//! Dead letters: records a source could not decode, a processor could not place (too late) or a
//! sink could not deliver, kept with the reason instead of being lost.
//!
//! Each worker writes its own JSON Lines file under the pipeline's dead-letter directory, opened
//! on the first bad record, so a clean run leaves no file behind. Counts are shared by all
//! workers of a process and appear in the run summary.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// What a source does with a record it cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the pipeline with an error naming the record.
    Fail,
    /// Skip the record; it is counted but not kept.
    Drop,
    /// Write the record with its reason to the dead-letter destination (the default).
    #[default]
    DeadLetter,
}

/// A record that could not be processed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where the record came from, e.g. `data/clicks.jsonl:17`.
    pub position: String,
    /// The raw bytes of the record.
    pub raw: Vec<u8>,
    /// Why it was rejected.
    pub reason: String,
}

/// Counts of bad records for one source, shared by all its workers in a process.
#[derive(Debug, Default)]
pub struct DeadLetterCounts {
    /// Records written to the dead-letter destination.
    pub dead_lettered: AtomicU64,
    /// Records dropped by the `drop` policy.
    pub dropped: AtomicU64,
}

/// One worker's handle for reporting bad records of one source.
#[derive(Debug, Clone)]
pub struct DeadLetterSink {
    pipeline: Arc<str>,
    source: Arc<str>,
    policy: OnError,
    path: PathBuf,
    file: Option<Arc<std::sync::Mutex<BufWriter<File>>>>,
    counts: Arc<DeadLetterCounts>,
}

impl DeadLetterSink {
    /// A sink for `source` that applies `policy`, writing dead letters to `path` (a JSON Lines
    /// file created on first use, with its parent directories).
    pub fn new(
        pipeline: &str,
        source: &str,
        policy: OnError,
        path: PathBuf,
        counts: Arc<DeadLetterCounts>,
    ) -> Self {
        Self { pipeline: pipeline.into(), source: source.into(), policy, path, file: None, counts }
    }

    /// The policy this sink applies.
    pub fn policy(&self) -> OnError {
        self.policy
    }

    /// Handles one bad record according to the policy: an error for `fail`, a count for `drop`,
    /// a JSON line for `dead_letter`.
    pub fn report(&mut self, letter: DeadLetter) -> Result<()> {
        self.report_detailed(letter, serde_json::Map::new())
    }

    /// Like [`report`](Self::report), with facts about the failure that readers of the
    /// dead-letter file may want to filter on (e.g. an HTTP status and the number of attempts),
    /// written as extra fields of the JSON line. The standard fields (`pipeline`, `source`,
    /// `position`, `raw`, `reason`, `time_ms`) win over details of the same name.
    pub fn report_detailed(
        &mut self,
        letter: DeadLetter,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        match self.policy {
            OnError::Fail => Err(Error::user(format!(
                "bad record at {}: {} (set `on_error: dead_letter` or `drop` on the source to keep going)",
                letter.position, letter.reason
            ))),
            OnError::Drop => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            OnError::DeadLetter => {
                self.write(&letter, details)?;
                self.counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Flushes buffered dead letters to the file.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(file) = &self.file {
            let mut file = file.lock().map_err(|_| Error::internal("dead-letter lock poisoned"))?;
            file.flush().map_err(|e| Error::external(format!("flushing {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        letter: &DeadLetter,
        mut line: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let file = match &self.file {
            Some(file) => file.clone(),
            None => {
                let file = open_append(&self.path)?;
                let file = Arc::new(std::sync::Mutex::new(BufWriter::new(file)));
                self.file = Some(file.clone());
                file
            }
        };
        line.insert("pipeline".into(), self.pipeline.as_ref().into());
        line.insert("source".into(), self.source.as_ref().into());
        line.insert("position".into(), letter.position.clone().into());
        match std::str::from_utf8(&letter.raw) {
            Ok(text) => line.insert("raw".into(), text.into()),
            Err(_) => line.insert("raw_hex".into(), hex(&letter.raw).into()),
        };
        line.insert("reason".into(), letter.reason.clone().into());
        line.insert("time_ms".into(), now_ms().into());
        let mut file = file.lock().map_err(|_| Error::internal("dead-letter lock poisoned"))?;
        serde_json::to_writer(&mut *file, &line)
            .map_err(|e| Error::external(format!("writing {}", self.path.display()), e))?;
        file.write_all(b"\n").map_err(|e| Error::external(format!("writing {}", self.path.display()), e))
    }
}

impl Drop for DeadLetterSink {
    fn drop(&mut self) {
        // Best effort: the runtime flushes explicitly at the end of a run; this covers early exits.
        let _ = self.flush();
    }
}

fn open_append(path: &PathBuf) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::external(format!("creating {}", parent.display()), e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::external(format!("opening dead-letter file {}", path.display()), e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
