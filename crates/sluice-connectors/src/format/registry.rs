//! Schema registries: message payloads in the wire format of Confluent's Schema Registry (the
//! magic byte 0, the writer schema's id as 4 big-endian bytes, then the encoded record), and the
//! registry's REST API, which maps ids to writer schemas and subjects to their versions.
//!
//! A source reads each message with the writer schema its id names, fetched once per id and
//! kept (ids never change meaning), and fits the record to the declared columns. A message
//! without the header, with an id the registry does not know, or whose writer schema does not
//! give the declared columns is a bad record with the reason. A sink registers its writer schema
//! under a subject (by default `<topic>-value`, the registry's topic-name strategy) when it opens
//! and puts that id before every payload. A registry that does not answer, or answers with a
//! server error, is retried with backoff and then fails the run, which resumes from its last
//! checkpoint: no record is dropped because the registry was down.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use super::avro::AvroCodec;
use super::message::{BadMessage, MessageDecoder, MessageFormat};
use crate::http::retry::RetryPolicy;
use crate::http::secret::{Redactor, Template, without_userinfo};
use crate::io::IoRuntime;

/// The first byte of a payload in the registry's wire format.
const MAGIC: u8 = 0;
/// Bytes before the encoded record: the magic byte and the schema id.
const HEADER: usize = 5;
/// How long one request to the registry may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a registry that does not answer or fails: about a minute of waiting in all.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_backoff: Duration::from_millis(250),
    max_backoff: Duration::from_secs(15),
};
/// The media type of the registry's API.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The `registry` option of a Kafka source or sink with `format: avro` or `format: json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryOptions {
    /// The registry's base URL, e.g. `http://registry:8081`, or a Sluice team's own registry
    /// `http://HOST:PORT/api/v1/teams/TEAM/registry`; may hold `${env:NAME}`. Required.
    pub url: Option<String>,
    /// The subject the writer schema is registered under (sink) or checked against when the
    /// source starts; `<topic>-value` unless set.
    pub subject: Option<String>,
    /// HTTP Basic credentials: the user (for a Sluice registry, any name).
    pub username: Option<String>,
    /// HTTP Basic credentials: the password (for a Sluice registry, an API token); write it as
    /// `${env:NAME}`.
    pub password: Option<String>,
    /// A bearer token instead of `username` and `password`; write it as `${env:NAME}`.
    pub token: Option<String>,
    /// Sinks: register the writer schema when the sink opens (default `true`). With `false`
    /// it must already be registered under the subject, and the sink only looks its id up.
    pub auto_register: Option<bool>,
}

/// Option names under `registry`.
pub const REGISTRY_OPTIONS: &[&str] = &["url", "subject", "username", "password", "token", "auto_register"];

/// The kind of a registered schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SchemaType {
    /// An Avro schema.
    Avro,
    /// A JSON Schema.
    Json,
    /// Any other kind (e.g. `PROTOBUF`), by its name.
    Other(String),
}

impl SchemaType {
    /// The kind of schema a message format needs, if it can use a registry.
    fn of(format: MessageFormat) -> Option<Self> {
        match format {
            MessageFormat::Avro => Some(SchemaType::Avro),
            MessageFormat::Json => Some(SchemaType::Json),
            MessageFormat::Csv | MessageFormat::Raw => None,
        }
    }

    /// The registry's name for it.
    fn name(&self) -> &str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Other(name) => name,
        }
    }
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisteredSchema {
    /// Its kind.
    pub(crate) schema_type: SchemaType,
    /// Its text (JSON for Avro and JSON Schema).
    pub(crate) text: String,
}

impl RegisteredSchema {
    /// The schema in a registry answer: `schema`, and `schemaType` (absent for Avro).
    fn from_answer(answer: &Value) -> std::result::Result<Self, String> {
        let text = answer
            .get("schema")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the answer has no `schema` string: {}", shorten(&answer.to_string())))?;
        let schema_type = match answer.get("schemaType").and_then(Value::as_str) {
            None | Some("AVRO") => SchemaType::Avro,
            Some("JSON") => SchemaType::Json,
            Some(other) => SchemaType::Other(other.to_owned()),
        };
        Ok(Self { schema_type, text: text.to_owned() })
    }

    /// The body that registers or looks up this schema.
    fn request_body(&self) -> Value {
        match self.schema_type {
            // Registries that predate other kinds know no `schemaType`; Avro is their default.
            SchemaType::Avro => json!({ "schema": self.text }),
            _ => json!({ "schema": self.text, "schemaType": self.schema_type.name() }),
        }
    }
}

/// How the client proves who it is; secrets are still references.
#[derive(Clone)]
enum Auth {
    None,
    Basic(Template, Template),
    Bearer(Template),
}

/// Which end of a topic a registry is used by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A source: reads the schema each message names.
    Source,
    /// A sink: registers its writer schema.
    Sink,
}

/// The checked `registry` option; secrets are still `${env:NAME}` references here.
#[derive(Clone)]
pub struct RegistrySettings {
    url: Template,
    /// The URL as it may be shown: references as written, no user info.
    shown: String,
    subject: Option<String>,
    auth: Auth,
    auto_register: bool,
    schema_type: SchemaType,
}

impl fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::Basic(..) => "username and password (redacted)",
            Auth::Bearer(_) => "token (redacted)",
        };
        f.debug_struct("RegistrySettings")
            .field("url", &self.shown)
            .field("subject", &self.subject)
            .field("auth", &auth)
            .field("auto_register", &self.auto_register)
            .finish_non_exhaustive()
    }
}

impl RegistrySettings {
    /// Checks the `registry` option (`value`) of a connector whose messages are `format`:
    /// `Some(None)` without one, `None` after adding diagnostics.
    pub(crate) fn check(
        value: Option<&Value>,
        format: MessageFormat,
        side: Side,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Option<Self>> {
        let Some(value) = value else {
            return Some(None);
        };
        let options =
            match crate::options::parse::<RegistryOptions>(value, REGISTRY_OPTIONS, "options.registry") {
                Ok(options) => options,
                Err(errors) => {
                    diagnostics.extend(errors);
                    return None;
                }
            };
        let Some(schema_type) = SchemaType::of(format) else {
            diagnostics.push(
                Diagnostic::new(
                    "options.registry",
                    format!(
                        "a schema registry is only used with `format: avro` or `format: json`, not `{}`",
                        format.name()
                    ),
                )
                .suggest("set `format: avro` or `format: json`, or remove `registry`"),
            );
            return None;
        };
        let before = diagnostics.len();
        let url = match options.url.as_deref().map(str::trim) {
            None | Some("") => {
                diagnostics.push(crate::options::missing("options.registry", "url").suggest(
                    "give the registry's base URL, e.g. `url: http://registry:8081`, or a Sluice team's \
                     `http://HOST:PORT/api/v1/teams/TEAM/registry`",
                ));
                None
            }
            Some(text) => check_url(text, diagnostics),
        };
        let mut template = |key: &str, value: Option<&str>| {
            Template::parse(value?)
                .map_err(|message| {
                    diagnostics.push(Diagnostic::new(format!("options.registry.{key}"), message))
                })
                .ok()
        };
        let (username, password, token) = (
            template("username", options.username.as_deref()),
            template("password", options.password.as_deref()),
            template("token", options.token.as_deref()),
        );
        let auth = match (&options.username, &options.password, &options.token) {
            (None, None, None) => Some(Auth::None),
            (Some(_), Some(_), None) => username.zip(password).map(|(u, p)| Auth::Basic(u, p)),
            (None, None, Some(_)) => token.map(Auth::Bearer),
            (_, _, Some(_)) => {
                diagnostics.push(Diagnostic::new(
                    "options.registry.token",
                    "set either `token` or `username` and `password`, not both",
                ));
                None
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                let missing = if options.username.is_some() { "password" } else { "username" };
                diagnostics.push(
                    crate::options::missing("options.registry", missing)
                        .suggest("HTTP Basic credentials need both `username` and `password`"),
                );
                None
            }
        };
        if options.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
            diagnostics.push(
                Diagnostic::new("options.registry.subject", "the subject is empty")
                    .suggest("remove `subject` to use `<topic>-value`, or name one"),
            );
        }
        if side == Side::Source && options.auto_register.is_some() {
            diagnostics.push(
                Diagnostic::new(
                    "options.registry.auto_register",
                    "only used by sinks, which register their writer schema; a source reads the schema each \
                     message names",
                )
                .suggest("remove `auto_register`"),
            );
        }
        let (Some((url, shown)), Some(auth)) = (url, auth) else {
            return None;
        };
        (diagnostics.len() == before).then(|| {
            Some(Self {
                url,
                shown,
                subject: options.subject,
                auth,
                auto_register: options.auto_register.unwrap_or(true),
                schema_type,
            })
        })
    }

    /// The subject of `topic`'s values: the `subject` option, else `<topic>-value`.
    pub(crate) fn subject_for(&self, topic: &str) -> String {
        self.subject.clone().unwrap_or_else(|| format!("{topic}-value"))
    }

    /// The `subject` option, if set.
    pub(crate) fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
}

/// The URL template and how it may be shown, if it is an http(s) URL.
fn check_url(text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<(Template, String)> {
    let template = match Template::parse(text) {
        Ok(template) => template,
        Err(message) => {
            diagnostics.push(Diagnostic::new("options.registry.url", message));
            return None;
        }
    };
    match Url::parse(&template.with_placeholders("placeholder")) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Some((template, without_userinfo(text)))
        }
        Ok(url) => {
            diagnostics.push(
                Diagnostic::new(
                    "options.registry.url",
                    format!("the registry is reached over HTTP, but the URL has scheme `{}`", url.scheme()),
                )
                .suggest("write it as http://HOST:PORT or https://HOST"),
            );
            None
        }
        Err(error) => {
            diagnostics.push(
                Diagnostic::new(
                    "options.registry.url",
                    format!("not a URL ({error}): \"{}\"", without_userinfo(text)),
                )
                .suggest("write it as http://HOST:PORT or https://HOST"),
            );
            None
        }
    }
}

/// Appends the registry's payload header of schema `id` to `out`.
pub(crate) fn push_header(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// The registry's payload header of schema `id`, then `payload`, in place.
pub(crate) fn frame(id: u32, payload: &mut Vec<u8>) {
    let mut framed = Vec::with_capacity(HEADER + payload.len());
    push_header(id, &mut framed);
    framed.extend_from_slice(payload);
    *payload = framed;
}

/// The schema id and the encoded record of a payload in the registry's wire format, or why it
/// is not in that format.
pub(crate) fn unframe(payload: Option<&[u8]>) -> std::result::Result<(u32, &[u8]), String> {
    match payload {
        None => Err("the message has no payload (a tombstone or an empty message)".to_owned()),
        Some(payload) if payload.first().is_some_and(|first| *first != MAGIC) => Err(format!(
            "the payload does not start with the schema registry's magic byte 0 but with 0x{:02x}{}, so \
             it was not written with a schema registry",
            payload[0],
            if payload[0] == b'{' { " (`{`: plain JSON)" } else { "" }
        )),
        Some(payload) if payload.len() < HEADER => Err(format!(
            "the payload has {} bytes, too few for the schema registry's wire format (the byte 0, a 4-byte \
             schema id, then the record)",
            payload.len()
        )),
        Some(payload) => {
            let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
            Ok((id, &payload[HEADER..]))
        }
    }
}

/// A registry answer: success with its JSON, or a refusal with the registry's error.
#[derive(Debug)]
enum Reply {
    Ok(Value),
    Refused { status: StatusCode, code: Option<i64>, message: String },
}

/// The registry's error codes for "no such subject", "no such version" and "no such schema".
const SUBJECT_NOT_FOUND: i64 = 40401;
const VERSION_NOT_FOUND: i64 = 40402;
const SCHEMA_NOT_FOUND: i64 = 40403;

impl Reply {
    /// Whether this is the registry saying that what was asked for does not exist, with one of
    /// `codes`. A 404 without such a code comes from something else (a wrong URL, a proxy) and
    /// must not be taken for an absent schema: records would be refused for the wrong reason.
    fn absent(&self, codes: &[i64]) -> bool {
        matches!(self, Reply::Refused { status: StatusCode::NOT_FOUND, code: Some(code), .. } if codes.contains(code))
    }
}

/// Credentials with their secrets resolved.
enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

/// A client of one registry, for the synchronous threads of timely workers.
pub(crate) struct RegistryClient {
    io: IoRuntime,
    http: reqwest::Client,
    base: Url,
    shown: String,
    credentials: Credentials,
    redactor: Redactor,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry `settings` name, with its secrets read from the environment.
    pub(crate) fn connect(settings: &RegistrySettings) -> Result<Self> {
        let lookup = |name: &str| std::env::var(name).ok();
        let mut redactor = Redactor::default();
        let mut resolve = |key: &str, template: &Template| {
            template
                .resolve(&lookup, &mut redactor)
                .map_err(|e| Error::user(format!("options.registry.{key}: {e}")))
        };
        let url = resolve("url", &settings.url)?;
        let credentials = match &settings.auth {
            Auth::None => Credentials::None,
            Auth::Basic(user, password) => {
                Credentials::Basic(resolve("username", user)?, resolve("password", password)?)
            }
            Auth::Bearer(token) => Credentials::Bearer(resolve("token", token)?),
        };
        let base = Url::parse(url.trim()).ok().filter(|url| !url.cannot_be_a_base()).ok_or_else(|| {
            Error::user(format!("options.registry.url: {} is not a base URL", settings.shown))
        })?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::external("building the schema registry's HTTP client", e))?;
        Ok(Self {
            io: IoRuntime::start("sluice-registry")?,
            http,
            base,
            shown: settings.shown.clone(),
            credentials,
            redactor,
        })
    }

    /// The schema with `id`; `None` when the registry has no schema with that id.
    pub(crate) fn schema(&self, id: u32) -> Result<Option<RegisteredSchema>> {
        let what = format!("reading schema id {id}");
        match self.call(Method::GET, &["schemas", "ids", &id.to_string()], None, &what)? {
            Reply::Ok(answer) => self.schema_in(&answer, &what).map(Some),
            absent if absent.absent(&[SCHEMA_NOT_FOUND]) => Ok(None),
            refused => Err(self.refusal(refused, &what)),
        }
    }

    /// The id and schema of `subject`'s latest version; `None` when the subject has none.
    pub(crate) fn latest(&self, subject: &str) -> Result<Option<(u32, RegisteredSchema)>> {
        let what = format!("reading the latest version of subject `{subject}`");
        match self.call(Method::GET, &["subjects", subject, "versions", "latest"], None, &what)? {
            Reply::Ok(answer) => Ok(Some((self.id_in(&answer, &what)?, self.schema_in(&answer, &what)?))),
            absent if absent.absent(&[SUBJECT_NOT_FOUND, VERSION_NOT_FOUND]) => Ok(None),
            refused => Err(self.refusal(refused, &what)),
        }
    }

    /// Registers `schema` under `subject` (a schema already registered there keeps its id);
    /// returns its id. A schema the subject's compatibility level does not allow is an error
    /// with the registry's reason.
    pub(crate) fn register(&self, subject: &str, schema: &RegisteredSchema) -> Result<u32> {
        let what = format!("registering the sink's writer schema under subject `{subject}`");
        let body = schema.request_body();
        match self.call(Method::POST, &["subjects", subject, "versions"], Some(&body), &what)? {
            Reply::Ok(answer) => self.id_in(&answer, &what),
            Reply::Refused { status: StatusCode::CONFLICT, message, .. } => Err(Error::user(format!(
                "{what}: the schema registry at {} refused it as incompatible with the subject's earlier \
                 versions: {message}. Change the schema so that it is compatible, or change the subject's \
                 compatibility level (PUT /config/{subject}); the schema was:\n{}",
                self.shown, schema.text
            ))),
            refused => Err(self.refusal(refused, &what)),
        }
    }

    /// The id of `schema` if it is registered under `subject`.
    pub(crate) fn lookup(&self, subject: &str, schema: &RegisteredSchema) -> Result<Option<u32>> {
        let what = format!("looking up the sink's writer schema under subject `{subject}`");
        let body = schema.request_body();
        match self.call(Method::POST, &["subjects", subject], Some(&body), &what)? {
            Reply::Ok(answer) => self.id_in(&answer, &what).map(Some),
            absent if absent.absent(&[SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND]) => Ok(None),
            refused => Err(self.refusal(refused, &what)),
        }
    }

    fn id_in(&self, answer: &Value, what: &str) -> Result<u32> {
        answer.get("id").and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
            Error::user(format!(
                "{what}: the schema registry at {} answered without a schema id: {}",
                self.shown,
                shorten(&answer.to_string())
            ))
        })
    }

    fn schema_in(&self, answer: &Value, what: &str) -> Result<RegisteredSchema> {
        RegisteredSchema::from_answer(answer).map_err(|problem| {
            Error::user(format!("{what}: the schema registry at {}: {problem}", self.shown))
        })
    }

    /// The error for a refusal the caller does not expect.
    fn refusal(&self, reply: Reply, what: &str) -> Error {
        let Reply::Refused { status, code, message } = reply else {
            return Error::internal(format!("{what}: a successful registry answer taken for a refusal"));
        };
        let code = code.map(|code| format!(", error code {code}")).unwrap_or_default();
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                "; check `registry.username` and `registry.password` (for a Sluice registry: any user name \
                 and an API token), or `registry.token`"
            }
            StatusCode::FORBIDDEN => {
                "; the credentials are not allowed to do this (a Sluice registry needs the \
                                      team's developer role to register schemas)"
            }
            StatusCode::NOT_FOUND => "; is `registry.url` the registry's base URL?",
            _ => "",
        };
        Error::user(format!(
            "{what}: the schema registry at {} answered {status}{code}: {message}{hint}",
            self.shown
        ))
    }

    /// Sends one request to the path `segments` below the base URL, retrying transport
    /// failures, server errors and 429 with backoff; other answers are returned.
    fn call(&self, method: Method, segments: &[&str], body: Option<&Value>, what: &str) -> Result<Reply> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::user(format!("options.registry.url: {} is not a base URL", self.shown)))?
            .pop_if_empty()
            .extend(segments);
        let started = Instant::now();
        let mut failed = 0;
        loop {
            let reason = match self.io.block_on(self.send(method.clone(), url.clone(), body))? {
                Ok(Reply::Refused { status, code, message })
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let code = code.map(|code| format!(" (error code {code})")).unwrap_or_default();
                    format!("answered {status}{code}: {message}")
                }
                Ok(reply) => return Ok(reply),
                Err(reason) => reason,
            };
            failed += 1;
            if failed >= RETRY.max_attempts {
                return Err(Error::user(format!(
                    "{what}: the schema registry at {} failed {failed} attempts in {:.1?}, the last one: {reason}; \
                     is it running, and is `registry.url` right?",
                    self.shown,
                    started.elapsed()
                )));
            }
            let delay = RETRY.delay(failed, None, rand::random::<f64>());
            tracing::warn!(
                target: "registry",
                registry = %self.shown,
                attempt = failed,
                retry_in_ms = delay.as_millis() as u64,
                "{what}: {reason}; trying again"
            );
            std::thread::sleep(delay);
        }
    }

    /// One attempt: the reply, or why no reply came (a transport failure).
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> std::result::Result<Reply, String> {
        let mut request = self.http.request(method, url).header(ACCEPT, MEDIA_TYPE);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, MEDIA_TYPE).body(body.to_string());
        }
        request = match &self.credentials {
            Credentials::None => request,
            Credentials::Basic(user, password) => request.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => request.bearer_auth(token),
        };
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(&e))?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return Ok(match answer {
                Some(answer) => Reply::Ok(answer),
                None => Reply::Refused {
                    status,
                    code: None,
                    message: format!("the answer is not JSON: {}", shorten(&self.redactor.redact(&text))),
                },
            });
        }
        let code = answer.as_ref().and_then(|a| a.get("error_code")).and_then(Value::as_i64);
        let message = answer
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| shorten(&text), str::to_owned);
        Ok(Reply::Refused { status, code, message: self.redactor.redact(&message) })
    }

    fn transport(&self, error: &reqwest::Error) -> String {
        let kind = if error.is_timeout() {
            format!("no answer within {REQUEST_TIMEOUT:?}")
        } else if error.is_connect() {
            "could not connect".to_owned()
        } else {
            "the request failed".to_owned()
        };
        let mut source = std::error::Error::source(error);
        let mut detail = String::new();
        while let Some(cause) = source {
            detail = cause.to_string();
            source = cause.source();
        }
        let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
        self.redactor.redact(&format!("{kind}{detail}"))
    }
}

/// `text`, cut to a length fit for a message.
fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Consecutive payloads written with one schema: its id, and each payload's index and record.
type Run<'a> = (u32, Vec<(usize, &'a [u8])>);

/// Decodes payloads in the registry's wire format into rows of the declared columns, each with
/// the writer schema its id names.
#[derive(Debug)]
pub(crate) struct RegistryDecoder {
    client: RegistryClient,
    format: MessageFormat,
    /// The declared columns decoded from payloads.
    columns: SchemaRef,
    /// Per schema id met: a decoder of its records, or why they cannot be read.
    by_id: HashMap<u32, std::result::Result<MessageDecoder, String>>,
}

impl RegistryDecoder {
    /// Connects to the registry and checks the latest schema of each of `subjects` (those that
    /// have one): records of it must give the declared `columns`, else the source cannot start.
    pub(crate) fn open(
        settings: &RegistrySettings,
        format: MessageFormat,
        columns: SchemaRef,
        subjects: &[String],
    ) -> Result<Self> {
        let client = RegistryClient::connect(settings)?;
        let mut decoder = Self { client, format, columns, by_id: HashMap::new() };
        for subject in subjects {
            let Some((id, schema)) = decoder.client.latest(subject)? else {
                tracing::info!(target: "registry", subject, "the subject has no schema yet");
                continue;
            };
            let built = decoder.build(id, Some(schema));
            if let Err(reason) = &built {
                return Err(Error::user(format!(
                    "the latest schema of subject `{subject}` in the schema registry at {}: {reason}; declare \
                     columns that its records give, or fix the schema",
                    decoder.client.shown
                )));
            }
            decoder.by_id.insert(id, built);
        }
        Ok(decoder)
    }

    /// A decoder of records written with schema `id` (`None`: the registry has no such id).
    fn build(
        &self,
        id: u32,
        schema: Option<RegisteredSchema>,
    ) -> std::result::Result<MessageDecoder, String> {
        let Some(schema) = schema else {
            return Err(format!(
                "schema id {id} is not in the schema registry at {} (was the message written with another \
                 registry?)",
                self.client.shown
            ));
        };
        match (&schema.schema_type, self.format) {
            (SchemaType::Avro, MessageFormat::Avro) => AvroCodec::parse(&schema.text)
                .and_then(|codec| MessageDecoder::avro(codec, self.columns.clone(), true))
                .map_err(|problem| format!("schema id {id}: {problem}")),
            (SchemaType::Json, MessageFormat::Json) => {
                Ok(MessageDecoder::new(MessageFormat::Json, self.columns.clone()))
            }
            (schema_type, format) => Err(format!(
                "schema id {id} is a {} schema, but this source reads `format: {}`",
                schema_type.name(),
                format.name()
            )),
        }
    }

    /// Decodes `payloads` as [`MessageDecoder::decode`] does; schemas not met before are
    /// fetched from the registry (an error only when the registry cannot be reached).
    pub(crate) fn decode(
        &mut self,
        payloads: &[Option<&[u8]>],
        bad: &mut BadMessage<'_>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        // Runs of consecutive payloads written with one schema, in order.
        let mut runs: Vec<Run<'_>> = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            match unframe(*payload) {
                Err(reason) => bad(index, reason)?,
                Ok((id, record)) => match runs.last_mut() {
                    Some((last, run)) if *last == id => run.push((index, record)),
                    _ => runs.push((id, vec![(index, record)])),
                },
            }
        }
        let mut batches = Vec::with_capacity(runs.len());
        let mut rows = Vec::with_capacity(payloads.len());
        for (id, run) in runs {
            if !self.by_id.contains_key(&id) {
                let schema = self.client.schema(id)?;
                let built = self.build(id, schema);
                self.by_id.insert(id, built);
            }
            match &self.by_id[&id] {
                Err(reason) => {
                    for (index, _) in &run {
                        bad(*index, reason.clone())?;
                    }
                }
                Ok(decoder) => {
                    let records: Vec<Option<&[u8]>> = run.iter().map(|(_, record)| Some(*record)).collect();
                    let (batch, kept) = decoder.decode(&records, &mut |k, reason| bad(run[k].0, reason))?;
                    rows.extend(kept.into_iter().map(|k| run[k].0));
                    batches.push(batch);
                }
            }
        }
        let batch = match batches.first() {
            None => RecordBatch::new_empty(self.columns.clone()),
            Some(first) => concat_batches(&first.schema(), &batches)?,
        };
        Ok((batch, rows))
    }
}

/// The id of the writer schema of a sink of `topic`: registered under the subject, or with
/// `auto_register: false` looked up there.
pub(crate) fn writer_id(settings: &RegistrySettings, topic: &str, schema: RegisteredSchema) -> Result<u32> {
    let client = RegistryClient::connect(settings)?;
    let subject = settings.subject_for(topic);
    let id = if settings.auto_register {
        client.register(&subject, &schema)?
    } else {
        client.lookup(&subject, &schema)?.ok_or_else(|| {
            Error::user(format!(
                "the sink's writer schema is not registered under subject `{subject}` in the schema registry at \
                 {}, and `registry.auto_register` is false; register it, or remove `auto_register`. The schema \
                 is:\n{}",
                client.shown, schema.text
            ))
        })?
    };
    tracing::info!(target: "registry", subject, id, "the sink writes with this schema id");
    Ok(id)
}

/// The registered schema a sink of `stream` rows in `format` writes with: the Avro writer
/// schema `avro` (JSON), or a JSON Schema of the objects rows are written as.
pub(crate) fn writer_schema(
    settings: &RegistrySettings,
    avro: Option<&str>,
    stream: &Schema,
) -> Result<RegisteredSchema> {
    match (&settings.schema_type, avro) {
        (SchemaType::Avro, Some(text)) => {
            Ok(RegisteredSchema { schema_type: SchemaType::Avro, text: text.to_owned() })
        }
        (SchemaType::Json, _) => {
            Ok(RegisteredSchema { schema_type: SchemaType::Json, text: json_schema(stream).to_string() })
        }
        (schema_type, _) => {
            Err(Error::internal(format!("no writer schema for a {} registry sink", schema_type.name())))
        }
    }
}

/// The JSON Schema of the objects rows of `schema` are written as. Null values are left out
/// of the objects, so only non-nullable columns are required; columns whose JSON form is not
/// a plain boolean, number or string (lists, maps, structs, binary, decimals) are not
/// constrained.
pub(crate) fn json_schema(schema: &Schema) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for field in schema.fields() {
        let json_type = match field.data_type() {
            DataType::Boolean => Some("boolean"),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Some("integer"),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Some("number"),
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..) => Some("string"),
            _ => None,
        };
        let property = match (json_type, field.is_nullable()) {
            (None, _) => json!({}),
            (Some(json_type), false) => json!({ "type": json_type }),
            (Some(json_type), true) => json!({ "type": [json_type, "null"] }),
        };
        properties.insert(field.name().clone(), property);
        if !field.is_nullable() {
            required.push(Value::String(field.name().clone()));
        }
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    fn check(
        value: Value,
        format: MessageFormat,
        side: Side,
    ) -> std::result::Result<RegistrySettings, Vec<String>> {
        let mut diagnostics = Vec::new();
        match RegistrySettings::check(Some(&value), format, side, &mut diagnostics) {
            Some(Some(settings)) if diagnostics.is_empty() => Ok(settings),
            _ => Err(diagnostics.iter().map(|d| format!("{}: {}", d.path, d.message)).collect()),
        }
    }

    #[test]
    fn frames_are_the_magic_byte_the_big_endian_id_and_the_record() {
        let mut payload = b"rec".to_vec();
        frame(0x0102_0304, &mut payload);
        assert_eq!(payload, [0, 1, 2, 3, 4, b'r', b'e', b'c']);
        assert_eq!(unframe(Some(&payload)), Ok((0x0102_0304, &b"rec"[..])));
        // An empty record (a record with no fields) is still a frame.
        assert_eq!(unframe(Some(&[0, 0, 0, 0, 7])), Ok((7, &b""[..])));
    }

    #[test]
    fn payloads_not_in_the_wire_format_say_why() {
        let json = unframe(Some(br#"{"id": 1}"#)).unwrap_err();
        assert!(json.contains("magic byte 0 but with 0x7b") && json.contains("plain JSON"), "{json}");
        let short = unframe(Some(&[0, 0, 1])).unwrap_err();
        assert!(short.contains("has 3 bytes"), "{short}");
        assert!(unframe(None).unwrap_err().contains("no payload"));
        assert!(unframe(Some(&[])).unwrap_err().contains("has 0 bytes"));
    }

    #[test]
    fn options_are_checked_with_their_paths() {
        let ok = check(
            json!({"url": "http://127.0.0.1:8081/api/v1/teams/t/registry", "username": "x", "password": "${env:PW}"}),
            MessageFormat::Avro,
            Side::Sink,
        )
        .unwrap();
        assert_eq!(ok.subject_for("orders"), "orders-value");
        assert!(ok.auto_register);
        let shown = format!("{ok:?}");
        assert!(shown.contains("redacted") && !shown.contains("PW"), "{shown}");

        let cases = [
            (
                json!({}),
                MessageFormat::Avro,
                Side::Sink,
                "options.registry.url: missing required option \"url\"",
            ),
            (json!({"url": "kafka://x:1"}), MessageFormat::Json, Side::Sink, "has scheme `kafka`"),
            (json!({"url": "not a url"}), MessageFormat::Json, Side::Sink, "options.registry.url: not a URL"),
            (
                json!({"url": "http://r", "username": "u"}),
                MessageFormat::Avro,
                Side::Sink,
                "options.registry.password: missing",
            ),
            (
                json!({"url": "http://r", "token": "t", "password": "p", "username": "u"}),
                MessageFormat::Avro,
                Side::Sink,
                "options.registry.token: set either",
            ),
            (
                json!({"url": "http://r", "subject": " "}),
                MessageFormat::Avro,
                Side::Sink,
                "the subject is empty",
            ),
            (
                json!({"url": "http://r", "auto_register": false}),
                MessageFormat::Avro,
                Side::Source,
                "only used by sinks",
            ),
            (json!({"url": "http://r"}), MessageFormat::Csv, Side::Source, "not `csv`"),
            (
                json!({"url": "http://r", "subjekt": "s"}),
                MessageFormat::Avro,
                Side::Sink,
                "unknown option \"subjekt\"",
            ),
            (json!({"url": "http://${env:}"}), MessageFormat::Avro, Side::Sink, "options.registry.url:"),
        ];
        for (value, format, side, expected) in cases {
            let errors = check(value.clone(), format, side).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{value}: expected {expected:?} in {errors:?}"
            );
        }
    }

    #[test]
    fn the_json_schema_of_rows_requires_only_non_nullable_columns() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("ok", DataType::Boolean, true),
            Field::new("price", DataType::Float64, false),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]);
        assert_eq!(
            json_schema(&schema),
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": ["string", "null"]},
                    "at": {"type": "string"},
                    "ok": {"type": ["boolean", "null"]},
                    "price": {"type": "number"},
                    "tags": {},
                },
                "required": ["id", "at", "price"],
            })
        );
    }

    #[test]
    fn only_the_registry_s_not_found_codes_mean_absent() {
        let refused = |status: u16, code: Option<i64>| Reply::Refused {
            status: StatusCode::from_u16(status).unwrap(),
            code,
            message: String::new(),
        };
        assert!(refused(404, Some(SCHEMA_NOT_FOUND)).absent(&[SCHEMA_NOT_FOUND]));
        assert!(refused(404, Some(SUBJECT_NOT_FOUND)).absent(&[SUBJECT_NOT_FOUND, VERSION_NOT_FOUND]));
        // A wrong URL (a web server's or a proxy's 404, or a Sluice team that is not there).
        assert!(!refused(404, None).absent(&[SCHEMA_NOT_FOUND]));
        assert!(!refused(404, Some(404)).absent(&[SCHEMA_NOT_FOUND]));
        assert!(!refused(500, Some(SCHEMA_NOT_FOUND)).absent(&[SCHEMA_NOT_FOUND]));
        assert!(!Reply::Ok(json!({})).absent(&[SCHEMA_NOT_FOUND]));
    }

    #[test]
    fn answers_give_the_schema_and_its_kind() {
        let avro = RegisteredSchema::from_answer(&json!({"schema": "\"string\""})).unwrap();
        assert_eq!(avro.schema_type, SchemaType::Avro);
        assert_eq!(avro.request_body(), json!({"schema": "\"string\""}));
        let json_schema =
            RegisteredSchema::from_answer(&json!({"schema": "{}", "schemaType": "JSON"})).unwrap();
        assert_eq!(json_schema.request_body(), json!({"schema": "{}", "schemaType": "JSON"}));
        let proto =
            RegisteredSchema::from_answer(&json!({"schema": "syntax", "schemaType": "PROTOBUF"})).unwrap();
        assert_eq!(proto.schema_type, SchemaType::Other("PROTOBUF".into()));
        assert!(RegisteredSchema::from_answer(&json!({"id": 1})).unwrap_err().contains("no `schema`"));
    }
}
