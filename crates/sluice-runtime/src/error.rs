//! Runtime errors: what went wrong, whose fault it is, and whether retrying can help.

use std::fmt;

/// Whose fault an error is; decides how it is reported and whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's spec, SQL, data or config is wrong; retrying will not help until it is fixed.
    User,
    /// An external system (file system, network, broker) failed; a retry may help.
    External,
    /// A bug in Sluice: an invariant was broken.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::User => "user error",
            ErrorKind::External => "external error",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// An error from the runtime or a connector.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error in the user's input (spec, options, records).
    pub fn user(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::User, message: message.into(), source: None }
    }

    /// A failure of an external system, with its cause.
    pub fn external(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind: ErrorKind::External, message: message.into(), source: Some(Box::new(source)) }
    }

    /// A broken invariant inside Sluice.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Internal, message: message.into(), source: None }
    }

    /// Whose fault this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::External
    }

    /// Prefixes the message with where it happened, e.g. the node name.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The message followed by every cause in the chain, `: `-separated.
    pub fn report(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(error: arrow::error::ArrowError) -> Self {
        Self { kind: ErrorKind::Internal, message: "arrow".into(), source: Some(Box::new(error)) }
    }
}
