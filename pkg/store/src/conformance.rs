//! Backend conformance suite: every [`Backend`] implementation must pass [`run_all`].
//!
//! Each case uses its own key prefix (under `/conformance/`), so cases can run against a store
//! that holds other data; [`compaction`] compacts the whole store and therefore runs last.
//! Failures panic with a message naming the case (this is test code).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{Backend, Error, Event, EventKind, Result, WatchStream};

/// Runs every case in order.
pub async fn run_all(backend: Arc<dyn Backend>) {
    crud(backend.clone()).await;
    list(backend.clone()).await;
    historic_list(backend.clone()).await;
    watch_replay_then_live(backend.clone()).await;
    watch_prefix_isolation(backend.clone()).await;
    watch_from_now(backend.clone()).await;
    concurrent_writes(backend.clone()).await;
    compaction(backend).await;
}

fn ok<T>(res: Result<T>, what: &str) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Receives `n` events or panics after a timeout.
pub async fn next_events(stream: &mut WatchStream, n: usize, what: &str) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(ev))) => out.push(ev),
            Ok(Some(Err(e))) => panic!("{what}: watch error {e} after {} events", out.len()),
            Ok(None) => panic!("{what}: watch ended after {} events", out.len()),
            Err(_) => panic!("{what}: timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Asserts no event arrives within a short time.
async fn expect_quiet(stream: &mut WatchStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("{what}: expected no event, got {item:?}");
    }
}

/// Create/get/update/delete with optimistic concurrency.
pub async fn crud(b: Arc<dyn Backend>) {
    let key = "/conformance/crud/a";
    let r1 = ok(b.create(key, v("one")).await, "create");
    assert!(r1 > 0, "create returns a positive revision");
    assert_eq!(
        b.current_revision(),
        r1,
        "current revision follows the write"
    );
    let kv = ok(b.get(key).await, "get").unwrap_or_else(|| panic!("created key is readable"));
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"one"[..], r1, r1)
    );
    assert!(matches!(
        b.create(key, v("x")).await,
        Err(Error::AlreadyExists(_))
    ));

    assert!(matches!(
        b.update(key, v("x"), r1 - 1).await,
        Err(Error::Conflict { .. })
    ));
    let r2 = ok(b.update(key, v("two"), r1).await, "update");
    assert!(r2 > r1, "update bumps the revision");
    let kv = ok(b.get(key).await, "get").unwrap_or_else(|| panic!("updated key is readable"));
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"two"[..], r1, r2)
    );
    assert!(matches!(
        b.update(key, v("x"), r1).await,
        Err(Error::Conflict { .. })
    ));
    let missing = "/conformance/crud/missing";
    assert!(matches!(
        b.update(missing, v("x"), 1).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        b.delete(missing, None).await,
        Err(Error::NotFound(_))
    ));
    assert!(ok(b.get(missing).await, "get missing").is_none());

    assert!(matches!(
        b.delete(key, Some(r1)).await,
        Err(Error::Conflict { .. })
    ));
    let (r3, deleted) = ok(b.delete(key, Some(r2)).await, "delete");
    assert!(r3 > r2, "delete bumps the revision");
    assert_eq!(
        (deleted.key.as_str(), deleted.value.as_slice()),
        (key, &b"two"[..])
    );
    assert_eq!(deleted.create_revision, r1);
    assert!(ok(b.get(key).await, "get deleted").is_none());
    assert!(matches!(b.delete(key, None).await, Err(Error::NotFound(_))));
    assert!(matches!(
        b.update(key, v("x"), r3).await,
        Err(Error::NotFound(_))
    ));

    let r4 = ok(b.create(key, v("again")).await, "re-create");
    let kv = ok(b.get(key).await, "get").unwrap_or_else(|| panic!("re-created key is readable"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r4, r4),
        "re-create starts a new life"
    );
    let (r5, _) = ok(b.delete(key, None).await, "unconditional delete");
    assert!(r5 > r4);
}

/// Prefix, limit, start_after, more/remaining and count.
pub async fn list(b: Arc<dyn Backend>) {
    let p = "/conformance/list/";
    for i in 0..7 {
        ok(
            b.create(&format!("{p}a/{i}"), v(&i.to_string())).await,
            "create",
        );
    }
    ok(b.create(&format!("{p}b/0"), v("b")).await, "create");
    ok(b.create(&format!("{p}a0"), v("sibling")).await, "create");
    let (dr, _) = ok(b.delete(&format!("{p}a/6"), None).await, "delete");

    let all = ok(
        b.list(&format!("{p}a/"), None, None, None).await,
        "list all",
    );
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<_> = (0..6).map(|i| format!("{p}a/{i}")).collect();
    assert_eq!(
        keys, want,
        "list returns live keys under the prefix in order"
    );
    assert!(!all.more && all.remaining == 0);
    assert!(all.revision >= dr, "list reports the revision it read at");
    assert_eq!(ok(b.count(&format!("{p}a/")).await, "count"), 6);
    assert_eq!(ok(b.count(p).await, "count"), 8);
    assert_eq!(ok(b.count("/conformance/list-nothing/").await, "count"), 0);

    let page = ok(
        b.list(&format!("{p}a/"), None, Some(2), None).await,
        "page 1",
    );
    assert_eq!(page.items.len(), 2);
    assert!(page.more, "a cut list says more");
    assert_eq!(
        page.remaining, 4,
        "remaining counts the keys after the page"
    );
    let last = page.items[1].key.clone();
    let page2 = ok(
        b.list(&format!("{p}a/"), Some(&last), Some(3), Some(page.revision))
            .await,
        "p2",
    );
    let keys: Vec<_> = page2.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, want[2..5].to_vec(), "start_after is exclusive");
    assert_eq!(
        (page2.more, page2.remaining, page2.revision),
        (true, 1, page.revision)
    );
    let page3 = ok(
        b.list(&format!("{p}a/"), Some(&want[4]), Some(3), None)
            .await,
        "p3",
    );
    assert_eq!(page3.items.len(), 1);
    assert!(!page3.more && page3.remaining == 0);
    let exact = ok(
        b.list(&format!("{p}a/"), None, Some(6), None).await,
        "exact limit",
    );
    assert!(!exact.more, "a limit equal to the size is not cut");
    let unlimited = ok(
        b.list(&format!("{p}a/"), Some(""), Some(0), None).await,
        "limit 0",
    );
    assert_eq!(
        unlimited.items.len(),
        6,
        "limit 0 means unlimited, start_after \"\" the start"
    );

    let future = b.current_revision() + 1000;
    assert!(matches!(
        b.list(p, None, None, Some(future)).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// Reads at a historical revision see the state as of that revision.
pub async fn historic_list(b: Arc<dyn Backend>) {
    let p = "/conformance/history/";
    let r1 = ok(b.create(&format!("{p}x"), v("x1")).await, "create");
    let r2 = ok(b.create(&format!("{p}y"), v("y1")).await, "create");
    let r3 = ok(b.update(&format!("{p}x"), v("x2"), r1).await, "update");
    ok(b.delete(&format!("{p}y"), None).await, "delete");
    ok(b.create(&format!("{p}z"), v("z1")).await, "create");

    let at = |rev| {
        let b = b.clone();
        async move {
            let res = ok(b.list(p, None, None, Some(rev)).await, "historic list");
            assert_eq!(
                res.revision, rev,
                "historic list reports the requested revision"
            );
            res.items
                .into_iter()
                .map(|kv| (kv.key, kv.value, kv.mod_revision))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(r1).await, vec![(format!("{p}x"), v("x1"), r1)]);
    assert_eq!(
        at(r2).await,
        vec![
            (format!("{p}x"), v("x1"), r1),
            (format!("{p}y"), v("y1"), r2)
        ]
    );
    assert_eq!(
        at(r3).await,
        vec![
            (format!("{p}x"), v("x2"), r3),
            (format!("{p}y"), v("y1"), r2)
        ]
    );
    let now = at(b.current_revision()).await;
    let keys: Vec<_> = now.iter().map(|(k, _, _)| k.clone()).collect();
    assert_eq!(keys, vec![format!("{p}x"), format!("{p}z")]);
    let page = ok(b.list(p, None, Some(1), Some(r2)).await, "historic page");
    assert_eq!((page.items.len(), page.more, page.remaining), (1, true, 1));
}

/// A watch from an old revision replays history, then continues live without gaps.
pub async fn watch_replay_then_live(b: Arc<dyn Backend>) {
    let p = "/conformance/watch/";
    let before = b.current_revision();
    let r1 = ok(b.create(&format!("{p}k"), v("1")).await, "create");
    let r2 = ok(b.update(&format!("{p}k"), v("2"), r1).await, "update");
    let mut w = ok(b.watch(p, before).await, "watch");
    let (r3, _) = ok(b.delete(&format!("{p}k"), Some(r2)).await, "delete");
    let r4 = ok(b.create(&format!("{p}k"), v("3")).await, "create");
    let evs = next_events(&mut w, 4, "replay then live").await;
    let revs: Vec<_> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(
        revs,
        vec![r1, r2, r3, r4],
        "every event once, in revision order"
    );
    let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(kinds, vec![Create, Update, Delete, Create]);
    assert!(evs[0].prev.is_none(), "a create has no prev");
    let prev = evs[1]
        .prev
        .clone()
        .unwrap_or_else(|| panic!("update carries prev"));
    assert_eq!((prev.value, prev.mod_revision), (v("1"), r1));
    let del = &evs[2];
    assert_eq!((del.kv.value.clone(), del.kv.create_revision), (v("2"), r1));
    let prev = del
        .prev
        .clone()
        .unwrap_or_else(|| panic!("delete carries prev"));
    assert_eq!(
        (prev.value, prev.mod_revision, prev.create_revision),
        (v("2"), r2, r1)
    );
    assert_eq!(evs[3].kv.create_revision, r4);
    expect_quiet(&mut w, "no duplicates after live events").await;

    // A second watch starting in the middle replays only the later events.
    let mut w2 = ok(b.watch(p, r2).await, "watch from middle");
    let evs = next_events(&mut w2, 2, "partial replay").await;
    assert_eq!(
        evs.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        vec![r3, r4]
    );
    expect_quiet(&mut w2, "partial replay ends").await;
    ok(b.delete(&format!("{p}k"), None).await, "cleanup");
    assert_eq!(next_events(&mut w2, 1, "live delete").await[0].kind, Delete);
}

/// A watch sees only keys under its prefix.
pub async fn watch_prefix_isolation(b: Arc<dyn Backend>) {
    let p = "/conformance/iso/";
    let mut wa = ok(b.watch(&format!("{p}a/"), 0).await, "watch a");
    let mut wb = ok(b.watch(&format!("{p}b/"), 0).await, "watch b");
    ok(b.create(&format!("{p}b/1"), v("b")).await, "create b");
    ok(
        b.create(&format!("{p}ab"), v("sibling")).await,
        "create sibling",
    );
    let ra = ok(b.create(&format!("{p}a/1"), v("a")).await, "create a");
    let evs = next_events(&mut wa, 1, "prefix a").await;
    assert_eq!(
        (evs[0].kv.key.as_str(), evs[0].kv.mod_revision),
        (&*format!("{p}a/1"), ra)
    );
    assert_eq!(
        next_events(&mut wb, 1, "prefix b").await[0].kv.key,
        format!("{p}b/1")
    );
    expect_quiet(&mut wa, "prefix a sees nothing else").await;
    expect_quiet(&mut wb, "prefix b sees nothing else").await;
}

/// `after_revision == 0` starts at the current revision; future revisions are not errors.
pub async fn watch_from_now(b: Arc<dyn Backend>) {
    let p = "/conformance/now/";
    ok(b.create(&format!("{p}old"), v("old")).await, "create");
    let mut w = ok(b.watch(p, 0).await, "watch from now");
    expect_quiet(&mut w, "nothing replayed from now").await;
    let r = ok(b.create(&format!("{p}new"), v("new")).await, "create");
    assert_eq!(next_events(&mut w, 1, "live").await[0].kv.mod_revision, r);
}

/// Concurrent writers get distinct revisions; only one of racing updates wins.
pub async fn concurrent_writes(b: Arc<dyn Backend>) {
    let p = "/conformance/concurrent/";
    let start = b.current_revision();
    let mut w = ok(b.watch(p, 0).await, "watch");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.create(&format!("{p}{i:03}"), v("x")).await })
        })
        .collect();
    let mut revs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(res) => revs.push(ok(res, "concurrent create")),
            Err(e) => panic!("task failed: {e}"),
        }
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 100, "every create gets its own revision");
    assert!(revs[0] > start && b.current_revision() >= revs[99]);
    let evs = next_events(&mut w, 100, "concurrent events").await;
    let seen: Vec<_> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(seen, revs, "watchers see all writes in revision order");
    assert_eq!(ok(b.count(p).await, "count"), 100);

    let key = format!("{p}race");
    let r0 = ok(b.create(&key, v("0")).await, "create");
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move { b.update(&key, v(&i.to_string()), r0).await })
        })
        .collect();
    let mut wins = 0;
    for t in racers {
        match t.await {
            Ok(Ok(_)) => wins += 1,
            Ok(Err(Error::Conflict { .. })) => {}
            Ok(Err(e)) => panic!("racing update: unexpected error {e}"),
            Err(e) => panic!("task failed: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one racing update wins");
}

/// Compaction keeps the latest state readable and rejects older revisions.
pub async fn compaction(b: Arc<dyn Backend>) {
    let p = "/conformance/compact/";
    let r1 = ok(b.create(&format!("{p}keep"), v("1")).await, "create");
    let r2 = ok(b.update(&format!("{p}keep"), v("2"), r1).await, "update");
    let rg = ok(b.create(&format!("{p}gone"), v("g")).await, "create");
    let (rd, _) = ok(b.delete(&format!("{p}gone"), Some(rg)).await, "delete");
    let r3 = ok(b.update(&format!("{p}keep"), v("3"), r2).await, "update");
    let after = ok(b.create(&format!("{p}later"), v("l")).await, "create");

    assert!(matches!(
        b.compact(b.current_revision() + 10).await,
        Err(Error::FutureRevision { .. })
    ));
    ok(b.compact(rd).await, "compact");
    assert_eq!(b.compacted_revision(), rd);
    ok(
        b.compact(rd - 1).await,
        "compacting an older revision is a no-op",
    );
    assert_eq!(b.compacted_revision(), rd);

    assert!(matches!(
        b.list(p, None, None, Some(rd - 1)).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        b.watch(p, rd - 1).await,
        Err(Error::Compacted { .. })
    ));
    let at = ok(
        b.list(p, None, None, Some(rd)).await,
        "list at the compacted revision",
    );
    let items: Vec<_> = at
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(
        items,
        vec![(format!("{p}keep"), v("2"))],
        "state at the compacted revision"
    );
    let now = ok(b.list(p, None, None, None).await, "list now");
    assert_eq!(now.items.len(), 2);
    let kv = ok(b.get(&format!("{p}keep")).await, "get").unwrap_or_else(|| panic!("kept key"));
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (v("3"), r1, r3)
    );

    let mut w = ok(b.watch(p, rd).await, "watch from the compacted revision");
    let evs = next_events(&mut w, 2, "replay after compaction").await;
    assert_eq!(
        evs.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        vec![r3, after]
    );
    let prev = evs[0]
        .prev
        .clone()
        .unwrap_or_else(|| panic!("update after compaction has prev"));
    assert_eq!(prev.mod_revision, r2);

    // Compacting everything keeps every live key.
    let cur = b.current_revision();
    ok(b.compact(cur).await, "compact all");
    assert_eq!(ok(b.count(p).await, "count"), 2);
    let r = ok(
        b.update(&format!("{p}keep"), v("4"), r3).await,
        "update after compaction",
    );
    assert!(r > cur, "revisions keep growing after compaction");
    let r = ok(
        b.create(&format!("{p}gone"), v("again")).await,
        "re-create compacted key",
    );
    assert!(r > cur);
}
