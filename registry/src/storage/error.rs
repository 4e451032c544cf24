//! The storage layer's own error type. It knows nothing of HTTP: the
//! routes map it to OCI errors (`crate::error`), the offline commands print
//! it. Backend failures come in a few kinds that decide how a client is
//! answered (absent, bad input, lost a race, backend down, anything else);
//! the logical layer adds the registry's own refusals (a digest that does
//! not match, a manifest whose blobs are missing, too many uploads).

use std::io;

use crate::oci::{Digest, RepoName};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ----- what a backend reports -----
    /// An object the operation needs is not there (most reads answer
    /// `None` instead; this is for operations that cannot).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request cannot be done as asked: an offset past the end, a
    /// writer resumed at the wrong size, a size out of range.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Another writer got there first (a conditional write lost, a move
    /// whose source changed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or refused for now (network, timeout,
    /// throttling): worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend has no room left.
    #[error("storage is full: {0}")]
    NoSpace(String),
    /// Any other failure of the backend.
    #[error("storage failed: {0}")]
    Io(String),

    // ----- the registry's refusals -----
    /// The upload does not exist (never did, completed, cancelled, purged).
    #[error("blob upload unknown")]
    UploadUnknown,
    /// Uploaded content does not hash to the digest the client gave.
    #[error("provided digest {expected} does not match uploaded content ({actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A manifest references content the repository does not hold.
    #[error("manifest references {digest}, which is not in {repository}")]
    ManifestBlobUnknown {
        repository: RepoName,
        digest: Digest,
    },
    /// A manifest says a blob has another size than the stored one.
    #[error("blob {digest} is {actual} bytes, the manifest says {declared}")]
    BlobSizeMismatch {
        digest: Digest,
        actual: u64,
        declared: u64,
    },
    /// A cap on open upload sessions is reached (`scope`: "in this
    /// repository", "by this client").
    #[error("too many upload sessions open {scope} (at most {cap}); complete or cancel some")]
    TooManyUploads { scope: &'static str, cap: usize },
    /// Another garbage collection holds the lease.
    #[error("another garbage collection is running")]
    GcRunning,
}

impl Error {
    /// An I/O error of a local backend, with what was being done. A full
    /// disk is told apart: the operator has something to fix.
    pub fn io(context: &str, err: &io::Error) -> Error {
        if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return Error::NoSpace(format!("{context}: {err}"));
        }
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("{context}: {err}")),
            io::ErrorKind::InvalidInput => Error::Invalid(format!("{context}: {err}")),
            io::ErrorKind::AlreadyExists => Error::Conflict(format!("{context}: {err}")),
            _ => Error::Io(format!("{context}: {err}")),
        }
    }

    /// The same error with what was being done in front of its message
    /// (backend kinds only; the registry's refusals say it already).
    #[must_use]
    pub fn context(self, context: &str) -> Error {
        let with = |m: String| format!("{context}: {m}");
        match self {
            Error::NotFound(m) => Error::NotFound(with(m)),
            Error::Invalid(m) => Error::Invalid(with(m)),
            Error::Conflict(m) => Error::Conflict(with(m)),
            Error::Unavailable(m) => Error::Unavailable(with(m)),
            Error::NoSpace(m) => Error::NoSpace(with(m)),
            Error::Io(m) => Error::Io(with(m)),
            other => other,
        }
    }
}

/// Adds context to the error of a storage result.
pub(crate) trait Context<T> {
    fn context(self, context: &str) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: &str) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
}
