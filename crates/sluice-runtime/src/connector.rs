//! The contract between the runtime and connectors: how a source produces Arrow batches and how a
//! sink consumes them. Connectors implement these traits; the runtime drives them from timely
//! operators, one instance per worker.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::dead_letter::DeadLetterSink;
use crate::error::Result;

/// Where one worker sits in the cluster: used by sources and sinks to split their work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerPosition {
    /// Global index of this worker, in `0..peers`.
    pub index: usize,
    /// Total number of workers in all processes.
    pub peers: usize,
}

/// One named output stream of a source. Most sources have one output, named `""`; the Nexmark
/// source has three (`person`, `auction`, `bid`).
#[derive(Debug, Clone)]
pub struct SourceOutput {
    /// Output name; `""` for a source's single default output.
    pub name: String,
    /// Schema of every batch emitted on this output.
    pub schema: SchemaRef,
}

/// A configured source, shared by all workers; creates one reader per worker.
pub trait Source: Send + Sync {
    /// The outputs this source emits, in a fixed order; `SourceBatch::output` indexes this list.
    fn outputs(&self) -> Vec<SourceOutput>;

    /// Creates the reader for one worker. `used_outputs[i]` says whether output `i` has any
    /// consumer; a reader may skip producing unused outputs.
    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>>;

    /// Whether readers can report positions ([`SourceReader::snapshot`]) and resume from them,
    /// reading the same records again: what exactly-once recovery needs. Default: no.
    fn replayable(&self) -> bool {
        false
    }
}

/// The position of one split (partition) of a source: where to resume reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitState {
    /// Stable name of the split, the same at any parallelism (e.g. a file path, a partition
    /// number).
    pub split: String,
    /// Serialized position; the format belongs to the connector.
    pub position: Vec<u8>,
}

/// What a worker's source reader gets from the runtime.
#[derive(Clone)]
pub struct SourceContext {
    /// This worker's position.
    pub worker: WorkerPosition,
    /// Whether each output (in `Source::outputs` order) has a consumer.
    pub used_outputs: Vec<bool>,
    /// Where bad records go, according to the source's `on_error` policy.
    pub dead_letters: DeadLetterSink,
    /// Set when the pipeline should stop; readers of unbounded sources end when they see it.
    pub stop: Arc<AtomicBool>,
    /// When resuming from a checkpoint: the positions of all splits of this source saved by all
    /// workers of the previous run (possibly at another parallelism). A reader resumes the
    /// splits it owns from these and starts splits absent here from the beginning.
    pub restore: Option<Arc<Vec<SplitState>>>,
    /// Whether the pipeline takes checkpoints. If so, [`SourceReader::snapshot`] is called at
    /// every checkpoint and [`SourceReader::positions_committed`] once it is complete; if not,
    /// neither is ever called, so a reader that acknowledges messages to the external system
    /// after checkpoints must acknowledge them on its own (e.g. as it reads them).
    pub checkpointing: bool,
}

/// A batch produced by a source reader, for one of the source's outputs.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// Index into `Source::outputs`.
    pub output: usize,
    /// Which of the reader's splits the records come from, in `0..SourceReader::splits()`:
    /// event-time watermarks are tracked per split.
    pub split: usize,
    /// The records.
    pub batch: RecordBatch,
}

/// What a reader reports after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More data may be available right away; poll again soon.
    Ready,
    /// Nothing available now; poll again after the given delay (e.g. rate limit, follow mode).
    Idle(Duration),
    /// The source is exhausted on this worker; it will never produce again.
    Finished,
}

/// Produces batches for one worker. Called from a timely operator; must not block for long.
pub trait SourceReader {
    /// Appends up to roughly `max_rows` rows, as one or more batches, to `out`, and says whether
    /// more may come. Errors are fatal for the pipeline (bad records are not errors: they go to
    /// the dead-letter sink in the context, per the source's policy).
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus>;

    /// How many splits this reader reads now (`SourceBatch::split` indexes them). A reader
    /// with no split is idle for watermarks and does not hold event time back. Default: 1.
    fn splits(&self) -> usize {
        1
    }

    /// Positions of this reader's splits after every record returned so far, for a
    /// checkpoint. Called at every checkpoint; the positions are saved in the checkpoint (and
    /// restored from it) only when [`Source::replayable`] is true. A reader that cannot
    /// replay may return markers of how far it has read (e.g. a count of messages returned),
    /// which come back in [`SourceReader::positions_committed`] once that checkpoint is
    /// complete, so that it can acknowledge exactly the messages the checkpoint covers.
    /// Default: none.
    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(Vec::new())
    }

    /// A checkpoint holding `positions` (what [`SourceReader::snapshot`] returned for it) is
    /// complete, or reading ended with these positions (then called before the final
    /// checkpoint completes). Called in checkpoint order. A reader may tell the external
    /// system, e.g. commit a Kafka consumer group's offsets so that lag tools see progress, or
    /// acknowledge MQTT messages; resuming always uses the checkpoint, never that. Default:
    /// nothing.
    fn positions_committed(&mut self, _positions: &[SplitState]) -> Result<()> {
        Ok(())
    }

    /// How many records the source holds that this reader has not read yet (e.g. a Kafka
    /// consumer's lag over its partitions), if known. Exported as the source's `lag` metric.
    fn lag(&self) -> Option<u64> {
        None
    }

    /// Whether split `split` is known to hold records this reader has not read yet (a Kafka
    /// partition behind its high watermark). Such a split is never idle for watermarks, however
    /// long it has been silent: a reader slowed down (a busy machine, a slow sink) must not let
    /// event time pass its backlog, which would make those records late. Default: not known.
    fn backlogged(&self, _split: usize) -> bool {
        false
    }
}

/// A configured sink, shared by all workers; creates one writer per worker.
pub trait Sink: Send + Sync {
    /// Creates the writer for one worker; `schema` is the schema of the batches it will receive.
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>>;

    /// Something this sink must own alone, such as an output folder, named so that two sinks
    /// of one pipeline claiming the same thing can be rejected before they corrupt each other's
    /// output. Default: nothing.
    fn exclusive_target(&self) -> Option<String> {
        None
    }
}

/// What a worker's sink writer gets from the runtime.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// This worker's position.
    pub worker: WorkerPosition,
    /// Schema of the batches the writer receives.
    pub schema: SchemaRef,
    /// Whether the pipeline takes checkpoints. If so, a transactional writer makes output
    /// visible only in [`SinkWriter::commit`], never on epochs or rolls.
    pub checkpointing: bool,
    /// When resuming from a checkpoint: what every writer of the previous run returned from
    /// [`SinkWriter::prepare`] for it, indexed by that run's worker index. That checkpoint is
    /// complete, so all of it must become visible (idempotently: it may already be). The
    /// writer with `worker.index == 0` does this and removes leftovers of the crashed run
    /// that no checkpoint covers; other writers ignore it.
    pub restore: Option<Arc<Vec<Vec<u8>>>>,
    /// Where records the writer could not deliver go (with the `dead_letter` policy), e.g. a
    /// request an HTTP API still rejects after its retries. A writer that reports here must
    /// have flushed it before [`SinkWriter::prepare`] and [`SinkWriter::finish`] return, so
    /// that a checkpoint never covers a record that is neither delivered nor kept.
    pub dead_letters: DeadLetterSink,
}

/// Consumes batches on one worker.
pub trait SinkWriter {
    /// Writes (or buffers) one batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;

    /// Called when every record of epochs before `epoch` has been written: a point at which the
    /// writer may make buffered output durable and visible. Default: nothing.
    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }

    /// Called once after the last batch (and, with checkpoints, after the final commit):
    /// flush and commit everything still pending.
    fn finish(&mut self) -> Result<()>;

    /// Whether this writer supports two-phase commit (`prepare` then `commit`), giving
    /// exactly-once output with checkpoints. Default: no (output is at-least-once).
    fn transactional(&self) -> bool {
        false
    }

    /// A checkpoint covers everything written so far: make it durable but not yet visible,
    /// and return what is needed to make it visible after a crash (see
    /// [`SinkContext::restore`]). Default: nothing to do.
    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Checkpoint `checkpoint` is complete: make everything prepared for it and before it
    /// visible. Default: nothing to do.
    fn commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }
}

/// A resolved path for files a connector writes beside others, e.g. `part-00003.jsonl`.
pub fn part_file_name(worker: WorkerPosition, extension: &str) -> PathBuf {
    PathBuf::from(format!("part-{:05}.{extension}", worker.index))
}
