//! The `kafka` connector: topics as a source (partitions spread over workers, positions in
//! checkpoints, per-partition watermarks, message metadata as columns) and as a sink (key and
//! headers from columns, partitioned by key, idempotent producer: at-least-once).
//!
//! With `registry`, payloads are in a schema registry's wire format: see
//! [`crate::format::registry`].
//!
//! Both sides speak to brokers through librdkafka (the `rdkafka` crate, built from source).
//! Exactly-once output with Kafka transactions is not offered: the broker used in tests does not
//! implement them (no `EndTxn`), and untested transaction code would be worse than none.

mod client;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use serde::Deserialize;
use sluice_runtime::connector::{Sink, Source};
use sluice_spec::Diagnostic;

use crate::format::avro::{AvroCodec, declared_codec};
use crate::format::message::{MessageFormat, MetadataColumn, message_columns, required_schema};
use crate::format::registry::{RegistrySettings, Side};
use crate::{SinkRequest, SourceRequest, options};

pub use sink::KafkaSink;
pub use source::KafkaSource;

/// Options of the `kafka` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceOptions {
    /// Bootstrap brokers, `host:port[,host:port...]`. Required.
    pub brokers: Option<String>,
    /// One topic to read.
    pub topic: Option<String>,
    /// Several topics to read.
    pub topics: Option<Vec<String>>,
    /// A regular expression: every topic whose whole name matches is read (resolved when the
    /// pipeline starts).
    pub topic_pattern: Option<String>,
    /// Consumer group, used for `start: group` and for committing offsets after checkpoints
    /// (for lag tools); `sluice-<pipeline>-<source>` unless set.
    pub group_id: Option<String>,
    /// Where to start when no checkpoint says: `earliest` (default), `latest`, `group` (the
    /// group's committed offsets, else earliest) or `timestamp` (see `start_timestamp`).
    pub start: Option<StartFrom>,
    /// For `start: timestamp`: milliseconds since the Unix epoch, or an RFC 3339 time.
    pub start_timestamp: Option<serde_json::Value>,
    /// `never` (default: read forever) or `latest`: stop at the end offsets the partitions had
    /// when reading started (a bounded read, e.g. a backfill).
    pub stop_at: Option<StopAt>,
    /// Payload format: `json` (default), `csv`, `raw` or `avro`.
    pub format: Option<MessageFormat>,
    /// For `format: avro`: the writer schema, checked as [`crate::format::avro::AvroOptions`]; without it, the
    /// schema is derived from the declared columns.
    pub avro: Option<serde_json::Value>,
    /// For `format: avro` or `json`: payloads in a schema registry's wire format, each naming
    /// its writer schema by id; checked as [`crate::format::registry::RegistryOptions`].
    pub registry: Option<serde_json::Value>,
    /// Columns filled from the message instead of its payload: `{column: what}` where what is
    /// `key`, `topic`, `partition`, `offset`, `timestamp`, `headers` (all headers as a JSON
    /// object) or `header:NAME`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// librdkafka properties passed through, e.g. `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password: ${env:KAFKA_PASSWORD}`.
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// Option names of the `kafka` source.
pub const SOURCE_OPTIONS: &[&str] = &[
    "brokers",
    "topic",
    "topics",
    "topic_pattern",
    "group_id",
    "start",
    "start_timestamp",
    "stop_at",
    "format",
    "avro",
    "registry",
    "metadata",
    "properties",
];

/// Where a Kafka source starts reading a partition that no checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// The end: only records produced after the start.
    Latest,
    /// The consumer group's committed offset, or the oldest record without one.
    Group,
    /// The first record at or after `start_timestamp`.
    Timestamp,
}

/// When a Kafka source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopAt {
    /// Never: the source is unbounded.
    #[default]
    Never,
    /// At the partitions' end offsets as of the start.
    Latest,
}

/// Options of the `kafka` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkOptions {
    /// Bootstrap brokers, `host:port[,host:port...]`. Required.
    pub brokers: Option<String>,
    /// The topic written to (it must exist). Required.
    pub topic: Option<String>,
    /// Payload format: `json` (default), `csv`, `raw` or `avro`.
    pub format: Option<MessageFormat>,
    /// For `format: avro`: the writer schema, checked as [`crate::format::avro::AvroOptions`]; without it, the
    /// schema is derived from the stream's columns.
    pub avro: Option<serde_json::Value>,
    /// For `format: avro` or `json`: register the writer schema in a schema registry and put
    /// its id before each payload; checked as [`crate::format::registry::RegistryOptions`].
    pub registry: Option<serde_json::Value>,
    /// Column whose value is the record key (records with equal keys go to the same
    /// partition); none: no key, records spread over partitions.
    pub key: Option<String>,
    /// Headers from columns: `{header name: column}`.
    pub headers: Option<BTreeMap<String, String>>,
    /// librdkafka producer properties passed through.
    pub properties: Option<BTreeMap<String, serde_json::Value>>,
}

/// Option names of the `kafka` sink.
pub const SINK_OPTIONS: &[&str] =
    &["brokers", "topic", "format", "avro", "registry", "key", "headers", "properties"];

/// What a column of the source's output holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    /// Column `n` of the decoded payload.
    Value(usize),
    /// The record key.
    Key,
    /// The topic name.
    Topic,
    /// The partition number.
    Partition,
    /// The offset.
    Offset,
    /// The record timestamp.
    Timestamp,
    /// All headers as one JSON object.
    Headers,
    /// One header's value.
    Header(String),
}

impl MetadataColumn for Column {
    const KNOWN: &'static str = "use one of key, topic, partition, offset, timestamp, headers or header:NAME";

    fn value(n: usize) -> Self {
        Column::Value(n)
    }

    fn parse(what: &str) -> Option<Self> {
        Some(match what {
            "key" => Column::Key,
            "topic" => Column::Topic,
            "partition" => Column::Partition,
            "offset" => Column::Offset,
            "timestamp" => Column::Timestamp,
            "headers" => Column::Headers,
            other => Column::Header(other.strip_prefix("header:").filter(|n| !n.is_empty())?.to_owned()),
        })
    }

    fn accepts(&self, data_type: &DataType) -> bool {
        match self {
            Column::Value(_) => true,
            Column::Key | Column::Header(_) => matches!(data_type, DataType::Utf8 | DataType::Binary),
            Column::Topic | Column::Headers => data_type == &DataType::Utf8,
            Column::Partition => matches!(data_type, DataType::Int32 | DataType::Int64),
            Column::Offset => data_type == &DataType::Int64,
            Column::Timestamp => {
                matches!(data_type, DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, None))
            }
        }
    }

    fn types(&self) -> &'static str {
        match self {
            Column::Value(_) => "any",
            Column::Key | Column::Header(_) => "`utf8` or `binary`",
            Column::Topic | Column::Headers => "`utf8`",
            Column::Partition => "`int32` or `int64`",
            Column::Offset => "`int64`",
            Column::Timestamp => "`timestamp` or `int64` (milliseconds)",
        }
    }
}

/// What the Kafka source was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SourceConfig {
    pub(crate) client: client::ClientSettings,
    pub(crate) topics: Topics,
    pub(crate) start: Start,
    pub(crate) stop_at: StopAt,
    pub(crate) format: MessageFormat,
    /// For `avro` without a registry: the writer schema.
    pub(crate) avro: Option<AvroCodec>,
    /// Payloads name their writer schema in this registry.
    pub(crate) registry: Option<RegistrySettings>,
    /// The source's output.
    pub(crate) schema: SchemaRef,
    /// The columns decoded from the payload.
    pub(crate) value_schema: SchemaRef,
    /// Per output column, where it comes from.
    pub(crate) columns: Vec<Column>,
}

/// Which topics a source reads.
#[derive(Debug, Clone)]
pub(crate) enum Topics {
    /// These, by name.
    Named(Vec<String>),
    /// Every topic whose whole name matches.
    Pattern(regex::Regex),
}

/// Where reading starts, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Earliest,
    Latest,
    Group,
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// Builds the Kafka source from its request.
pub fn build_source(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let options = options::parse::<KafkaSourceOptions>(request.options, SOURCE_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let group =
        options.group_id.clone().unwrap_or_else(|| format!("sluice-{}-{}", request.pipeline, request.name));
    let client = client::ClientSettings::check(
        options.brokers.as_deref(),
        options.properties.as_ref(),
        client::Role::Consumer { group },
        &mut diagnostics,
    );
    let topics = match (&options.topic, &options.topics, &options.topic_pattern) {
        (Some(topic), None, None) => Some(Topics::Named(vec![topic.clone()])),
        (None, Some(topics), None) if !topics.is_empty() => Some(Topics::Named(topics.clone())),
        (None, Some(_), None) => {
            diagnostics.push(Diagnostic::new("options.topics", "the list of topics is empty"));
            None
        }
        (None, None, Some(pattern)) => match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(regex) => Some(Topics::Pattern(regex)),
            Err(error) => {
                diagnostics.push(Diagnostic::new(
                    "options.topic_pattern",
                    format!("not a valid regular expression: {error}"),
                ));
                None
            }
        },
        (None, None, None) => {
            diagnostics.push(
                Diagnostic::new("options", "missing required option \"topic\"")
                    .suggest("set `topic`, `topics` (a list) or `topic_pattern` (a regular expression)"),
            );
            None
        }
        _ => {
            diagnostics
                .push(Diagnostic::new("options", "set only one of `topic`, `topics` and `topic_pattern`"));
            None
        }
    };
    let start = start(&options, &mut diagnostics);
    let format = options.format.unwrap_or_default();
    let schema = required_schema(request.schema, "kafka", &mut diagnostics);
    let is_avro = format == MessageFormat::Avro;
    let registry = RegistrySettings::check(options.registry.as_ref(), format, Side::Source, &mut diagnostics);
    let with_registry = matches!(registry, Some(Some(_)));
    if with_registry && options.avro.is_some() {
        diagnostics.push(
            Diagnostic::new(
                "options.avro",
                "with `registry`, each message names its writer schema in the registry, so none is declared",
            )
            .suggest("remove `avro`"),
        );
    }
    let declared = if with_registry {
        Some(None)
    } else {
        declared_codec(options.avro.as_ref(), is_avro, request.base_dir, &mut diagnostics)
    };
    let columns = schema
        .as_ref()
        .and_then(|schema| message_columns(schema, options.metadata.as_ref(), format, &mut diagnostics));
    let avro = match (&columns, declared) {
        (Some((_, value_schema)), Some(declared)) if is_avro && !with_registry => {
            avro_codec(declared, value_schema, &mut diagnostics).map(Some)
        }
        (_, declared) => declared.map(|_| None),
    };
    match (client, topics, start, schema, columns, avro, registry) {
        (
            Some(client),
            Some(topics),
            Some(start),
            Some(schema),
            Some((columns, value_schema)),
            Some(avro),
            Some(registry),
        ) if diagnostics.is_empty() => Ok(Arc::new(KafkaSource::new(SourceConfig {
            client,
            topics,
            start,
            stop_at: options.stop_at.unwrap_or_default(),
            format,
            avro,
            registry,
            schema,
            value_schema,
            columns,
        }))),
        _ => Err(diagnostics),
    }
}

/// The writer schema of an Avro source: the declared one, which must give the payload's
/// columns, or one derived from them.
fn avro_codec(
    declared: Option<AvroCodec>,
    value_schema: &SchemaRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<AvroCodec> {
    let (path, checked) = match declared {
        Some(codec) => ("options.avro.schema", codec.check_columns(value_schema).map(|()| codec)),
        None => ("options.format", AvroCodec::derive(value_schema)),
    };
    match checked {
        Ok(codec) => Some(codec),
        Err(message) => {
            diagnostics.push(Diagnostic::new(path, message));
            None
        }
    }
}

fn start(options: &KafkaSourceOptions, diagnostics: &mut Vec<Diagnostic>) -> Option<Start> {
    let start = options.start.unwrap_or_default();
    if start != StartFrom::Timestamp && options.start_timestamp.is_some() {
        diagnostics.push(
            Diagnostic::new("options.start_timestamp", "only used with `start: timestamp`")
                .suggest("set `start: timestamp` or remove `start_timestamp`"),
        );
    }
    let parsed = match (start, &options.start_timestamp) {
        (StartFrom::Earliest, _) => return Some(Start::Earliest),
        (StartFrom::Latest, _) => return Some(Start::Latest),
        (StartFrom::Group, _) => return Some(Start::Group),
        (StartFrom::Timestamp, None) => {
            Err("`start: timestamp` needs `start_timestamp`: milliseconds since the \
             Unix epoch, or an RFC 3339 time such as 2026-01-31T08:00:00Z"
                .to_owned())
        }
        (StartFrom::Timestamp, Some(serde_json::Value::Number(n))) => {
            n.as_i64().ok_or_else(|| format!("{n} is not a whole number of milliseconds"))
        }
        (StartFrom::Timestamp, Some(serde_json::Value::String(text))) => {
            chrono::DateTime::parse_from_rfc3339(text).map(|time| time.timestamp_millis()).map_err(|error| {
                format!("\"{text}\" is not an RFC 3339 time ({error}); write e.g. 2026-01-31T08:00:00Z")
            })
        }
        (StartFrom::Timestamp, Some(other)) => {
            Err(format!("expected milliseconds or an RFC 3339 time, found {}", options::describe(other)))
        }
    };
    match parsed {
        Ok(millis) => Some(Start::Timestamp(millis)),
        Err(message) => {
            diagnostics.push(Diagnostic::new("options.start_timestamp", message));
            None
        }
    }
}

/// Builds the Kafka sink from its request.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<KafkaSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let client = client::ClientSettings::check(
        options.brokers.as_deref(),
        options.properties.as_ref(),
        client::Role::Producer,
        &mut diagnostics,
    );
    if options.topic.is_none() {
        diagnostics.push(options::missing("options", "topic"));
    }
    let format = options.format.unwrap_or_default();
    let avro = declared_codec(
        options.avro.as_ref(),
        format == MessageFormat::Avro,
        request.base_dir,
        &mut diagnostics,
    );
    let registry = RegistrySettings::check(options.registry.as_ref(), format, Side::Sink, &mut diagnostics);
    match (client, options.topic, avro, registry) {
        (Some(client), Some(topic), Some(avro), Some(registry)) if diagnostics.is_empty() => {
            Ok(Arc::new(KafkaSink::new(
                client,
                topic,
                format,
                avro,
                registry,
                options.key,
                options.headers.unwrap_or_default(),
            )))
        }
        _ => Err(diagnostics),
    }
}
