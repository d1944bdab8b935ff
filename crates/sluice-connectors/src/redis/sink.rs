//! [`RedisSink`]: writes records as string values, hashes or stream entries, `batch_size`
//! records per pipeline; see the module documentation of [`crate::redis`] for the guarantees.
//!
//! Each writer turns every record into its commands as it arrives (a record whose key cannot
//! be built is a dead letter then), and sends the buffered commands in one pipeline when
//! `batch_size` records are buffered, at the end of every epoch, before every checkpoint and at
//! the end. The replies are checked one by one: a record whose commands were refused because
//! the server is not ready is sent again with the next attempt, one refused for its key's type
//! is a dead letter, any other refusal fails the run. (Commands of one record are not a
//! transaction: with `ttl`, the `PEXPIRE` after a refused `HSET` still applies to the key of
//! another type.)

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use redis::{Cmd, Value};
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};

use super::SinkMode;
use super::client::{Connection, Failure, RedisFailure, RedisUrl, is_transient_code};
use super::template::{BoundTemplate, Template, column_index, text_values};
use crate::format::message::{MessageEncoder, MessageFormat};
use crate::http::retry::RetryPolicy;

/// What the sink writes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Keys from a template: string values (`Set`, the record as JSON or column `value`) or
    /// hashes (`Hash`).
    Key { key: Template, value: Option<String>, mode: SinkMode },
    /// Entries of the stream the template names.
    Stream(Template),
}

/// The checked options of a Redis sink.
#[derive(Debug)]
pub(crate) struct SinkConfig {
    pub url: RedisUrl,
    pub target: Target,
    pub ttl: Option<Duration>,
    pub batch_size: usize,
    pub retry: RetryPolicy,
}

/// Writes records to Redis; see the module documentation.
#[derive(Debug)]
pub struct RedisSink {
    config: SinkConfig,
}

impl RedisSink {
    pub(crate) fn new(config: SinkConfig) -> Self {
        Self { config }
    }
}

impl Sink for RedisSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let config = &self.config;
        let layout = Layout::bind(&config.target, &context.schema)?;
        let connection = Connection::open(&config.url, "sluice-redis")?;
        Ok(Box::new(RedisWriter {
            connection,
            layout,
            ttl_ms: config.ttl.map(|ttl| ttl.as_millis().min(i64::MAX as u128) as i64),
            batch_size: config.batch_size,
            retry: config.retry,
            json: MessageEncoder::new(MessageFormat::Json),
            batches: Vec::new(),
            pending: Vec::new(),
            dead_letters: context.dead_letters,
        }))
    }
}

/// The target bound to the stream's columns.
enum Layout {
    Set { key: BoundTemplate, value: Option<usize> },
    Hash { key: BoundTemplate, fields: Vec<usize> },
    Stream { stream: BoundTemplate },
}

impl Layout {
    fn bind(target: &Target, schema: &SchemaRef) -> Result<Self> {
        Ok(match target {
            Target::Key { key, value, mode: SinkMode::Set } => Layout::Set {
                key: key.bind(schema, "options.key")?,
                value: value
                    .as_deref()
                    .map(|name| column_index(schema, name, "options.value"))
                    .transpose()?,
            },
            Target::Key { key, .. } => {
                let key = key.bind(schema, "options.key")?;
                let fields: Vec<usize> =
                    (0..schema.fields().len()).filter(|i| !key.columns().contains(i)).collect();
                if fields.is_empty() {
                    return Err(Error::user(
                        "`mode: hash` writes the columns the key does not use, and options.key uses every column of \
                         the stream; add columns in SQL, or use `mode: set`",
                    ));
                }
                Layout::Hash { key, fields }
            }
            Target::Stream(stream) => Layout::Stream { stream: stream.bind(schema, "options.stream")? },
        })
    }
}

/// The commands of one record, and where the record is (for its dead letter).
struct RecordWrite {
    commands: Vec<Cmd>,
    /// The key or stream written, as text, for messages.
    key: String,
    /// Index into `RedisWriter::batches`, and the row.
    batch: usize,
    row: usize,
}

struct RedisWriter {
    connection: Connection,
    layout: Layout,
    ttl_ms: Option<i64>,
    batch_size: usize,
    retry: RetryPolicy,
    json: MessageEncoder,
    /// The batches of the buffered records.
    batches: Vec<RecordBatch>,
    pending: Vec<RecordWrite>,
    dead_letters: DeadLetterSink,
}

impl RedisWriter {
    /// The commands of every row of `batch`; rows that cannot be written are dead letters.
    fn buffer(&mut self, batch: &RecordBatch) -> Result<()> {
        let index = self.batches.len();
        self.batches.push(batch.clone());
        let rows = match &self.layout {
            Layout::Set { key, value } => {
                let values = match value {
                    Some(column) => column_values(batch.column(*column))?,
                    None => json_values(&mut self.json, batch),
                };
                set_writes(key, values, self.ttl_ms, batch)?
            }
            Layout::Hash { key, fields } => hash_writes(key, fields, self.ttl_ms, batch)?,
            Layout::Stream { stream } => stream_writes(stream, batch)?,
        };
        for (row, write) in rows.into_iter().enumerate() {
            match write {
                Ok((key, commands)) => self.pending.push(RecordWrite {
                    commands,
                    key: String::from_utf8_lossy(&key).into_owned(),
                    batch: index,
                    row,
                }),
                Err(reason) => self.dead_letter(index, row, reason, None)?,
            }
        }
        Ok(())
    }

    /// Reports row `row` of buffered batch `batch` as undeliverable.
    fn dead_letter(&mut self, batch: usize, row: usize, reason: String, key: Option<&str>) -> Result<()> {
        let mut raw = Vec::with_capacity(1);
        // The record as JSON, or nothing if even that fails (the reason says why).
        if self.json.encode(&self.batches[batch].slice(row, 1), &mut raw).is_err() {
            raw.clear();
        }
        let mut details = serde_json::Map::new();
        details.insert("redis".into(), self.connection.url().shown.clone().into());
        if let Some(key) = key {
            details.insert("key".into(), key.into());
        }
        let letter = DeadLetter {
            position: "redis".to_owned(),
            raw: raw.pop().flatten().unwrap_or_default(),
            reason: self.connection.url().redact(&reason),
        };
        self.dead_letters.report_detailed(letter, details)
    }

    /// Sends every buffered record, retrying those that may pass later; records refused for
    /// their key's type are dead letters.
    fn flush(&mut self) -> Result<()> {
        let mut records = std::mem::take(&mut self.pending);
        let mut refused = Vec::new();
        if !records.is_empty() {
            let what = format!("writing {} records", records.len());
            self.connection.with_retries(&self.retry, &what, |connection| {
                attempt(connection, &mut records, &mut refused)
            })?;
        }
        for Refused { batch, row, key, reason } in refused {
            self.dead_letter(batch, row, format!("Redis refused the write: {reason}"), Some(&key))?;
        }
        self.batches.clear();
        Ok(())
    }
}

/// A record Redis refused because its key holds a value of another type.
struct Refused {
    batch: usize,
    row: usize,
    key: String,
    reason: String,
}

/// What a reply said about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Written,
    /// Refused for now (the server is loading or failing over): send it again.
    Again,
    /// Refused for its key's type, with Redis's words.
    Refused(String),
}

/// Sends `records` in one pipeline. Records refused for their key's type move to `refused`; if
/// some were refused for now, they alone stay in `records` and the attempt is transient.
fn attempt(
    connection: &Connection,
    records: &mut Vec<RecordWrite>,
    refused: &mut Vec<Refused>,
) -> Result<(), Failure> {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    let mut owners = Vec::new();
    for (index, record) in records.iter().enumerate() {
        for command in &record.commands {
            pipeline.add_command(command.clone());
            owners.push(index);
        }
    }
    let replies = connection.send(&pipeline)?;
    let mut verdicts = vec![Verdict::Written; records.len()];
    let mut transient = None;
    for (reply, &owner) in replies.iter().zip(&owners) {
        let Value::ServerError(error) = reply else { continue };
        let code = error.code();
        let text =
            connection.url().redact(format!("{code} {}", error.details().unwrap_or_default()).trim_end());
        if code == "WRONGTYPE" {
            verdicts[owner] = Verdict::Refused(text);
        } else if is_transient_code(code) {
            if verdicts[owner] == Verdict::Written {
                verdicts[owner] = Verdict::Again;
            }
            transient = Some(text);
        } else {
            return Err(Failure::Fatal(Error::external(
                format!("Redis at {} refused a write to `{}`", connection.url().shown, records[owner].key),
                RedisFailure(text),
            )));
        }
    }
    let mut again = Vec::new();
    for (record, verdict) in records.drain(..).zip(verdicts) {
        match verdict {
            Verdict::Written => {}
            Verdict::Again => again.push(record),
            Verdict::Refused(reason) => {
                refused.push(Refused { batch: record.batch, row: record.row, key: record.key, reason })
            }
        }
    }
    *records = again;
    match transient {
        Some(reason) if !records.is_empty() => Err(Failure::Transient(reason)),
        _ => Ok(()),
    }
}

/// Per row: the key (or stream) written and its commands, or why the row cannot be written.
type Writes = Vec<Result<(Vec<u8>, Vec<Cmd>), String>>;

/// `SET key value [PX ttl]` per row.
fn set_writes(
    key: &BoundTemplate,
    values: Vec<Result<Vec<u8>, String>>,
    ttl_ms: Option<i64>,
    batch: &RecordBatch,
) -> Result<Writes> {
    let keys = key.render(batch)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .map(|(key, value)| {
            let key = key.map_err(null_key)?;
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(value?);
            if let Some(ttl) = ttl_ms {
                set.arg("PX").arg(ttl);
            }
            Ok((key, vec![set]))
        })
        .collect())
}

/// Per row: `HSET key column value ...` for the non-null `fields`, `HDEL key column ...` for
/// the null ones, and `PEXPIRE key ttl`.
fn hash_writes(
    key: &BoundTemplate,
    fields: &[usize],
    ttl_ms: Option<i64>,
    batch: &RecordBatch,
) -> Result<Writes> {
    let keys = key.render(batch)?;
    let columns = fields.iter().map(|i| text_values(batch.column(*i))).collect::<Result<Vec<_>>>()?;
    let schema = batch.schema();
    let names: Vec<&str> = fields.iter().map(|i| schema.field(*i).name().as_str()).collect();
    Ok(keys
        .into_iter()
        .enumerate()
        .map(|(row, key)| {
            let key = key.map_err(null_key)?;
            let (mut set, mut delete) = (redis::cmd("HSET"), redis::cmd("HDEL"));
            set.arg(&key);
            delete.arg(&key);
            let (mut sets, mut deletes) = (0, 0);
            for (name, values) in names.iter().zip(&columns) {
                match &values[row] {
                    Some(value) => {
                        set.arg(*name).arg(value);
                        sets += 1;
                    }
                    None => {
                        delete.arg(*name);
                        deletes += 1;
                    }
                }
            }
            let mut commands = Vec::with_capacity(3);
            if sets > 0 {
                commands.push(set);
            }
            if deletes > 0 {
                commands.push(delete);
            }
            if let Some(ttl) = ttl_ms {
                let mut expire = redis::cmd("PEXPIRE");
                expire.arg(&key).arg(ttl);
                commands.push(expire);
            }
            Ok((key, commands))
        })
        .collect())
}

/// `XADD stream * column value ...` per row, for its non-null columns.
fn stream_writes(stream: &BoundTemplate, batch: &RecordBatch) -> Result<Writes> {
    let streams = stream.render(batch)?;
    let columns = batch.columns().iter().map(text_values).collect::<Result<Vec<_>>>()?;
    let schema = batch.schema();
    Ok(streams
        .into_iter()
        .enumerate()
        .map(|(row, stream)| {
            let stream = stream.map_err(|column| {
                format!("column `{column}`, used by the stream name, is NULL, so the record has no stream")
            })?;
            let mut add = redis::cmd("XADD");
            add.arg(&stream).arg("*");
            let mut fields = 0;
            for (field, values) in schema.fields().iter().zip(&columns) {
                if let Some(value) = &values[row] {
                    add.arg(field.name().as_str()).arg(value);
                    fields += 1;
                }
            }
            if fields == 0 {
                return Err("every column is NULL, and a stream entry needs at least one field".to_owned());
            }
            Ok((stream, vec![add]))
        })
        .collect())
}

/// The values of the `value` column; a NULL cannot be written.
fn column_values(column: &arrow::array::ArrayRef) -> Result<Vec<Result<Vec<u8>, String>>> {
    Ok(text_values(column)?
        .into_iter()
        .map(|value| {
            value.ok_or_else(|| "the value column is NULL (a Redis string cannot be null)".to_owned())
        })
        .collect())
}

/// Each row of `batch` as a JSON object, or why it cannot be encoded.
fn json_values(encoder: &mut MessageEncoder, batch: &RecordBatch) -> Vec<Result<Vec<u8>, String>> {
    let mut payloads = Vec::with_capacity(batch.num_rows());
    if encoder.encode(batch, &mut payloads).is_ok() {
        return payloads.into_iter().map(|p| Ok(p.unwrap_or_default())).collect();
    }
    // One row spoils the batch: find which.
    (0..batch.num_rows())
        .map(|row| {
            let mut one = Vec::with_capacity(1);
            match encoder.encode(&batch.slice(row, 1), &mut one) {
                Ok(()) => Ok(one.pop().flatten().unwrap_or_default()),
                Err(error) => Err(format!("cannot encode the record as JSON: {}", error.report())),
            }
        })
        .collect()
}

/// Why a row whose key uses column `column` cannot be written.
fn null_key(column: String) -> String {
    format!("column `{column}`, used by the key, is NULL, so the record has no key")
}

impl SinkWriter for RedisWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            // Flushing whenever `batch_size` records are buffered keeps pipelines that long.
            let room = self.batch_size.saturating_sub(self.pending.len()).max(1);
            let length = room.min(batch.num_rows() - offset);
            self.buffer(&batch.slice(offset, length))?;
            offset += length;
            if self.pending.len() >= self.batch_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        self.flush()
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.flush()?;
        self.dead_letters.flush()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.dead_letters.flush()
    }
}
