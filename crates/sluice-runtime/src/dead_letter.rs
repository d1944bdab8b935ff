//! Dead letters: records a node could not handle (a source could not decode them, a processor
//! rejected them as late, a sink could not deliver them), kept with the reason instead of being
//! lost.
//!
//! By default each worker writes its own JSON Lines file under the pipeline's dead-letter
//! directory, opened on the first bad record, so a clean run leaves no file behind. When the
//! pipeline names a dead-letter sink, letters are queued per worker instead
//! ([`DeadLetterQueue`]) and a dataflow operator hands them to that sink as rows of
//! [`dead_letter_schema`], like any other output. Counts are shared by all workers of a process
//! and appear in the run summary.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
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

/// What kind of failure a dead letter records, by the role of the node that reported it.
pub mod kind {
    /// A source could not decode the record.
    pub const BAD_RECORD: &str = "bad_record";
    /// A processor rejected the record (e.g. late data, no event time).
    pub const REJECTED: &str = "rejected";
    /// A sink could not deliver the record.
    pub const UNDELIVERABLE: &str = "undeliverable";
}

/// A dead letter with everything its destination records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedLetter {
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// The node that reported it.
    pub node: Arc<str>,
    /// One of the [`kind`] constants.
    pub kind: &'static str,
    /// Where the record came from.
    pub position: String,
    /// The raw bytes of the record.
    pub raw: Vec<u8>,
    /// Why it was rejected.
    pub reason: String,
    /// Facts about the failure (e.g. an HTTP status and the number of attempts).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// When it was reported, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// One worker's dead letters on their way to the dead-letter sink: nodes push, the dead-letter
/// operator of the same worker drains.
#[derive(Debug, Default)]
pub struct DeadLetterQueue {
    letters: Mutex<Vec<QueuedLetter>>,
}

impl DeadLetterQueue {
    fn push(&self, letter: QueuedLetter) -> Result<()> {
        self.letters.lock().map_err(|_| Error::internal("dead-letter queue lock poisoned"))?.push(letter);
        Ok(())
    }

    /// Takes every queued letter, oldest first.
    pub fn drain(&self) -> Result<Vec<QueuedLetter>> {
        Ok(std::mem::take(
            &mut *self.letters.lock().map_err(|_| Error::internal("dead-letter queue lock poisoned"))?,
        ))
    }
}

/// The columns of dead letters given to a dead-letter sink: `pipeline`, `node`, `kind`,
/// `position`, `raw` (the record as text, when it is UTF-8), `raw_hex` (otherwise), `reason`,
/// `details` (a JSON object of facts about the failure, or null) and `time`.
pub fn dead_letter_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pipeline", false),
        text("node", false),
        text("kind", false),
        text("position", false),
        text("raw", true),
        text("raw_hex", true),
        text("reason", false),
        text("details", true),
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

/// Dead letters as one batch of [`dead_letter_schema`].
pub fn dead_letter_batch(letters: &[QueuedLetter]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&QueuedLetter) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(letters.iter().map(f)))
    };
    let columns = vec![
        text(&|l| Some(l.pipeline.to_string())),
        text(&|l| Some(l.node.to_string())),
        text(&|l| Some(l.kind.to_owned())),
        text(&|l| Some(l.position.clone())),
        text(&|l| std::str::from_utf8(&l.raw).ok().map(str::to_owned)),
        text(&|l| std::str::from_utf8(&l.raw).is_err().then(|| hex(&l.raw))),
        text(&|l| Some(l.reason.clone())),
        text(&|l| (!l.details.is_empty()).then(|| serde_json::Value::Object(l.details.clone()).to_string())),
        Arc::new(TimestampMillisecondArray::from_iter_values(letters.iter().map(|l| l.time_ms))) as ArrayRef,
    ];
    Ok(RecordBatch::try_new(dead_letter_schema(), columns)?)
}

/// One worker's handle for reporting bad records of one node.
#[derive(Debug, Clone)]
pub struct DeadLetterSink {
    pipeline: Arc<str>,
    node: Arc<str>,
    kind: &'static str,
    policy: OnError,
    path: PathBuf,
    file: Option<Arc<std::sync::Mutex<BufWriter<File>>>>,
    queue: Option<Arc<DeadLetterQueue>>,
    counts: Arc<DeadLetterCounts>,
}

impl DeadLetterSink {
    /// A sink for `node` that applies `policy`, writing dead letters of kind
    /// [`kind::BAD_RECORD`] to `path` (a JSON Lines file created on first use, with its parent
    /// directories).
    pub fn new(
        pipeline: &str,
        node: &str,
        policy: OnError,
        path: PathBuf,
        counts: Arc<DeadLetterCounts>,
    ) -> Self {
        Self {
            pipeline: pipeline.into(),
            node: node.into(),
            kind: kind::BAD_RECORD,
            policy,
            path,
            file: None,
            queue: None,
            counts,
        }
    }

    /// The same sink recording letters as `kind` (one of the [`kind`] constants).
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The same sink sending letters to `queue` (for the pipeline's dead-letter sink) instead
    /// of the file.
    pub fn with_queue(mut self, queue: Arc<DeadLetterQueue>) -> Self {
        self.queue = Some(queue);
        self
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
    /// written as extra fields of the JSON line. The standard fields (`pipeline`, `node`, `kind`,
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
                match &self.queue {
                    Some(queue) => queue.push(QueuedLetter {
                        pipeline: self.pipeline.clone(),
                        node: self.node.clone(),
                        kind: self.kind,
                        position: letter.position,
                        raw: letter.raw,
                        reason: letter.reason,
                        details,
                        time_ms: now_ms() as i64,
                    })?,
                    None => self.write(&letter, details)?,
                }
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
        line.insert("node".into(), self.node.as_ref().into());
        line.insert("kind".into(), self.kind.into());
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
