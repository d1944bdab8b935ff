//! The bytes of one checkpoint part: what one node on one worker saved. A small tagged,
//! length-prefixed format; the blobs inside belong to the connector or processor.

use crate::connector::SplitState;
use crate::error::{Error, Result};
use crate::processor::{EventTime, KeyGroupState};

const SOURCE: &[u8; 4] = b"SLS1";
const PROCESSOR: &[u8; 4] = b"SLP1";
const SINK: &[u8; 4] = b"SLK1";

/// What a source saved: its splits' positions, and whether it had read everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePart {
    /// Positions of the splits this worker read.
    pub splits: Vec<SplitState>,
    /// Whether this worker's reader had finished (a bounded source read to its end).
    pub finished: bool,
}

/// What a stateful processor saved: its key groups and its input watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorPart {
    /// The merged input watermark when the snapshot was taken.
    pub watermark: Option<EventTime>,
    /// State per key group.
    pub key_groups: Vec<KeyGroupState>,
}

/// What a sink saved: what its writer returned from `prepare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkPart {
    /// The prepared transaction.
    pub prepared: Vec<u8>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: &[u8; 4]) -> Self {
        Self(tag.to_vec())
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn blob(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], tag: &[u8; 4], what: &'a str) -> Result<Self> {
        if bytes.len() < 4 || &bytes[..4] != tag {
            return Err(Error::user(format!("checkpoint part of {what} has an unknown format")));
        }
        Ok(Self { bytes: &bytes[4..], what })
    }
    fn truncated(&self) -> Error {
        Error::user(format!("checkpoint part of {} is truncated", self.what))
    }
    fn u64(&mut self) -> Result<u64> {
        let (head, rest) = self.bytes.split_at_checked(8).ok_or_else(|| self.truncated())?;
        self.bytes = rest;
        Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
    }
    fn blob(&mut self) -> Result<&'a [u8]> {
        let length = usize::try_from(self.u64()?).map_err(|_| self.truncated())?;
        let (head, rest) = self.bytes.split_at_checked(length).ok_or_else(|| self.truncated())?;
        self.bytes = rest;
        Ok(head)
    }
    fn text(&mut self) -> Result<String> {
        let blob = self.blob()?;
        String::from_utf8(blob.to_vec()).map_err(|_| self.truncated())
    }
}

impl SourcePart {
    /// Encodes the part.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new(SOURCE);
        writer.u64(u64::from(self.finished));
        writer.u64(self.splits.len() as u64);
        for split in &self.splits {
            writer.blob(split.split.as_bytes());
            writer.blob(&split.position);
        }
        writer.0
    }

    /// Decodes a part of source `node`.
    pub fn decode(bytes: &[u8], node: &str) -> Result<Self> {
        let what = format!("source \"{node}\"");
        let mut reader = Reader::new(bytes, SOURCE, &what)?;
        let finished = reader.u64()? == 1;
        let count = reader.u64()?;
        let mut splits = Vec::new();
        for _ in 0..count {
            let split = reader.text()?;
            splits.push(SplitState { split, position: reader.blob()?.to_vec() });
        }
        Ok(Self { splits, finished })
    }
}

impl ProcessorPart {
    /// Encodes the part.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new(PROCESSOR);
        match self.watermark {
            Some(watermark) => {
                writer.u64(1);
                writer.u64(watermark as u64);
            }
            None => {
                writer.u64(0);
                writer.u64(0);
            }
        }
        writer.u64(self.key_groups.len() as u64);
        for state in &self.key_groups {
            writer.u64(u64::from(state.key_group));
            writer.blob(&state.bytes);
        }
        writer.0
    }

    /// Decodes a part of processor `node`.
    pub fn decode(bytes: &[u8], node: &str) -> Result<Self> {
        let what = format!("processor \"{node}\"");
        let mut reader = Reader::new(bytes, PROCESSOR, &what)?;
        let has_watermark = reader.u64()? == 1;
        let watermark = reader.u64()? as i64;
        let count = reader.u64()?;
        let mut key_groups = Vec::new();
        for _ in 0..count {
            let key_group = u32::try_from(reader.u64()?).map_err(|_| reader.truncated())?;
            key_groups.push(KeyGroupState { key_group, bytes: reader.blob()?.to_vec() });
        }
        Ok(Self { watermark: has_watermark.then_some(watermark), key_groups })
    }
}

impl SinkPart {
    /// Encodes the part.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new(SINK);
        writer.blob(&self.prepared);
        writer.0
    }

    /// Decodes a part of sink `node`.
    pub fn decode(bytes: &[u8], node: &str) -> Result<Self> {
        let what = format!("sink \"{node}\"");
        let mut reader = Reader::new(bytes, SINK, &what)?;
        Ok(Self { prepared: reader.blob()?.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let source = SourcePart {
            splits: vec![SplitState { split: "a.jsonl".into(), position: vec![1, 2, 3] }],
            finished: true,
        };
        assert_eq!(SourcePart::decode(&source.encode(), "s").unwrap(), source);
        let processor = ProcessorPart {
            watermark: Some(-42),
            key_groups: vec![KeyGroupState { key_group: 127, bytes: vec![9; 100] }],
        };
        assert_eq!(ProcessorPart::decode(&processor.encode(), "p").unwrap(), processor);
        let sink = SinkPart { prepared: b"files".to_vec() };
        assert_eq!(SinkPart::decode(&sink.encode(), "k").unwrap(), sink);
    }

    #[test]
    fn damaged_parts_are_errors_not_panics() {
        let bytes = ProcessorPart {
            watermark: None,
            key_groups: vec![KeyGroupState { key_group: 1, bytes: vec![7; 50] }],
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(ProcessorPart::decode(&bytes[..cut], "p").is_err(), "cut at {cut}");
        }
        assert!(SourcePart::decode(&bytes, "p").unwrap_err().to_string().contains("unknown format"));
    }
}
