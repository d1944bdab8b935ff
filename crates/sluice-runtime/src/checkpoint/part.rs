//! The bytes of one checkpoint part: what one node on one worker saved. A small tagged,
//! length-prefixed format (numbers are little-endian `u64`); the blobs inside belong to the
//! connector or processor.
//!
//! A processor's part is written and read as a stream, chunk by chunk, so that its size is not
//! bounded by memory ([`ProcessorPartWriter`], [`ProcessorPartReader`]). Format 2 (`SLP2`):
//!
//! ```text
//! "SLP2" has_watermark watermark ( key_group length bytes )* END_OF_CHUNKS chunk_count
//! ```
//!
//! Format 1 (`SLP1`, before chunks could be streamed) put the count of key groups before them
//! and no end marker; it is still read. Any other tag is refused with a message naming it.

use std::io::{Read, Write};

use crate::connector::SplitState;
use crate::error::{Error, Result};
use crate::processor::{DEFAULT_CHUNK_BYTES, EventTime, KeyGroupState, SnapshotWriter};

const SOURCE: &[u8; 4] = b"SLS1";
const PROCESSOR_V1: &[u8; 4] = b"SLP1";
const PROCESSOR: &[u8; 4] = b"SLP2";
const SINK: &[u8; 4] = b"SLK1";
/// Follows the last chunk of a format-2 processor part; no key group has this number.
const END_OF_CHUNKS: u64 = u64::MAX;

/// What a source saved: its splits' positions, and whether it had read everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePart {
    /// Positions of the splits this worker read.
    pub splits: Vec<SplitState>,
    /// Whether this worker's reader had finished (a bounded source read to its end).
    pub finished: bool,
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

/// Writes a processor's part (format 2) to `out` as the processor snapshots into it: nothing
/// but the current chunk passes through memory.
pub struct ProcessorPartWriter<W: Write> {
    out: W,
    chunks: u64,
    chunk_bytes: usize,
    largest_chunk: usize,
}

impl<W: Write> ProcessorPartWriter<W> {
    /// Starts a part of a processor whose merged input watermark is `watermark`.
    pub fn new(mut out: W, watermark: Option<EventTime>) -> Result<Self> {
        let mut header = PROCESSOR.to_vec();
        header.extend_from_slice(&u64::from(watermark.is_some()).to_le_bytes());
        header.extend_from_slice(&(watermark.unwrap_or(0) as u64).to_le_bytes());
        out.write_all(&header).map_err(write_failed)?;
        Ok(Self { out, chunks: 0, chunk_bytes: DEFAULT_CHUNK_BYTES, largest_chunk: 0 })
    }

    /// Asks the processor for chunks of about `bytes` (see [`SnapshotWriter::chunk_bytes`]).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// The largest chunk written so far, in bytes.
    pub fn largest_chunk(&self) -> usize {
        self.largest_chunk
    }

    /// Ends the part and returns the output, flushed.
    pub fn finish(mut self) -> Result<W> {
        let mut trailer = END_OF_CHUNKS.to_le_bytes().to_vec();
        trailer.extend_from_slice(&self.chunks.to_le_bytes());
        self.out.write_all(&trailer).map_err(write_failed)?;
        self.out.flush().map_err(write_failed)?;
        Ok(self.out)
    }
}

impl<W: Write> SnapshotWriter for ProcessorPartWriter<W> {
    fn write(&mut self, key_group: u32, bytes: &[u8]) -> Result<()> {
        let mut head = u64::from(key_group).to_le_bytes().to_vec();
        head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.out.write_all(&head).and_then(|()| self.out.write_all(bytes)).map_err(write_failed)?;
        self.chunks += 1;
        self.largest_chunk = self.largest_chunk.max(bytes.len());
        Ok(())
    }

    fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }
}

fn write_failed(error: std::io::Error) -> Error {
    Error::external("writing a checkpoint part", error)
}

/// Reads a processor's part (format 1 or 2) chunk by chunk from `input`, holding one chunk in
/// memory at a time.
pub struct ProcessorPartReader<R: Read> {
    input: R,
    what: String,
    watermark: Option<EventTime>,
    /// Format 1: the chunks still to read; format 2: `None`.
    remaining: Option<u64>,
    read: u64,
    ended: bool,
}

impl<R: Read> ProcessorPartReader<R> {
    /// Reads the header of a part of processor `node`.
    pub fn open(mut input: R, node: &str) -> Result<Self> {
        let what = format!("processor \"{node}\"");
        let mut tag = [0u8; 4];
        read_exact(&mut input, &mut tag, &what)?;
        let v1 = match &tag {
            PROCESSOR => false,
            PROCESSOR_V1 => true,
            [b'S', b'L', b'P', version] => {
                return Err(Error::user(format!(
                    "checkpoint part of {what} has format {}, which this version of Sluice cannot read \
                     (it reads 1 and 2); restore it with the Sluice that wrote it, or start fresh (--fresh)",
                    char::from(*version)
                )));
            }
            _ => return Err(Error::user(format!("checkpoint part of {what} has an unknown format"))),
        };
        let mut part = Self { input, what, watermark: None, remaining: None, read: 0, ended: false };
        let has_watermark = part.u64()? == 1;
        let watermark = part.u64()? as i64;
        part.watermark = has_watermark.then_some(watermark);
        if v1 {
            part.remaining = Some(part.u64()?);
        }
        Ok(part)
    }

    /// The processor's merged input watermark when the part was written.
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark
    }

    /// The next chunk whose key group `wanted` accepts, passing over the others without
    /// holding them; `None` after the last one.
    pub fn next_chunk(&mut self, wanted: impl Fn(u32) -> bool) -> Result<Option<KeyGroupState>> {
        while !self.ended {
            if let Some(remaining) = self.remaining.as_mut() {
                if *remaining == 0 {
                    self.ended = true;
                    return Ok(None);
                }
                *remaining -= 1;
            }
            let key_group = self.u64()?;
            if key_group == END_OF_CHUNKS && self.remaining.is_none() {
                self.ended = true;
                let count = self.u64()?;
                if count != self.read {
                    return Err(Error::user(format!(
                        "checkpoint part of {} is corrupt: it ends after {} chunks but says it has {count}",
                        self.what, self.read
                    )));
                }
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra).map_err(|e| read_error(e, &self.what))? != 0 {
                    return Err(Error::user(format!(
                        "checkpoint part of {} has bytes after its end",
                        self.what
                    )));
                }
                return Ok(None);
            }
            let key_group = u32::try_from(key_group).map_err(|_| self.truncated())?;
            let length = self.u64()?;
            self.read += 1;
            let what = &self.what;
            let mut limited = (&mut self.input).take(length);
            if wanted(key_group) {
                // Grows with what arrives: a damaged length cannot allocate more than the part holds.
                let mut bytes = Vec::new();
                limited.read_to_end(&mut bytes).map_err(|e| read_error(e, what))?;
                if bytes.len() as u64 != length {
                    return Err(self.truncated());
                }
                return Ok(Some(KeyGroupState { key_group, bytes }));
            }
            let skipped =
                std::io::copy(&mut limited, &mut std::io::sink()).map_err(|e| read_error(e, what))?;
            if skipped != length {
                return Err(self.truncated());
            }
        }
        Ok(None)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut bytes = [0u8; 8];
        read_exact(&mut self.input, &mut bytes, &self.what)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn truncated(&self) -> Error {
        Error::user(format!("checkpoint part of {} is truncated", self.what))
    }
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buffer).map_err(|error| read_error(error, what))
}

fn read_error(error: std::io::Error, what: &str) -> Error {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        return Error::user(format!("checkpoint part of {what} is truncated"));
    }
    Error::external(format!("reading the checkpoint part of {what}"), error)
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

    fn processor_part(watermark: Option<EventTime>, chunks: &[KeyGroupState]) -> Vec<u8> {
        let mut writer = ProcessorPartWriter::new(Vec::new(), watermark).unwrap();
        for chunk in chunks {
            writer.write(chunk.key_group, &chunk.bytes).unwrap();
        }
        writer.finish().unwrap()
    }

    fn read_all(
        bytes: &[u8],
        wanted: impl Fn(u32) -> bool,
    ) -> Result<(Option<EventTime>, Vec<KeyGroupState>)> {
        let mut reader = ProcessorPartReader::open(bytes, "p")?;
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.next_chunk(&wanted)? {
            chunks.push(chunk);
        }
        Ok((reader.watermark(), chunks))
    }

    #[test]
    fn parts_round_trip() {
        let source = SourcePart {
            splits: vec![SplitState { split: "a.jsonl".into(), position: vec![1, 2, 3] }],
            finished: true,
        };
        assert_eq!(SourcePart::decode(&source.encode(), "s").unwrap(), source);
        let chunks = vec![
            KeyGroupState { key_group: 127, bytes: vec![9; 100] },
            KeyGroupState { key_group: 3, bytes: vec![] },
            KeyGroupState { key_group: 127, bytes: vec![8; 10] },
        ];
        let bytes = processor_part(Some(-42), &chunks);
        assert_eq!(read_all(&bytes, |_| true).unwrap(), (Some(-42), chunks.clone()));
        // Chunks of other key groups are passed over.
        assert_eq!(read_all(&bytes, |group| group == 3).unwrap(), (Some(-42), vec![chunks[1].clone()]));
        assert_eq!(read_all(&processor_part(None, &[]), |_| true).unwrap(), (None, vec![]));
        let sink = SinkPart { prepared: b"files".to_vec() };
        assert_eq!(SinkPart::decode(&sink.encode(), "k").unwrap(), sink);
    }

    #[test]
    fn format_1_processor_parts_still_restore() {
        // As Sluice wrote them before parts were streamed: the count of key groups up front.
        let mut v1 = b"SLP1".to_vec();
        for value in [1u64, (-7i64) as u64, 2, 5, 2] {
            v1.extend_from_slice(&value.to_le_bytes());
        }
        v1.extend_from_slice(&[1, 2]);
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&0u64.to_le_bytes());
        let expected = vec![
            KeyGroupState { key_group: 5, bytes: vec![1, 2] },
            KeyGroupState { key_group: 9, bytes: vec![] },
        ];
        assert_eq!(read_all(&v1, |_| true).unwrap(), (Some(-7), expected));
        for cut in 0..v1.len() {
            assert!(read_all(&v1[..cut], |_| true).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn damaged_or_unknown_parts_are_errors_that_say_so_not_panics() {
        let bytes = processor_part(None, &[KeyGroupState { key_group: 1, bytes: vec![7; 50] }]);
        for cut in 0..bytes.len() {
            let error = read_all(&bytes[..cut], |_| true).unwrap_err().to_string();
            assert!(error.contains("truncated"), "cut at {cut}: {error}");
            assert!(read_all(&bytes[..cut], |_| false).is_err(), "cut at {cut}, skipping");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer, |_| true).unwrap_err().to_string().contains("after its end"));
        let mut miscounted = bytes.clone();
        let at = miscounted.len() - 8;
        miscounted[at] = 2;
        assert!(read_all(&miscounted, |_| true).unwrap_err().to_string().contains("corrupt"));
        let mut newer = bytes.clone();
        newer[3] = b'9';
        let error = read_all(&newer, |_| true).unwrap_err().to_string();
        assert!(error.contains("has format 9") && error.contains("reads 1 and 2"), "{error}");
        assert!(SourcePart::decode(&bytes, "p").unwrap_err().to_string().contains("unknown format"));
        assert!(
            read_all(&SinkPart { prepared: vec![] }.encode(), |_| true)
                .unwrap_err()
                .to_string()
                .contains("unknown format")
        );
    }
}
