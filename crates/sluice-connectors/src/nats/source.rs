//! [`NatsSource`]: reads a JetStream stream with one ordered consumer per split; see the module
//! documentation of [`crate::nats`] for splits, positions and guarantees.
//!
//! Each split's consumer runs as a task on the reader's [`IoRuntime`] and hands messages to the
//! worker through a bounded channel, so `poll` never waits on the network and a slow pipeline
//! holds the consumer back instead of buffering without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};
use tokio::sync::mpsc;

use super::{Column, SourceConfig, Start, StopAt};
use crate::format::message::MessageDecoder;
use crate::io::IoRuntime;

/// Messages buffered between the consumers and the worker, per reader.
const CHANNEL_CAPACITY: usize = 8192;
/// How long to wait before polling again when no message is ready.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long a consumer waits after an error before it goes on.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How often a warning about the same consumer error is repeated at most.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often a consumer task checks whether the client reconnected.
const CONNECTION_CHECK: Duration = Duration::from_millis(500);

/// Reads a NATS JetStream stream; see the module documentation.
#[derive(Debug)]
pub struct NatsSource {
    config: Arc<SourceConfig>,
}

impl NatsSource {
    pub(crate) fn new(config: SourceConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl Source for NatsSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: self.config.schema.clone() }]
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(NatsReader::open(self.config.clone(), context)?))
    }

    fn replayable(&self) -> bool {
        true
    }
}

/// Where a split stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Every message up to this stream sequence has been read (0: none).
    After(u64),
    /// Nothing read yet; reading starts at this time (milliseconds since the Unix epoch).
    Time(i64),
}

impl Position {
    fn encode(self) -> Vec<u8> {
        match self {
            Position::After(sequence) => sequence.to_string().into_bytes(),
            Position::Time(millis) => format!("time:{millis}").into_bytes(),
        }
    }

    fn decode(split: &str, bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let parsed = match text.strip_prefix("time:") {
            Some(millis) => millis.parse().ok().map(Position::Time),
            None => text.parse().ok().map(Position::After),
        };
        parsed.ok_or_else(|| {
            Error::user(format!(
                "the checkpoint holds a position for NATS split {split} that is not a stream sequence; it was \
                 not written by this connector"
            ))
        })
    }

    fn deliver_policy(self) -> Result<DeliverPolicy> {
        Ok(match self {
            Position::After(sequence) => DeliverPolicy::ByStartSequence { start_sequence: sequence + 1 },
            Position::Time(millis) => {
                let start_time =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                        .map_err(|_| Error::user(format!("start_time {millis} ms is out of range")))?;
                DeliverPolicy::ByStartTime { start_time }
            }
        })
    }
}

/// One split this reader reads: the whole stream or one subject filter.
#[derive(Debug)]
struct Split {
    name: String,
    filter: Option<String>,
    position: Position,
    /// With `stop_at: latest`: every message pending at the start has been read.
    caught_up: bool,
    /// Messages the server said were still pending after the last one read.
    pending: Option<u64>,
}

/// One message's fields that the columns need.
struct Received {
    sequence: u64,
    subject: String,
    payload: bytes::Bytes,
    timestamp: i64,
    /// Header name and its first value.
    headers: Vec<(String, String)>,
}

/// What a split's consumer task tells the worker.
enum Event {
    /// The consumer exists; this many messages were pending for it.
    Started {
        split: usize,
        pending: u64,
    },
    Message {
        split: usize,
        message: Received,
        pending: u64,
    },
    /// Every message pending at the start has been sent (`stop_at: latest`).
    CaughtUp {
        split: usize,
    },
    /// The first consumer could not be created: a configuration the server rejects.
    Failed(Error),
}

struct NatsReader {
    config: Arc<SourceConfig>,
    /// Runs the consumer tasks; shut down when the reader is dropped.
    _io: IoRuntime,
    decoder: MessageDecoder,
    splits: Vec<Split>,
    events: mpsc::Receiver<Event>,
    /// Keeps the channel open when every consumer task has ended (a bounded read).
    _sender: mpsc::Sender<Event>,
    /// Tells the consumer tasks to end.
    closing: Arc<AtomicBool>,
    received: Vec<Vec<Received>>,
    dead_letters: DeadLetterSink,
    stop: Arc<AtomicBool>,
}

impl NatsReader {
    fn open(config: Arc<SourceConfig>, context: SourceContext) -> Result<Self> {
        let io = IoRuntime::start("sluice-nats")?;
        let worker = context.worker;
        let (client, connections) =
            config.client.connect(&io, format!("sluice source worker {}", worker.index))?;
        let js = {
            let _inside = io.enter()?;
            jetstream::new(client)
        };
        let stream_name = config.stream.clone();
        let url = config.client.url.clone();
        let last_sequence = io.block_on(async {
            let mut stream = js.get_stream(&stream_name).await.map_err(|error| {
                Error::user(format!(
                    "cannot open JetStream stream `{stream_name}` on {url}: {error}; create it first (Sluice does \
                     not create streams)"
                ))
            })?;
            let info = stream.info().await.map_err(|e| Error::external(format!("reading stream `{stream_name}`"), e))?;
            Ok::<_, Error>(info.state.last_sequence)
        })??;
        let restored: Option<HashMap<&str, &[u8]>> = context
            .restore
            .as_ref()
            .map(|states| states.iter().map(|s| (s.split.as_str(), s.position.as_slice())).collect());
        let all: Vec<(String, Option<String>)> = if config.filters.is_empty() {
            vec![(config.stream.clone(), None)]
        } else {
            config.filters.iter().map(|f| (format!("{}:{f}", config.stream), Some(f.clone()))).collect()
        };
        let mut splits = Vec::new();
        for (name, filter) in all.into_iter().skip(worker.index).step_by(worker.peers.max(1)) {
            let position = match (&restored, restored.as_ref().and_then(|r| r.get(name.as_str()))) {
                (_, Some(bytes)) => Position::decode(&name, bytes)?,
                // Restoring, and the checkpoint does not know this split: it is new.
                (Some(_), None) => Position::After(0),
                (None, None) => match config.start {
                    Start::Earliest => Position::After(0),
                    Start::Latest => Position::After(last_sequence),
                    Start::Sequence(first) => Position::After(first - 1),
                    Start::Time(millis) => Position::Time(millis),
                },
            };
            splits.push(Split { name, filter, position, caught_up: false, pending: None });
        }
        tracing::info!(
            worker = worker.index,
            splits = ?splits.iter().map(|s| format!("{}@{:?}", s.name, s.position)).collect::<Vec<_>>(),
            "nats source assigned"
        );
        let (sender, events) = mpsc::channel(CHANNEL_CAPACITY);
        let closing = Arc::new(AtomicBool::new(false));
        for (index, split) in splits.iter().enumerate() {
            let task = SplitTask {
                js: js.clone(),
                connections: connections.clone(),
                stream: config.stream.clone(),
                split: index,
                filter: split.filter.clone(),
                deliver_policy: split.position.deliver_policy()?,
                bounded: config.stop_at == StopAt::Latest,
                sender: sender.clone(),
                closing: closing.clone(),
            };
            io.handle()?.spawn(task.run());
        }
        Ok(Self {
            decoder: MessageDecoder::new(config.format, config.value_schema.clone()),
            received: splits.iter().map(|_| Vec::new()).collect(),
            config,
            _io: io,
            splits,
            events,
            _sender: sender,
            closing,
            dead_letters: context.dead_letters,
            stop: context.stop,
        })
    }

    /// Takes up to `max` messages from the consumers into `received`; returns how many.
    fn receive(&mut self, max: usize) -> Result<usize> {
        let mut count = 0;
        while count < max {
            let event = match self.events.try_recv() {
                Ok(event) => event,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::internal("the NATS consumer tasks ended without a reason"));
                }
            };
            match event {
                Event::Started { split, pending } => self.splits[split].pending = Some(pending),
                Event::Message { split, message, pending } => {
                    let state = &mut self.splits[split];
                    state.position = Position::After(message.sequence);
                    state.pending = Some(pending);
                    self.received[split].push(message);
                    count += 1;
                }
                Event::CaughtUp { split } => self.splits[split].caught_up = true,
                Event::Failed(error) => return Err(error),
            }
        }
        Ok(count)
    }

    /// Turns one split's received messages into a batch; bad ones go to the dead-letter sink.
    fn build(&mut self, split: usize) -> Result<Option<RecordBatch>> {
        let messages = std::mem::take(&mut self.received[split]);
        if messages.is_empty() {
            return Ok(None);
        }
        let stream = &self.config.stream;
        let payloads: Vec<Option<&[u8]>> = messages.iter().map(|m| Some(m.payload.as_ref())).collect();
        let dead_letters = &mut self.dead_letters;
        let (values, rows) = self.decoder.decode(&payloads, &mut |index, reason| {
            let message = &messages[index];
            dead_letters.report(DeadLetter {
                position: format!("nats {stream}@{} ({})", message.sequence, message.subject),
                raw: message.payload.to_vec(),
                reason,
            })
        })?;
        if rows.is_empty() {
            return Ok(None);
        }
        let kept: Vec<&Received> = rows.iter().map(|row| &messages[*row]).collect();
        let schema = &self.config.schema;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (column, field) in self.config.columns.iter().zip(schema.fields()) {
            let array: ArrayRef = match column {
                Column::Value(i) => values.column(*i).clone(),
                Column::Subject => {
                    Arc::new(StringArray::from_iter_values(kept.iter().map(|m| m.subject.as_str())))
                }
                Column::Sequence => cast(
                    &Int64Array::from_iter_values(
                        kept.iter().map(|m| i64::try_from(m.sequence).unwrap_or(i64::MAX)),
                    ),
                    field.data_type(),
                )?,
                Column::Timestamp => {
                    cast(&Int64Array::from_iter_values(kept.iter().map(|m| m.timestamp)), field.data_type())?
                }
                Column::Headers => {
                    Arc::new(StringArray::from_iter_values(kept.iter().map(|m| headers_json(m))))
                }
                Column::Header(name) => Arc::new(StringArray::from_iter(kept.iter().map(|m| {
                    m.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
                }))),
            };
            columns.push(array);
        }
        Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
    }
}

fn headers_json(message: &Received) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        message.headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    serde_json::Value::Object(map).to_string()
}

impl SourceReader for NatsReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(SourceStatus::Finished);
        }
        let received = self.receive(max_rows)?;
        for split in 0..self.splits.len() {
            if let Some(batch) = self.build(split)? {
                out.push(SourceBatch { output: 0, split, batch });
            }
        }
        if self.config.stop_at == StopAt::Latest && self.splits.iter().all(|s| s.caught_up) {
            return Ok(SourceStatus::Finished);
        }
        Ok(if received == 0 { SourceStatus::Idle(IDLE_POLL) } else { SourceStatus::Ready })
    }

    fn splits(&self) -> usize {
        self.splits.len()
    }

    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(self
            .splits
            .iter()
            .map(|split| SplitState { split: split.name.clone(), position: split.position.encode() })
            .collect())
    }

    fn backlogged(&self, split: usize) -> bool {
        // The server's count of the split's messages after the last one read: it can lag new
        // arrivals but never names messages that were not there, so a split said to be
        // backlogged is (unless retention deleted them before they were read).
        self.splits.get(split).is_some_and(|s| s.pending.is_some_and(|pending| pending > 0))
    }

    fn lag(&self) -> Option<u64> {
        let known: Vec<u64> = self.splits.iter().filter_map(|s| s.pending).collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }
}

impl Drop for NatsReader {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        // Closing the channel ends tasks waiting to send; `io` then shuts the runtime down.
        self.events.close();
    }
}

/// Reads one split and sends its messages to the worker.
///
/// The ordered consumer recovers from gaps itself, but after the client reconnects (a server
/// restart) its consumer may be gone without a sign for a long while; so the task watches the
/// connection count and, when it changes, creates a new consumer from the sequence after the
/// last message it sent.
struct SplitTask {
    js: jetstream::Context,
    connections: Arc<AtomicU64>,
    stream: String,
    split: usize,
    filter: Option<String>,
    deliver_policy: DeliverPolicy,
    bounded: bool,
    sender: mpsc::Sender<Event>,
    closing: Arc<AtomicBool>,
}

/// Why a consumer's reading stopped.
enum Stop {
    /// The worker is gone, or a bounded read is complete: the task ends.
    Done,
    /// The consumer must be created again.
    Recreate(String),
}

impl SplitTask {
    async fn run(mut self) {
        let what = match &self.filter {
            Some(filter) => format!("JetStream stream `{}` (subjects `{filter}`)", self.stream),
            None => format!("JetStream stream `{}`", self.stream),
        };
        let mut remaining: Option<u64> = None;
        let mut started = false;
        let mut last_warning: Option<(String, Instant)> = None;
        loop {
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            match self.consume(&mut remaining, &mut started).await {
                Ok(Stop::Done) => return,
                // The server rejects what was asked (e.g. a filter outside the stream's
                // subjects): retrying cannot help.
                Err(reason) if !started => {
                    let error = Error::user(format!("cannot read {what}: {reason}"));
                    let _ = self.sender.send(Event::Failed(error)).await;
                    return;
                }
                Ok(Stop::Recreate(reason)) | Err(reason) => {
                    if self.sender.is_closed() {
                        return;
                    }
                    let repeat = last_warning
                        .as_ref()
                        .is_some_and(|(last, at)| *last == reason && at.elapsed() < WARN_EVERY);
                    if !repeat {
                        tracing::warn!(target: "nats", "reading {what}: {reason} (creating the consumer again)");
                        last_warning = Some((reason, Instant::now()));
                    }
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    /// Creates a consumer at the split's position and sends its messages until it must stop.
    async fn consume(
        &mut self,
        remaining: &mut Option<u64>,
        started: &mut bool,
    ) -> std::result::Result<Stop, String> {
        let connection = self.connections.load(Ordering::Relaxed);
        let stream =
            self.js.get_stream(&self.stream).await.map_err(|e| format!("opening the stream: {e}"))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: self.filter.clone().unwrap_or_default(),
                deliver_policy: self.deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating a consumer: {e}"))?;
        let pending = consumer.cached_info().num_pending;
        if !*started {
            *started = true;
            if self.sender.send(Event::Started { split: self.split, pending }).await.is_err() {
                return Ok(Stop::Done);
            }
            // A bounded read takes the messages pending now; later consumers continue the count.
            *remaining = self.bounded.then_some(pending);
        }
        if *remaining == Some(0) {
            let _ = self.sender.send(Event::CaughtUp { split: self.split }).await;
            return Ok(Stop::Done);
        }
        let mut messages = consumer.messages().await.map_err(|e| format!("reading messages: {e}"))?;
        let mut check = tokio::time::interval(CONNECTION_CHECK);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = check.tick() => {
                    if self.connections.load(Ordering::Relaxed) != connection {
                        return Ok(Stop::Recreate("the client reconnected to the server".to_owned()));
                    }
                    if self.closing.load(Ordering::Relaxed) {
                        return Ok(Stop::Done);
                    }
                    continue;
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Ok(Stop::Recreate(error.to_string())),
                None => return Ok(Stop::Recreate("the consumer's message stream ended".to_owned())),
            };
            let info = message.info().map_err(|e| format!("a message without its metadata: {e}"))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let timestamp =
                i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
            let headers = message
                .headers
                .as_ref()
                .map(|headers| {
                    let mut pairs: Vec<(String, String)> = headers
                        .iter()
                        .filter_map(|(name, values)| {
                            Some((name.to_string(), values.first()?.as_str().to_owned()))
                        })
                        .collect();
                    pairs.sort();
                    pairs
                })
                .unwrap_or_default();
            let received = Received {
                sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                timestamp,
                headers,
            };
            if self
                .sender
                .send(Event::Message { split: self.split, message: received, pending })
                .await
                .is_err()
            {
                return Ok(Stop::Done);
            }
            // A new consumer starts after this message.
            self.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: sequence + 1 };
            if let Some(left) = remaining.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    let _ = self.sender.send(Event::CaughtUp { split: self.split }).await;
                    return Ok(Stop::Done);
                }
            }
        }
    }
}
