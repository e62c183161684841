//! SQLite backend: kine-like MVCC in one table, one writer thread with group commit,
//! read-only reader connections (WAL), watchers fed by the writer after each commit.
//!
//! Entry points: [`SqliteBackend::open`], [`SqliteBackend::close`], [`SqliteBackend::stats`].

mod read;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Error, Event, KeyValue, ListResult, Result, WatchStream};
use writer::{Op, Request, Writer};

pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;
/// Capacity of the request channel into the writer.
const REQUEST_QUEUE: usize = 4096;

/// Tuning for [`SqliteBackend`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Revisions of history kept by the automatic compaction (default 1000).
    pub history_window: i64,
    /// How often the automatic compaction runs (default 30s; zero disables it).
    pub compact_interval: Duration,
    /// Per-watcher event buffer; a watcher that falls this far behind is dropped (default 1024).
    pub watch_buffer: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            history_window: 1000,
            compact_interval: Duration::from_secs(30),
            watch_buffer: 1024,
        }
    }
}

/// Counters of the writer: `commits` transactions that wrote at least one row, `writes` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub commits: u64,
    pub writes: u64,
}

/// State shared between the backend handle and the writer thread.
pub(crate) struct Shared {
    current: AtomicI64,
    compacted: AtomicI64,
    commits: AtomicU64,
    writes: AtomicU64,
    watchers: Mutex<watch::Registry>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, watch::Registry> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reusable read-only connections.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// The embedded SQLite [`Backend`].
pub struct SqliteBackend {
    path: PathBuf,
    opts: SqliteOptions,
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    readers: Arc<ReadPool>,
    closed: AtomicBool,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .field("revision", &self.shared.current.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

fn db_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Database(format!("{what}: {e}"))
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and starts the writer thread and,
    /// when called inside a tokio runtime, the automatic compaction task.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<Arc<SqliteBackend>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| db_err(&format!("creating {}", parent.display()), e))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Database(format!(
                "cannot enable WAL (journal mode {mode})"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA journal_size_limit=67108864; PRAGMA foreign_keys=OFF;",
        )?;
        conn.execute_batch(read::SCHEMA)?;
        let (rev, compacted) = read::revisions(&conn)?;
        let shared = Arc::new(Shared {
            current: AtomicI64::new(rev),
            compacted: AtomicI64::new(compacted),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            watchers: Mutex::new(watch::Registry::default()),
        });
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let writer = Writer {
            conn,
            rx,
            shared: shared.clone(),
            rev,
        };
        std::thread::Builder::new()
            .name("kubox-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| db_err("starting writer thread", e))?;
        let backend = Arc::new(SqliteBackend {
            path: path.to_path_buf(),
            readers: Arc::new(ReadPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
            opts,
            shared,
            requests: tx,
            closed: AtomicBool::new(false),
        });
        backend.start_compactor();
        tracing::info!(path = %path.display(), revision = rev, compacted, "opened sqlite store");
        Ok(backend)
    }

    fn start_compactor(self: &Arc<Self>) {
        let interval = self.opts.compact_interval;
        if interval.is_zero() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("sqlite store opened outside a tokio runtime: no automatic compaction");
            return;
        };
        let weak: Weak<SqliteBackend> = Arc::downgrade(self);
        handle.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                match backend.compact_history().await {
                    Ok(()) => {}
                    Err(Error::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "sqlite store automatic compaction failed")
                    }
                }
            }
        });
    }

    /// Compacts everything older than the newest `history_window` revisions (what the
    /// automatic compaction runs), then truncates the WAL.
    pub async fn compact_history(&self) -> Result<()> {
        let target = self.current_revision() - self.opts.history_window.max(0);
        if target <= self.compacted_revision() {
            return Ok(());
        }
        self.compact(target).await
    }

    /// Stops the writer after the queued requests; later calls fail with [`Error::Closed`]
    /// and open watch streams end with [`Error::Closed`]. Dropping the last handle also stops it.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        if self.requests.send(Request::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Writer counters (group commit efficiency).
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of registered watchers (for tests and metrics).
    pub fn watcher_count(&self) -> usize {
        self.shared.registry().len()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn write(&self, op: Op) -> Result<Event> {
        self.request(|reply| Request::Write { op, reply }).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.take()?;
            let res = f(&mut conn);
            pool.put(conn);
            res
        })
        .await
        .map_err(|e| db_err("reader task", e))?
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn current_revision(&self) -> i64 {
        self.shared.current.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> i64 {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let ev = self
            .write(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?;
        Ok(ev.kv.mod_revision)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<i64> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected: expected_revision,
        };
        Ok(self.write(op).await?.kv.mod_revision)
    }

    /// The returned [`KeyValue`] is the last value with `mod_revision` = the delete revision
    /// (as in the delete [`Event`]).
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)> {
        let op = Op::Delete {
            key: key.to_string(),
            expected: expected_revision,
        };
        let ev = self.write(op).await?;
        Ok((ev.kv.mod_revision, ev.kv))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |c| read::get(c, &key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: Option<i64>,
    ) -> Result<ListResult> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.read(move |c| read::list(c, &prefix, start_after.as_deref(), limit, revision))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let prefix = prefix.to_string();
        self.read(move |c| read::count(c, &prefix)).await
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let compacted = self.compacted_revision();
        if after_revision > 0 && after_revision < compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(self.opts.watch_buffer.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        // Registering under the registry lock pins the revision from which the writer will
        // push events to this watcher; older events come from the database.
        let registered_at = {
            let mut reg = self.shared.registry();
            reg.add(prefix, tx, lagged.clone());
            self.shared.current.load(Ordering::SeqCst)
        };
        let replay = if after_revision > 0 && after_revision < registered_at {
            let p = prefix.to_string();
            self.read(move |c| read::history(c, &p, after_revision, registered_at))
                .await?
        } else {
            Vec::new()
        };
        let floor = registered_at.max(after_revision);
        Ok(watch::stream(replay, rx, lagged, floor))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.request(|reply| Request::Compact { revision, reply })
            .await
    }
}
