//! The contract for processors (SQL today, WebAssembly later) and for key expressions used by
//! keyed exchange. Implementations live outside the runtime; the runtime drives them.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::Result;

/// A stateless transformation of batches, configured once and cloned onto every worker.
pub trait Processor: Send {
    /// Schema of every batch this processor emits.
    fn output_schema(&self) -> SchemaRef;

    /// Transforms one batch that arrived on input `input` (an index into the processor's
    /// declared inputs), appending zero or more result batches to `out`.
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;

    /// A fresh instance for another worker.
    fn clone_box(&self) -> Box<dyn Processor>;
}

/// Hashes the key of every row of a batch; drives keyed exchange between workers.
pub trait KeyHasher: Send + Sync {
    /// Writes one hash per row of `batch` into `hashes` (cleared first). Rows with equal keys
    /// must get equal hashes on every worker and process.
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()>;
}
