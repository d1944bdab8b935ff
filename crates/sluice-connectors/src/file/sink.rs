//! Writing part files that appear atomically: each worker writes a hidden `.inprogress` file and
//! renames it to `part-<worker>-<seq>.<ext>` once flushed and synced, so readers never see a
//! half-written file, even after a crash.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::{Error, Result};

use crate::format::TextFormat;

/// The configured file sink.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    format: TextFormat,
    roll_interval: Duration,
    roll_bytes: u64,
}

impl FileSink {
    /// A sink writing `format` part files into `dir`, committing at epoch ends once a file is
    /// `roll_interval_ms` old or `roll_bytes` big, and at the end.
    pub fn new(dir: PathBuf, format: TextFormat, roll_interval_ms: u64, roll_bytes: u64) -> Self {
        Self { dir, format, roll_interval: Duration::from_millis(roll_interval_ms), roll_bytes }
    }
}

impl Sink for FileSink {
    fn exclusive_target(&self) -> Option<String> {
        // `components()` drops `.` segments and trailing slashes: `out` and `./out/` are one folder.
        Some(format!("folder {}", self.dir.components().collect::<PathBuf>().display()))
    }

    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::external(format!("creating {}", self.dir.display()), e))?;
        let next_seq = next_sequence(&self.dir, context.worker.index, self.format)?;
        Ok(Box::new(FileWriter {
            sink: self.clone(),
            schema: context.schema,
            worker: context.worker.index,
            next_seq,
            open: None,
            buffer: Vec::new(),
        }))
    }
}

/// The part file being written.
struct OpenPart {
    temp: PathBuf,
    target: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    opened: Instant,
}

struct FileWriter {
    sink: FileSink,
    schema: SchemaRef,
    worker: usize,
    next_seq: u64,
    open: Option<OpenPart>,
    buffer: Vec<u8>,
}

impl SinkWriter for FileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.buffer.clear();
        if self.open.is_none() {
            self.sink.format.encode_header(&self.schema, &mut self.buffer)?;
            self.open = Some(self.start_part()?);
        }
        self.sink.format.encode(batch, &mut self.buffer)?;
        let Some(part) = self.open.as_mut() else {
            return Err(Error::internal("no open part file after opening one"));
        };
        part.file
            .write_all(&self.buffer)
            .map_err(|e| Error::external(format!("writing {}", part.temp.display()), e))?;
        part.bytes += self.buffer.len() as u64;
        Ok(())
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        let due = self.open.as_ref().is_some_and(|part| {
            part.bytes >= self.sink.roll_bytes || part.opened.elapsed() >= self.sink.roll_interval
        });
        if due { self.commit() } else { Ok(()) }
    }

    fn finish(&mut self) -> Result<()> {
        self.commit()
    }
}

impl FileWriter {
    fn start_part(&mut self) -> Result<OpenPart> {
        let name = format!("part-{:05}-{:05}.{}", self.worker, self.next_seq, self.sink.format.extension());
        self.next_seq += 1;
        let temp = self.sink.dir.join(format!(".{name}.inprogress"));
        let file =
            File::create(&temp).map_err(|e| Error::external(format!("creating {}", temp.display()), e))?;
        Ok(OpenPart {
            temp,
            target: self.sink.dir.join(name),
            file: BufWriter::with_capacity(1024 * 1024, file),
            bytes: 0,
            opened: Instant::now(),
        })
    }

    /// Makes the open part durable and visible under its final name.
    fn commit(&mut self) -> Result<()> {
        let Some(part) = self.open.take() else {
            return Ok(());
        };
        let failed = |e| Error::external(format!("committing {}", part.target.display()), e);
        let file = part.file.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&part.temp, &part.target).map_err(failed)?;
        // Make the rename itself durable; not every platform can sync a folder, so best effort.
        if let Ok(dir) = File::open(&self.sink.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The first sequence number after this worker's existing part files, so a rerun never
/// overwrites committed output.
fn next_sequence(dir: &Path, worker: usize, format: TextFormat) -> Result<u64> {
    let prefix = format!("part-{worker:05}-");
    let suffix = format!(".{}", format.extension());
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::external(format!("reading {}", dir.display()), e))?;
    let mut next = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&suffix))
            .and_then(|seq| seq.parse::<u64>().ok());
        if let Some(seq) = seq {
            next = next.max(seq + 1);
        }
    }
    Ok(next)
}
