//! The `redis` connector: Redis as a sink (string values, hashes or streams) and as a lookup
//! table for enrichment joins (string values holding JSON objects, or hashes; cached, with a
//! time to live).
//!
//! **Keys** are templates: `user:{user_id}` is `user:` followed by the value of
//! column `user_id`; a key must use at least one column, and a record with a NULL in one of
//! them cannot be written (it is a dead letter).
//!
//! **Sink.** `mode: set` writes `SET key value` with the record as a JSON object (or one
//! column's value, with `value`); `mode: hash` writes `HSET key column value ...` with every
//! column the key does not use (NULL columns are removed from the hash with `HDEL`);
//! `mode: stream` appends each record to a stream (`XADD stream * column value ...`, NULL
//! columns left out). `ttl` sets an expiry on every key written (`SET ... PX`, `PEXPIRE`).
//! Records are buffered and written `batch_size` at a time in one pipeline (one round trip),
//! and at the end of every epoch, before every checkpoint and at the end: **at-least-once**.
//! A resumed run writes again what the last checkpoint did not cover; for `set` and `hash`
//! this gives the same final state (a key holds its last record), for `stream` the entries
//! are appended again (duplicates). A lost connection, a timeout or a server that is loading
//! or failing over is retried with exponential backoff (`retry`, as for the `http` sink); after
//! the last attempt the run fails and resumes from its last checkpoint. A write Redis refuses
//! because the key holds another type (`WRONGTYPE`) is a dead letter; other refusals fail the run.
//!
//! **Lookup table.** A key (from the template's one column) is read with `MGET` (`mode: set`:
//! the value must be a JSON object, decoded against the declared schema) or `HGETALL`
//! (`mode: hash`: fields are columns, their text parsed as the declared types), all keys of a
//! batch in one round trip. The key column of a found row is the key looked up; a key that
//! does not exist has no row. A value that does not fit the schema is logged and treated as
//! missing. Found rows and misses are cached for `cache.ttl` ([`CacheOptions`]). The schema must be
//! declared: Redis values carry no types.
//!
//! The URL's password never appears in messages, logs or dead letters: they name the server
//! as `redis://user@host:port/db`. The server is first contacted when the pipeline runs, so
//! `sluice validate` does not need it.

mod client;
mod lookup;
mod sink;
mod template;

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use serde::Deserialize;
use sluice_runtime::connector::Sink;
use sluice_runtime::processor::LookupTable;
use sluice_spec::Diagnostic;

use crate::http::retry::RetryPolicy;
use crate::lookup_cache::CacheSettings;
use crate::{LookupRequest, SinkRequest, arrow_schema, options};

use client::RedisUrl;
use template::Template;

pub use crate::http::RetryOptions;
pub use crate::lookup_cache::{CACHE_OPTIONS, CacheOptions};
pub use lookup::RedisLookup;
pub use sink::RedisSink;

/// What the sink writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkMode {
    /// `SET key value`: the record as a JSON object, or the `value` column.
    #[default]
    Set,
    /// `HSET key column value ...`: every column the key does not use.
    Hash,
    /// `XADD stream * column value ...`: every column.
    Stream,
}

/// What the lookup table reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupMode {
    /// `MGET`: string values holding JSON objects.
    #[default]
    Set,
    /// `HGETALL`: hashes whose fields are columns.
    Hash,
}

/// Options of the `redis` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkOptions {
    /// `redis://[user:password@]host:port/db`. This or `url_env` is required.
    pub url: Option<String>,
    /// The name of an environment variable holding the URL, to keep passwords out of specs.
    pub url_env: Option<String>,
    /// `set` (default), `hash` or `stream`.
    pub mode: Option<SinkMode>,
    /// The key template, e.g. `user:{user_id}`; required for `set` and `hash`.
    pub key: Option<String>,
    /// With `set`: the column whose value is written, instead of the record as JSON.
    pub value: Option<String>,
    /// With `stream`: the stream's name; a template, so it may use columns too.
    pub stream: Option<String>,
    /// With `set` and `hash`: how long a written key lives, e.g. `10m`; default forever.
    pub ttl: Option<String>,
    /// Records per pipeline (round trip); default 1,000.
    pub batch_size: Option<usize>,
    /// Retries of lost connections, checked as [`RetryOptions`].
    pub retry: Option<serde_json::Value>,
}

/// Option names of the `redis` sink.
pub const SINK_OPTIONS: &[&str] =
    &["url", "url_env", "mode", "key", "value", "stream", "ttl", "batch_size", "retry"];

/// Options of the `redis` lookup table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLookupOptions {
    /// As for the sink.
    pub url: Option<String>,
    /// As for the sink.
    pub url_env: Option<String>,
    /// `set` (default: string values holding JSON objects) or `hash`.
    pub mode: Option<LookupMode>,
    /// The key template, using exactly one column: the lookup key, e.g. `user:{id}`. Required.
    pub key: Option<String>,
    /// Caching, checked as [`CacheOptions`].
    pub cache: Option<serde_json::Value>,
    /// Retries of lost connections, checked as [`RetryOptions`].
    pub retry: Option<serde_json::Value>,
}

/// Option names of the `redis` lookup table.
pub const LOOKUP_OPTIONS: &[&str] = &["url", "url_env", "mode", "key", "cache", "retry"];

/// Records per pipeline by default.
const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Retries by default: about 20 s of waiting, enough for a server restart.
const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    initial_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(10),
};

/// Builds the Redis sink from its request. Checks the options only; the server is first
/// contacted when a worker opens the sink, and columns are checked against the stream then.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<RedisSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let url = RedisUrl::check(options.url.as_deref(), options.url_env.as_deref(), &mut diagnostics);
    let mode = options.mode.unwrap_or_default();
    let key = match (mode, options.key.as_deref()) {
        (SinkMode::Stream, Some(_)) => {
            diagnostics.push(
                Diagnostic::new(
                    "options.key",
                    "`mode: stream` appends to the stream named by `stream`, not to keys",
                )
                .suggest("remove `key`, or name the stream with `stream: events:{column}`"),
            );
            None
        }
        (SinkMode::Stream, None) => None,
        (_, None) => {
            diagnostics.push(
                options::missing("options", "key").suggest("write a key template such as `user:{user_id}`"),
            );
            None
        }
        (_, Some(text)) => key_template(text, &mut diagnostics),
    };
    let stream = match (mode, options.stream.as_deref()) {
        (SinkMode::Stream, Some(text)) => match Template::parse(text) {
            Ok(stream) => Some(stream),
            Err(message) => {
                diagnostics.push(Diagnostic::new("options.stream", message));
                None
            }
        },
        (SinkMode::Stream, None) => {
            diagnostics.push(
                options::missing("options", "stream").suggest("name the stream, e.g. `stream: events`"),
            );
            None
        }
        (_, Some(_)) => {
            diagnostics.push(only_with("options.stream", "`mode: stream`", "stream"));
            None
        }
        (_, None) => None,
    };
    if options.value.is_some() && mode != SinkMode::Set {
        diagnostics.push(only_with("options.value", "`mode: set`", "value"));
    }
    let ttl = match (mode, options.ttl.as_deref()) {
        (_, None) => None,
        (SinkMode::Stream, Some(_)) => {
            diagnostics.push(only_with("options.ttl", "`mode: set` and `mode: hash`", "ttl"));
            None
        }
        (_, Some(text)) => match sluice_spec::parse_duration(text) {
            Ok(ttl) if ttl.as_millis() == 0 => {
                diagnostics.push(
                    Diagnostic::new("options.ttl", format!("must be at least 1ms, found \"{text}\""))
                        .suggest("remove `ttl` to keep keys forever"),
                );
                None
            }
            Ok(ttl) => Some(ttl),
            Err(message) => {
                diagnostics.push(Diagnostic::new("options.ttl", message));
                None
            }
        },
    };
    if options.batch_size == Some(0) {
        diagnostics.push(Diagnostic::new("options.batch_size", "must be at least 1"));
    }
    let retry = match &options.retry {
        Some(value) => crate::http::check_retry(value, DEFAULT_RETRY, "batch", &mut diagnostics),
        None => DEFAULT_RETRY,
    };
    let Some(url) = url else { return Err(diagnostics) };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let target = match (key, stream) {
        (Some(key), _) => sink::Target::Key { key, value: options.value, mode },
        (None, Some(stream)) => sink::Target::Stream(stream),
        (None, None) => return Err(vec![Diagnostic::new("options", "internal: neither a key nor a stream")]),
    };
    Ok(Arc::new(RedisSink::new(sink::SinkConfig {
        url,
        target,
        ttl,
        batch_size: options.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        retry,
    })))
}

/// Builds the Redis lookup table from its request: checks the options against the declared
/// schema. The server is first contacted by the first lookup.
pub fn build_lookup(request: &LookupRequest) -> Result<Arc<dyn LookupTable>, Vec<Diagnostic>> {
    let options = options::parse::<RedisLookupOptions>(request.options, LOOKUP_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let url = RedisUrl::check(options.url.as_deref(), options.url_env.as_deref(), &mut diagnostics);
    let mode = options.mode.unwrap_or_default();
    let schema = request.schema.map(arrow_schema);
    let key = lookup_key(options.key.as_deref(), schema.as_ref(), &mut diagnostics);
    let cache = CacheSettings::check(options.cache.as_ref(), &mut diagnostics);
    let retry = match &options.retry {
        Some(value) => crate::http::check_retry(value, DEFAULT_RETRY, "lookup", &mut diagnostics),
        None => DEFAULT_RETRY,
    };
    let (Some(fields), Some(schema)) = (request.schema, schema) else {
        diagnostics.push(
            Diagnostic::new(
                "schema",
                "a Redis lookup table needs a declared schema: Redis values carry no types",
            )
            .suggest("declare `schema:` with the key column and the columns of the values"),
        );
        return Err(diagnostics);
    };
    let key_column = key.as_ref().and_then(|(_, column)| column.clone());
    for (index, field) in fields.iter().enumerate() {
        let data_type = crate::arrow_type(&field.data_type);
        let is_key = key_column.as_deref() == Some(field.name.as_str());
        if (is_key || mode == LookupMode::Hash) && !template::is_scalar(&data_type) {
            let what = if is_key { "a key" } else { "a hash field (use `mode: set`, with JSON values)" };
            diagnostics.push(Diagnostic::new(
                format!("schema[{index}]"),
                format!("column \"{}\" of type {} cannot be read from {what}", field.name, field.data_type),
            ));
        }
    }
    let (Some(url), Some((key, _)), Some(key_column)) = (url, key, key_column) else {
        return Err(diagnostics);
    };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let config = lookup::LookupConfig { url, mode, key, key_column, schema, cache, retry };
    match RedisLookup::new(config) {
        Ok(table) => Ok(Arc::new(table)),
        Err(error) => Err(vec![Diagnostic::new("schema", error.report())]),
    }
}

/// The lookup's key template and, when the schema is known, its one column, which must be in
/// the schema.
fn lookup_key(
    text: Option<&str>,
    schema: Option<&SchemaRef>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Template, Option<String>)> {
    let Some(text) = text else {
        diagnostics
            .push(options::missing("options", "key").suggest("write a key template such as `user:{id}`"));
        return None;
    };
    let key = key_template(text, diagnostics)?;
    let Some(schema) = schema else { return Some((key, None)) };
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let column = match key.columns().as_slice() {
        [column] if names.contains(column) => Some((*column).to_owned()),
        [column] => {
            diagnostics.push(
                Diagnostic::new("options.key", format!("column \"{column}\" is not in the schema"))
                    .suggest_closest(column, names.iter().copied()),
            );
            None
        }
        _ => {
            diagnostics.push(
                Diagnostic::new(
                    "options.key",
                    "a lookup key template uses exactly one column, the lookup key",
                )
                .suggest("e.g. `user:{id}`, joined with `ON s.user_id = u.id`"),
            );
            None
        }
    };
    Some((key, column))
}

/// A key template, which must use at least one column.
fn key_template(text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Template> {
    match Template::parse(text) {
        Ok(key) if key.columns().is_empty() => {
            diagnostics.push(
                Diagnostic::new(
                    "options.key",
                    format!("\"{text}\" uses no column, so every record would have one key"),
                )
                .suggest(format!("write {{{text}}} for the value of column `{text}`, or e.g. `user:{{id}}`")),
            );
            None
        }
        Ok(key) => Some(key),
        Err(message) => {
            diagnostics.push(Diagnostic::new("options.key", message));
            None
        }
    }
}

/// A diagnostic for an option that applies to some modes only.
fn only_with(path: &str, modes: &str, option: &str) -> Diagnostic {
    Diagnostic::new(path, format!("only applies to {modes}"))
        .suggest(format!("remove `{option}` or change `mode`"))
}
