//! The connection to Redis: the URL (checked, shown without its password), one multiplexed
//! connection driven by an [`IoRuntime`], pipelines sent in one round trip, and retries with
//! backoff when the connection is lost.
//!
//! Every text that comes from the client or the server goes through the URL's [`Redactor`]
//! before it reaches a message, a log line or a dead letter, so a password never shows.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, Value,
};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::http::retry::RetryPolicy;
use crate::http::secret::Redactor;
use crate::io::IoRuntime;
use crate::options;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the replies of one pipeline may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked Redis URL.
#[derive(Clone)]
pub(crate) struct RedisUrl {
    info: ConnectionInfo,
    /// `redis://user@host:port/db`: the URL without its password, for messages.
    pub(crate) shown: String,
    redactor: Redactor,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// An error whose text was redacted, as the cause of a runtime error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RedisFailure(pub(crate) String);

impl RedisUrl {
    /// The URL from `url` or the variable `url_env` names; problems are added to
    /// `diagnostics`. Messages never quote the URL, which may hold a password.
    pub(crate) fn check(
        url: Option<&str>,
        url_env: Option<&str>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let (text, path) = options::url_or_env(
            url,
            url_env,
            "Redis URL",
            "redis://host:6379/0",
            "redis://user:password@host:6379/0",
            diagnostics,
        )?;
        match Self::parse(&text) {
            Ok(url) => Some(url),
            Err(diagnostic) => {
                diagnostics.push(Diagnostic::new(path, diagnostic.0).suggest(diagnostic.1));
                None
            }
        }
    }

    /// Parses `text`; the error is a message and a suggestion, neither quoting `text`.
    fn parse(text: &str) -> Result<Self, (String, &'static str)> {
        let example = "e.g. redis://127.0.0.1:6379/0, or redis://user:password@host:6379/0";
        if text.starts_with("rediss://") {
            return Err((
                "TLS (rediss://) is not supported yet".to_owned(),
                "use redis:// on a trusted network, or a TLS tunnel to the server",
            ));
        }
        if !text.starts_with("redis://") {
            return Err(("not a Redis URL: it must start with redis://".to_owned(), example));
        }
        let mut redactor = Redactor::default();
        let info = match text.into_connection_info() {
            Ok(info) => info,
            Err(error) => {
                // The password is somewhere in the text: hide anything that looks like one.
                if let Some(userinfo) =
                    text["redis://".len()..].split('/').next().and_then(|a| a.rsplit_once('@'))
                {
                    redactor.add(userinfo.0);
                    redactor.add(userinfo.0.rsplit(':').next().unwrap_or_default());
                }
                return Err((
                    format!("not a valid Redis URL: {}", redactor.redact(&error.to_string())),
                    example,
                ));
            }
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            redactor.add(password);
            // As written in the URL, too (percent-encoded).
            if let Some(userinfo) =
                text["redis://".len()..].split('/').next().and_then(|a| a.rsplit_once('@'))
            {
                redactor.add(userinfo.0.rsplit(':').next().unwrap_or_default());
            }
        }
        let user = settings.username().map(|user| format!("{user}@")).unwrap_or_default();
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) if host.contains(':') => format!("[{host}]:{port}"),
            other => other.to_string(),
        };
        let shown = format!("redis://{user}{address}/{}", settings.db());
        Ok(Self { info, shown, redactor })
    }

    /// `text` without the password.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }
}

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection was lost, timed out or the server is not ready: a later attempt may
    /// succeed. The text is redacted.
    Transient(String),
    /// Trying again cannot help.
    Fatal(Error),
}

/// One connection to Redis with the runtime that drives it, reconnected when lost. Shared by
/// reference: the connection multiplexes concurrent requests.
pub(crate) struct Connection {
    io: IoRuntime,
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    url: RedisUrl,
}

impl Connection {
    /// Starts the runtime (its thread named `thread`) and connects once, failing at once with
    /// the address if Redis cannot be reached.
    pub(crate) fn open(url: &RedisUrl, thread: &str) -> Result<Self> {
        let io = IoRuntime::start(thread)?;
        let client = redis::Client::open(url.info.clone()).map_err(|e| {
            Error::user(format!("Redis URL for {}: {}", url.shown, url.redact(&e.to_string())))
        })?;
        let connection = Self { io, client, connection: Mutex::new(None), url: url.clone() };
        match connection.connection() {
            Ok(_) => Ok(connection),
            Err(Failure::Transient(reason)) => Err(connection.cannot_connect(reason)),
            Err(Failure::Fatal(error)) => Err(error),
        }
    }

    fn cannot_connect(&self, reason: String) -> Error {
        Error::external(
            format!("cannot connect to Redis at {}; check that it runs and the URL is right", self.url.shown),
            RedisFailure(reason),
        )
    }

    /// The URL connected to.
    pub(crate) fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The current connection, connecting first if there is none.
    fn connection(&self) -> Result<MultiplexedConnection, Failure> {
        let mut slot = self.connection.lock().map_err(|_| Failure::Fatal(poisoned()))?;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let client = &self.client;
        let connected = self
            .io
            .block_on(async move { client.get_multiplexed_async_connection_with_config(&config).await })
            .map_err(Failure::Fatal)?;
        match connected {
            Ok(connection) => {
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => match self.failure(&error) {
                Failure::Fatal(_) => {
                    Err(Failure::Fatal(self.cannot_connect(self.url.redact(&error.to_string()))))
                }
                transient => Err(transient),
            },
        }
    }

    /// Sends `pipeline` in one round trip and returns one reply per command; a command the
    /// server refused has a [`Value::ServerError`] reply (the pipeline must ignore errors).
    pub(crate) fn send(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Failure> {
        let mut connection = self.connection()?;
        let replies = self
            .io
            .block_on(async move { pipeline.query_async::<Vec<Value>>(&mut connection).await })
            .map_err(Failure::Fatal)?;
        match replies {
            Ok(replies) if replies.len() == pipeline.len() => Ok(replies),
            Ok(replies) => Err(Failure::Fatal(Error::internal(format!(
                "Redis answered a pipeline of {} commands with {} replies",
                pipeline.len(),
                replies.len()
            )))),
            Err(error) => {
                let failure = self.failure(&error);
                if matches!(failure, Failure::Transient(_))
                    && let Ok(mut slot) = self.connection.lock()
                {
                    // Connect again next time.
                    *slot = None;
                }
                Err(failure)
            }
        }
    }

    /// Calls `attempt` until it succeeds, fails for good, or `policy` allows no more attempts,
    /// waiting with exponential backoff and full jitter in between. `what` says what was being
    /// done, for the final error.
    pub(crate) fn with_retries<T>(
        &self,
        policy: &RetryPolicy,
        what: &str,
        mut attempt: impl FnMut(&Self) -> Result<T, Failure>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut failed = 0;
        loop {
            let reason = match attempt(self) {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Transient(reason)) => reason,
            };
            failed += 1;
            if failed >= policy.max_attempts {
                return Err(Error::external(
                    format!(
                        "{what}: Redis at {} failed {failed} attempts in {:.1?}; giving up (raise `retry.max_attempts` \
                         to wait longer)",
                        self.url.shown,
                        started.elapsed()
                    ),
                    RedisFailure(reason),
                ));
            }
            let delay = policy.delay(failed, None, rand::random::<f64>());
            tracing::warn!(
                target: "redis",
                redis = %self.url.shown,
                attempt = failed,
                retry_in_ms = delay.as_millis() as u64,
                "{what}: {reason}; trying again"
            );
            std::thread::sleep(delay);
        }
    }

    /// What a client error means for the attempt.
    fn failure(&self, error: &RedisError) -> Failure {
        let text = self.url.redact(&error.to_string());
        let transient = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.code().is_some_and(is_transient_code);
        if transient {
            Failure::Transient(text)
        } else {
            Failure::Fatal(Error::external(format!("Redis at {}", self.url.shown), RedisFailure(text)))
        }
    }
}

/// Error codes of a server that is not ready yet or is failing over: a later attempt may work.
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(code, "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "READONLY")
}

fn poisoned() -> Error {
    Error::internal("a thread panicked while holding the Redis connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RedisUrl, String> {
        RedisUrl::parse(text).map_err(|(message, _)| message)
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        let url = parse("redis://ann:s3cr%40t@cache.example:6380/2").unwrap();
        assert_eq!(url.shown, "redis://ann@cache.example:6380/2");
        assert_eq!(url.redact("auth s3cr@t failed for s3cr%40t"), "auth *** failed for ***");
        assert_eq!(format!("{url:?}"), "redis://ann@cache.example:6380/2");
        assert_eq!(parse("redis://127.0.0.1").unwrap().shown, "redis://127.0.0.1:6379/0");
        assert_eq!(parse("redis://:pw@[::1]:7000/1").unwrap().shown, "redis://[::1]:7000/1");
    }

    #[test]
    fn bad_urls_are_refused_without_being_quoted() {
        assert_eq!(parse("rediss://h:6379").unwrap_err(), "TLS (rediss://) is not supported yet");
        assert_eq!(parse("http://h:6379").unwrap_err(), "not a Redis URL: it must start with redis://");
        let bad_db = parse("redis://user:hunter2@h:6379/x").unwrap_err();
        assert!(bad_db.starts_with("not a valid Redis URL: "), "{bad_db}");
        assert!(!bad_db.contains("hunter2"), "{bad_db}");
    }

    #[test]
    fn server_codes_that_may_pass_are_transient() {
        assert!(is_transient_code("LOADING") && is_transient_code("READONLY"));
        assert!(!is_transient_code("WRONGTYPE") && !is_transient_code("NOPERM") && !is_transient_code("OOM"));
    }
}
