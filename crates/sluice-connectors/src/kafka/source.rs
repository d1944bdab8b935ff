//! [`KafkaSource`]: reads topics with a consumer per worker.
//!
//! Partitions are assigned, not balanced by a consumer group: all partitions of the topics,
//! sorted by topic and number, are dealt round-robin to the workers, so the split of work is
//! the same at every start and each partition is one split with its own watermark. A split's
//! position is the next offset to read; symbolic starts (`earliest`, `latest`, a timestamp, the
//! group's offset) are resolved to numbers when reading starts, so a checkpoint always pins an
//! exact offset. After each checkpoint the group's offsets are committed for lag tools; resuming
//! uses the checkpoint, never them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};

use super::client::Context;
use super::{Column, SourceConfig, Start, StopAt, Topics};
use crate::format::message::MessageDecoder;
use crate::format::registry::RegistryDecoder;

/// How long metadata and offset requests may take when reading starts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait before polling again when no message is ready.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How often a warning about the same consumer error is repeated at most.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long the brokers may keep saying a position is out of range before the run fails.
const OUT_OF_RANGE_GIVE_UP: Duration = Duration::from_secs(60);

/// Reads Kafka topics; see the module documentation.
#[derive(Debug)]
pub struct KafkaSource {
    config: Arc<SourceConfig>,
}

impl KafkaSource {
    pub(crate) fn new(config: SourceConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl Source for KafkaSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: self.config.schema.clone() }]
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(KafkaReader::open(self.config.clone(), context)?))
    }

    fn replayable(&self) -> bool {
        true
    }
}

/// One assigned partition.
#[derive(Debug)]
struct Split {
    topic: String,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// With `stop_at: latest`: the end offset (exclusive).
    end: Option<i64>,
}

impl Split {
    fn name(&self) -> String {
        split_name(&self.topic, self.partition)
    }

    fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

fn split_name(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}

/// One message's fields that the columns need, copied out of the consumer's buffer.
struct Received {
    offset: i64,
    payload: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// How payloads hold records.
enum Payloads {
    /// Each is one record of the format (for Avro, of the declared or derived writer schema).
    Bare(MessageDecoder),
    /// Each names its writer schema in a schema registry.
    Registry(Box<RegistryDecoder>),
}

struct KafkaReader {
    config: Arc<SourceConfig>,
    consumer: BaseConsumer<Context>,
    decoder: Payloads,
    splits: Vec<Split>,
    /// topic → partition → index into `splits`.
    index: HashMap<String, HashMap<i32, usize>>,
    /// Per split, messages received in this poll.
    received: Vec<Vec<Received>>,
    dead_letters: DeadLetterSink,
    stop: Arc<std::sync::atomic::AtomicBool>,
    wants_key: bool,
    wants_headers: bool,
    last_warning: Option<(String, Instant)>,
    /// Since when the brokers have been saying a position is out of range, if they are.
    out_of_range_since: Option<Instant>,
}

impl KafkaReader {
    fn open(config: Arc<SourceConfig>, context: SourceContext) -> Result<Self> {
        let consumer: BaseConsumer<Context> = config
            .client
            .config()?
            .create_with_context(Context::default())
            .map_err(|e| Error::external("creating the Kafka consumer", e))?;
        let all = partitions(&consumer, &config)?;
        let worker = context.worker;
        let restored: Option<HashMap<&str, &[u8]>> = context
            .restore
            .as_ref()
            .map(|states| states.iter().map(|s| (s.split.as_str(), s.position.as_slice())).collect());
        let mut splits = Vec::new();
        for (topic, partition) in all.into_iter().skip(worker.index).step_by(worker.peers.max(1)) {
            splits.push(Split { topic, partition, next: -1, end: None });
        }
        resolve_offsets(&consumer, &config, &mut splits, restored.as_ref())?;
        assign(&consumer, &splits)?;
        tracing::info!(
            worker = worker.index,
            partitions = ?splits.iter().map(|s| format!("{}@{}", s.name(), s.next)).collect::<Vec<_>>(),
            "kafka source assigned"
        );
        let mut index: HashMap<String, HashMap<i32, usize>> = HashMap::new();
        for (i, split) in splits.iter().enumerate() {
            index.entry(split.topic.clone()).or_default().insert(split.partition, i);
        }
        let decoder = match (&config.registry, &config.avro) {
            (Some(settings), _) => {
                let subjects: Vec<String> = match (settings.subject(), &config.topics) {
                    (Some(subject), _) => vec![subject.to_owned()],
                    (None, Topics::Named(topics)) => topics.iter().map(|t| settings.subject_for(t)).collect(),
                    (None, Topics::Pattern(_)) => Vec::new(),
                };
                Payloads::Registry(Box::new(RegistryDecoder::open(
                    settings,
                    config.format,
                    config.value_schema.clone(),
                    &subjects,
                )?))
            }
            (None, Some(codec)) => Payloads::Bare(
                MessageDecoder::avro(codec.clone(), config.value_schema.clone(), false)
                    .map_err(Error::user)?,
            ),
            (None, None) => Payloads::Bare(MessageDecoder::new(config.format, config.value_schema.clone())),
        };
        let wants_key = config.columns.contains(&Column::Key);
        let wants_headers = config.columns.iter().any(|c| matches!(c, Column::Headers | Column::Header(_)));
        Ok(Self {
            decoder,
            received: splits.iter().map(|_| Vec::new()).collect(),
            config,
            consumer,
            splits,
            index,
            dead_letters: context.dead_letters,
            stop: context.stop,
            wants_key,
            wants_headers,
            last_warning: None,
            out_of_range_since: None,
        })
    }

    /// The brokers say a position is out of range (`auto.offset.reset` is `error`, so nothing
    /// was skipped): read again from every split's own position, which a broker that answered
    /// from stale offsets accepts on a later try; fail after [`OUT_OF_RANGE_GIVE_UP`], since
    /// the records are gone (retention, a recreated topic) and skipping them would lose data.
    fn out_of_range(&mut self, error: &rdkafka::error::KafkaError) -> Result<()> {
        let since = *self.out_of_range_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= OUT_OF_RANGE_GIVE_UP {
            let positions: Vec<String> =
                self.splits.iter().map(|s| format!("{}@{}", s.name(), s.next)).collect();
            return Err(Error::user(format!(
                "the Kafka brokers have said for {}s that the positions to read from are out of range \
                 ({error}); positions {}: the records were deleted (retention) or the topic was \
                 recreated. Sluice does not skip records silently: run with `--fresh` to start \
                 afresh from the `start` option",
                OUT_OF_RANGE_GIVE_UP.as_secs(),
                positions.join(", ")
            )));
        }
        self.warn(format!("{error}; reading again from this source's own positions"));
        assign(&self.consumer, &self.splits)
    }

    /// Takes up to `max` messages from the consumer into `received`; returns how many.
    fn receive(&mut self, max: usize) -> Result<usize> {
        let mut count = 0;
        while count < max {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(Error::user(format!(
                            "the Kafka consumer failed fatally: {code:?}: {reason}"
                        )));
                    }
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) {
                        self.out_of_range(&error)?;
                        break;
                    }
                    // Transport errors (a broker restarting) are retried by librdkafka.
                    self.warn(error.to_string());
                    break;
                }
            };
            let Some(&split) = self.index.get(message.topic()).and_then(|p| p.get(&message.partition()))
            else {
                continue;
            };
            self.out_of_range_since = None;
            let offset = message.offset();
            let state = &mut self.splits[split];
            if state.end.is_some_and(|end| offset >= end) || offset < state.next {
                continue;
            }
            state.next = offset + 1;
            let headers = match (self.wants_headers, message.headers()) {
                (true, Some(headers)) => headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect(),
                _ => Vec::new(),
            };
            self.received[split].push(Received {
                offset,
                payload: message.payload().map(<[u8]>::to_vec),
                key: if self.wants_key { message.key().map(<[u8]>::to_vec) } else { None },
                timestamp: message.timestamp().to_millis(),
                headers,
            });
            count += 1;
            if state.done() {
                self.pause(split)?;
            }
        }
        Ok(count)
    }

    fn pause(&self, split: usize) -> Result<()> {
        let split = &self.splits[split];
        let mut list = TopicPartitionList::new();
        list.add_partition(&split.topic, split.partition);
        self.consumer
            .pause(&list)
            .map_err(|e| Error::external(format!("pausing Kafka partition {}", split.name()), e))
    }

    fn warn(&mut self, message: String) {
        let repeat = self
            .last_warning
            .as_ref()
            .is_some_and(|(last, at)| *last == message && at.elapsed() < WARN_EVERY);
        if !repeat {
            tracing::warn!(target: "kafka", "consumer: {message} (retrying)");
            self.last_warning = Some((message, Instant::now()));
        }
    }

    /// Turns one split's received messages into a batch; bad ones go to the dead-letter sink.
    fn build(&mut self, split: usize) -> Result<Option<RecordBatch>> {
        let mut messages = std::mem::take(&mut self.received[split]);
        if messages.is_empty() {
            return Ok(None);
        }
        let topic = self.splits[split].topic.clone();
        let partition = self.splits[split].partition;
        let position = |offset: i64| format!("kafka {topic}/{partition}@{offset}");
        // Metadata that must be text but is not.
        let mut bad_metadata = Vec::new();
        messages.retain(|message| match self.metadata_problem(message) {
            None => true,
            Some(reason) => {
                bad_metadata.push((message.offset, message.payload.clone().unwrap_or_default(), reason));
                false
            }
        });
        for (offset, raw, reason) in bad_metadata {
            self.dead_letters.report(DeadLetter { position: position(offset), raw, reason })?;
        }
        let payloads: Vec<Option<&[u8]>> = messages.iter().map(|m| m.payload.as_deref()).collect();
        let dead_letters = &mut self.dead_letters;
        let mut bad = |index: usize, reason: String| {
            let message = &messages[index];
            let raw = message.payload.clone().unwrap_or_default();
            dead_letters.report(DeadLetter { position: position(message.offset), raw, reason })
        };
        let (values, rows) = match &mut self.decoder {
            Payloads::Registry(registry) => registry.decode(&payloads, &mut bad)?,
            Payloads::Bare(decoder) => decoder.decode(&payloads, &mut bad)?,
        };
        if rows.is_empty() {
            return Ok(None);
        }
        let kept: Vec<&Received> = rows.iter().map(|row| &messages[*row]).collect();
        let schema = &self.config.schema;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (column, field) in self.config.columns.iter().zip(schema.fields()) {
            let text = field.data_type() == &DataType::Utf8;
            let array: ArrayRef = match column {
                Column::Value(i) => values.column(*i).clone(),
                Column::Key => bytes_column(kept.iter().map(|m| m.key.as_deref()), text),
                Column::Topic => Arc::new(StringArray::from(vec![topic.as_str(); kept.len()])),
                Column::Partition => cast(&Int32Array::from(vec![partition; kept.len()]), field.data_type())?,
                Column::Offset => Arc::new(Int64Array::from_iter_values(kept.iter().map(|m| m.offset))),
                Column::Timestamp => {
                    cast(&Int64Array::from_iter(kept.iter().map(|m| m.timestamp)), field.data_type())?
                }
                Column::Headers => {
                    Arc::new(StringArray::from_iter(kept.iter().map(|m| Some(headers_json(m)))))
                }
                Column::Header(name) => bytes_column(
                    kept.iter()
                        .map(|m| m.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())),
                    text,
                ),
            };
            columns.push(array);
        }
        Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
    }

    /// Why a message's key or headers cannot fill their text columns, if they cannot.
    fn metadata_problem(&self, message: &Received) -> Option<String> {
        let schema = &self.config.schema;
        for (column, field) in self.config.columns.iter().zip(schema.fields()) {
            let text = field.data_type() == &DataType::Utf8;
            let invalid = |bytes: Option<&[u8]>| bytes.is_some_and(|b| std::str::from_utf8(b).is_err());
            let problem = match column {
                Column::Key if text && invalid(message.key.as_deref()) => "the key",
                Column::Header(name)
                    if text && message.headers.iter().any(|(k, v)| k == name && invalid(v.as_deref())) =>
                {
                    "a header"
                }
                Column::Headers if message.headers.iter().any(|(_, v)| invalid(v.as_deref())) => "a header",
                _ => continue,
            };
            return Some(format!(
                "{problem} is not valid UTF-8 text, but column `{}` is text; declare it `binary` (or read one \
                 header as `header:NAME` into a `binary` column)",
                field.name()
            ));
        }
        None
    }
}

fn bytes_column<'a>(values: impl Iterator<Item = Option<&'a [u8]>>, text: bool) -> ArrayRef {
    if text {
        // Checked to be UTF-8 by `metadata_problem`.
        Arc::new(StringArray::from_iter(values.map(|v| v.and_then(|v| std::str::from_utf8(v).ok()))))
    } else {
        Arc::new(BinaryArray::from_iter(values))
    }
}

fn headers_json(message: &Received) -> String {
    let map: serde_json::Map<String, serde_json::Value> = message
        .headers
        .iter()
        .map(|(k, v)| {
            let value = v.as_deref().and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned);
            (k.clone(), value.map_or(serde_json::Value::Null, serde_json::Value::String))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

impl SourceReader for KafkaReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(SourceStatus::Finished);
        }
        if self.config.stop_at == StopAt::Latest && self.splits.iter().all(Split::done) {
            return Ok(SourceStatus::Finished);
        }
        let received = self.receive(max_rows)?;
        for split in 0..self.splits.len() {
            if let Some(batch) = self.build(split)? {
                out.push(SourceBatch { output: 0, split, batch });
            }
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
            .map(|split| SplitState { split: split.name(), position: split.next.to_string().into_bytes() })
            .collect())
    }

    fn positions_committed(&mut self, positions: &[SplitState]) -> Result<()> {
        let mut list = TopicPartitionList::new();
        for split in &self.splits {
            let name = split.name();
            let Some(state) = positions.iter().find(|s| s.split == name) else { continue };
            let next = parse_position(&state.split, &state.position)?;
            if list.add_partition_offset(&split.topic, split.partition, Offset::Offset(next)).is_err() {
                continue;
            }
        }
        if list.count() > 0
            && let Err(error) = self.consumer.commit(&list, CommitMode::Async)
        {
            // Only lag tools read these offsets; a failed commit is retried after the next checkpoint.
            self.warn(format!("committing offsets to the consumer group: {error}"));
        }
        Ok(())
    }

    fn backlogged(&self, split: usize) -> bool {
        let (Some(split), Ok(marks)) =
            (self.splits.get(split), self.consumer.context().high_watermarks.lock())
        else {
            return false;
        };
        // The high watermark comes from the latest statistics (every second): it may be behind the
        // broker's, never ahead, so a split said to be backlogged is.
        marks.get(&(split.topic.clone(), split.partition)).is_some_and(|high| *high > split.next)
    }

    fn lag(&self) -> Option<u64> {
        let marks = self.consumer.context().high_watermarks.lock().ok()?;
        let mut lag = 0u64;
        let mut known = false;
        for split in &self.splits {
            if let Some(high) = marks.get(&(split.topic.clone(), split.partition)) {
                known = true;
                lag += u64::try_from(high - split.next).unwrap_or(0);
            }
        }
        known.then_some(lag)
    }
}

/// Every partition of the source's topics, sorted by topic and number.
fn partitions(consumer: &BaseConsumer<Context>, config: &SourceConfig) -> Result<Vec<(String, i32)>> {
    let brokers = &config.client.brokers;
    let unreachable = |e| {
        Error::external(
            format!("reading topic metadata from the Kafka brokers {brokers} (are they running?)"),
            e,
        )
    };
    let mut all = Vec::new();
    match &config.topics {
        Topics::Named(topics) => {
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(unreachable)?;
                let found = metadata.topics().iter().find(|t| t.name() == topic);
                match found {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        all.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                    }
                    _ => {
                        return Err(Error::user(format!(
                            "Kafka topic `{topic}` does not exist on the brokers {brokers}; create it first \
                             (Sluice does not create topics)"
                        )));
                    }
                }
            }
        }
        Topics::Pattern(pattern) => {
            let metadata = consumer.fetch_metadata(None, REQUEST_TIMEOUT).map_err(unreachable)?;
            for topic in metadata.topics() {
                if !topic.name().starts_with("__") && pattern.is_match(topic.name()) {
                    all.extend(topic.partitions().iter().map(|p| (topic.name().to_owned(), p.id())));
                }
            }
            if all.is_empty() {
                return Err(Error::user(format!(
                    "no Kafka topic on the brokers {brokers} matches `topic_pattern` {}; topics are matched \
                     when the pipeline starts",
                    pattern.as_str()
                )));
            }
        }
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// Sets each split's first offset: from the checkpoint, else from the start option; and its
/// end offset for a bounded read.
fn resolve_offsets(
    consumer: &BaseConsumer<Context>,
    config: &SourceConfig,
    splits: &mut [Split],
    restored: Option<&HashMap<&str, &[u8]>>,
) -> Result<()> {
    let watermarks = |split: &Split| {
        consumer.fetch_watermarks(&split.topic, split.partition, REQUEST_TIMEOUT).map_err(|e| {
            Error::external(format!("reading the offsets of Kafka partition {}", split.name()), e)
        })
    };
    let mut by_group = TopicPartitionList::new();
    let mut by_time = TopicPartitionList::new();
    for split in splits.iter_mut() {
        let (low, high) = watermarks(split)?;
        if config.stop_at == StopAt::Latest {
            split.end = Some(high);
        }
        let name = split.name();
        split.next = match (restored, restored.and_then(|r| r.get(name.as_str()))) {
            (_, Some(position)) => {
                let position = parse_position(&name, position)?;
                if position < low {
                    return Err(Error::user(format!(
                        "the checkpoint says to read Kafka partition {name} from offset {position}, \
                         but the brokers only have offsets {low}..{high}: the records in between were \
                         deleted (retention) before they were read. Sluice does not skip records \
                         silently: run with `--fresh` to start afresh from the `start` option"
                    )));
                }
                position
            }
            // Restoring, and the checkpoint does not know this partition: it is newer.
            (Some(_), None) => low,
            (None, None) => match config.start {
                Start::Earliest => low,
                Start::Latest => high,
                Start::Group => {
                    by_group.add_partition(&split.topic, split.partition);
                    low
                }
                Start::Timestamp(millis) => {
                    by_time
                        .add_partition_offset(&split.topic, split.partition, Offset::Offset(millis))
                        .map_err(|e| Error::external("looking up offsets by time", e))?;
                    high
                }
            },
        };
    }
    let lookups = [(by_group, "the consumer group's committed offsets"), (by_time, "offsets by timestamp")];
    for (list, what) in lookups {
        if list.count() == 0 {
            continue;
        }
        let found = if what.starts_with("the consumer") {
            consumer.committed_offsets(list, REQUEST_TIMEOUT)
        } else {
            consumer.offsets_for_times(list, REQUEST_TIMEOUT)
        }
        .map_err(|e| Error::external(format!("reading {what}"), e))?;
        for element in found.elements() {
            if let (Offset::Offset(offset), Some(split)) = (
                element.offset(),
                splits.iter_mut().find(|s| s.topic == element.topic() && s.partition == element.partition()),
            ) {
                split.next = offset;
            }
        }
    }
    Ok(())
}

/// Assigns the splits not done yet to `consumer`, each at its own next offset.
fn assign(consumer: &BaseConsumer<Context>, splits: &[Split]) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for split in splits.iter().filter(|s| !s.done()) {
        assignment
            .add_partition_offset(&split.topic, split.partition, Offset::Offset(split.next))
            .map_err(|e| Error::external("assigning Kafka partitions", e))?;
    }
    consumer.assign(&assignment).map_err(|e| Error::external("assigning Kafka partitions", e))
}

fn parse_position(split: &str, position: &[u8]) -> Result<i64> {
    std::str::from_utf8(position).ok().and_then(|text| text.parse::<i64>().ok()).ok_or_else(|| {
        Error::user(format!(
            "the checkpoint holds a position for Kafka partition {split} that is not an offset; it was not \
             written by this connector"
        ))
    })
}
