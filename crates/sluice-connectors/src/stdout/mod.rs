//! The `stdout` sink: records as JSON Lines (or CSV) on standard output. Each batch is written
//! under the stdout lock, so lines of different workers never interleave.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::format::TextFormat;
use crate::{SinkRequest, options};

/// Options of the `stdout` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutOptions {
    /// `jsonl` (default) or `csv`.
    pub format: Option<TextFormat>,
}

/// Option names of the `stdout` sink.
pub const OPTIONS: &[&str] = &["format"];

/// Builds the sink from its request.
pub fn build(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<StdoutOptions>(request.options, OPTIONS, "options")?;
    Ok(Arc::new(StdoutSink {
        format: options.format.unwrap_or_default(),
        header_written: Arc::new(AtomicBool::new(false)),
    }))
}

/// Writes records to standard output.
#[derive(Debug)]
pub struct StdoutSink {
    format: TextFormat,
    /// The CSV header is printed once per process, by whichever worker writes first.
    header_written: Arc<AtomicBool>,
}

impl Sink for StdoutSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(StdoutWriter {
            format: self.format,
            schema: context.schema,
            header_written: self.header_written.clone(),
            buffer: Vec::new(),
        }))
    }
}

struct StdoutWriter {
    format: TextFormat,
    schema: SchemaRef,
    header_written: Arc<AtomicBool>,
    buffer: Vec<u8>,
}

impl SinkWriter for StdoutWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.buffer.clear();
        self.format.encode(batch, &mut self.buffer)?;
        let mut stdout = std::io::stdout().lock();
        if !self.header_written.swap(true, Ordering::Relaxed) {
            let mut header = Vec::new();
            self.format.encode_header(&self.schema, &mut header)?;
            stdout.write_all(&header).map_err(stdout_error)?;
        }
        stdout.write_all(&self.buffer).map_err(stdout_error)
    }

    fn finish(&mut self) -> Result<()> {
        std::io::stdout().lock().flush().map_err(stdout_error)
    }
}

fn stdout_error(error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return Error::user(
            "standard output was closed by the program reading it (e.g. `| head`), so the pipeline stops",
        );
    }
    Error::external("writing to standard output", error)
}
