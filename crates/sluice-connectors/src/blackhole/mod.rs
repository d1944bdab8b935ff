//! The `blackhole` sink: accepts every batch and keeps nothing. For benchmarks, where the runtime
//! measures throughput and the sink should cost nothing.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sluice_runtime::Result;
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_spec::Diagnostic;

use crate::{SinkRequest, options};

/// Options of the `blackhole` sink: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeOptions {}

/// Builds the sink; it takes no options.
pub fn build(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    options::parse::<BlackholeOptions>(request.options, &[], "options")?;
    Ok(Arc::new(BlackholeSink))
}

/// A sink that discards everything.
#[derive(Debug, Clone, Copy)]
pub struct BlackholeSink;

impl Sink for BlackholeSink {
    fn open(&self, _context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(BlackholeWriter { rows: 0 }))
    }
}

/// Counts the rows it is given.
#[derive(Debug)]
pub struct BlackholeWriter {
    rows: u64,
}

impl BlackholeWriter {
    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl SinkWriter for BlackholeWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
