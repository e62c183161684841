//! kubox-store: a revisioned key-value store (kine-like MVCC).
//!
//! Entry points: the [`Backend`] trait; [`SqliteBackend::open`] is the embedded implementation;
//! [`conformance::run_all`] is the suite every backend must pass.
//! Every write bumps one global revision. Values are opaque bytes (the API server stores JSON
//! without `metadata.resourceVersion`; it sets that from [`KeyValue::mod_revision`] on read).

pub mod conformance;
pub mod error;
pub mod sqlite;

use std::pin::Pin;

pub use error::{Error, Result};
pub use sqlite::{SqliteBackend, SqliteOptions, StoreStats};

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which this key was (last) created.
    pub create_revision: i64,
    /// Revision of the write that produced this value (for a delete event: the delete's revision).
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// A change, as seen by watchers. For `Delete`, `kv.value` is the last value before deletion and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The previous value (for Update and Delete).
    pub prev: Option<KeyValue>,
}

/// The result of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// True when `limit` cut the list short (more keys follow the last one returned).
    pub more: bool,
    /// Number of keys after the returned ones, when `more` is true.
    pub remaining: i64,
}

/// A stream of watch events in revision order. An `Err` item ends the stream
/// (e.g. the watcher fell too far behind); the caller should re-watch or relist.
pub type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<Event>> + Send>>;

/// The seam every datastore plugs into. All methods are cancel-safe to drop.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The newest committed revision.
    fn current_revision(&self) -> i64;
    /// The revision below which history has been removed (0 = nothing compacted).
    fn compacted_revision(&self) -> i64;

    /// Create `key`; fails with [`Error::AlreadyExists`] if it exists. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64>;
    /// Replace `key` only if its current `mod_revision` equals `expected_revision`.
    /// Fails with [`Error::NotFound`] or [`Error::Conflict`]. Returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<i64>;
    /// Delete `key`, only if its `mod_revision` equals `expected_revision` when given.
    /// Returns the delete revision and the deleted value.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)>;
    /// Read the current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Range read of keys starting with `prefix`, strictly after `start_after` when given,
    /// at `revision` (None = current). A revision below the compacted one fails with
    /// [`Error::Compacted`]; one above the current fails with [`Error::FutureRevision`].
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: Option<i64>,
    ) -> Result<ListResult>;
    /// Count keys with `prefix` at the current revision.
    async fn count(&self, prefix: &str) -> Result<i64>;
    /// Watch keys starting with `prefix` for events with revision > `after_revision`.
    /// Fails with [`Error::Compacted`] if `after_revision` < the compacted revision.
    /// Events are pushed by the committing writer (no polling).
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;
    /// Remove history older than `revision` (the newest value of every live key is kept).
    async fn compact(&self, revision: i64) -> Result<()>;
}
