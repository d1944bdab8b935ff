//! Reading JSON Lines and CSV files into batches, line by line, with bad lines sent to the
//! dead-letter sink instead of failing the batch.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus,
};
use sluice_runtime::dead_letter::DeadLetter;
use sluice_runtime::{Error, Result};

use super::SourceConfig;
use crate::format::TextFormat;

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
        Ok(Box::new(FileReader {
            config: self.config.clone(),
            context,
            files: Vec::new(),
            known: HashSet::new(),
            current: 0,
            last_scan: None,
        }))
    }
}

/// How far one file has been read.
#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    /// Bytes consumed as complete lines.
    offset: u64,
    /// Lines consumed (1-based number of the last one).
    line: u64,
    reader: Option<BufReader<File>>,
    /// Bounded mode: read to the end.
    done: bool,
    /// CSV with a header: whether the header line (the first non-blank one) was skipped.
    header_seen: bool,
}

struct FileReader {
    config: Arc<SourceConfig>,
    context: SourceContext,
    files: Vec<Cursor>,
    known: HashSet<PathBuf>,
    current: usize,
    last_scan: Option<Instant>,
}

/// Lines taken from a file for one batch: their bytes, each followed by `\n`.
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    /// (1-based line number, start, end) in `bytes`, end excluding the newline.
    spans: Vec<(u64, usize, usize)>,
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
            let lines = self.read_lines(self.current, max_rows.max(1))?;
            if !lines.spans.is_empty() {
                let path = self.files[self.current].path.clone();
                if let Some(batch) = self.decode(&path, &lines)? {
                    out.push(SourceBatch { output: 0, batch });
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
}

impl FileReader {
    /// Adds this worker's files that are not known yet.
    fn scan(&mut self) -> Result<()> {
        self.last_scan = Some(Instant::now());
        let listed = list_files(&self.config.path)
            .map_err(|e| Error::external(format!("reading {}", self.config.path.display()), e))?;
        let worker = self.context.worker;
        for (index, path) in listed.into_iter().enumerate() {
            let mine = if self.config.follow {
                owner_by_name(&path, worker.peers) == worker.index
            } else {
                index % worker.peers.max(1) == worker.index
            };
            if mine && self.known.insert(path.clone()) {
                self.files.push(Cursor {
                    path,
                    offset: 0,
                    line: 0,
                    reader: None,
                    done: false,
                    header_seen: false,
                });
            }
        }
        Ok(())
    }

    /// Up to `max` non-empty lines of file `index`, from where the last call stopped.
    fn read_lines(&mut self, index: usize, max: usize) -> Result<Lines> {
        let follow = self.config.follow;
        let skip_header = self.config.format == TextFormat::Csv && self.config.header;
        let cursor = &mut self.files[index];
        let mut lines = Lines::default();
        if cursor.done {
            return Ok(lines);
        }
        let io_error = |e| Error::external(format!("reading {}", cursor.path.display()), e);
        if cursor.reader.is_none() {
            let mut file = File::open(&cursor.path).map_err(io_error)?;
            file.seek(SeekFrom::Start(cursor.offset)).map_err(io_error)?;
            cursor.reader = Some(BufReader::with_capacity(256 * 1024, file));
        }
        let Some(reader) = cursor.reader.as_mut() else {
            return Err(Error::internal("file reader vanished after opening"));
        };
        while lines.spans.len() < max {
            let start = lines.bytes.len();
            let read = reader
                .read_until(b'\n', &mut lines.bytes)
                .map_err(|e| Error::external(format!("reading {}", cursor.path.display()), e))?;
            let complete = lines.bytes.last() == Some(&b'\n') && lines.bytes.len() > start;
            if read == 0 || (!complete && follow) {
                // End of the data for now; a partial last line waits for its end when following.
                lines.bytes.truncate(start);
                cursor.reader = None;
                cursor.done = !follow;
                break;
            }
            cursor.offset += read as u64;
            cursor.line += 1;
            let mut end = lines.bytes.len();
            while end > start && matches!(lines.bytes[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let blank = lines.bytes[start..end].iter().all(u8::is_ascii_whitespace);
            let header = !blank && skip_header && !cursor.header_seen;
            if blank || header {
                cursor.header_seen |= header;
                lines.bytes.truncate(start);
                continue;
            }
            lines.bytes.truncate(end);
            lines.bytes.push(b'\n');
            lines.spans.push((cursor.line, start, end));
        }
        Ok(lines)
    }

    /// Decodes `lines` as one batch; if that fails, line by line, reporting the bad ones.
    /// Every line must yield exactly one record: a line holding two JSON values, or a CSV
    /// line split by a stray `\r` or joined to the next by an open quote, is a bad line, never
    /// extra or missing records.
    fn decode(&mut self, path: &Path, lines: &Lines) -> Result<Option<RecordBatch>> {
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
                    Err(error) => Err(reason(&error)),
                },
            };
            match decoded {
                Ok(batch) => good.push(batch),
                Err(reason) => self.context.dead_letters.report(DeadLetter {
                    position: format!("{}:{line}", path.display()),
                    raw: lines.bytes[start..end].to_vec(),
                    reason,
                })?,
            }
        }
        if good.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&self.config.schema, &good)?))
    }

    /// A problem visible in the raw line before decoding it.
    fn line_problem(&self, line: &[u8]) -> Option<String> {
        if self.config.format != TextFormat::Csv {
            return None;
        }
        let quotes = line.iter().filter(|&&b| b == b'"').count();
        (quotes % 2 == 1).then(|| "unterminated quote: quoted CSV fields cannot span lines".to_owned())
    }

    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> Result<RecordBatch, ArrowError> {
        let schema = self.config.schema.clone();
        let batch = match self.config.format {
            TextFormat::Jsonl => {
                let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
                    .with_batch_size(rows + 1)
                    .build_decoder()?;
                let consumed = decoder.decode(bytes)?;
                if consumed < bytes.len() {
                    return Err(ArrowError::JsonError("more values than lines".into()));
                }
                decoder.flush()?
            }
            TextFormat::Csv => {
                let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(false)
                    .with_delimiter(self.config.delimiter)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                let mut rest = bytes;
                while !rest.is_empty() {
                    let consumed = decoder.decode(rest)?;
                    if consumed == 0 {
                        // The decoder is full: there are more records than lines.
                        return Err(ArrowError::CsvError("more records than lines".into()));
                    }
                    rest = &rest[consumed..];
                }
                decoder.decode(&[])?;
                decoder.flush()?
            }
        };
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(schema)))
    }
}

/// A short reason for a bad record, without Arrow's error-kind prefix.
fn reason(error: &ArrowError) -> String {
    let text = error.to_string();
    for prefix in ["Json error: ", "Csv error: ", "Parser error: ", "Invalid argument error: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return not_json(rest);
        }
    }
    not_json(&text)
}

/// Arrow's JSON tokenizer says "Encountered unexpected 'h' whilst parsing literal"; say first
/// that the line is not JSON at all, as opposed to JSON that does not fit the schema.
fn not_json(reason: &str) -> String {
    if reason.starts_with("Encountered ") { format!("not valid JSON: {reason}") } else { reason.to_owned() }
}

/// The file itself, or the regular, non-hidden files of a folder in name order.
pub(crate) fn list_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The worker that reads a file in follow mode: from its name, so it does not change when
/// other files appear.
fn owner_by_name(path: &Path, peers: usize) -> usize {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // FNV-1a: stable across processes and Rust versions, unlike the std hasher.
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % peers.max(1) as u64) as usize
}

/// Infers a schema from the first lines of the files at `path`: JSON Lines from up to 1000
/// valid lines, CSV from the first file's header and rows.
pub(crate) fn infer_schema(
    path: &Path,
    format: TextFormat,
    header: bool,
    delimiter: u8,
) -> Result<SchemaRef, String> {
    let cannot = |e: std::io::Error| format!("cannot read \"{}\" to infer its schema: {e}", path.display());
    let files = list_files(path).map_err(cannot)?;
    let Some(first) = files.first() else {
        return Err(format!("no files in \"{}\" to infer a schema from", path.display()));
    };
    match format {
        TextFormat::Jsonl => {
            let mut values = Vec::new();
            for file in &files {
                let reader = BufReader::new(File::open(file).map_err(cannot)?);
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
                return Err(format!("no JSON objects in \"{}\" to infer a schema from", path.display()));
            }
            arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                .map(Arc::new)
                .map_err(|e| format!("cannot infer a schema from \"{}\": {e}", path.display()))
        }
        TextFormat::Csv => {
            let file = File::open(first).map_err(cannot)?;
            arrow::csv::reader::Format::default()
                .with_header(header)
                .with_delimiter(delimiter)
                .infer_schema(file.take(16 * 1024 * 1024), Some(INFER_LINES))
                .map(|(schema, _)| Arc::new(schema))
                .map_err(|e| format!("cannot infer a schema from \"{}\": {e}", first.display()))
        }
    }
}
