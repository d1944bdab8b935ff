//! Writing part files that appear atomically: each worker writes a hidden `.inprogress` file and
//! renames it to its final name once flushed and synced, so readers never see a half-written
//! file, even after a crash.
//!
//! Without checkpoints, a part is committed (renamed to `part-<worker>-<seq>.<ext>`) at the end
//! of an epoch once it is old or big enough, and at the end.
//!
//! With checkpoints, output becomes visible only when a checkpoint covering it is complete (two
//! phases): [`SinkWriter::prepare`] closes and syncs the parts written since the last checkpoint
//! and returns their hidden and final names (`part-<checkpoint>-<worker>-<seq>.<ext>`);
//! [`SinkWriter::commit`] renames them. After a crash, worker 0 of the next run commits what the
//! restored checkpoint prepared and deletes the hidden parts of crashed runs, whose records will
//! be replayed. Hidden parts carry the run's *attempt* (the restored checkpoint + 1, or 0 for a
//! fresh start) so that worker 0 never deletes a part of the run it belongs to.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::{Error, Result};

use parquet::arrow::ArrowWriter;

use super::FileFormat;
use super::avro::AvroFileWriter;
use super::parquet::writer_properties;
use super::storage::{Location, Output};

/// The configured file sink.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: Location,
    format: FileFormat,
    roll_interval: Duration,
    roll_bytes: u64,
    row_group_rows: usize,
}

impl FileSink {
    /// A sink writing `format` part files into `dir` (a local folder or an S3 prefix), closing a part at the end of an epoch once
    /// it is `roll_interval_ms` old or `roll_bytes` big. Without checkpoints closed parts are
    /// committed at once; with checkpoints, at the next committed checkpoint. Parquet parts
    /// hold row groups of up to `row_group_rows` rows.
    pub(crate) fn new(
        dir: Location,
        format: FileFormat,
        roll_interval_ms: u64,
        roll_bytes: u64,
        row_group_rows: usize,
    ) -> Self {
        Self {
            dir,
            format,
            roll_interval: Duration::from_millis(roll_interval_ms),
            roll_bytes,
            row_group_rows,
        }
    }
}

impl Sink for FileSink {
    fn exclusive_target(&self) -> Option<String> {
        Some(self.dir.identity())
    }

    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        self.dir.create_dir_all().map_err(|e| Error::external(format!("creating {}", self.dir), e))?;
        let transactions = if context.checkpointing {
            let restored = match &context.restore {
                Some(states) => Some(parse_states(states)?),
                None => None,
            };
            let attempt = restored.as_ref().and_then(|states| last_checkpoint(states)).map_or(0, |c| c + 1);
            if context.worker.index == 0
                && let Some(states) = &restored
            {
                self.recover(states, attempt)?;
            }
            Some(Transactions { attempt, closed: Vec::new(), prepared: Vec::new(), last_checkpoint: None })
        } else {
            None
        };
        let next_seq = next_sequence(&self.dir, context.worker.index, self.format)?;
        Ok(Box::new(FileWriter {
            sink: self.clone(),
            schema: context.schema,
            worker: context.worker.index,
            next_seq,
            open: None,
            buffer: Vec::new(),
            transactions,
        }))
    }
}

impl FileSink {
    /// Makes everything the restored checkpoint prepared visible, then deletes the hidden parts
    /// of earlier attempts: they hold records that will be replayed.
    fn recover(&self, states: &[PreparedState], attempt: u64) -> Result<()> {
        for state in states {
            for part in &state.parts {
                self.publish(part, true)?;
            }
        }
        let entries = self.dir.entries().map_err(|e| Error::external(format!("reading {}", self.dir), e))?;
        for name in entries {
            let stale = match hidden_part_attempt(&name) {
                Some(Some(part_attempt)) => part_attempt < attempt,
                Some(None) => true,
                None => false,
            };
            if stale {
                let path = self.dir.join(&name);
                path.remove().map_err(|e| Error::external(format!("deleting {path}"), e))?;
                tracing::debug!(file = %path, "deleted a part file of a crashed run");
            }
        }
        self.dir.sync_dir();
        Ok(())
    }

    /// Renames a prepared part to its final name. With `recovering`, a part already renamed is
    /// fine: the crashed run may have committed it. On S3, where a rename is a copy and a
    /// delete, both names with the same size mean the copy was made and the delete was not.
    fn publish(&self, part: &PreparedPart, recovering: bool) -> Result<()> {
        let hidden = self.dir.join(&part.hidden);
        let target = self.dir.join(&part.name);
        let size = |location: &Location| {
            location.size().map_err(|e| Error::external(format!("looking for {location}"), e))
        };
        match (size(&hidden)?, size(&target)?) {
            (Some(copied), Some(existing)) if copied == existing && hidden.local_path().is_none() => {
                hidden.remove().map_err(|e| Error::external(format!("deleting {hidden}"), e))
            }
            (Some(_), Some(_)) => Err(Error::internal(format!(
                "committing {target} would overwrite a committed part file of the same name: checkpoint \
                 ids must grow across restarts"
            ))),
            (Some(_), None) => {
                hidden.rename_to(&target).map_err(|e| Error::external(format!("committing {target}"), e))
            }
            (None, Some(_)) if recovering => Ok(()),
            (None, _) => Err(Error::user(format!(
                "cannot commit {target}: its prepared file {hidden} is missing. The output folder was \
                 changed behind the pipeline's back, so checkpoint {} cannot be completed; restore from \
                 another checkpoint or start without one",
                part.checkpoint
            ))),
        }
    }
}

/// What `prepare` returns, serialized as JSON: every part prepared and not yet committed by
/// one writer when the checkpoint was taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreparedState {
    /// The checkpoint being prepared.
    checkpoint: u64,
    /// The parts to commit for it (some may be of earlier checkpoints, prepared but not yet
    /// committed).
    parts: Vec<PreparedPart>,
}

/// A closed, synced part file waiting for its checkpoint to complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreparedPart {
    /// The checkpoint the part belongs to.
    checkpoint: u64,
    /// Its hidden name in the sink's folder.
    hidden: String,
    /// Its final name in the sink's folder.
    name: String,
}

/// The part file being written.
struct OpenPart {
    temp: Location,
    seq: u64,
    file: PartFile,
    opened: Instant,
}

/// The encoder of an open part file.
enum PartFile {
    /// JSON Lines or CSV, with the bytes written so far.
    Text(BufWriter<Output>, u64),
    /// Parquet: rows are buffered into row groups and the footer is written on close.
    Parquet(Box<ArrowWriter<BufWriter<Output>>>),
    /// An Avro container file: the header, then one block per batch.
    Avro(Box<AvroFileWriter<BufWriter<Output>>>),
}

impl PartFile {
    /// The bytes the part holds so far, counting buffered Parquet rows.
    fn bytes(&self) -> u64 {
        match self {
            PartFile::Text(_, bytes) => *bytes,
            PartFile::Parquet(writer) => (writer.bytes_written() + writer.in_progress_size()) as u64,
            PartFile::Avro(writer) => writer.bytes(),
        }
    }

    /// Ends the encoding (the Parquet footer) and returns the file, flushed.
    fn finish(self) -> std::result::Result<Output, String> {
        let buffered = match self {
            PartFile::Text(file, _) => file,
            PartFile::Parquet(writer) => writer.into_inner().map_err(|e| e.to_string())?,
            PartFile::Avro(writer) => writer.finish()?,
        };
        buffered.into_inner().map_err(|e| e.error().to_string())
    }
}

/// A part file written to its end and synced, still under its hidden name.
struct ClosedFile {
    temp: Location,
    seq: u64,
}

/// A part closed and synced, not yet prepared for a checkpoint.
struct ClosedPart {
    hidden: String,
    seq: u64,
}

/// Two-phase commit bookkeeping of a writer in a checkpointed pipeline.
struct Transactions {
    /// This run's attempt: the restored checkpoint + 1, or 0.
    attempt: u64,
    closed: Vec<ClosedPart>,
    prepared: Vec<PreparedPart>,
    /// The last checkpoint prepared by this writer.
    last_checkpoint: Option<u64>,
}

struct FileWriter {
    sink: FileSink,
    schema: SchemaRef,
    worker: usize,
    next_seq: u64,
    open: Option<OpenPart>,
    buffer: Vec<u8>,
    /// Present when the pipeline takes checkpoints.
    transactions: Option<Transactions>,
}

impl SinkWriter for FileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.buffer.clear();
        let text = self.sink.format.text();
        if self.open.is_none() {
            if let Some(text) = text {
                text.encode_header(&self.schema, &mut self.buffer)?;
            }
            self.open = Some(self.start_part()?);
        }
        let Some(part) = self.open.as_mut() else {
            return Err(Error::internal("no open part file after opening one"));
        };
        match (&mut part.file, text) {
            (PartFile::Text(file, bytes), Some(text)) => {
                text.encode(batch, &mut self.buffer)?;
                file.write_all(&self.buffer)
                    .map_err(|e| Error::external(format!("writing {}", part.temp), e))?;
                *bytes += self.buffer.len() as u64;
            }
            (PartFile::Parquet(writer), None) => writer
                .write(batch)
                .map_err(|e| Error::user(format!("cannot write Parquet to {}: {e}", part.temp)))?,
            (PartFile::Avro(writer), None) => writer
                .write(batch)
                .map_err(|e| Error::user(format!("cannot write Avro to {}: {e}", part.temp)))?,
            _ => return Err(Error::internal("the part file's encoder does not match the sink's format")),
        }
        Ok(())
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        let due = self.open.as_ref().is_some_and(|part| {
            part.file.bytes() >= self.sink.roll_bytes || part.opened.elapsed() >= self.sink.roll_interval
        });
        if !due {
            return Ok(());
        }
        if self.transactions.is_some() { self.close_part() } else { self.commit_open() }
    }

    fn finish(&mut self) -> Result<()> {
        let Some(transactions) = &self.transactions else {
            return self.commit_open();
        };
        // Normally nothing is left after the final commit; whatever is, is the end of the output.
        let checkpoint = transactions.last_checkpoint.map_or(transactions.attempt, |c| c + 1);
        self.prepare(checkpoint)?;
        self.commit(checkpoint)
    }

    fn transactional(&self) -> bool {
        true
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        if self.transactions.is_none() {
            return Err(Error::internal("prepare called on a file sink opened without checkpointing"));
        }
        self.close_part()?;
        let extension = self.sink.format.extension();
        let worker = self.worker;
        let Some(transactions) = self.transactions.as_mut() else {
            return Err(Error::internal("file sink transactions vanished"));
        };
        for part in transactions.closed.drain(..) {
            transactions.prepared.push(PreparedPart {
                checkpoint,
                hidden: part.hidden,
                name: format!("part-{checkpoint:010}-{worker:05}-{:05}.{extension}", part.seq),
            });
        }
        transactions.last_checkpoint = Some(checkpoint);
        // The hidden files' names must survive a crash too.
        self.sink.dir.sync_dir();
        let state = PreparedState { checkpoint, parts: transactions.prepared.clone() };
        serde_json::to_vec(&state)
            .map_err(|e| Error::internal(format!("encoding the prepared state of the file sink: {e}")))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let Some(transactions) = self.transactions.as_mut() else {
            return Err(Error::internal("commit called on a file sink opened without checkpointing"));
        };
        let (due, later): (Vec<_>, Vec<_>) =
            transactions.prepared.drain(..).partition(|part| part.checkpoint <= checkpoint);
        transactions.prepared = later;
        for (index, part) in due.iter().enumerate() {
            if let Err(error) = self.sink.publish(part, false) {
                // Keep what is not committed yet, so that a retry can finish the job.
                if let Some(transactions) = self.transactions.as_mut() {
                    transactions.prepared.splice(0..0, due[index..].iter().cloned());
                }
                return Err(error);
            }
        }
        if !due.is_empty() {
            self.sink.dir.sync_dir();
        }
        Ok(())
    }
}

impl FileWriter {
    fn start_part(&mut self) -> Result<OpenPart> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let name = format!("part-{:05}-{seq:05}.{}", self.worker, self.sink.format.extension());
        let hidden = match &self.transactions {
            Some(transactions) => format!(".{name}.attempt-{}.inprogress", transactions.attempt),
            None => format!(".{name}.inprogress"),
        };
        let temp = self.sink.dir.join(&hidden);
        let file = temp.create().map_err(|e| Error::external(format!("creating {temp}"), e))?;
        let file = BufWriter::with_capacity(1024 * 1024, file);
        let file = match self.sink.format {
            FileFormat::Parquet => {
                let properties = writer_properties(self.sink.row_group_rows);
                let writer =
                    ArrowWriter::try_new(file, self.schema.clone(), Some(properties)).map_err(|e| {
                        Error::user(format!("cannot write the stream's columns as Parquet to {temp}: {e}"))
                    })?;
                PartFile::Parquet(Box::new(writer))
            }
            FileFormat::Avro => {
                PartFile::Avro(Box::new(AvroFileWriter::new(file, &self.schema).map_err(|e| {
                    Error::user(format!("cannot write the stream's columns as Avro to {temp}: {e}"))
                })?))
            }
            FileFormat::Jsonl | FileFormat::Csv => PartFile::Text(file, 0),
        };
        Ok(OpenPart { temp, seq, file, opened: Instant::now() })
    }

    /// Finishes and syncs the open part, if any, and returns it.
    fn sync_open(&mut self) -> Result<Option<ClosedFile>> {
        let Some(part) = self.open.take() else {
            return Ok(None);
        };
        let OpenPart { temp, seq, file, .. } = part;
        let failed = |e: std::io::Error| Error::external(format!("writing {temp}"), e);
        let file = file.finish().map_err(|e| failed(std::io::Error::other(e)))?;
        file.finish().map_err(failed)?;
        Ok(Some(ClosedFile { temp, seq }))
    }

    /// Without checkpoints: makes the open part durable and visible under its final name.
    fn commit_open(&mut self) -> Result<()> {
        let Some(part) = self.sync_open()? else {
            return Ok(());
        };
        let target = self.sink.dir.join(&format!(
            "part-{:05}-{:05}.{}",
            self.worker,
            part.seq,
            self.sink.format.extension()
        ));
        part.temp.rename_to(&target).map_err(|e| Error::external(format!("committing {target}"), e))?;
        self.sink.dir.sync_dir();
        Ok(())
    }

    /// With checkpoints: makes the open part durable, still hidden, until the next `prepare`.
    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.sync_open()? else {
            return Ok(());
        };
        let hidden = part.temp.file_name();
        let Some(transactions) = self.transactions.as_mut() else {
            return Err(Error::internal("closing a checkpointed part without transactions"));
        };
        transactions.closed.push(ClosedPart { hidden, seq: part.seq });
        Ok(())
    }
}

/// Decodes what the writers of the previous run returned from `prepare`.
fn parse_states(states: &[Vec<u8>]) -> Result<Vec<PreparedState>> {
    states
        .iter()
        .enumerate()
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(worker, bytes)| {
            serde_json::from_slice(bytes).map_err(|e| {
                Error::user(format!(
                    "cannot restore the file sink from the checkpoint: the state of worker {worker} is \
                     not a file sink state ({e}); the checkpoint was taken with another sink, so start \
                     without it"
                ))
            })
        })
        .collect()
}

/// The restored checkpoint: the latest one any writer prepared.
fn last_checkpoint(states: &[PreparedState]) -> Option<u64> {
    states.iter().map(|state| state.checkpoint).max()
}

/// For a hidden part file's name, the attempt of the run that wrote it (`Some(None)` for a
/// run without checkpoints); `None` for any other file.
fn hidden_part_attempt(name: &str) -> Option<Option<u64>> {
    let rest = name.strip_prefix(".part-")?.strip_suffix(".inprogress")?;
    match rest.rsplit_once(".attempt-") {
        Some((_, attempt)) => attempt.parse::<u64>().ok().map(Some),
        None => Some(None),
    }
}

/// The first sequence number after this worker's existing part files (of runs with and without
/// checkpoints), so a rerun never overwrites committed output.
fn next_sequence(dir: &Location, worker: usize, format: FileFormat) -> Result<u64> {
    let suffix = format!(".{}", format.extension());
    let entries = dir.entries().map_err(|e| Error::external(format!("reading {dir}"), e))?;
    let mut next = 0;
    for name in entries {
        let Some(numbers) = name.strip_prefix("part-").and_then(|rest| rest.strip_suffix(&suffix)) else {
            continue;
        };
        let numbers: Vec<&str> = numbers.split('-').collect();
        // `part-<worker>-<seq>` without checkpoints, `part-<checkpoint>-<worker>-<seq>` with.
        let (part_worker, seq) = match numbers.as_slice() {
            [part_worker, seq] | [_, part_worker, seq] => (part_worker.parse::<usize>(), seq.parse::<u64>()),
            _ => continue,
        };
        if let (Ok(part_worker), Ok(seq)) = (part_worker, seq)
            && part_worker == worker
        {
            next = next.max(seq + 1);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_part_names_tell_their_attempt() {
        assert_eq!(hidden_part_attempt(".part-00001-00002.jsonl.attempt-7.inprogress"), Some(Some(7)));
        assert_eq!(hidden_part_attempt(".part-00001-00002.jsonl.inprogress"), Some(None));
        assert_eq!(hidden_part_attempt("part-00001-00002.jsonl"), None);
        assert_eq!(hidden_part_attempt(".other.inprogress"), None);
    }
}
