//! The contract for processors (SQL today, WebAssembly later) and for key expressions used by
//! keyed exchange. Implementations live outside the runtime; the runtime drives them.
//!
//! A processor is either stateless (the default: every batch is transformed on its own) or
//! stateful ([`Processor::is_stateful`]). A stateful processor:
//! - sees its inputs in epoch order: every batch of an epoch before any batch of a later one;
//! - is told when the event-time watermark of its inputs advances ([`Processor::on_watermark`]),
//!   which is when windows and timers fire;
//! - keeps its state partitioned by key group (see [`crate::exchange::key_group`]), so that a
//!   snapshot taken at one parallelism can be restored at another: [`Processor::snapshot`]
//!   writes blobs ("chunks") tagged with their key group to a [`SnapshotWriter`], and
//!   [`Processor::restore`] receives the chunks of the key groups the worker owns after a
//!   restart. A processor whose state is larger than memory cuts its key groups into chunks of
//!   about [`SnapshotWriter::chunk_bytes`], so that neither taking nor restoring a checkpoint
//!   holds more than one chunk of it in memory.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use sluice_state::StateBackend;

use crate::connector::WorkerPosition;
use crate::dead_letter::DeadLetterSink;
use crate::error::Result;

/// Event time in milliseconds since the Unix epoch. A watermark `w` promises that no more
/// records with event time `<= w` are expected (later ones are late).
pub type EventTime = i64;

/// The watermark meaning "no more input at all": end of a bounded input.
pub const END_OF_TIME: EventTime = i64::MAX;

/// What a worker's processor instance gets from the runtime before its first batch.
#[derive(Clone)]
pub struct ProcessorContext {
    /// This worker's position.
    pub worker: WorkerPosition,
    /// Where records the processor cannot handle go, e.g. records later than the allowed
    /// lateness of a window. Policy is always dead-letter.
    pub dead_letters: DeadLetterSink,
    /// Where this instance keeps keyed state: memory, or its own RocksDB directory. A
    /// processor without on-disk support keeps its state in memory whatever this says.
    pub state: StateBackend,
}

/// The state of one key group of one operator, as opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroupState {
    /// The key group, in `0..MAX_KEY_GROUPS`.
    pub key_group: u32,
    /// Serialized state; the format belongs to the processor.
    pub bytes: Vec<u8>,
}

/// The chunk size a [`SnapshotWriter`] asks for unless told otherwise: 1 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

/// Where [`Processor::snapshot`] writes a snapshot, one chunk at a time.
pub trait SnapshotWriter {
    /// Writes one chunk of the state of key group `key_group`. A key group may be written in
    /// several chunks, in any interleaving with other key groups; [`Processor::restore`] gets
    /// the chunks of one key group in the order they were written. Each chunk must be readable
    /// on its own (the format belongs to the processor).
    fn write(&mut self, key_group: u32, bytes: &[u8]) -> Result<()>;

    /// About how large a chunk should be. A processor whose state is not all in memory (e.g.
    /// in RocksDB) must cut its key groups into chunks of about this size, exceeding it by at
    /// most one entry, so that a snapshot holds no more than one chunk in memory. Default:
    /// [`DEFAULT_CHUNK_BYTES`].
    fn chunk_bytes(&self) -> usize {
        DEFAULT_CHUNK_BYTES
    }
}

/// Collects a snapshot in memory, one entry per chunk (for tests and small state).
impl SnapshotWriter for Vec<KeyGroupState> {
    fn write(&mut self, key_group: u32, bytes: &[u8]) -> Result<()> {
        self.push(KeyGroupState { key_group, bytes: bytes.to_vec() });
        Ok(())
    }
}

/// A transformation of batches, configured once and cloned onto every worker.
pub trait Processor: Send {
    /// Schema of every batch this processor emits.
    fn output_schema(&self) -> SchemaRef;

    /// Transforms one batch that arrived on input `input` (an index into the processor's
    /// declared inputs), appending zero or more result batches to `out`.
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;

    /// A fresh instance for another worker.
    fn clone_box(&self) -> Box<dyn Processor>;

    /// Whether this processor keeps state across batches. Default: no.
    fn is_stateful(&self) -> bool {
        false
    }

    /// The keys the runtime must exchange each input by before this processor sees it (one per
    /// input), so that all rows of a key meet on one worker. Empty: inputs are not exchanged
    /// by the processor's own needs (the spec's `key_by` may still apply). Default: empty.
    fn key_by(&self) -> Vec<Arc<dyn KeyHasher>> {
        Vec::new()
    }

    /// Called once per worker instance before any other call. Default: nothing.
    fn open(&mut self, _context: ProcessorContext) -> Result<()> {
        Ok(())
    }

    /// The watermark of all inputs (the minimum over them) advanced to `watermark`
    /// ([`END_OF_TIME`] when every input has ended): emit what it completes. Only called on
    /// stateful processors. Default: nothing.
    fn on_watermark(&mut self, _watermark: EventTime, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Every batch of the current epoch has been processed: a point to emit per-epoch
    /// results, such as the updated rows of a non-windowed aggregation. Only called on
    /// stateful processors. Default: nothing.
    fn end_of_epoch(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Writes the state to `out`, in one or more chunks per non-empty key group (see
    /// [`SnapshotWriter`]). Called at a checkpoint, after every batch of the epochs it covers
    /// and none after. Default: no state.
    fn snapshot(&mut self, _out: &mut dyn SnapshotWriter) -> Result<()> {
        Ok(())
    }

    /// Loads chunks written by [`Processor::snapshot`] (possibly on other workers, at another
    /// parallelism). Called after `open` and before any batch, zero or more times, each time
    /// with some chunks; over all calls, it gets every chunk of exactly the key groups this
    /// worker owns, those of one key group in the order they were written. Default: nothing.
    fn restore(&mut self, _states: Vec<KeyGroupState>) -> Result<()> {
        Ok(())
    }

    /// Approximate size of the state in memory, in bytes. Default: 0.
    fn state_size(&self) -> usize {
        0
    }
}

/// Hashes the key of every row of a batch; drives keyed exchange between workers.
pub trait KeyHasher: Send + Sync {
    /// Writes one hash per row of `batch` into `hashes` (cleared first). Rows with equal keys
    /// must get equal hashes on every worker and process.
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()>;
}

/// A table that processors look rows up in by key, for enrichment joins (a file, a database
/// table). Shared by all workers; implementations do their own caching if they need it.
pub trait LookupTable: Send + Sync {
    /// Schema of the rows `lookup` returns.
    fn schema(&self) -> SchemaRef;

    /// Name of the key column in [`LookupTable::schema`].
    fn key_column(&self) -> &str;

    /// The rows whose key equals one of `keys` (an array of the key column's type; nulls
    /// match nothing), in any order, at most one row per key.
    fn lookup(&self, keys: &dyn arrow::array::Array) -> Result<RecordBatch>;

    /// How long a caller (such as a lookup join) may reuse a row it looked up, or the absence
    /// of one, before asking this table again. A table that caches on its own, with its own
    /// expiry, returns zero so that its rows are not cached twice. Default:
    /// [`DEFAULT_LOOKUP_REUSE`].
    fn reuse_for(&self) -> Duration {
        DEFAULT_LOOKUP_REUSE
    }
}

/// How long callers reuse looked-up rows of a table that does not say otherwise
/// ([`LookupTable::reuse_for`]).
pub const DEFAULT_LOOKUP_REUSE: Duration = Duration::from_secs(60);
