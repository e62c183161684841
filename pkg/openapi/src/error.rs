//! Errors of building OpenAPI documents.

/// Why a document could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown group-version path {0:?}")]
    UnknownGroupVersion(String),
    #[error("serializing the OpenAPI document: {0}")]
    Serialize(#[from] serde_json::Error),
}
