//! The `http` sink: records to a third-party API or webhook as JSON, one object per request or
//! arrays of up to `batch_size`, with retries (exponential backoff, full jitter, `Retry-After`)
//! on 429, 5xx, timeouts and connection errors, a rate limit, and the dead-letter folder for
//! requests that still fail. Header and URL values may reference environment variables
//! (`${env:NAME}`); those values are secrets, hidden from every message, log line and dead letter.
//!
//! Delivery is at-least-once: a checkpoint (and the end of a run) waits until every request
//! sent before it is delivered or dead-lettered.

mod rate;
pub(crate) mod retry;
pub(crate) mod secret;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sluice_runtime::Result;
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_spec::Diagnostic;
use sluice_spec::parse_duration;

use crate::SinkRequest;
use crate::options::{self, describe, join};

use retry::RetryPolicy;
use secret::{Template, without_userinfo};

/// Options of the `http` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkOptions {
    /// The `http://` or `https://` URL requests go to; may contain `${env:NAME}`. Required.
    pub url: Option<String>,
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: Option<HttpMethod>,
    /// Extra request headers; values may contain `${env:NAME}` (e.g.
    /// `Authorization: Bearer ${env:API_TOKEN}`). `Content-Type` defaults to
    /// `application/json`.
    pub headers: Option<BTreeMap<String, String>>,
    /// `record` (default): one JSON object per request; `batch`: a JSON array of up to
    /// `batch_size` records per request.
    pub body: Option<BodyMode>,
    /// Records per request with `body: batch`; default 100. A partial batch is sent at the end
    /// of every epoch.
    pub batch_size: Option<u64>,
    /// How long one attempt may take, connecting and reading the response included; a
    /// duration such as `500ms` or `10s`; default `10s`.
    pub timeout: Option<Value>,
    /// Retries, checked as [`RetryOptions`].
    pub retry: Option<Value>,
    /// Requests per second for the whole sink (all workers together; retries count); default
    /// unlimited.
    pub rate_limit: Option<f64>,
    /// Requests in flight at once per worker; default 4.
    pub concurrency: Option<u64>,
}

/// Option names of the `http` sink.
pub const OPTIONS: &[&str] =
    &["url", "method", "headers", "body", "batch_size", "timeout", "retry", "rate_limit", "concurrency"];

/// Retry settings of the `http` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOptions {
    /// Attempts in all, the first included; default 5. 1 never retries.
    pub max_attempts: Option<u32>,
    /// The wait ceiling after the first failure; it doubles after every failure; default
    /// `100ms`.
    pub initial_backoff: Option<Value>,
    /// The largest wait ceiling; default `30s`. A `Retry-After` from the server is honoured
    /// even when longer.
    pub max_backoff: Option<Value>,
}

/// Option names under `retry`.
pub const RETRY_OPTIONS: &[&str] = &["max_attempts", "initial_backoff", "max_backoff"];

/// The HTTP methods a sink may send records with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `POST` (the default).
    #[default]
    #[serde(alias = "post")]
    Post,
    /// `PUT`.
    #[serde(alias = "put")]
    Put,
    /// `PATCH`.
    #[serde(alias = "patch")]
    Patch,
}

impl HttpMethod {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
        }
    }
}

/// What one request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyMode {
    /// One JSON object: one record per request.
    #[default]
    Record,
    /// A JSON array of up to `batch_size` records.
    Batch,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BATCH_SIZE: usize = 100;
const DEFAULT_CONCURRENCY: usize = 4;
const MAX_CONCURRENCY: u64 = 256;
const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(30),
};
/// Headers the client computes from the body; a value from the spec would be wrong.
const COMPUTED_HEADERS: &[&str] = &["content-length", "transfer-encoding", "host"];

/// The `http` sink's checked configuration; secrets are still references here.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    pub sink: String,
    pub url: Template,
    pub method: reqwest::Method,
    /// Each header as the spec spells it (for messages), its name and its value.
    pub headers: Vec<(String, reqwest::header::HeaderName, Template)>,
    pub body: BodyMode,
    pub batch_size: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub rate_limit: Option<f64>,
    pub concurrency: usize,
}

/// Builds the sink from its request.
pub fn build(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let config = check(request)?;
    Ok(Arc::new(HttpSink { config: Arc::new(config) }))
}

/// Checks every option, reporting every problem at once.
fn check(request: &SinkRequest) -> Result<HttpConfig, Vec<Diagnostic>> {
    let options = options::parse::<HttpSinkOptions>(request.options, OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let retry = match &options.retry {
        Some(retry) => check_retry(retry, DEFAULT_RETRY, "request", &mut diagnostics),
        None => DEFAULT_RETRY,
    };
    let url = match options.url.as_deref() {
        Some(url) => check_url(url, &mut diagnostics),
        None => {
            diagnostics.push(options::missing("options", "url"));
            None
        }
    };
    let headers = check_headers(options.headers.unwrap_or_default(), &mut diagnostics);
    let body = options.body.unwrap_or_default();
    let batch_size = match (options.batch_size, body) {
        (None, _) => DEFAULT_BATCH_SIZE,
        (Some(_), BodyMode::Record) => {
            diagnostics.push(Diagnostic::new(
                "options.batch_size",
                "only applies to `body: batch`; set `body: batch` or remove `batch_size`",
            ));
            DEFAULT_BATCH_SIZE
        }
        (Some(0), BodyMode::Batch) => {
            diagnostics.push(Diagnostic::new("options.batch_size", "must be at least 1"));
            DEFAULT_BATCH_SIZE
        }
        (Some(size), BodyMode::Batch) => usize::try_from(size).unwrap_or(usize::MAX),
    };
    let timeout = options
        .timeout
        .as_ref()
        .and_then(|value| positive_duration(value, "options.timeout", &mut diagnostics))
        .unwrap_or(DEFAULT_TIMEOUT);
    if let Some(rate) = options.rate_limit
        && !(rate.is_finite() && rate > 0.0)
    {
        diagnostics.push(Diagnostic::new(
            "options.rate_limit",
            format!("must be a positive number of requests per second, found {rate}"),
        ));
    }
    let concurrency = match options.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n @ 1..=MAX_CONCURRENCY) => n as usize,
        Some(n) => {
            diagnostics.push(Diagnostic::new(
                "options.concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY} requests in flight per worker, found {n}"),
            ));
            DEFAULT_CONCURRENCY
        }
    };
    let Some(url) = url else { return Err(diagnostics) };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    Ok(HttpConfig {
        sink: request.name.to_owned(),
        url,
        method: options.method.unwrap_or_default().as_reqwest(),
        headers,
        body,
        batch_size,
        timeout,
        retry,
        rate_limit: options.rate_limit,
        concurrency,
    })
}

fn check_url(url: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Template> {
    let path = "options.url";
    let template = match Template::parse(url) {
        Ok(template) => template,
        Err(message) => {
            diagnostics.push(Diagnostic::new(path, message));
            return None;
        }
    };
    // Secrets are unknown until the writers open; check the shape with a stand-in for them.
    let shown = without_userinfo(url);
    match reqwest::Url::parse(&template.with_placeholders("x")) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(template),
        Ok(parsed) => {
            diagnostics.push(Diagnostic::new(
                path,
                format!(
                    "\"{shown}\" is a {}: URL; the http sink sends to http:// or https:// URLs",
                    parsed.scheme()
                ),
            ));
            None
        }
        Err(error) => {
            diagnostics.push(Diagnostic::new(
                path,
                format!(
                    "\"{shown}\" is not a valid URL ({error}); write it like https://api.example.com/events"
                ),
            ));
            None
        }
    }
}

fn check_headers(
    headers: BTreeMap<String, String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(String, reqwest::header::HeaderName, Template)> {
    let mut checked = Vec::new();
    for (name, value) in headers {
        let path = join("options.headers", &name);
        let Ok(header) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
            diagnostics.push(Diagnostic::new(
                path,
                format!("\"{name}\" is not a valid HTTP header name (letters, digits and -!#$%&'*+.^_`|~)"),
            ));
            continue;
        };
        if COMPUTED_HEADERS.contains(&header.as_str()) {
            diagnostics.push(Diagnostic::new(
                path,
                format!("the sink sets {name} itself from each request; remove it"),
            ));
            continue;
        }
        let template = match Template::parse(&value) {
            Ok(template) => template,
            Err(message) => {
                diagnostics.push(Diagnostic::new(path, message));
                continue;
            }
        };
        // Literal parts must be valid already; a value read from the environment is checked at open.
        if reqwest::header::HeaderValue::from_str(&template.with_placeholders("x")).is_err() {
            diagnostics.push(Diagnostic::new(
                path,
                "the value has characters a header cannot carry (control characters or line breaks)",
            ));
            continue;
        }
        checked.push((name, header, template));
    }
    checked
}

/// The `retry` option (at `options.retry`, checked as [`RetryOptions`]) over `defaults`; each
/// attempt sends one `attempt` (a request, a batch), as messages say.
pub(crate) fn check_retry(
    value: &Value,
    defaults: RetryPolicy,
    attempt: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> RetryPolicy {
    let path = "options.retry";
    let retry = match options::parse::<RetryOptions>(value, RETRY_OPTIONS, path) {
        Ok(retry) => retry,
        Err(errors) => {
            diagnostics.extend(errors);
            return defaults;
        }
    };
    let mut policy = defaults;
    match retry.max_attempts {
        Some(0) => diagnostics.push(Diagnostic::new(
            "options.retry.max_attempts",
            format!("must be at least 1 (1 sends each {attempt} once, without retries)"),
        )),
        Some(attempts) => policy.max_attempts = attempts,
        None => {}
    }
    let initial = retry
        .initial_backoff
        .as_ref()
        .and_then(|value| positive_duration(value, "options.retry.initial_backoff", diagnostics));
    let max = retry
        .max_backoff
        .as_ref()
        .and_then(|value| positive_duration(value, "options.retry.max_backoff", diagnostics));
    policy.initial_backoff = initial.unwrap_or(policy.initial_backoff);
    policy.max_backoff = max.unwrap_or(policy.max_backoff.max(policy.initial_backoff));
    if policy.max_backoff < policy.initial_backoff {
        diagnostics.push(Diagnostic::new(
            "options.retry.max_backoff",
            format!(
                "{:?} is shorter than initial_backoff ({:?}); make it at least as long",
                policy.max_backoff, policy.initial_backoff
            ),
        ));
    }
    policy
}

/// A duration option: a string such as `500ms` or `5s`, longer than zero.
fn positive_duration(value: &Value, path: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<Duration> {
    let Value::String(text) = value else {
        diagnostics.push(Diagnostic::new(
            path,
            format!("expected a duration with a unit, like 500ms or 5s, found {}", describe(value)),
        ));
        return None;
    };
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            diagnostics.push(Diagnostic::new(path, format!("must be longer than 0, found \"{text}\"")));
            None
        }
        Ok(duration) => Some(duration),
        Err(message) => {
            diagnostics.push(Diagnostic::new(path, message));
            None
        }
    }
}

/// Sends records to an HTTP endpoint.
#[derive(Debug)]
pub struct HttpSink {
    config: Arc<HttpConfig>,
}

impl Sink for HttpSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let lookup = |name: &str| std::env::var(name).ok();
        Ok(Box::new(writer::HttpWriter::open(self.config.clone(), context, &lookup)?))
    }
}
