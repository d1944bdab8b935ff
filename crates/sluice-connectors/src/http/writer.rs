//! One worker's HTTP writer. The timely worker encodes records to JSON and queues requests; a
//! tokio runtime owned by the writer sends them, `concurrency` at a time, retrying and
//! dead-lettering on its own. The queue is bounded, so a slow endpoint slows `write` down
//! (back-pressure) instead of filling memory. `prepare` and `finish` wait until every queued
//! request is delivered or dead-lettered: that is what makes the output at-least-once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value, json};
use sluice_runtime::connector::{SinkContext, SinkWriter};
use sluice_runtime::dead_letter::{DeadLetter, DeadLetterSink};
use sluice_runtime::{Error, Result};
use tokio::sync::Semaphore;

use super::rate::RateLimiter;
use super::retry::{RetryPolicy, Verdict, parse_retry_after, verdict};
use super::secret::{Redactor, without_userinfo};
use super::{BodyMode, HttpConfig};

/// Requests queued per request in flight: enough to keep the connections busy while the
/// timely worker encodes the next batch, few enough to bound memory.
const QUEUE_PER_SLOT: usize = 4;
/// How much of an error response a dead letter keeps.
const MAX_RESPONSE_CHARS: usize = 2_048;

/// Where requests go and how, with secrets resolved.
struct Endpoint {
    sink: String,
    client: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    /// The URL as it may be shown: no user info, secrets as `***`.
    shown_url: String,
    redactor: Redactor,
    timeout: Duration,
    retry: RetryPolicy,
}

/// What the writer and its requests share.
struct Delivery {
    endpoint: Endpoint,
    limiter: Option<RateLimiter>,
    /// Requests on the wire at once (`concurrency`).
    in_flight: Semaphore,
    dead_letters: Mutex<DeadLetterSink>,
    /// The first error no dead letter can absorb (e.g. the dead-letter file cannot be written),
    /// returned by the writer's next call.
    failure: Mutex<Option<Error>>,
}

/// Why one attempt did not deliver.
struct AttemptFailure {
    status: Option<u16>,
    /// What went wrong, redacted: `HTTP 503 Service Unavailable`, `timed out after 2s`, ...
    error: String,
    /// The start of the response body, redacted.
    response: Option<String>,
    retry_after: Option<Duration>,
    retryable: bool,
}

/// Writes records of one worker to the endpoint.
pub(crate) struct HttpWriter {
    /// Owned so that dropping the writer (when the pipeline fails) cancels its requests.
    runtime: Option<tokio::runtime::Runtime>,
    delivery: Arc<Delivery>,
    /// Permits for requests queued or in flight; a request returns its permit once it is
    /// delivered or dead-lettered.
    outstanding: Arc<Semaphore>,
    capacity: u32,
    body: BodyMode,
    batch_size: usize,
    /// `body: batch`: the open JSON array (`[{..},{..}`) and how many records it holds.
    batch: Vec<u8>,
    batch_records: usize,
    encoded: Vec<u8>,
}

impl HttpWriter {
    /// Resolves the secrets (through `lookup`), builds the client and starts the runtime.
    pub fn open(
        config: Arc<HttpConfig>,
        context: SinkContext,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let endpoint = endpoint(&config, lookup)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("sluice-http-{}", context.worker.index))
            .enable_all()
            .build()
            .map_err(|error| Error::external("starting the HTTP sink's runtime", error))?;
        let limiter = config
            .rate_limit
            .map(|per_second| RateLimiter::new(per_second / context.worker.peers.max(1) as f64));
        let capacity = config.concurrency * QUEUE_PER_SLOT;
        let delivery = Delivery {
            endpoint,
            limiter,
            in_flight: Semaphore::new(config.concurrency),
            dead_letters: Mutex::new(context.dead_letters),
            failure: Mutex::new(None),
        };
        Ok(Self {
            runtime: Some(runtime),
            delivery: Arc::new(delivery),
            outstanding: Arc::new(Semaphore::new(capacity)),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            body: config.body,
            batch_size: config.batch_size,
            batch: Vec::new(),
            batch_records: 0,
            encoded: Vec::new(),
        })
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().ok_or_else(|| Error::internal("HTTP sink used after it was closed"))
    }

    /// Queues one request, waiting while the queue is full.
    fn submit(&mut self, body: Bytes, records: usize) -> Result<()> {
        let runtime = self.runtime()?;
        let permit = runtime
            .block_on(self.outstanding.clone().acquire_owned())
            .map_err(|_| Error::internal("the HTTP sink's request queue closed while the sink was open"))?;
        let delivery = self.delivery.clone();
        runtime.spawn(async move {
            delivery.send(body, records).await;
            drop(permit);
        });
        Ok(())
    }

    /// Sends the open batch, if any.
    fn flush_batch(&mut self) -> Result<()> {
        if self.batch_records == 0 {
            return Ok(());
        }
        self.batch.push(b']');
        let body = Bytes::from(std::mem::take(&mut self.batch));
        let records = std::mem::take(&mut self.batch_records);
        self.submit(body, records)
    }

    /// Sends what is buffered and waits until every request is delivered or dead-lettered,
    /// and the dead letters are on disk.
    fn drain(&mut self) -> Result<()> {
        self.flush_batch()?;
        let all = self
            .runtime()?
            .block_on(self.outstanding.acquire_many(self.capacity))
            .map_err(|_| Error::internal("the HTTP sink's request queue closed while the sink was open"))?;
        drop(all);
        lock(&self.delivery.dead_letters)?.flush()?;
        self.check()
    }

    /// The first failure of a request that no dead letter could absorb.
    fn check(&self) -> Result<()> {
        match lock(&self.delivery.failure)?.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl SinkWriter for HttpWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        let mut writer = LineDelimitedWriter::new(&mut encoded);
        writer.write(batch)?;
        writer.finish()?;
        // JSON strings escape line breaks, so every line is exactly one record.
        for record in encoded.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
            match self.body {
                BodyMode::Record => self.submit(Bytes::copy_from_slice(record), 1)?,
                BodyMode::Batch => {
                    self.batch.push(if self.batch_records == 0 { b'[' } else { b',' });
                    self.batch.extend_from_slice(record);
                    self.batch_records += 1;
                    if self.batch_records >= self.batch_size {
                        self.flush_batch()?;
                    }
                }
            }
        }
        self.encoded = encoded;
        Ok(())
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        // A partial batch waits at most one epoch.
        self.flush_batch()?;
        self.check()
    }

    fn prepare(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        // The checkpoint may commit the sources' positions only once all of it is delivered.
        self.drain()?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.drain()
    }
}

impl Drop for HttpWriter {
    fn drop(&mut self) {
        // Without waiting: after `finish` nothing runs; before it, the pipeline has failed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Delivery {
    /// Delivers one request or dead-letters it.
    async fn send(&self, body: Bytes, records: usize) {
        let endpoint = &self.endpoint;
        let mut attempt = 0;
        let failure = loop {
            attempt += 1;
            let result = {
                let Ok(_slot) = self.in_flight.acquire().await else {
                    self.fail(Error::internal(
                        "the HTTP sink's request slots closed while the sink was open",
                    ));
                    return;
                };
                if let Some(limiter) = &self.limiter {
                    limiter.acquire().await;
                }
                endpoint.attempt(body.clone()).await
            };
            let failure = match result {
                Ok(()) => return,
                Err(failure) => failure,
            };
            if !failure.retryable || attempt >= endpoint.retry.max_attempts {
                break failure;
            }
            let delay = endpoint.retry.delay(attempt, failure.retry_after, rand::random::<f64>());
            tracing::debug!(
                sink = %endpoint.sink,
                url = %endpoint.shown_url,
                attempt,
                error = %failure.error,
                delay_ms = delay.as_millis() as u64,
                "HTTP request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        };
        self.dead_letter(body, records, attempt, failure);
    }

    fn dead_letter(&self, body: Bytes, records: usize, attempts: u32, failure: AttemptFailure) {
        let endpoint = &self.endpoint;
        let outcome = if failure.retryable {
            format!("still failing after {attempts} attempts: {}", failure.error)
        } else {
            format!(
                "rejected with {}, not retried (only 429, 5xx, timeouts and connection errors are)",
                failure.error
            )
        };
        let reason = match &failure.response {
            Some(response) if !response.is_empty() => format!("{outcome}; the response was: {response}"),
            _ => outcome,
        };
        tracing::warn!(
            sink = %endpoint.sink,
            url = %endpoint.shown_url,
            attempts,
            error = %failure.error,
            "HTTP request dead-lettered"
        );
        let letter = DeadLetter {
            position: format!("{} {}", endpoint.method, endpoint.shown_url),
            raw: body.to_vec(),
            reason,
        };
        let mut details = Map::new();
        details.insert("url".into(), endpoint.shown_url.clone().into());
        details.insert("method".into(), endpoint.method.as_str().into());
        details.insert("status".into(), failure.status.map_or(Value::Null, |status| json!(status)));
        details.insert("error".into(), failure.error.into());
        details.insert("attempts".into(), attempts.into());
        details.insert("records".into(), records.into());
        if let Some(response) = failure.response {
            details.insert("response".into(), response.into());
        }
        let reported = lock(&self.dead_letters).and_then(|mut sink| sink.report_detailed(letter, details));
        if let Err(error) = reported {
            self.fail(error);
        }
    }

    /// Keeps the first error no dead letter can absorb, for the writer's next call.
    fn fail(&self, error: Error) {
        if let Ok(mut first) = lock(&self.failure)
            && first.is_none()
        {
            *first = Some(error);
        }
    }
}

impl Endpoint {
    /// Sends the request once.
    async fn attempt(&self, body: Bytes) -> Result<(), AttemptFailure> {
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Err(AttemptFailure {
                    status: None,
                    error: self.describe(&error),
                    response: None,
                    retry_after: None,
                    retryable: true,
                });
            }
        };
        let status = response.status();
        let verdict = verdict(status.as_u16());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        // Read to the end even on success, so the connection can be reused.
        let text = response.bytes().await;
        if verdict == Verdict::Delivered {
            return Ok(());
        }
        let response = text.ok().map(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let cut: String = text.chars().take(MAX_RESPONSE_CHARS).collect();
            self.redactor.redact(&cut)
        });
        Err(AttemptFailure {
            status: Some(status.as_u16()),
            error: format!("HTTP {status}"),
            response,
            retry_after: retry_after.filter(|_| verdict == Verdict::Retry),
            retryable: verdict == Verdict::Retry,
        })
    }

    /// A transport error as one redacted line, its causes included but not the URL.
    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("timed out after {:?} (the `timeout` option)", self.timeout);
        }
        let mut parts = vec![error_kind(error).to_owned()];
        let mut cause = std::error::Error::source(error);
        while let Some(current) = cause {
            let part = current.to_string();
            if !parts.contains(&part) {
                parts.push(part);
            }
            cause = current.source();
        }
        let text = parts.join(": ");
        self.redactor.redact(&text)
    }
}

/// reqwest's own message for an error, without the URL its `Display` would add.
fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response body could not be read"
    } else {
        "the request failed"
    }
}

/// Resolves the configuration's secrets into an endpoint.
fn endpoint(config: &HttpConfig, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint> {
    let mut redactor = Redactor::default();
    let url = config
        .url
        .resolve(lookup, &mut redactor)
        .map_err(|message| Error::user(format!("options.url: {message}")))?;
    let url = reqwest::Url::parse(&url).map_err(|error| {
        Error::user(format!(
            "options.url: with its ${{env:...}} references resolved, the URL is not valid ({error}); check \
             the environment variables it uses"
        ))
    })?;
    redactor.add(url.username());
    if let Some(password) = url.password() {
        redactor.add(password);
    }
    let shown_url = redactor.redact(&without_userinfo(url.as_str()));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (option, name, template) in &config.headers {
        let path = format!("options.headers.{option}");
        let value = template
            .resolve(lookup, &mut redactor)
            .map_err(|message| Error::user(format!("{path}: {message}")))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            Error::user(format!(
                "{path}: with its ${{env:...}} references resolved, the value has characters a header cannot \
                 carry (control characters or line breaks); check the environment variables it uses"
            ))
        })?;
        if template.has_references() {
            value.set_sensitive(true);
        }
        headers.insert(name.clone(), value);
    }
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        // A redirect would carry the credentials to wherever it points; a webhook has no business
        // redirecting, so a 3xx is a rejection.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(config.concurrency)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| Error::external("building the HTTP client", error))?;
    Ok(Endpoint {
        sink: config.sink.clone(),
        client,
        method: config.method.clone(),
        url,
        headers,
        shown_url,
        redactor,
        timeout: config.timeout,
        retry: config.retry,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| Error::internal("HTTP sink lock poisoned by a panic"))
}
