//! Avro object container files: reading their blocks into batches of the source's schema,
//! resuming after a number of records, and the sink's writer.
//!
//! Like Parquet, a container file names its writer schema, so it is checked as a whole:
//! every declared column must be a field of its records (by name), with a type that converts.
//! The sink writes uncompressed files (one block per batch), with a writer schema derived from
//! the stream's columns. Compressed files written elsewhere are refused with the codec named:
//! the build carries no compression codec for Avro.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_avro::reader::{Reader, ReaderBuilder};
use arrow_avro::writer::AvroWriter;
use sluice_runtime::{Error, Result};

use crate::format::conform::{Conform, Missing};

/// An Avro container file being read into batches of the source's schema.
pub(crate) struct AvroFileReader {
    reader: Reader<BufReader<Box<dyn Read + Send>>>,
    read: Vec<usize>,
    conform: Conform,
    /// Records still to skip (read before the checkpoint being resumed).
    skip: u64,
    /// The file, for messages.
    name: String,
}

impl AvroFileReader {
    /// Opens the container file `name` (for messages) read by `input`, skipping its first
    /// `skip` records, to read batches of up to `batch_size` rows of `schema`.
    pub(crate) fn open(
        input: Box<dyn Read + Send>,
        name: &str,
        schema: &SchemaRef,
        skip: u64,
        batch_size: usize,
    ) -> Result<Self> {
        let reader = ReaderBuilder::new()
            .with_batch_size(batch_size.max(1))
            .build(BufReader::with_capacity(256 * 1024, input))
            .map_err(|e| {
                Error::user(format!(
                    "{name} is not a readable Avro container file ({e}); remove it from the source's \
                     path or rewrite it (uncompressed)"
                ))
            })?;
        let (read, conform) =
            Conform::plan(&reader.schema(), schema, Missing::Problem).map_err(|problems| {
                Error::user(format!(
                    "the Avro file {name} does not fit the source's schema: {}; declare the schema as the \
                 file has it (or use `infer_schema: true`)",
                    problems.join("; ")
                ))
            })?;
        Ok(Self { reader, read, conform, skip, name: name.to_owned() })
    }

    /// The next batch in the source's schema, or `None` at the end of the file.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let batch = match self.reader.next() {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(Error::user(format!(
                        "cannot read the Avro file {}: {e}; the file is damaged or compressed, rewrite \
                         it uncompressed or remove it",
                        self.name
                    )));
                }
                Some(Ok(batch)) => batch,
            };
            let rows = batch.num_rows() as u64;
            if self.skip >= rows {
                self.skip -= rows;
                continue;
            }
            let batch = batch.slice(self.skip as usize, (rows - self.skip) as usize);
            self.skip = 0;
            let batch = batch.project(&self.read)?;
            return self.conform.apply(&batch).map(Some).map_err(|problem| {
                Error::user(format!(
                    "the Avro file {} does not fit the source's schema: {problem}",
                    self.name
                ))
            });
        }
    }
}

/// The schema of the records of the container file read by `input` (named `name` in messages).
pub(crate) fn file_schema(input: Box<dyn Read + Send>, name: &str) -> Result<SchemaRef, String> {
    let reader = ReaderBuilder::new()
        .build(BufReader::new(input))
        .map_err(|e| format!("cannot read the schema of the Avro file {name}: {e}"))?;
    Ok(Arc::new(Schema::new(reader.schema().fields().clone())))
}

/// Counts the bytes written through it (into a counter shared with its owner, as the Avro
/// writer only gives its output back by value), for rolling parts by size.
struct Counted<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The sink's writer of one container file: the header now, one block per batch.
pub(crate) struct AvroFileWriter<W: Write> {
    writer: AvroWriter<Counted<W>>,
    schema: SchemaRef,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> AvroFileWriter<W> {
    /// A container file of records with the columns of `schema`, written to `out`.
    pub(crate) fn new(out: W, schema: &SchemaRef) -> std::result::Result<Self, String> {
        let bare = Schema::new(schema.fields().clone());
        let bytes = Arc::new(AtomicU64::new(0));
        let writer = AvroWriter::new(Counted { inner: out, bytes: bytes.clone() }, bare.clone())
            .map_err(|e| e.to_string())?;
        Ok(Self { writer, schema: Arc::new(bare), bytes })
    }

    /// Appends the rows of `batch` as one block.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        let batch =
            RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| e.to_string())?;
        self.writer.write(&batch).map_err(|e| e.to_string())
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Ends the file and returns what it was written to.
    pub(crate) fn finish(mut self) -> std::result::Result<W, String> {
        self.writer.finish().map_err(|e| e.to_string())?;
        Ok(self.writer.into_inner().inner)
    }
}
