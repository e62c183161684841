//! Durability (kill -9 during a write burst loses no acknowledged write; restarts keep data)
//! and watch semantics with the `kube` crate (events, resume, in-stream 410 after compaction,
//! and a kube-runtime watcher that relists and carries on).
use crate::common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let mut s = Server::start();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("burst-{w}-{i}");
                match api.create(&PostParams::default(), &cm(&name, "x")).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill once the burst is well under way (a fixed delay is too short on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 100 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the burst should have written something ({} writes)",
        acked.len()
    );
    s.spawn();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let names: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_added_modified_deleted_and_resumes_from_a_resource_version() {
    let s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    // Only w1: the controllers add objects of their own (kube-root-ca.crt) meanwhile.
    let mut stream = api
        .watch(
            &WatchParams::default()
                .fields("metadata.name=w1")
                .timeout(30),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("w1", "a"))
        .await
        .unwrap();
    api.replace("w1", &PostParams::default(), &{
        let mut c = api.get("w1").await.unwrap();
        c.data = Some(BTreeMap::from([("v".to_string(), "b".to_string())]));
        c
    })
    .await
    .unwrap();
    api.delete("w1", &Default::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(_)))) => seen.push("ADDED"),
            Ok(Ok(Some(WatchEvent::Modified(_)))) => seen.push("MODIFIED"),
            Ok(Ok(Some(WatchEvent::Deleted(_)))) => seen.push("DELETED"),
            Ok(Ok(Some(_))) => {}
            other => panic!("watch ended early: {other:?} after {seen:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED", "MODIFIED", "DELETED"]);
    // Resuming from the list's revision replays the same history.
    let mut again = api
        .watch(
            &WatchParams::default().fields("metadata.name=w1").timeout(5),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), again.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Some(WatchEvent::Added(_))), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_gets_an_in_stream_410_and_list_gets_a_plain_410() {
    let s = Server::start_with(&[
        "--datastore-history",
        "5",
        "--datastore-compact-interval",
        "1",
    ]);
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let old_rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..30 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap();
    match ev {
        Ok(Some(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected an in-stream 410 ERROR event, got {other:?}"),
    }
    let err = api
        .list(
            &ListParams::default()
                .at(&old_rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 410),
        other => panic!("expected 410 for a list at a compacted revision, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_runtime_watcher_relists_after_compaction_and_keeps_going() {
    let s = Server::start_with(&[
        "--datastore-history",
        "5",
        "--datastore-compact-interval",
        "1",
    ]);
    // The watcher reaches the server through a proxy the test can cut, so it is partitioned
    // away deterministically while its revision is compacted.
    let proxy = crate::common::Proxy::start(s.port).await;
    let watched: Api<ConfigMap> = Api::namespaced(s.client_via(Some(proxy.port)).await, "default");
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    api.create(&PostParams::default(), &cm("before", "x"))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let inits = Arc::new(Mutex::new(0usize));
    let (seen2, inits2) = (seen.clone(), inits.clone());
    let watcher = tokio::spawn(async move {
        use kube::runtime::WatchStreamExt;
        use kube::runtime::watcher::{self, Event};
        let mut w = watcher::watcher(watched, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = w.next().await {
            match ev {
                Ok(Event::InitDone) => *inits2.lock().unwrap() += 1,
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => seen2
                    .lock()
                    .unwrap()
                    .push(o.metadata.name.unwrap_or_default()),
                _ => {}
            }
        }
    });
    crate::common::eventually(Duration::from_secs(20), || {
        (*inits.lock().unwrap() >= 1).then_some(())
    })
    .expect("initial list");
    proxy.cut();
    for i in 0..40 {
        api.create(&PostParams::default(), &cm(&format!("after-{i}"), "x"))
            .await
            .unwrap();
    }
    // History keeps 5 revisions and compaction runs every second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    let got = crate::common::eventually(Duration::from_secs(90), || {
        let names = seen.lock().unwrap().clone();
        (names.iter().any(|n| n == "after-39")).then_some(())
    });
    watcher.abort();
    assert!(
        got.is_some(),
        "the watcher never saw objects written after compaction: {:?}",
        seen.lock().unwrap()
    );
    assert!(
        *inits.lock().unwrap() >= 2,
        "the watcher must have relisted after its revision was compacted"
    );
}

/// Removing an object's last finalizer deletes it; a DELETE racing that update may delete it
/// first. The update still succeeded and must answer 200, as upstream's does (its delete
/// after the update ignores NotFound); a controller removing its finalizer while a kubelet
/// force-deletes the pod must not see a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_last_finalizer_while_a_delete_races_it_answers_200() {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let s = Server::start();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let n = 60;
    for i in 0..n {
        let mut c = cm(&format!("held-{i}"), "x");
        c.metadata.finalizers = Some(vec!["kubox.test/hold".into()]);
        api.create(&PostParams::default(), &c).await.unwrap();
        api.delete(&format!("held-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..n {
        let name = format!("held-{i}");
        // Deletes until the object is gone (each one a no-op while the finalizer holds it).
        let (deleter, name2) = (api.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..2000 {
                if deleter
                    .delete(&name2, &DeleteParams::default().grace_period(0))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Err(format!("{name2} was never deleted"))
        }));
        let patcher = api.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            patcher
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("removing the finalizer of {name}: {e}"))
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let left = api.list(&ListParams::default()).await.unwrap().items;
    assert!(
        left.iter().all(|c| !c
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .starts_with("held-")),
        "objects without finalizers must be gone"
    );
}
