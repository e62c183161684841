//! The single writer thread: group commit, revision assignment, event fan-out, compaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::read::{self, META_COMPACT};
use crate::{Error, Event, EventKind, KeyValue, Result};

/// Upper bound of requests folded into one transaction.
const MAX_BATCH: usize = 1024;

pub(crate) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
}

pub(crate) enum Request {
    /// A write; the reply carries the resulting event.
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Event>>,
    },
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub rx: mpsc::Receiver<Request>,
    pub shared: Arc<Shared>,
    /// The newest committed revision.
    pub rev: i64,
}

impl Writer {
    /// Runs until every sender is gone or a `Close` request arrives.
    pub(crate) fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut writes = Vec::new();
            let mut compacts = Vec::new();
            let mut closes = Vec::new();
            for req in batch {
                match req {
                    Request::Write { op, reply } => writes.push((op, reply)),
                    Request::Compact { revision, reply } => compacts.push((revision, reply)),
                    Request::Close { reply } => closes.push(reply),
                }
            }
            if !writes.is_empty() {
                self.commit_writes(writes);
            }
            for (revision, reply) in compacts {
                let res = self.compact(revision);
                let _ = reply.send(res);
            }
            if !closes.is_empty() {
                self.shutdown();
                for reply in closes {
                    let _ = reply.send(());
                }
                return;
            }
        }
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.rx.close();
        self.shared.registry().clear();
        tracing::debug!(revision = self.rev, "sqlite store writer stopped");
    }

    fn commit_writes(&mut self, writes: Vec<(Op, oneshot::Sender<Result<Event>>)>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = writes.into_iter().unzip();
        match self.apply_batch(&ops) {
            Ok((results, next)) => {
                let events: Vec<Event> = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().cloned())
                    .collect();
                if !events.is_empty() {
                    self.rev = next;
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .writes
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                }
                {
                    let mut reg = self.shared.registry();
                    self.shared.current.store(self.rev, Ordering::SeqCst);
                    reg.broadcast(&events);
                }
                for (reply, res) in replies.into_iter().zip(results) {
                    let _ = reply.send(res);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sqlite store: write batch failed");
                for reply in replies {
                    let _ = reply.send(Err(Error::Database(e.to_string())));
                }
            }
        }
    }

    /// Applies all ops in one transaction. The outer error aborts the whole batch; inner
    /// errors are per-op outcomes (conflicts etc.) that write nothing.
    fn apply_batch(&mut self, ops: &[Op]) -> Result<(Vec<Result<Event>>, i64)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut next = self.rev;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(apply(&tx, next + 1, op)?);
            if let Some(Ok(ev)) = results.last() {
                next = ev.kv.mod_revision;
            }
        }
        tx.commit()?;
        Ok((results, next))
    }

    fn compact(&mut self, revision: i64) -> Result<()> {
        if revision > self.rev {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.rev,
            });
        }
        let old = self.shared.compacted.load(Ordering::SeqCst);
        if revision <= old {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Rows superseded by a newer row written in (old, revision]; rows superseded at or
        // before `old` were removed by earlier compactions.
        let superseded = tx.execute(
            "DELETE FROM kv WHERE id IN (
                 SELECT prev_revision FROM kv WHERE id > ?1 AND id <= ?2 AND prev_revision > 0
             )",
            params![old, revision],
        )?;
        let tombstones = tx.execute(
            "DELETE FROM kv WHERE deleted = 1 AND id <= ?1",
            params![revision],
        )?;
        tx.execute(
            "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            params![META_COMPACT, revision],
        )?;
        tx.commit()?;
        self.shared.compacted.store(revision, Ordering::SeqCst);
        tracing::debug!(revision, superseded, tombstones, "sqlite store compacted");
        self.checkpoint();
        Ok(())
    }

    /// Truncates the WAL; skipped (not waited for) while readers hold old snapshots.
    fn checkpoint(&mut self) {
        let _ = self.conn.busy_timeout(Duration::from_millis(100));
        let res = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        match res {
            Ok((busy, log, done)) => {
                tracing::debug!(busy, log, done, "sqlite store wal checkpoint")
            }
            Err(e) => tracing::debug!(error = %e, "sqlite store wal checkpoint failed"),
        }
        let _ = self.conn.busy_timeout(super::BUSY_TIMEOUT);
    }
}

/// Applies one op at revision `rev` inside the batch transaction.
fn apply(conn: &Connection, rev: i64, op: &Op) -> Result<Result<Event>> {
    let key = match op {
        Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key.as_str(),
    };
    let latest = read::latest(conn, key)?;
    let live = latest.as_ref().filter(|l| !l.deleted);
    let prev_id = latest.as_ref().map(|l| l.id).unwrap_or(0);
    let (kind, value, create_revision, prev) = match op {
        Op::Create { value, .. } => {
            if live.is_some() {
                return Ok(Err(Error::AlreadyExists(key.to_string())));
            }
            (EventKind::Create, value.clone(), rev, None)
        }
        Op::Update {
            value, expected, ..
        } => {
            let Some(cur) = live else {
                return Ok(Err(Error::NotFound(key.to_string())));
            };
            if cur.id != *expected {
                return Ok(Err(conflict(key, *expected, cur.id)));
            }
            (
                EventKind::Update,
                value.clone(),
                cur.create_revision,
                Some(cur.to_kv(key)),
            )
        }
        Op::Delete { expected, .. } => {
            let Some(cur) = live else {
                return Ok(Err(Error::NotFound(key.to_string())));
            };
            if let Some(expected) = expected
                && cur.id != *expected
            {
                return Ok(Err(conflict(key, *expected, cur.id)));
            }
            (
                EventKind::Delete,
                cur.value.clone(),
                cur.create_revision,
                Some(cur.to_kv(key)),
            )
        }
    };
    let mut stmt = conn.prepare_cached(
        "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    stmt.execute(params![
        rev,
        key,
        i64::from(kind == EventKind::Create),
        i64::from(kind == EventKind::Delete),
        create_revision,
        prev_id,
        value,
    ])?;
    Ok(Ok(Event {
        kind,
        kv: KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        },
        prev,
    }))
}

fn conflict(key: &str, expected: i64, actual: i64) -> Error {
    Error::Conflict {
        key: key.to_string(),
        expected,
        actual,
    }
}
