//! The `nats` connector: NATS JetStream streams as a source and subjects as a sink.
//!
//! **Source.** Reads one JetStream stream, whole or through subject filters. Each filter (or
//! the whole stream, without one) is one split with its own watermark, read by an ordered
//! consumer (ephemeral, no acknowledgements, recreated by the client after a gap); splits are
//! dealt round-robin to workers, so one filter is read by one worker. A split's position is the
//! stream sequence of the last message read (the start, `latest` included, is resolved to a
//! sequence when reading starts), so a checkpoint pins an exact place and a resumed run reads
//! from the next sequence: replayable, exactly-once end to end with a transactional sink.
//! Filters must not overlap (a message would be read twice), which is checked. After the client
//! reconnects, each split's consumer is created again from the sequence after the last message
//! read.
//!
//! **Sink.** Publishes one message per row to a fixed subject or to a subject from a column,
//! and waits for every publish acknowledgement before a checkpoint is taken and before the
//! run ends: at-least-once. With `message_id` naming a column, that column's value is the
//! `Nats-Msg-Id` header, and the stream drops a message whose id it saw within its duplicate
//! window (two minutes by default): rows with a stable unique id are then written once.

mod client;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use serde::Deserialize;
use sluice_runtime::connector::{Sink, Source};
use sluice_spec::Diagnostic;

use crate::format::message::{MessageFormat, MetadataColumn, message_columns, required_schema};
use crate::{SinkRequest, SourceRequest, options};

pub use sink::NatsSink;
pub use source::NatsSource;

/// Options of the `nats` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceOptions {
    /// Servers, `nats://host:port[,nats://host:port...]`; default `nats://127.0.0.1:4222`.
    pub url: Option<String>,
    /// The JetStream stream to read (it must exist). Required.
    pub stream: Option<String>,
    /// One subject filter (wildcards allowed): only messages on matching subjects are read.
    pub subject: Option<String>,
    /// Several subject filters, which must not overlap; each is one split.
    pub subjects: Option<Vec<String>>,
    /// Where to start when no checkpoint says: `earliest` (default), `latest`, `sequence`
    /// (see `start_sequence`) or `time` (see `start_time`).
    pub start: Option<StartFrom>,
    /// For `start: sequence`: the first stream sequence to read.
    pub start_sequence: Option<u64>,
    /// For `start: time`: milliseconds since the Unix epoch, or an RFC 3339 time.
    pub start_time: Option<serde_json::Value>,
    /// `never` (default) or `latest`: stop after the messages the stream held when reading
    /// started (a bounded read).
    pub stop_at: Option<StopAt>,
    /// Payload format: `json` (default), `csv` or `raw`.
    pub format: Option<MessageFormat>,
    /// Columns filled from the message instead of its payload: `{column: what}` where what is
    /// `subject`, `sequence`, `timestamp`, `headers` (a JSON object) or `header:NAME`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// User name; may be `${env:NAME}`.
    pub user: Option<String>,
    /// Password; may be `${env:NAME}`, and is never shown.
    pub password: Option<String>,
    /// Authentication token instead of a user and password; may be `${env:NAME}`.
    pub token: Option<String>,
}

/// Option names of the `nats` source.
pub const SOURCE_OPTIONS: &[&str] = &[
    "url",
    "stream",
    "subject",
    "subjects",
    "start",
    "start_sequence",
    "start_time",
    "stop_at",
    "format",
    "metadata",
    "user",
    "password",
    "token",
];

/// Where a NATS source starts reading a split that no checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest message the stream holds.
    #[default]
    Earliest,
    /// Only messages published after reading starts.
    Latest,
    /// The message with `start_sequence`, or the first after it.
    Sequence,
    /// The first message published at or after `start_time`.
    Time,
}

/// When a NATS source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopAt {
    /// Never: the source is unbounded.
    #[default]
    Never,
    /// After the messages each split had pending when reading started.
    Latest,
}

/// Options of the `nats` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkOptions {
    /// As for the source.
    pub url: Option<String>,
    /// The subject every message is published to (a stream must capture it).
    pub subject: Option<String>,
    /// A column whose value is each message's subject, instead of `subject`.
    pub subject_column: Option<String>,
    /// Payload format: `json` (default), `csv` or `raw`.
    pub format: Option<MessageFormat>,
    /// Headers from columns: `{header name: column}`.
    pub headers: Option<BTreeMap<String, String>>,
    /// A column whose value is the `Nats-Msg-Id` header, for the stream's duplicate detection.
    pub message_id: Option<String>,
    /// As for the source.
    pub user: Option<String>,
    /// As for the source.
    pub password: Option<String>,
    /// As for the source.
    pub token: Option<String>,
}

/// Option names of the `nats` sink.
pub const SINK_OPTIONS: &[&str] =
    &["url", "subject", "subject_column", "format", "headers", "message_id", "user", "password", "token"];

/// What a column of the source's output holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    /// Column `n` of the decoded payload.
    Value(usize),
    /// The message's subject.
    Subject,
    /// The stream sequence.
    Sequence,
    /// When the server stored the message.
    Timestamp,
    /// All headers as one JSON object (the first value of each).
    Headers,
    /// One header's (first) value.
    Header(String),
}

impl MetadataColumn for Column {
    const KNOWN: &'static str = "use one of subject, sequence, timestamp, headers or header:NAME";

    fn value(n: usize) -> Self {
        Column::Value(n)
    }

    fn parse(what: &str) -> Option<Self> {
        Some(match what {
            "subject" => Column::Subject,
            "sequence" => Column::Sequence,
            "timestamp" => Column::Timestamp,
            "headers" => Column::Headers,
            other => Column::Header(other.strip_prefix("header:").filter(|n| !n.is_empty())?.to_owned()),
        })
    }

    fn accepts(&self, data_type: &DataType) -> bool {
        match self {
            Column::Value(_) => true,
            Column::Subject | Column::Headers | Column::Header(_) => data_type == &DataType::Utf8,
            Column::Sequence => matches!(data_type, DataType::Int64 | DataType::UInt64),
            Column::Timestamp => {
                matches!(data_type, DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, None))
            }
        }
    }

    fn types(&self) -> &'static str {
        match self {
            Column::Value(_) => "any",
            Column::Subject | Column::Headers | Column::Header(_) => "`utf8`",
            Column::Sequence => "`int64` or `uint64`",
            Column::Timestamp => "`timestamp` or `int64` (milliseconds)",
        }
    }
}

/// Where reading starts, resolved from the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Earliest,
    Latest,
    /// The first sequence to read.
    Sequence(u64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

/// What the NATS source was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SourceConfig {
    pub(crate) client: client::ClientSettings,
    pub(crate) stream: String,
    /// Subject filters, one split each; empty: the whole stream is one split.
    pub(crate) filters: Vec<String>,
    pub(crate) start: Start,
    pub(crate) stop_at: StopAt,
    pub(crate) format: MessageFormat,
    pub(crate) schema: SchemaRef,
    pub(crate) value_schema: SchemaRef,
    pub(crate) columns: Vec<Column>,
}

/// Builds the NATS source from its request. Checks the options only; the server is first
/// contacted when a worker opens the source.
pub fn build_source(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let options = options::parse::<NatsSourceOptions>(request.options, SOURCE_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let client = client::ClientSettings::check(
        options.url.as_deref(),
        options.user.as_deref(),
        options.password.as_deref(),
        options.token.as_deref(),
        &mut diagnostics,
    );
    let stream = match options.stream.as_deref().map(str::trim) {
        None => {
            diagnostics.push(
                options::missing("options", "stream")
                    .suggest("name the JetStream stream to read, e.g. `stream: ORDERS`"),
            );
            None
        }
        Some(name) if name.is_empty() || name.contains(['.', '*', '>', ' ', '/', '\\']) => {
            diagnostics.push(Diagnostic::new(
                "options.stream",
                format!("\"{name}\" is not a stream name (no spaces, dots, `*`, `>`, slashes)"),
            ));
            None
        }
        Some(name) => Some(name.to_owned()),
    };
    let filters = filters(&options, &mut diagnostics);
    let start = start(&options, &mut diagnostics);
    let format = options.format.unwrap_or_default();
    diagnostics.extend(format.unsupported_avro("nats"));
    let schema = required_schema(request.schema, "nats", &mut diagnostics);
    let columns = schema
        .as_ref()
        .and_then(|schema| message_columns(schema, options.metadata.as_ref(), format, &mut diagnostics));
    match (client, stream, filters, start, schema, columns) {
        (
            Some(client),
            Some(stream),
            Some(filters),
            Some(start),
            Some(schema),
            Some((columns, value_schema)),
        ) if diagnostics.is_empty() => Ok(Arc::new(NatsSource::new(SourceConfig {
            client,
            stream,
            filters,
            start,
            stop_at: options.stop_at.unwrap_or_default(),
            format,
            schema,
            value_schema,
            columns,
        }))),
        _ => Err(diagnostics),
    }
}

fn filters(options: &NatsSourceOptions, diagnostics: &mut Vec<Diagnostic>) -> Option<Vec<String>> {
    let (filters, path) = match (&options.subject, &options.subjects) {
        (None, None) => return Some(Vec::new()),
        (Some(subject), None) => (vec![subject.clone()], "options.subject"),
        (None, Some(subjects)) if subjects.is_empty() => {
            diagnostics.push(
                Diagnostic::new("options.subjects", "the list of subjects is empty")
                    .suggest("list subject filters, or leave `subjects` out to read the whole stream"),
            );
            return None;
        }
        (None, Some(subjects)) => (subjects.clone(), "options.subjects"),
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options", "set only one of `subject` and `subjects`"));
            return None;
        }
    };
    let before = diagnostics.len();
    for (index, filter) in filters.iter().enumerate() {
        let at = if options.subjects.is_some() { format!("{path}[{index}]") } else { path.to_owned() };
        if let Err(message) = client::check_subject(filter, true) {
            diagnostics.push(Diagnostic::new(at, message));
            continue;
        }
        if let Some(other) = filters[..index].iter().find(|other| client::filters_overlap(other, filter)) {
            diagnostics.push(
                Diagnostic::new(
                    at,
                    format!("\"{filter}\" overlaps \"{other}\": a message on both would be read twice"),
                )
                .suggest("use filters that no subject matches together, or one wider filter"),
            );
        }
    }
    (diagnostics.len() == before).then_some(filters)
}

fn start(options: &NatsSourceOptions, diagnostics: &mut Vec<Diagnostic>) -> Option<Start> {
    let start = options.start.unwrap_or_default();
    if start != StartFrom::Sequence && options.start_sequence.is_some() {
        diagnostics.push(
            Diagnostic::new("options.start_sequence", "only used with `start: sequence`")
                .suggest("set `start: sequence` or remove `start_sequence`"),
        );
    }
    if start != StartFrom::Time && options.start_time.is_some() {
        diagnostics.push(
            Diagnostic::new("options.start_time", "only used with `start: time`")
                .suggest("set `start: time` or remove `start_time`"),
        );
    }
    match start {
        StartFrom::Earliest => Some(Start::Earliest),
        StartFrom::Latest => Some(Start::Latest),
        StartFrom::Sequence => match options.start_sequence {
            Some(sequence) if sequence >= 1 => Some(Start::Sequence(sequence)),
            Some(_) => {
                diagnostics.push(Diagnostic::new("options.start_sequence", "stream sequences start at 1"));
                None
            }
            None => {
                diagnostics.push(Diagnostic::new(
                    "options.start_sequence",
                    "`start: sequence` needs `start_sequence`: the first stream sequence to read",
                ));
                None
            }
        },
        StartFrom::Time => {
            let parsed = match &options.start_time {
                None => Err("`start: time` needs `start_time`: milliseconds since the Unix epoch, or an \
                     RFC 3339 time such as 2026-01-31T08:00:00Z"
                    .to_owned()),
                Some(serde_json::Value::Number(n)) => {
                    n.as_i64().ok_or_else(|| format!("{n} is not a whole number of milliseconds"))
                }
                Some(serde_json::Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text)
                    .map(|time| time.timestamp_millis())
                    .map_err(|error| {
                        format!(
                            "\"{text}\" is not an RFC 3339 time ({error}); write e.g. 2026-01-31T08:00:00Z"
                        )
                    }),
                Some(other) => Err(format!(
                    "expected milliseconds or an RFC 3339 time, found {}",
                    options::describe(other)
                )),
            };
            parsed
                .map(Start::Time)
                .map_err(|message| diagnostics.push(Diagnostic::new("options.start_time", message)))
                .ok()
        }
    }
}

/// What the NATS sink was configured with, once checked.
#[derive(Debug, Clone)]
pub(crate) struct SinkConfig {
    pub(crate) client: client::ClientSettings,
    pub(crate) subject: SubjectFrom,
    pub(crate) format: MessageFormat,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) message_id: Option<String>,
}

/// Where a published message's subject comes from.
#[derive(Debug, Clone)]
pub(crate) enum SubjectFrom {
    /// Always this subject.
    Fixed(String),
    /// The value of this column.
    Column(String),
}

/// Builds the NATS sink from its request.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<NatsSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let client = client::ClientSettings::check(
        options.url.as_deref(),
        options.user.as_deref(),
        options.password.as_deref(),
        options.token.as_deref(),
        &mut diagnostics,
    );
    let subject = match (options.subject, options.subject_column) {
        (Some(subject), None) => match client::check_subject(&subject, false) {
            Ok(()) => Some(SubjectFrom::Fixed(subject)),
            Err(message) => {
                diagnostics.push(Diagnostic::new("options.subject", message));
                None
            }
        },
        (None, Some(column)) => Some(SubjectFrom::Column(column)),
        (None, None) => {
            diagnostics.push(options::missing("options", "subject").suggest(
                "set `subject` (one subject) or `subject_column` (a column holding each row's subject)",
            ));
            None
        }
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options", "set only one of `subject` and `subject_column`"));
            None
        }
    };
    diagnostics.extend(options.format.unwrap_or_default().unsupported_avro("nats"));
    let headers = options.headers.unwrap_or_default();
    for name in headers.keys() {
        if name.is_empty()
            || name.contains([':', ' ', '\r', '\n'])
            || name.eq_ignore_ascii_case("Nats-Msg-Id")
        {
            diagnostics.push(Diagnostic::new(
                format!("options.headers.{name}"),
                format!(
                    "\"{name}\" cannot be a header name here (no ':', spaces or line breaks; Nats-Msg-Id is \
                     set with `message_id`)"
                ),
            ));
        }
    }
    match (client, subject) {
        (Some(client), Some(subject)) if diagnostics.is_empty() => Ok(Arc::new(NatsSink::new(SinkConfig {
            client,
            subject,
            format: options.format.unwrap_or_default(),
            headers,
            message_id: options.message_id,
        }))),
        _ => Err(diagnostics),
    }
}
