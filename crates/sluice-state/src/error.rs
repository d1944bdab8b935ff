//! Checkpoint storage errors: what went wrong, where, whose fault it is, and whether a retry helps.

use std::fmt;

use crate::CheckpointId;

/// Whose fault an error is; decides how it is reported and whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's configuration (checkpoint location, credentials) is wrong.
    User,
    /// The storage system failed or holds unexpected data; a retry may help for I/O failures.
    External,
    /// Another writer committed the checkpoint first; this is an outcome of the protocol.
    Conflict,
    /// A bug in Sluice: an invariant was broken (for example a manifest referencing parts of another
    /// checkpoint).
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::User => "user error",
            ErrorKind::External => "external error",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// An error of the checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The checkpoint location or its options cannot be used.
    #[error("invalid checkpoint location '{location}': {reason}")]
    InvalidLocation {
        /// The location as given by the user.
        location: String,
        /// What is wrong and how to fix it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A manifest for this checkpoint already exists, or another writer is committing it.
    #[error(
        "checkpoint {checkpoint} in '{location}' was already committed by another writer ({detail}); \
         this writer must not commit output for it"
    )]
    Conflict {
        /// The checkpoint id.
        checkpoint: CheckpointId,
        /// The store location.
        location: String,
        /// What was found.
        detail: String,
    },
    /// The caller passed something the store cannot accept (a bad part path, a manifest that
    /// references missing parts).
    #[error("invalid request to checkpoint store '{location}': {reason}")]
    InvalidRequest {
        /// The store location.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// An object that should exist does not.
    #[error("object '{path}' not found in checkpoint store '{location}'")]
    NotFound {
        /// The store location.
        location: String,
        /// The object path relative to the store root.
        path: String,
    },
    /// An object exists but its content is not what was recorded.
    #[error("object '{path}' in checkpoint store '{location}' is corrupt: {reason}")]
    Corrupt {
        /// The store location.
        location: String,
        /// The object path relative to the store root.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The storage system failed.
    #[error("could not {operation} '{path}' in checkpoint store '{location}'")]
    Storage {
        /// What was being done (`read`, `write`, `list`, `delete`).
        operation: &'static str,
        /// The store location.
        location: String,
        /// The object path relative to the store root (empty for the root).
        path: String,
        /// The error of the storage client.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The local working copy of keyed state (RocksDB) failed.
    #[error("local state store in '{dir}' failed: {reason}")]
    LocalState {
        /// The store's working directory.
        dir: String,
        /// What failed, with RocksDB's message.
        reason: String,
    },
}

/// Result with the checkpoint store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whose fault this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidLocation { .. } => ErrorKind::User,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InvalidRequest { .. } => ErrorKind::Internal,
            Error::NotFound { .. }
            | Error::Corrupt { .. }
            | Error::Storage { .. }
            | Error::LocalState { .. } => ErrorKind::External,
        }
    }

    /// Whether retrying the same operation may succeed (storage I/O failures only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage { .. })
    }

    /// Whether this is [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
