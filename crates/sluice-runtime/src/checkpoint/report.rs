//! Part reports: what a node tells the checkpoint coordinator once its part is durable. They
//! travel as one-row Arrow batches in the ordinary [`Batch`] container, so they cross
//! processes like any other data.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};

use crate::batch::Batch;
use crate::error::{Error, Result};

/// One durable part of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartReport {
    pub(crate) checkpoint: u64,
    pub(crate) node: String,
    pub(crate) worker: u64,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) duration_ms: u64,
    pub(crate) alignment_ms: u64,
    /// For sources: the reader had read everything.
    pub(crate) finished: bool,
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("checkpoint", DataType::UInt64, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("worker", DataType::UInt64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("alignment_ms", DataType::UInt64, false),
        Field::new("finished", DataType::Boolean, false),
    ]))
});

impl PartReport {
    /// The report as a batch headed to worker 0, where the coordinator runs.
    pub(crate) fn to_batch(&self) -> Batch {
        let records = RecordBatch::try_new(
            SCHEMA.clone(),
            vec![
                Arc::new(UInt64Array::from(vec![self.checkpoint])),
                Arc::new(StringArray::from(vec![self.node.as_str()])),
                Arc::new(UInt64Array::from(vec![self.worker])),
                Arc::new(StringArray::from(vec![self.path.as_str()])),
                Arc::new(UInt64Array::from(vec![self.bytes])),
                Arc::new(UInt64Array::from(vec![self.duration_ms])),
                Arc::new(UInt64Array::from(vec![self.alignment_ms])),
                Arc::new(BooleanArray::from(vec![self.finished])),
            ],
        )
        .expect("invariant: part report columns match their schema");
        Batch::routed(records, 0)
    }

    /// The reports in a batch made by [`PartReport::to_batch`].
    pub(crate) fn from_batch(records: &RecordBatch) -> Result<Vec<Self>> {
        if records.schema() != *SCHEMA {
            return Err(Error::internal("a part report has an unexpected schema"));
        }
        let u64s = |index: usize| records.column(index).as_primitive::<UInt64Type>();
        let strings = |index: usize| records.column(index).as_string::<i32>();
        let finished = records.column(7).as_boolean();
        Ok((0..records.num_rows())
            .map(|row| PartReport {
                checkpoint: u64s(0).value(row),
                node: strings(1).value(row).to_owned(),
                worker: u64s(2).value(row),
                path: strings(3).value(row).to_owned(),
                bytes: u64s(4).value(row),
                duration_ms: u64s(5).value(row),
                alignment_ms: u64s(6).value(row),
                finished: finished.value(row) && !finished.is_null(row),
            })
            .collect())
    }
}

/// A "checkpoint N is complete" notice, broadcast from the coordinator to all `peers` workers.
pub(crate) fn committed_batch(checkpoint: u64, peers: usize) -> Batch {
    let schema = Arc::new(Schema::new(vec![Field::new("committed", DataType::UInt64, false)]));
    let records = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![checkpoint]))])
        .expect("invariant: one u64 column");
    Batch::new(records).broadcast(peers)
}

/// The checkpoint ids in a batch made by [`committed_batch`].
pub(crate) fn committed_ids(records: &RecordBatch) -> Vec<u64> {
    records
        .column(0)
        .as_primitive_opt::<UInt64Type>()
        .map(|ids| ids.iter().flatten().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let report = PartReport {
            checkpoint: 7,
            node: "agg".into(),
            worker: 1,
            path: "chk-7/agg/1.part".into(),
            bytes: 123,
            duration_ms: 4,
            alignment_ms: 2,
            finished: false,
        };
        let mut batch = report.to_batch();
        assert_eq!(batch.destination(), 0);
        assert_eq!(PartReport::from_batch(&batch.take().unwrap()).unwrap(), vec![report]);
        let mut committed = committed_batch(9, 3);
        assert_eq!(timely::Accountable::record_count(&committed), 3);
        assert_eq!(committed_ids(&committed.take().unwrap()), vec![9]);
    }
}
