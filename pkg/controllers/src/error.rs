//! The error of a reconcile: the controller logs it and retries with back-off.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub fn invalid(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::Invalid {
            what: what.into(),
            message: message.to_string(),
        }
    }
}
