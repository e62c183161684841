//! Runs the backend conformance suite against the SQLite backend.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use kubox_store::{Backend, SqliteBackend, SqliteOptions, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        compact_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let backend = SqliteBackend::open(&dir.path().join("db/state.db"), opts).unwrap();
    let dyn_backend: Arc<dyn Backend> = backend.clone();
    conformance::run_all(dyn_backend).await;
    backend.close().await;
}
