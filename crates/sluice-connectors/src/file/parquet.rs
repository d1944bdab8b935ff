//! Parquet files: reading row groups into batches of the source's schema, resuming after a
//! number of rows, and the writer settings of the sink.
//!
//! A Parquet file is typed, so it is checked against the source's schema as a whole: every
//! declared column must be in the file (matched by name; other columns are not read) with a
//! type that converts to the declared one. A file that does not fit stops the source with the
//! file, the column and the fix; there is no per-record bad data to send to dead letters.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use sluice_runtime::{Error, Result};

use super::storage::{ObjectRanges, ObjectReader, RandomAccess};
use crate::format::conform::{Conform, Missing};

/// Rows per row group written by the sink unless `row_group_rows` says otherwise.
pub(crate) const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// The sink's writer settings: Snappy compression, row groups of up to `row_group_rows` rows.
pub(crate) fn writer_properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build()
}

/// A Parquet file being read into batches of the source's schema.
pub(crate) struct ParquetReader {
    reader: ParquetRecordBatchReader,
    conform: Conform,
    /// The file, for messages.
    name: String,
}

impl ParquetReader {
    /// Opens the Parquet data of `name` (for messages) from `input`, skipping its first `skip`
    /// rows, to read batches of up to `batch_size` rows of `schema`.
    pub(crate) fn open(
        input: RandomAccess,
        name: &str,
        schema: &SchemaRef,
        skip: u64,
        batch_size: usize,
    ) -> Result<Self> {
        match input {
            RandomAccess::File(file) => Self::open_chunks(file, name, schema, skip, batch_size),
            RandomAccess::Object(object) => Self::open_chunks(object, name, schema, skip, batch_size),
        }
    }

    fn open_chunks<T: ChunkReader + 'static>(
        input: T,
        name: &str,
        schema: &SchemaRef,
        skip: u64,
        batch_size: usize,
    ) -> Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(|e| {
            Error::user(format!(
                "{name} is not a readable Parquet file ({e}); remove it from the source's path or \
                 rewrite it"
            ))
        })?;
        let (roots, conform) =
            Conform::plan(builder.schema(), schema, Missing::Problem).map_err(|problems| {
                Error::user(format!(
                    "the Parquet file {name} does not fit the source's schema: {}; declare the schema as \
                 the file has it (or use `infer_schema: true`)",
                    problems.join("; ")
                ))
            })?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        // Whole row groups already read are not opened again; the rest is skipped row by row.
        let mut skip = skip;
        let mut groups = Vec::new();
        for (index, group) in builder.metadata().row_groups().iter().enumerate() {
            let rows = u64::try_from(group.num_rows()).unwrap_or(0);
            if groups.is_empty() && skip >= rows {
                skip -= rows;
            } else {
                groups.push(index);
            }
        }
        let reader = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_offset(usize::try_from(skip).unwrap_or(usize::MAX))
            .with_batch_size(batch_size.max(1))
            .build()
            .map_err(|e| Error::user(format!("cannot read the Parquet file {name}: {e}")))?;
        Ok(Self { reader, conform, name: name.to_owned() })
    }

    /// The next batch in the source's schema, or `None` at the end of the file.
    pub(crate) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self.reader.next() {
            None => Ok(None),
            Some(Err(e)) => Err(Error::user(format!(
                "cannot read the Parquet file {}: {e}; the file is damaged, rewrite or remove it",
                self.name
            ))),
            Some(Ok(batch)) => self.conform.apply(&batch).map(Some).map_err(|problem| {
                Error::user(format!(
                    "the Parquet file {} does not fit the source's schema: {problem}",
                    self.name
                ))
            }),
        }
    }
}

/// The schema of the Parquet data in `input` (named `name` in messages), without metadata.
pub(crate) fn file_schema(input: RandomAccess, name: &str) -> Result<SchemaRef, String> {
    let failed = |e: ParquetError| format!("cannot read the schema of the Parquet file {name}: {e}");
    let schema = match input {
        RandomAccess::File(file) => {
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(failed)?.schema().clone()
        }
        RandomAccess::Object(object) => {
            ParquetRecordBatchReaderBuilder::try_new(object).map_err(failed)?.schema().clone()
        }
    };
    Ok(Arc::new(Schema::new(schema.fields().clone())))
}

impl Length for ObjectRanges {
    fn len(&self) -> u64 {
        ObjectRanges::len(self)
    }
}

/// Parquet reads the footer, then the column chunks it needs, each in one ranged request.
impl ChunkReader for ObjectRanges {
    type T = ObjectReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ObjectReader> {
        Ok(self.read_from(start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.range(start, length).map_err(|e| ParquetError::External(Box::new(e)))
    }
}
