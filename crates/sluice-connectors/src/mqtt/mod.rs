//! The `mqtt` connector: MQTT topics as a source and a sink, speaking MQTT 5 over plain TCP
//! (through `rumqttc`).
//!
//! **Source.** Subscribes to topic filters with QoS 0 or 1 in a persistent session (a fixed
//! client id, `clean_start` off, kept by the broker for `session_expiry`). MQTT cannot replay,
//! so the best guarantee is **at-least-once**, and it needs QoS 1 and checkpoints: messages are
//! acknowledged (PUBACK) only once the checkpoint that covers them is complete, so the broker
//! redelivers every message a crash or a stop left unacknowledged when the pipeline starts
//! again. Those include the messages covered by the final checkpoint of a graceful stop (the
//! runtime ends the reader before that checkpoint completes), which are therefore delivered
//! twice. Without checkpoints messages are acknowledged as they are read (at-most-once across
//! a crash); with QoS 0 the broker never redelivers. One subscription per client id means one
//! worker reads: worker 0; the others have no split.
//!
//! **Sink.** Publishes one message per row with QoS 0 or 1 (optionally retained) to a fixed
//! topic or one from a column, and waits until the broker acknowledged every QoS 1 message (or
//! every QoS 0 message was written to the socket) before a checkpoint is taken and before the
//! run ends: at-least-once with QoS 1. A lost connection fails the run, which resumes from its
//! last checkpoint.

mod client;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use serde::Deserialize;
use sluice_runtime::connector::{Sink, Source};
use sluice_spec::Diagnostic;

use crate::format::message::{MessageFormat, MetadataColumn, message_columns, required_schema};
use crate::{SinkRequest, SourceRequest, options};

pub use sink::MqttSink;
pub use source::MqttSource;

/// Options of the `mqtt` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceOptions {
    /// The broker, `mqtt://host:port`; default `mqtt://127.0.0.1:1883`.
    pub url: Option<String>,
    /// One topic filter (`+` and `#` wildcards allowed).
    pub topic: Option<String>,
    /// Several topic filters.
    pub topics: Option<Vec<String>>,
    /// `1` (default: at least once, acknowledged after checkpoints) or `0` (at most once).
    pub qos: Option<u8>,
    /// The client id of the persistent session; `sluice-<pipeline>-<source>` unless set. Two
    /// running pipelines must not share one: the broker would disconnect the first.
    pub client_id: Option<String>,
    /// How long the broker keeps the session (and queues messages for it) while the pipeline
    /// is not connected, e.g. `1h`; default `1d`.
    pub session_expiry: Option<String>,
    /// Payload format: `json` (default), `csv` or `raw`.
    pub format: Option<MessageFormat>,
    /// Columns filled from the message instead of its payload: `{column: topic}`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// User name; may be `${env:NAME}`.
    pub user: Option<String>,
    /// Password; may be `${env:NAME}`, and is never shown.
    pub password: Option<String>,
}

/// Option names of the `mqtt` source.
pub const SOURCE_OPTIONS: &[&str] = &[
    "url",
    "topic",
    "topics",
    "qos",
    "client_id",
    "session_expiry",
    "format",
    "metadata",
    "user",
    "password",
];

/// Options of the `mqtt` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkOptions {
    /// As for the source.
    pub url: Option<String>,
    /// The topic every message is published to.
    pub topic: Option<String>,
    /// A column whose value is each message's topic, instead of `topic`.
    pub topic_column: Option<String>,
    /// `1` (default: acknowledged by the broker) or `0`.
    pub qos: Option<u8>,
    /// Whether the broker keeps the last message of each topic for new subscribers; default
    /// `false`.
    pub retain: Option<bool>,
    /// Payload format: `json` (default), `csv` or `raw`.
    pub format: Option<MessageFormat>,
    /// Prefix of the client ids (`<prefix>-<worker>-<random>`); `sluice-<sink>` unless set.
    pub client_id: Option<String>,
    /// As for the source.
    pub user: Option<String>,
    /// As for the source.
    pub password: Option<String>,
}

/// Option names of the `mqtt` sink.
pub const SINK_OPTIONS: &[&str] =
    &["url", "topic", "topic_column", "qos", "retain", "format", "client_id", "user", "password"];

/// The quality of service of subscriptions or publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl Qos {
    fn check(qos: Option<u8>, diagnostics: &mut Vec<Diagnostic>) -> Option<Self> {
        match qos.unwrap_or(1) {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            other => {
                let message = if other == 2 {
                    "QoS 2 is not supported; use 1 (at least once, with Sluice's checkpoints) or 0".to_owned()
                } else {
                    format!("{other} is not an MQTT QoS; use 1 (at least once) or 0 (at most once)")
                };
                diagnostics.push(Diagnostic::new("options.qos", message));
                None
            }
        }
    }

    pub(crate) fn mqtt(self) -> rumqttc::v5::mqttbytes::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        }
    }
}

/// What a column of the source's output holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    /// Column `n` of the decoded payload.
    Value(usize),
    /// The message's topic.
    Topic,
}

impl MetadataColumn for Column {
    const KNOWN: &'static str = "the only one is `topic`";

    fn value(n: usize) -> Self {
        Column::Value(n)
    }

    fn parse(what: &str) -> Option<Self> {
        (what == "topic").then_some(Column::Topic)
    }

    fn accepts(&self, data_type: &DataType) -> bool {
        matches!(self, Column::Value(_)) || data_type == &DataType::Utf8
    }

    fn types(&self) -> &'static str {
        match self {
            Column::Value(_) => "any",
            Column::Topic => "`utf8`",
        }
    }
}

/// What the MQTT source was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SourceConfig {
    pub(crate) client: client::ClientSettings,
    pub(crate) filters: Vec<String>,
    pub(crate) qos: Qos,
    pub(crate) client_id: String,
    pub(crate) session_expiry: Duration,
    pub(crate) format: MessageFormat,
    pub(crate) schema: SchemaRef,
    pub(crate) value_schema: SchemaRef,
    pub(crate) columns: Vec<Column>,
}

/// Builds the MQTT source from its request. Checks the options only; the broker is first
/// contacted when a worker opens the source.
pub fn build_source(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let options = options::parse::<MqttSourceOptions>(request.options, SOURCE_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let client = client::ClientSettings::check(
        options.url.as_deref(),
        options.user.as_deref(),
        options.password.as_deref(),
        &mut diagnostics,
    );
    let filters = match (&options.topic, &options.topics) {
        (Some(topic), None) => {
            check_filters(std::slice::from_ref(topic), "options.topic", false, &mut diagnostics)
        }
        (None, Some(topics)) if topics.is_empty() => {
            diagnostics.push(Diagnostic::new("options.topics", "the list of topics is empty"));
            None
        }
        (None, Some(topics)) => check_filters(topics, "options.topics", true, &mut diagnostics),
        (None, None) => {
            diagnostics.push(
                options::missing("options", "topic")
                    .suggest("set `topic` (a filter such as `sensors/+/temp`) or `topics` (a list)"),
            );
            None
        }
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options", "set only one of `topic` and `topics`"));
            None
        }
    };
    let qos = Qos::check(options.qos, &mut diagnostics);
    let client_id =
        options.client_id.clone().unwrap_or_else(|| format!("sluice-{}-{}", request.pipeline, request.name));
    if client_id.is_empty() || client_id.len() > 128 {
        diagnostics.push(Diagnostic::new("options.client_id", "must be 1 to 128 characters long"));
    }
    let session_expiry = match options.session_expiry.as_deref().map(sluice_spec::parse_duration) {
        None => Some(Duration::from_secs(24 * 3600)),
        Some(Ok(expiry)) if expiry.as_secs() >= 1 && expiry.as_secs() < u64::from(u32::MAX) => Some(expiry),
        Some(Ok(_)) => {
            diagnostics.push(Diagnostic::new(
                "options.session_expiry",
                "must be at least 1s (the session must outlive a restart) and under 136 years",
            ));
            None
        }
        Some(Err(message)) => {
            diagnostics.push(Diagnostic::new("options.session_expiry", message));
            None
        }
    };
    let format = options.format.unwrap_or_default();
    diagnostics.extend(format.unsupported_avro("mqtt"));
    let schema = required_schema(request.schema, "mqtt", &mut diagnostics);
    let columns = schema
        .as_ref()
        .and_then(|schema| message_columns(schema, options.metadata.as_ref(), format, &mut diagnostics));
    match (client, filters, qos, session_expiry, schema, columns) {
        (
            Some(client),
            Some(filters),
            Some(qos),
            Some(session_expiry),
            Some(schema),
            Some((columns, value_schema)),
        ) if diagnostics.is_empty() => Ok(Arc::new(MqttSource::new(SourceConfig {
            client,
            filters,
            qos,
            client_id,
            session_expiry,
            format,
            schema,
            value_schema,
            columns,
        }))),
        _ => Err(diagnostics),
    }
}

fn check_filters(
    filters: &[String],
    path: &str,
    list: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<String>> {
    let before = diagnostics.len();
    for (index, filter) in filters.iter().enumerate() {
        if let Err(message) = client::check_topic(filter, true) {
            let at = if list { format!("{path}[{index}]") } else { path.to_owned() };
            diagnostics.push(Diagnostic::new(at, message));
        }
    }
    (diagnostics.len() == before).then(|| filters.to_vec())
}

/// What the MQTT sink was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SinkConfig {
    pub(crate) client: client::ClientSettings,
    pub(crate) topic: TopicFrom,
    pub(crate) qos: Qos,
    pub(crate) retain: bool,
    pub(crate) format: MessageFormat,
    pub(crate) client_id: String,
}

/// Where a published message's topic comes from.
#[derive(Debug, Clone)]
pub(crate) enum TopicFrom {
    /// Always this topic.
    Fixed(String),
    /// The value of this column.
    Column(String),
}

/// Builds the MQTT sink from its request.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<MqttSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let client = client::ClientSettings::check(
        options.url.as_deref(),
        options.user.as_deref(),
        options.password.as_deref(),
        &mut diagnostics,
    );
    let topic = match (options.topic, options.topic_column) {
        (Some(topic), None) => match client::check_topic(&topic, false) {
            Ok(()) => Some(TopicFrom::Fixed(topic)),
            Err(message) => {
                diagnostics.push(Diagnostic::new("options.topic", message));
                None
            }
        },
        (None, Some(column)) => Some(TopicFrom::Column(column)),
        (None, None) => {
            diagnostics
                .push(options::missing("options", "topic").suggest(
                    "set `topic` (one topic) or `topic_column` (a column holding each row's topic)",
                ));
            None
        }
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options", "set only one of `topic` and `topic_column`"));
            None
        }
    };
    diagnostics.extend(options.format.unwrap_or_default().unsupported_avro("mqtt"));
    let qos = Qos::check(options.qos, &mut diagnostics);
    let client_id = options.client_id.unwrap_or_else(|| format!("sluice-{}", request.name));
    if client_id.is_empty() || client_id.len() > 100 {
        diagnostics.push(Diagnostic::new("options.client_id", "must be 1 to 100 characters long"));
    }
    match (client, topic, qos) {
        (Some(client), Some(topic), Some(qos)) if diagnostics.is_empty() => {
            Ok(Arc::new(MqttSink::new(SinkConfig {
                client,
                topic,
                qos,
                retain: options.retain.unwrap_or(false),
                format: options.format.unwrap_or_default(),
                client_id,
            })))
        }
        _ => Err(diagnostics),
    }
}
