//! `Batch`, the container records travel in: one Arrow `RecordBatch` per timely message, or a
//! watermark mark (see [`Mark`]) that flows in band with the records.
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

/// A watermark announcement from one upstream worker: "the event-time watermark of what I
/// send you is now `watermark`". `None` means the sender is idle and must not hold event time
/// back until it announces a watermark again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Index of the sending worker.
    pub sender: u32,
    /// The sender's watermark in milliseconds since the Unix epoch, or `None` when idle.
    pub watermark: Option<i64>,
}

/// Destination meaning "every worker": marks and other control messages are broadcast.
pub const BROADCAST: usize = usize::MAX;

/// A timely container holding one Arrow record batch or one watermark mark.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    records: Option<RecordBatch>,
    mark: Option<Mark>,
    /// Worker this batch is headed to, set by keyed exchange before routing; not sent.
    destination: usize,
    /// The record count timely accounts for this container, if not its natural one: a
    /// broadcast container counts once per copy it will become, so that what is produced
    /// matches what the workers consume. Not sent.
    weight: Option<i64>,
    /// Arrow IPC encoding, filled the first time timely asks for the length on the wire.
    encoded: OnceCell<Vec<u8>>,
}

impl Batch {
    /// Wraps a record batch.
    pub fn new(records: RecordBatch) -> Self {
        Self { records: Some(records), mark: None, destination: 0, weight: None, encoded: OnceCell::new() }
    }

    /// Wraps a record batch headed to worker `destination`.
    pub fn routed(records: RecordBatch, destination: usize) -> Self {
        Self { records: Some(records), mark: None, destination, weight: None, encoded: OnceCell::new() }
    }

    /// A watermark mark.
    pub fn mark(mark: Mark) -> Self {
        Self { records: None, mark: Some(mark), destination: 0, weight: None, encoded: OnceCell::new() }
    }

    /// This container, to be copied to each of `peers` workers by keyed exchange.
    pub fn broadcast(mut self, peers: usize) -> Self {
        self.destination = BROADCAST;
        self.weight = Some(self.natural_count() * peers as i64);
        self
    }

    /// One worker's copy of a broadcast container.
    pub(crate) fn copy_for_one(&self) -> Self {
        Self { destination: 0, weight: None, ..self.clone() }
    }

    fn natural_count(&self) -> i64 {
        if self.mark.is_some() { 1 } else { self.num_rows() as i64 }
    }

    /// The watermark mark, if this is one.
    pub fn as_mark(&self) -> Option<Mark> {
        self.mark
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
        self.weight.unwrap_or_else(|| self.natural_count())
    }
}

/// Length prefix (u64) + IPC stream bytes, padded to a multiple of 8 as timely expects.
impl ContainerBytes for Batch {
    fn from_bytes(bytes: timely::bytes::arc::Bytes) -> Self {
        let length = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length prefix"));
        if length == MARK_TAG {
            let sender = u32::from_le_bytes(bytes[8..12].try_into().expect("mark sender"));
            let idle = bytes[12] == 1;
            let watermark = i64::from_le_bytes(bytes[16..24].try_into().expect("mark watermark"));
            return Self::mark(Mark { sender, watermark: (!idle).then_some(watermark) });
        }
        let length = length as usize;
        if length == 0 {
            return Self::default();
        }
        let body = &bytes[8..8 + length];
        Self::new(decode(body))
    }

    fn length_in_bytes(&self) -> usize {
        if self.mark.is_some() {
            return 24;
        }
        8 + padded(self.encoded().len())
    }

    fn into_bytes<W: Write>(&self, writer: &mut W) {
        if let Some(mark) = self.mark {
            let mut bytes = [0u8; 24];
            bytes[..8].copy_from_slice(&MARK_TAG.to_le_bytes());
            bytes[8..12].copy_from_slice(&mark.sender.to_le_bytes());
            bytes[12] = u8::from(mark.watermark.is_none());
            bytes[16..24].copy_from_slice(&mark.watermark.unwrap_or_default().to_le_bytes());
            writer.write_all(&bytes).expect("write to send buffer");
            return;
        }
        let encoded = self.encoded();
        let padding = padded(encoded.len()) - encoded.len();
        // Writes go to timely's in-memory send buffers, which do not fail.
        writer.write_all(&(encoded.len() as u64).to_le_bytes()).expect("write to send buffer");
        writer.write_all(encoded).expect("write to send buffer");
        writer.write_all(&[0u8; 8][..padding]).expect("write to send buffer");
    }
}

/// Length prefix that marks a watermark mark instead of an IPC body.
const MARK_TAG: u64 = u64::MAX;

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

    #[test]
    fn marks_round_trip_through_timely_bytes() {
        for watermark in [Some(1_700_000_000_123), None, Some(i64::MAX), Some(-5)] {
            let batch = Batch::mark(Mark { sender: 7, watermark });
            let mut bytes = Vec::new();
            batch.into_bytes(&mut bytes);
            assert_eq!(bytes.len(), batch.length_in_bytes());
            let decoded = Batch::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
            assert_eq!(decoded.as_mark(), Some(Mark { sender: 7, watermark }));
            assert_eq!(decoded.record_count(), 1, "a mark counts as one message");
        }
    }
}
