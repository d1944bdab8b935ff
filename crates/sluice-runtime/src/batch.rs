//! `Batch`, the container records travel in: one Arrow `RecordBatch` per timely message.
//!
//! Between threads of one process a batch moves as a pointer. Between processes it is encoded
//! once as Arrow IPC (timely asks for the length before writing, so the encoding is cached
//! rather than produced twice).

use std::cell::OnceCell;
use std::io::{Cursor, Write};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use timely::Accountable;
use timely::dataflow::channels::ContainerBytes;

/// A timely container holding one Arrow record batch.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    records: Option<RecordBatch>,
    /// Worker this batch is headed to, set by keyed exchange before routing; not sent.
    destination: usize,
    /// Arrow IPC encoding, filled the first time timely asks for the length on the wire.
    encoded: OnceCell<Vec<u8>>,
}

impl Batch {
    /// Wraps a record batch.
    pub fn new(records: RecordBatch) -> Self {
        Self { records: Some(records), destination: 0, encoded: OnceCell::new() }
    }

    /// Wraps a record batch headed to worker `destination`.
    pub fn routed(records: RecordBatch, destination: usize) -> Self {
        Self { records: Some(records), destination, encoded: OnceCell::new() }
    }

    /// Worker this batch is headed to, when it passes a keyed exchange.
    pub fn destination(&self) -> usize {
        self.destination
    }

    /// The records, if any.
    pub fn records(&self) -> Option<&RecordBatch> {
        self.records.as_ref()
    }

    /// Takes the records out, leaving the container empty.
    pub fn take(&mut self) -> Option<RecordBatch> {
        self.encoded = OnceCell::new();
        self.records.take()
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.records.as_ref().map_or(0, RecordBatch::num_rows)
    }

    /// Schema of the records, if any.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.records.as_ref().map(RecordBatch::schema)
    }

    fn encoded(&self) -> &[u8] {
        self.encoded.get_or_init(|| match &self.records {
            Some(records) => encode(records),
            None => Vec::new(),
        })
    }
}

impl Accountable for Batch {
    fn record_count(&self) -> i64 {
        self.num_rows() as i64
    }
}

/// Length prefix (u64) + IPC stream bytes, padded to a multiple of 8 as timely expects.
impl ContainerBytes for Batch {
    fn from_bytes(bytes: timely::bytes::arc::Bytes) -> Self {
        let length = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length prefix")) as usize;
        if length == 0 {
            return Self::default();
        }
        let body = &bytes[8..8 + length];
        Self::new(decode(body))
    }

    fn length_in_bytes(&self) -> usize {
        8 + padded(self.encoded().len())
    }

    fn into_bytes<W: Write>(&self, writer: &mut W) {
        let encoded = self.encoded();
        let padding = padded(encoded.len()) - encoded.len();
        // Writes go to timely's in-memory send buffers, which do not fail.
        writer.write_all(&(encoded.len() as u64).to_le_bytes()).expect("write to send buffer");
        writer.write_all(encoded).expect("write to send buffer");
        writer.write_all(&[0u8; 8][..padding]).expect("write to send buffer");
    }
}

fn padded(length: usize) -> usize {
    (length + 7) & !7
}

fn encode(records: &RecordBatch) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(records.get_array_memory_size() + 512);
    // Encoding an in-memory batch into a Vec only fails on a broken Arrow invariant.
    let mut writer = StreamWriter::try_new(&mut buffer, &records.schema())
        .expect("invariant: arrow IPC writer over a Vec");
    writer.write(records).expect("invariant: arrow IPC encoding of a valid batch");
    writer.finish().expect("invariant: arrow IPC finish over a Vec");
    drop(writer);
    buffer
}

fn decode(body: &[u8]) -> RecordBatch {
    // The bytes were produced by `encode` in a peer process of the same build.
    let mut reader = StreamReader::try_new(Cursor::new(body), None)
        .expect("invariant: peer sent a valid arrow IPC stream");
    reader.next().expect("invariant: peer sent one batch").expect("invariant: peer sent a decodable batch")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn round_trips_through_timely_bytes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let records = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        let batch = Batch::new(records.clone());
        let mut bytes = Vec::new();
        batch.into_bytes(&mut bytes);
        assert_eq!(bytes.len(), batch.length_in_bytes());
        assert_eq!(bytes.len() % 8, 0);
        let decoded = Batch::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
        assert_eq!(decoded.records(), Some(&records));
        assert_eq!(decoded.record_count(), 3);
    }
}
