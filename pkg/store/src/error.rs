//! Store errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {key} was modified (expected revision {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: i64, current: i64 },
    #[error("watcher fell behind and was closed")]
    WatcherLagged,
    #[error("the store is closed")]
    Closed,
    #[error("database error: {0}")]
    Database(String),
}

impl Error {
    /// True when retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::WatcherLagged | Error::Closed | Error::Database(_)
        )
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Database(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
