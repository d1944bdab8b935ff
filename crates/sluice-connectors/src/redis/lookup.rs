//! [`RedisLookup`]: Redis string values (JSON objects) or hashes as a lookup table.
//!
//! The keys of one call that are not cached ([`LookupCache`]) are read in one round trip: one
//! `MGET`, or a pipeline of `HGETALL`s. The key column of a found row is the key looked up
//! (values need not repeat it); the other columns come from the value. A value that does not
//! fit the declared schema (not a JSON object, a field that does not parse as its column's
//! type, a non-nullable column missing) is logged and has no row, like a key that does not
//! exist, and is cached as such. The connection is opened by the first lookup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{CastOptions, cast_with_options, filter, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use redis::Value;
use sluice_runtime::processor::LookupTable;
use sluice_runtime::{Error, Result};

use super::LookupMode;
use super::client::{Connection, Failure, RedisUrl, is_transient_code};
use super::template::{BoundTemplate, Template};
use crate::format::message::{MessageDecoder, MessageFormat};
use crate::http::retry::RetryPolicy;
use crate::lookup_cache::{CacheSettings, LookupCache};

/// The checked options of a Redis lookup table.
pub(crate) struct LookupConfig {
    pub url: RedisUrl,
    pub mode: LookupMode,
    /// Uses exactly one column, `key_column`.
    pub key: Template,
    pub key_column: String,
    /// The declared schema.
    pub schema: SchemaRef,
    pub cache: CacheSettings,
    pub retry: RetryPolicy,
}

/// Redis values read by key; see the module documentation.
pub struct RedisLookup {
    url: RedisUrl,
    mode: LookupMode,
    schema: SchemaRef,
    key_column: String,
    key_index: usize,
    /// The key template bound to a batch of the key column alone.
    key: BoundTemplate,
    key_schema: SchemaRef,
    /// The columns other than the key, as read from values.
    value_schema: SchemaRef,
    json: MessageDecoder,
    cache: LookupCache,
    retry: RetryPolicy,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for RedisLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLookup")
            .field("redis", &self.url.shown)
            .field("mode", &self.mode)
            .field("key", &self.key_column)
            .finish()
    }
}

impl RedisLookup {
    /// The table of `config`; nothing is contacted yet.
    pub(crate) fn new(config: LookupConfig) -> Result<Self> {
        let schema = config.schema;
        let key_index = schema
            .index_of(&config.key_column)
            .map_err(|_| Error::internal("the Redis lookup key is not a column of its schema"))?;
        let key_schema = Arc::new(Schema::new(vec![schema.field(key_index).clone()]));
        let key = config.key.bind(&key_schema, "options.key")?;
        let value_fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != key_index)
            .map(|(_, f)| f.as_ref().clone())
            .collect();
        let value_schema = Arc::new(Schema::new(value_fields));
        Ok(Self {
            url: config.url,
            mode: config.mode,
            cache: LookupCache::new(schema.clone(), key_index, config.cache)?,
            json: MessageDecoder::new(MessageFormat::Json, value_schema.clone()),
            schema,
            key_column: config.key_column,
            key_index,
            key,
            key_schema,
            value_schema,
            retry: config.retry,
            connection: Mutex::new(None),
        })
    }

    /// The connection, opened on first use.
    fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.connection.lock().map_err(|_| poisoned())?;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = Arc::new(Connection::open(&self.url, "sluice-redis-lookup")?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The rows of the distinct, non-null `keys`, straight from Redis.
    fn fetch(&self, keys: &ArrayRef) -> Result<RecordBatch> {
        let batch = RecordBatch::try_new(self.key_schema.clone(), vec![keys.clone()])?;
        let names: Vec<Vec<u8>> = self
            .key
            .render(&batch)?
            .into_iter()
            .map(|key| key.map_err(|_| Error::internal("a null key reached a Redis lookup")))
            .collect::<Result<_>>()?;
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        match self.mode {
            LookupMode::Set => {
                pipeline.cmd("MGET").arg(&names);
            }
            LookupMode::Hash => {
                for name in &names {
                    pipeline.cmd("HGETALL").arg(name);
                }
            }
        }
        let connection = self.connection()?;
        let what = format!("looking up {} keys", names.len());
        let replies = connection.with_retries(&self.retry, &what, |connection| {
            let replies = connection.send(&pipeline)?;
            match replies.iter().find_map(|reply| match reply {
                Value::ServerError(error) if is_transient_code(error.code()) => Some(error),
                _ => None,
            }) {
                Some(error) => {
                    Err(Failure::Transient(format!("{} {}", error.code(), error.details().unwrap_or(""))))
                }
                None => Ok(replies),
            }
        })?;
        let (values, found) = match self.mode {
            LookupMode::Set => self.decode_json(&names, replies)?,
            LookupMode::Hash => self.decode_hashes(&names, replies)?,
        };
        let found_keys = take(keys, &UInt32Array::from(found), None)?;
        let mut columns = values.columns().to_vec();
        columns.insert(self.key_index, found_keys);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// The JSON objects of an `MGET` reply as rows of the value columns, and the index of each
    /// row's key.
    fn decode_json(&self, names: &[Vec<u8>], replies: Vec<Value>) -> Result<(RecordBatch, Vec<u32>)> {
        let values = match replies.into_iter().next() {
            Some(Value::Array(values)) if values.len() == names.len() => values,
            Some(Value::ServerError(error)) => {
                return Err(Error::external(
                    format!("Redis at {} refused MGET", self.url.shown),
                    super::client::RedisFailure(format!(
                        "{} {}",
                        error.code(),
                        error.details().unwrap_or("")
                    )),
                ));
            }
            other => return Err(Error::internal(format!("Redis answered MGET with {other:?}"))),
        };
        let mut present = Vec::new();
        let mut payloads: Vec<Option<&[u8]>> = Vec::new();
        for (index, value) in values.iter().enumerate() {
            match value {
                Value::BulkString(bytes) => {
                    present.push(index as u32);
                    payloads.push(Some(bytes));
                }
                Value::Nil => {}
                other => self.bad_value(&names[index], &format!("unexpected reply {other:?}")),
            }
        }
        let mut bad = |row: usize, reason: String| {
            self.bad_value(
                &names[present[row] as usize],
                &format!("the value is not a JSON object of the schema: {reason}"),
            );
            Ok(())
        };
        let (batch, rows) = self.json.decode(&payloads, &mut bad)?;
        Ok((batch, rows.into_iter().map(|row| present[row]).collect()))
    }

    /// The hashes of `HGETALL` replies as rows of the value columns, and the index of each
    /// row's key.
    fn decode_hashes(&self, names: &[Vec<u8>], replies: Vec<Value>) -> Result<(RecordBatch, Vec<u32>)> {
        let fields = self.value_schema.fields();
        // Per value column, per found key: the field's bytes.
        let mut raw: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); fields.len()];
        let mut present: Vec<u32> = Vec::new();
        for (index, reply) in replies.into_iter().enumerate() {
            let pairs = match reply {
                Value::Array(items) => pairs(items),
                Value::Map(pairs) => pairs,
                Value::ServerError(error) => {
                    let reason = format!("{} {}", error.code(), error.details().unwrap_or(""));
                    self.bad_value(&names[index], &format!("Redis refused HGETALL: {}", reason.trim_end()));
                    continue;
                }
                other => {
                    self.bad_value(&names[index], &format!("unexpected reply {other:?}"));
                    continue;
                }
            };
            if pairs.is_empty() {
                continue;
            }
            present.push(index as u32);
            for column in &mut raw {
                column.push(None);
            }
            for (field, value) in pairs {
                let (Value::BulkString(field), Value::BulkString(value)) = (field, value) else { continue };
                if let Some(column) = fields.iter().position(|f| f.name().as_bytes() == field.as_slice())
                    && let Some(slot) = raw[column].last_mut()
                {
                    *slot = Some(value);
                }
            }
        }
        let mut keep = vec![true; present.len()];
        let mut columns = Vec::with_capacity(fields.len());
        for (field, values) in fields.iter().zip(&raw) {
            let (column, problems) = typed_column(values, field)?;
            for (row, problem) in problems {
                if keep[row] {
                    keep[row] = false;
                    self.bad_value(&names[present[row] as usize], &problem);
                }
            }
            columns.push(column);
        }
        let mask = BooleanArray::from(keep.clone());
        let columns = columns.iter().map(|c| filter(c, &mask)).collect::<Result<Vec<_>, _>>()?;
        let found: Vec<u32> = present.into_iter().zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).collect();
        let batch = RecordBatch::try_new_with_options(
            self.value_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(found.len())),
        )?;
        Ok((batch, found))
    }

    fn bad_value(&self, key: &[u8], reason: &str) {
        tracing::warn!(
            target: "redis",
            redis = %self.url.shown,
            key = %String::from_utf8_lossy(key),
            "a looked-up value was skipped (no match): {}",
            self.url.redact(reason)
        );
    }
}

/// The field/value pairs of a RESP2 `HGETALL` reply.
fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut items = items.into_iter();
    let mut pairs = Vec::new();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        pairs.push((field, value));
    }
    pairs
}

/// A column of `field`'s type from the text of hash fields, and the problem of each row that
/// does not fit.
fn typed_column(values: &[Option<Vec<u8>>], field: &Field) -> Result<(ArrayRef, Vec<(usize, String)>)> {
    let mut problems = Vec::new();
    if !field.is_nullable() {
        for (row, value) in values.iter().enumerate() {
            if value.is_none() {
                problems
                    .push((row, format!("the hash has no field `{}`, which is not nullable", field.name())));
            }
        }
    }
    if field.data_type() == &DataType::Binary {
        let column = BinaryArray::from_iter(values.iter().map(|v| v.as_deref()));
        return Ok((Arc::new(column), problems));
    }
    let text = StringArray::from_iter(values.iter().enumerate().map(|(row, value)| {
        let value = value.as_deref()?;
        match std::str::from_utf8(value) {
            Ok(text) => Some(text),
            Err(_) => {
                problems.push((row, format!("field `{}` is not UTF-8 text", field.name())));
                None
            }
        }
    }));
    if field.data_type() == &DataType::Utf8 {
        return Ok((Arc::new(text), problems));
    }
    let options = CastOptions { safe: true, ..CastOptions::default() };
    let typed = cast_with_options(&text, field.data_type(), &options)?;
    for row in 0..text.len() {
        if text.is_valid(row) && typed.is_null(row) {
            problems.push((
                row,
                format!(
                    "field `{}`: \"{}\" is not a valid {}",
                    field.name(),
                    text.value(row),
                    field.data_type()
                ),
            ));
        }
    }
    Ok((typed, problems))
}

impl LookupTable for RedisLookup {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key_column(&self) -> &str {
        &self.key_column
    }

    fn reuse_for(&self) -> Duration {
        Duration::ZERO
    }

    fn lookup(&self, keys: &dyn Array) -> Result<RecordBatch> {
        self.cache.lookup("Redis", keys, |missing| self.fetch(missing))
    }
}

fn poisoned() -> Error {
    Error::internal("a thread panicked while opening the Redis lookup's connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_fields_are_parsed_as_their_columns_and_misfits_are_named() {
        let values = vec![Some(b"12".to_vec()), Some(b"x1".to_vec()), None];
        let (column, problems) = typed_column(&values, &Field::new("n", DataType::Int64, false)).unwrap();
        assert_eq!(column.len(), 3);
        assert_eq!(
            problems,
            [
                (2, "the hash has no field `n`, which is not nullable".to_owned()),
                (1, "field `n`: \"x1\" is not a valid Int64".to_owned()),
            ]
        );
        let (_, fine) = typed_column(&values[..1], &Field::new("n", DataType::Float64, true)).unwrap();
        assert!(fine.is_empty());
        let (_, bad_text) =
            typed_column(&[Some(vec![0xff])], &Field::new("s", DataType::Utf8, true)).unwrap();
        assert_eq!(bad_text, [(0, "field `s` is not UTF-8 text".to_owned())]);
    }
}
