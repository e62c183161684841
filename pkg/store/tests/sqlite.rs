//! SQLite-specific behaviour: group commit, bounded size under churn, reopen, slow watchers,
//! durability across kill -9.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubox_store::{Backend, Error, SqliteBackend, SqliteOptions};

fn manual() -> SqliteOptions {
    SqliteOptions {
        compact_interval: Duration::ZERO,
        ..Default::default()
    }
}

fn rows(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("s.db"), manual()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.create(&format!("/k/{i}"), vec![1]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = b.stats();
    eprintln!("group commit: {stats:?}");
    assert_eq!(stats.writes, 200);
    assert!(
        stats.commits <= 50,
        "200 concurrent writes took {} transactions",
        stats.commits
    );
    assert_eq!(b.current_revision(), 200);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_wal_stay_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.db");
    let opts = SqliteOptions {
        history_window: 100,
        compact_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let b = SqliteBackend::open(&path, opts).unwrap();
    // 50 keys x 400 updates = 20k writes, each key updated by its own task.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let key = format!("/churn/{i}");
                let value = vec![7u8; 512];
                let mut rev = b.create(&key, value.clone()).await.unwrap();
                for _ in 0..399 {
                    rev = b.update(&key, value.clone(), rev).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.current_revision(), 20_000);
    assert!(
        b.compacted_revision() > 0,
        "the automatic compaction ran during the churn"
    );
    b.compact_history().await.unwrap();
    assert_eq!(b.compacted_revision(), 20_000 - 100);
    let n = rows(&path);
    assert!(n <= 150, "table holds {n} rows after compaction");
    let wal = std::fs::metadata(dir.path().join("churn.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(wal < 1 << 20, "WAL is {wal} bytes after the checkpoint");
    assert_eq!(b.count("/churn/").await.unwrap(), 50);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/re.db");
    let b = SqliteBackend::open(&path, manual()).unwrap();
    let r1 = b.create("/a", b"1".to_vec()).await.unwrap();
    b.create("/b", b"2".to_vec()).await.unwrap();
    // The newest write is a tombstone that compaction removes: the revision must survive.
    let (rd, _) = b.delete("/b", None).await.unwrap();
    b.compact(rd).await.unwrap();
    b.close().await;
    assert!(matches!(b.create("/c", vec![]).await, Err(Error::Closed)));
    drop(b);

    let b = SqliteBackend::open(&path, manual()).unwrap();
    assert_eq!(b.current_revision(), rd);
    assert_eq!(b.compacted_revision(), rd);
    let kv = b.get("/a").await.unwrap().unwrap();
    assert_eq!((kv.value, kv.mod_revision), (b"1".to_vec(), r1));
    assert!(b.get("/b").await.unwrap().is_none());
    assert!(b.create("/c", vec![]).await.unwrap() > rd);
    drop(b);
    // Dropping without close also releases the writer.
    let b = SqliteBackend::open(&path, manual()).unwrap();
    assert_eq!(b.current_revision(), rd + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_dropped_without_blocking_writers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        watch_buffer: 4,
        ..manual()
    };
    let b = SqliteBackend::open(&dir.path().join("w.db"), opts).unwrap();
    let mut slow = b.watch("/w/", 0).await.unwrap();
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(10),
            b.create(&format!("/w/{i}"), vec![]),
        )
        .await
        .unwrap()
        .unwrap();
    }
    let mut got = 0;
    loop {
        match slow.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => {
                assert!(matches!(e, Error::WatcherLagged), "got {e}");
                break;
            }
            None => panic!("stream ended without an error"),
        }
    }
    assert_eq!(got, 4, "the buffered events are still delivered");
    assert!(slow.next().await.is_none());
    assert_eq!(b.watcher_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_watches_and_rejects_calls() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("c.db"), manual()).unwrap();
    let mut w = b.watch("/", 0).await.unwrap();
    b.close().await;
    assert!(matches!(w.next().await, Some(Err(Error::Closed))));
    assert!(matches!(b.get("/x").await, Err(Error::Closed)));
    assert!(matches!(b.watch("/", 0).await, Err(Error::Closed)));
}

const CHILD_ENV: &str = "KUBOX_STORE_KILL_CHILD_DB";

/// Child half of the kill -9 test: writes keys and prints each acknowledged revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let b = SqliteBackend::open(Path::new(&path), manual()).unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let b: Arc<SqliteBackend> = b.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let rev = b
                        .create(&format!("/dur/{t}/{i}"), vec![t as u8])
                        .await
                        .unwrap();
                    println!("ACK {t} {i} {rev}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dur.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.first() == Some(&"ACK") {
            acked.push((
                parts[1].to_string(),
                parts[2].to_string(),
                parts[3].parse::<i64>().unwrap(),
            ));
            if acked.len() == 300 {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 300);
    let b = SqliteBackend::open(&path, manual()).unwrap();
    for (t, i, rev) in &acked {
        let kv = b.get(&format!("/dur/{t}/{i}")).await.unwrap();
        assert_eq!(
            kv.map(|kv| kv.mod_revision),
            Some(*rev),
            "acked write /dur/{t}/{i} lost"
        );
    }
    let max = acked.iter().map(|a| a.2).max().unwrap();
    assert!(b.current_revision() >= max);
}
