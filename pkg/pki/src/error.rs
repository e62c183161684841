//! Error type for kubox-pki.

use std::path::PathBuf;

/// Errors returned by the PKI functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed; names the file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should (corrupt PEM, wrong key, ...).
    #[error("invalid file {path}: {reason}")]
    InvalidFile {
        /// The offending file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Building the rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the client certificate verifier failed.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A join token could not be parsed.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A caller-supplied argument is unusable (bad SAN, empty CN, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Serializing YAML failed.
    #[error("serializing kubeconfig: {0}")]
    Serialize(String),
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
