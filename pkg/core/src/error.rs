//! Errors of pure object-model logic. All are caused by the input, none is retryable.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A selector string could not be parsed.
    #[error("unable to parse requirement: {0}")]
    InvalidSelector(String),
    /// A field selector named a field the resource does not support.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

impl Error {
    /// Object-model errors come from the input: retrying the same call cannot succeed.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

pub type Result<T> = std::result::Result<T, Error>;
