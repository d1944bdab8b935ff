//! Reading JSON Lines and CSV files into batches, line by line, with bad lines sent to the
//! dead-letter sink instead of failing the batch; and Parquet files, row group by row group.
//!
//! Each file is a split, named by its path relative to the source's `path` (its file name when
//! `path` is a file). Its position is the byte offset after the last complete line returned, with
//! the line number (for dead-letter positions) and whether a CSV header was skipped, as JSON; for
//! Parquet, the number of rows read. A file read to its end is a position at its end: resuming
//! never reads it again, except lines appended since (a Parquet file cannot grow).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_runtime::dead_letter::DeadLetter;
use sluice_runtime::{Error, Result};

use super::avro::{self, AvroFileReader};
use super::parquet::{self, ParquetReader};
use super::storage::Location;
use super::{FileFormat, SourceConfig};
use crate::format::message::decode_reason;
use crate::format::{Delimited, TextFormat, decode_records};

/// Lines read for schema inference.
const INFER_LINES: usize = 1000;

/// The configured file source.
#[derive(Debug)]
pub struct FileSource {
    config: Arc<SourceConfig>,
}

impl FileSource {
    pub(crate) fn new(config: SourceConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl Source for FileSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: self.config.schema.clone() }]
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let mut restored = HashMap::new();
        for state in context.restore.as_deref().map(Vec::as_slice).unwrap_or_default() {
            let position = serde_json::from_slice::<FilePosition>(&state.position).map_err(|e| {
                Error::user(format!(
                    "cannot resume file \"{}\" from the checkpoint: its position is not a file \
                     position ({e}); the checkpoint was taken by another source, so start the \
                     pipeline without it",
                    state.split
                ))
            })?;
            restored.insert(state.split.clone(), position);
        }
        let mut reader = FileReader {
            decoder: self.config.format.text().map(|format| LineDecoder::new(&self.config, format)),
            config: self.config.clone(),
            context,
            restored,
            files: Vec::new(),
            known: HashSet::new(),
            current: 0,
            last_scan: None,
        };
        // Scanning now gives the reader its splits, with their restored positions, before the
        // first snapshot.
        reader.scan()?;
        Ok(Box::new(reader))
    }

    fn replayable(&self) -> bool {
        true
    }
}

/// Where to resume reading one file: the saved form of a [`Cursor`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePosition {
    /// Bytes consumed as complete lines.
    offset: u64,
    /// Lines consumed (1-based number of the last one); for Parquet, rows read.
    line: u64,
    /// CSV with a header: whether the header line was skipped.
    header_seen: bool,
}

/// How far one file has been read.
pub(crate) struct Cursor {
    path: Location,
    /// The split name: the path relative to the source's path.
    name: String,
    position: FilePosition,
    reader: Option<BufReader<Box<dyn Read + Send>>>,
    /// The open Parquet or Avro file.
    typed: Option<TypedReader>,
    /// Bounded mode: read to the end.
    done: bool,
    /// Whether the file was opened before (its length is checked against a resumed position
    /// once).
    opened: bool,
}

/// A reader of a typed file (Parquet, Avro).
enum TypedReader {
    Parquet(ParquetReader),
    Avro(Box<AvroFileReader>),
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("path", &self.path).field("position", &self.position).finish()
    }
}

struct FileReader {
    config: Arc<SourceConfig>,
    /// For JSON Lines and CSV; `None` for Parquet.
    decoder: Option<LineDecoder>,
    context: SourceContext,
    /// Positions to resume files from, by split name.
    restored: HashMap<String, FilePosition>,
    /// This worker's files (its splits), in the order they were found.
    files: Vec<Cursor>,
    /// The files already found, by their names relative to the source's path.
    known: HashSet<String>,
    current: usize,
    last_scan: Option<Instant>,
}

/// Lines taken from a file for one batch: their bytes, each followed by `\n`.
#[derive(Default)]
pub(crate) struct Lines {
    bytes: Vec<u8>,
    /// (1-based line number, start, end) in `bytes`, end excluding the newline.
    spans: Vec<(u64, usize, usize)>,
}

impl Lines {
    /// Whether no line was taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl SourceReader for FileReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.context.stop.load(Ordering::Relaxed) {
            return Ok(SourceStatus::Finished);
        }
        let interval = Duration::from_millis(self.config.poll_interval_ms);
        let scan_due = match self.last_scan {
            None => true,
            Some(at) => self.config.follow && at.elapsed() >= interval,
        };
        if scan_due {
            self.scan()?;
        }
        while self.current < self.files.len() {
            let cursor = &mut self.files[self.current];
            let Some(decoder) = &self.decoder else {
                if let Some(batch) =
                    cursor.read_typed(self.config.format, max_rows.max(1), &self.config.schema)?
                {
                    out.push(SourceBatch { output: 0, split: self.current, batch });
                    return Ok(SourceStatus::Ready);
                }
                self.current += 1;
                continue;
            };
            // An S3 object is complete when it appears (objects do not grow): its last line is
            // whole even without a newline, and it is read once.
            let follow = self.config.follow && cursor.path.local_path().is_some();
            let lines = cursor.read_lines(max_rows.max(1), follow, decoder.skips_header())?;
            if !lines.is_empty() {
                let path = cursor.path.clone();
                let dead_letters = &mut self.context.dead_letters;
                let batch = decoder.decode(&lines, &mut |line, raw, reason| {
                    dead_letters.report(DeadLetter {
                        position: format!("{path}:{line}"),
                        raw: raw.to_vec(),
                        reason,
                    })
                })?;
                if let Some(batch) = batch {
                    out.push(SourceBatch { output: 0, split: self.current, batch });
                }
                return Ok(SourceStatus::Ready);
            }
            self.current += 1;
        }
        if !self.config.follow {
            self.context.dead_letters.flush()?;
            return Ok(SourceStatus::Finished);
        }
        // Following: look at every file again after the next scan.
        self.current = 0;
        let since = self.last_scan.map_or(Duration::ZERO, |at| at.elapsed());
        Ok(SourceStatus::Idle(interval.saturating_sub(since).max(Duration::from_millis(1))))
    }

    fn splits(&self) -> usize {
        self.files.len()
    }

    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        self.files
            .iter()
            .map(|cursor| {
                let position = serde_json::to_vec(&cursor.position)
                    .map_err(|e| Error::internal(format!("encoding the position of {}: {e}", cursor.name)))?;
                Ok(SplitState { split: cursor.name.clone(), position })
            })
            .collect()
    }
}

impl FileReader {
    /// Adds this worker's files that are not known yet, resuming them where the checkpoint
    /// being restored left them.
    fn scan(&mut self) -> Result<()> {
        self.last_scan = Some(Instant::now());
        let root = &self.config.location;
        let listed = root.list_files().map_err(|e| Error::external(format!("reading {root}"), e))?;
        let worker = self.context.worker;
        for (index, path) in listed.into_iter().enumerate() {
            let name = path.relative_to(root);
            // Bounded: balance by position in the sorted listing. Following: by name, so that
            // owners do not change when files appear.
            let mine = if self.config.follow {
                owner_by_name(&name, worker.peers) == worker.index
            } else {
                index % worker.peers.max(1) == worker.index
            };
            if mine && self.known.insert(name.clone()) {
                let position = self.restored.get(&name).copied().unwrap_or_default();
                self.files.push(Cursor {
                    path,
                    name,
                    position,
                    reader: None,
                    typed: None,
                    done: false,
                    opened: false,
                });
            }
        }
        Ok(())
    }
}

impl Cursor {
    /// A cursor at the start of `path`, for reading a whole file once.
    pub(crate) fn start(path: &Location) -> Self {
        Self {
            path: path.clone(),
            name: String::new(),
            position: FilePosition::default(),
            reader: None,
            typed: None,
            done: false,
            opened: false,
        }
    }

    /// The next batch of up to `max` rows of a Parquet or Avro file, in `schema`; `None` once
    /// the file is read (such a file is complete when it appears, so it is never read again).
    pub(crate) fn read_typed(
        &mut self,
        format: FileFormat,
        max: usize,
        schema: &SchemaRef,
    ) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let reader = match &mut self.typed {
            Some(reader) => reader,
            None => {
                let path = &self.path;
                let failed = |e| Error::external(format!("reading {path}"), e);
                let (name, skip) = (path.to_string(), self.position.line);
                let reader = match format {
                    FileFormat::Avro => TypedReader::Avro(Box::new(AvroFileReader::open(
                        path.read_from(0).map_err(failed)?.0,
                        &name,
                        schema,
                        skip,
                        max,
                    )?)),
                    FileFormat::Parquet => TypedReader::Parquet(ParquetReader::open(
                        path.open_random_access().map_err(failed)?,
                        &name,
                        schema,
                        skip,
                        max,
                    )?),
                    FileFormat::Jsonl | FileFormat::Csv => {
                        return Err(Error::internal(format!(
                            "{path} is read line by line, not as a typed file"
                        )));
                    }
                };
                self.typed.insert(reader)
            }
        };
        let next = match reader {
            TypedReader::Parquet(reader) => reader.next_batch()?,
            TypedReader::Avro(reader) => reader.next_batch()?,
        };
        match next {
            Some(batch) => {
                self.position.line += batch.num_rows() as u64;
                Ok(Some(batch))
            }
            None => {
                self.typed = None;
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Up to `max` non-empty lines, from where the last call stopped. When following, a last
    /// line without its newline is left for later; otherwise it is taken and the file is done.
    /// Blank lines, and the header when `skip_header`, are consumed but not returned.
    pub(crate) fn read_lines(&mut self, max: usize, follow: bool, skip_header: bool) -> Result<Lines> {
        let mut lines = Lines::default();
        if self.done {
            return Ok(lines);
        }
        let path = &self.path;
        let io_error = |e| Error::external(format!("reading {path}"), e);
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let (file, len) = path.read_from(self.position.offset).map_err(io_error)?;
                if !self.opened && len < self.position.offset {
                    // Resumed past the end: the file was truncated or replaced since the
                    // checkpoint. Its lines up to the offset were read; the rest cannot be told.
                    tracing::warn!(
                        file = %path,
                        offset = self.position.offset,
                        len,
                        "the file is shorter than the position resumed from; waiting for it to grow"
                    );
                }
                self.opened = true;
                self.reader.insert(BufReader::with_capacity(256 * 1024, file))
            }
        };
        while lines.spans.len() < max {
            let start = lines.bytes.len();
            let read = reader.read_until(b'\n', &mut lines.bytes).map_err(io_error)?;
            let complete = lines.bytes.last() == Some(&b'\n') && lines.bytes.len() > start;
            if read == 0 || (!complete && follow) {
                // End of the data for now; a partial last line waits for its end when following.
                lines.bytes.truncate(start);
                self.reader = None;
                self.done = !follow;
                break;
            }
            self.position.offset += read as u64;
            self.position.line += 1;
            let mut end = lines.bytes.len();
            while end > start && matches!(lines.bytes[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let blank = lines.bytes[start..end].iter().all(u8::is_ascii_whitespace);
            let header = !blank && skip_header && !self.position.header_seen;
            if blank || header {
                self.position.header_seen |= header;
                lines.bytes.truncate(start);
                continue;
            }
            lines.bytes.truncate(end);
            lines.bytes.push(b'\n');
            lines.spans.push((self.position.line, start, end));
        }
        Ok(lines)
    }
}

/// What [`LineDecoder::decode`] does with a bad line: gets its line number, raw bytes and the
/// reason it is bad.
pub(crate) type BadLine<'a> = dyn FnMut(u64, &[u8], String) -> Result<()> + 'a;

/// Turns lines of one format into records of one schema.
#[derive(Debug, Clone)]
pub(crate) struct LineDecoder {
    format: TextFormat,
    delimiter: u8,
    header: bool,
    schema: SchemaRef,
}

impl LineDecoder {
    /// A decoder of `format` for the files of `config`.
    pub(crate) fn new(config: &SourceConfig, format: TextFormat) -> Self {
        Self { format, delimiter: config.delimiter, header: config.header, schema: config.schema.clone() }
    }

    /// Whether the first non-blank line of each file is a header to skip.
    pub(crate) fn skips_header(&self) -> bool {
        self.format == TextFormat::Csv && self.header
    }

    /// Decodes `lines` as one batch; if that fails, line by line, passing each bad line to
    /// `bad` (line number, raw bytes, reason). Every line must yield exactly one record: a line
    /// holding two JSON values, or a CSV line split by a stray `\r` or joined to the next by an
    /// open quote, is a bad line, never extra or missing records.
    pub(crate) fn decode(&self, lines: &Lines, bad: &mut BadLine<'_>) -> Result<Option<RecordBatch>> {
        let all_sound =
            lines.spans.iter().all(|&(_, start, end)| self.line_problem(&lines.bytes[start..end]).is_none());
        if all_sound
            && let Ok(batch) = self.decode_bytes(&lines.bytes, lines.spans.len())
            && batch.num_rows() == lines.spans.len()
        {
            return Ok(Some(batch));
        }
        let mut good = Vec::new();
        for &(line, start, end) in &lines.spans {
            let decoded = match self.line_problem(&lines.bytes[start..end]) {
                Some(problem) => Err(problem),
                None => match self.decode_bytes(&lines.bytes[start..=end], 1) {
                    Ok(batch) if batch.num_rows() == 1 => Ok(batch),
                    Ok(batch) => Err(format!(
                        "the line holds {} records; each line must hold exactly one",
                        batch.num_rows()
                    )),
                    Err(error) => Err(decode_reason(&error)),
                },
            };
            match decoded {
                Ok(batch) => good.push(batch),
                Err(reason) => bad(line, &lines.bytes[start..end], reason)?,
            }
        }
        if good.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&self.schema, &good)?))
    }

    /// A problem visible in the raw line before decoding it.
    fn line_problem(&self, line: &[u8]) -> Option<String> {
        if self.format != TextFormat::Csv {
            return None;
        }
        let quotes = line.iter().filter(|&&b| b == b'"').count();
        (quotes % 2 == 1).then(|| "unterminated quote: quoted CSV fields cannot span lines".to_owned())
    }

    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
        let format = match self.format {
            TextFormat::Jsonl => Delimited::Json,
            TextFormat::Csv => Delimited::Csv(self.delimiter),
        };
        decode_records(format, &self.schema, bytes, rows, "lines")
    }
}

/// The worker that reads a file in follow mode: from its name, so it does not change when
/// other files appear.
fn owner_by_name(name: &str, peers: usize) -> usize {
    // FNV-1a: stable across processes and Rust versions, unlike the std hasher.
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % peers.max(1) as u64) as usize
}

/// Infers a schema from the first lines of the files at `path`: JSON Lines from up to 1000
/// valid lines, CSV from the first file's header and rows, Parquet from the first file's schema.
pub(crate) fn infer_schema(
    path: &Location,
    format: FileFormat,
    header: bool,
    delimiter: u8,
) -> Result<SchemaRef, String> {
    let cannot = |e: std::io::Error| format!("cannot read \"{path}\" to infer its schema: {e}");
    let files = path.list_files().map_err(cannot)?;
    let Some(first) = files.first() else {
        return Err(format!("no files in \"{path}\" to infer a schema from"));
    };
    match format {
        FileFormat::Avro => avro::file_schema(first.read_from(0).map_err(cannot)?.0, &first.to_string()),
        FileFormat::Parquet => {
            parquet::file_schema(first.open_random_access().map_err(cannot)?, &first.to_string())
        }
        FileFormat::Jsonl => {
            let mut values = Vec::new();
            for file in &files {
                let reader = BufReader::new(file.read_from(0).map_err(cannot)?.0);
                for line in reader.split(b'\n') {
                    let line = line.map_err(cannot)?;
                    // Bad lines are skipped here: they will reach the dead letters when read.
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line)
                        && value.is_object()
                    {
                        values.push(value);
                    }
                    if values.len() >= INFER_LINES {
                        break;
                    }
                }
                if values.len() >= INFER_LINES {
                    break;
                }
            }
            if values.is_empty() {
                return Err(format!("no JSON objects in \"{path}\" to infer a schema from"));
            }
            arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                .map(Arc::new)
                .map_err(|e| format!("cannot infer a schema from \"{path}\": {e}"))
        }
        FileFormat::Csv => {
            let (file, _) = first.read_from(0).map_err(cannot)?;
            arrow::csv::reader::Format::default()
                .with_header(header)
                .with_delimiter(delimiter)
                .infer_schema(file.take(16 * 1024 * 1024), Some(INFER_LINES))
                .map(|(schema, _)| Arc::new(schema))
                .map_err(|e| format!("cannot infer a schema from \"{first}\": {e}"))
        }
    }
}
