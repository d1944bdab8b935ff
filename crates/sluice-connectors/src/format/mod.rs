//! Encodings shared by connectors: [`TextFormat`] for files and standard output (JSON Lines,
//! CSV), [`message`] for messaging systems, where each message holds one record, [`avro`]
//! for Avro payloads, and [`registry`] for payloads that name their schema in a schema registry.

pub mod avro;
pub(crate) mod conform;
pub mod message;
pub mod registry;

use arrow::csv::WriterBuilder;
use arrow::datatypes::Schema;
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sluice_runtime::{Error, Result};

/// How a sink encodes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    /// One JSON object per line; null fields are left out.
    #[default]
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

impl TextFormat {
    /// The file extension for this format.
    pub fn extension(self) -> &'static str {
        match self {
            TextFormat::Jsonl => "jsonl",
            TextFormat::Csv => "csv",
        }
    }

    /// Appends the encoded rows of `batch` to `out` (without a CSV header).
    pub fn encode(self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        match self {
            TextFormat::Jsonl => {
                let mut writer = LineDelimitedWriter::new(out);
                writer.write(batch)?;
                writer.finish()?;
            }
            TextFormat::Csv => {
                let mut writer = WriterBuilder::new().with_header(false).build(out);
                writer.write(batch)?;
            }
        }
        Ok(())
    }

    /// Appends the header line of `schema` to `out`: the column names for CSV, nothing for
    /// JSON Lines.
    pub fn encode_header(self, schema: &Schema, out: &mut Vec<u8>) -> Result<()> {
        if self == TextFormat::Csv {
            let mut writer = csv::Writer::from_writer(out);
            writer
                .write_record(schema.fields().iter().map(|field| field.name().as_str()))
                .and_then(|()| writer.flush().map_err(csv::Error::from))
                .map_err(|e| Error::internal(format!("encoding a CSV header: {e}")))?;
        }
        Ok(())
    }
}

/// How a run of newline-separated records is written: JSON values, or CSV records with a
/// delimiter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Delimited {
    /// One JSON value per record.
    Json,
    /// CSV records (no header) with this delimiter.
    Csv(u8),
}

/// Decodes `bytes`, which hold `rows` records (lines of a file, payloads of messages: `unit`
/// names them in the error when `bytes` hold more records than that), into one batch of
/// `schema`.
pub(crate) fn decode_records(
    format: Delimited,
    schema: &arrow::datatypes::SchemaRef,
    bytes: &[u8],
    rows: usize,
    unit: &str,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::error::ArrowError;
    let batch = match format {
        Delimited::Json => {
            let mut decoder =
                arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(rows + 1).build_decoder()?;
            let consumed = decoder.decode(bytes)?;
            if consumed < bytes.len() {
                return Err(ArrowError::JsonError(format!("more values than {unit}")));
            }
            decoder.flush()?
        }
        Delimited::Csv(delimiter) => {
            let mut decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(false)
                .with_delimiter(delimiter)
                .with_batch_size(rows + 1)
                .build_decoder();
            let mut rest = bytes;
            while !rest.is_empty() {
                let consumed = decoder.decode(rest)?;
                if consumed == 0 {
                    // The decoder is full: there are more records than `rows`.
                    return Err(ArrowError::CsvError(format!("more records than {unit}")));
                }
                rest = &rest[consumed..];
            }
            decoder.decode(&[])?;
            decoder.flush()?
        }
    };
    Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}
