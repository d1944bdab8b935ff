//! Encodings shared by connectors: [`TextFormat`] for files and standard output (JSON Lines,
//! CSV), [`message`] for messaging systems, where each message holds one record, and [`avro`]
//! for Avro payloads.

pub mod avro;
pub(crate) mod conform;
pub mod message;

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
