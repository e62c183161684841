//! ControllerRevisions with kubectl: DaemonSets and StatefulSets keep one revision per pod
//! template, label their pods with it, and `kubectl rollout history` / `rollout undo` work;
//! revisionHistoryLimit prunes what no pod uses.
//!
//! Pods "run" on [`StandInNode`]s.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::controllers::StandInNode;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const HASH: &str = "controller-revision-hash";

fn get(s: &Server, args: &[&str]) -> Value {
    let out = s.k(KUBECTL_NEW, &[args, &["-o", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn items(v: Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// `(revision, name)` of the revisions labelled `selector`, by revision.
fn revisions(s: &Server, selector: &str) -> Vec<(i64, String)> {
    let mut r: Vec<(i64, String)> = items(get(s, &["get", "controllerrevisions", "-l", selector]))
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or_default(),
                r["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    r.sort();
    r
}

/// Live pods labelled `selector` as `(image, revision label)`, sorted.
fn pods(s: &Server, selector: &str) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = items(get(s, &["get", "pods", "-l", selector]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["labels"][HASH]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    p.sort();
    p
}

fn rollout(s: &Server, what: &str) {
    let out = s.k(KUBECTL_NEW, &["rollout", "status", what, "--timeout=60s"]);
    assert!(out.contains("roll"), "{out}");
}

#[test]
fn daemonset_revisions_show_in_rollout_history_and_undo_goes_back() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 22);
    let _b = StandInNode::start(&s, "node-b", 23);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: docker.io/library/busybox:v1}]}
"#,
    );
    rollout(&s, "daemonset/agent");
    let first = revisions(&s, "app=agent");
    assert_eq!(first.len(), 1, "{first:?}");
    let rev1 = get(&s, &["get", "controllerrevision", &first[0].1]);
    let hash1 = rev1["metadata"]["labels"][HASH]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first[0].1, format!("agent-{hash1}"));
    assert_eq!(rev1["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert_eq!(
        rev1["data"]["spec"]["template"]["$patch"], "replace",
        "{rev1}"
    );
    assert!(pods(&s, "app=agent").iter().all(|(_, h)| *h == hash1));

    s.k(
        KUBECTL_NEW,
        &[
            "annotate",
            "daemonset/agent",
            "kubernetes.io/change-cause=to v2",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "daemonset/agent",
            "c=docker.io/library/busybox:v2",
        ],
    );
    rollout(&s, "daemonset/agent");
    let two = revisions(&s, "app=agent");
    assert_eq!(two.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    let hash2 = two[1].1.trim_start_matches("agent-").to_string();
    assert!(
        eventually(WAIT, || {
            let p = pods(&s, "app=agent");
            (p.len() == 2 && p.iter().all(|(i, h)| i.ends_with(":v2") && *h == hash2)).then_some(())
        })
        .is_some(),
        "{:?}",
        pods(&s, "app=agent")
    );
    let history = s.k(KUBECTL_OLD, &["rollout", "history", "daemonset/agent"]);
    assert!(history.contains("REVISION"), "{history}");
    assert!(history.contains("to v2"), "{history}");
    let one = s.k(
        KUBECTL_NEW,
        &["rollout", "history", "daemonset/agent", "--revision=1"],
    );
    assert!(one.contains("busybox:v1"), "{one}");

    // Undo: the pods go back to v1 and its revision becomes number 3.
    let out = s.k(KUBECTL_NEW, &["rollout", "undo", "daemonset/agent"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout(&s, "daemonset/agent");
    assert!(
        eventually(WAIT, || {
            let p = pods(&s, "app=agent");
            (p.len() == 2 && p.iter().all(|(i, h)| i.ends_with(":v1") && *h == hash1)).then_some(())
        })
        .is_some(),
        "{:?}",
        pods(&s, "app=agent")
    );
    let after = revisions(&s, "app=agent");
    assert_eq!(after, vec![(2, two[1].1.clone()), (3, first[0].1.clone())]);
}

#[test]
fn statefulset_revisions_track_current_and_update_and_are_pruned() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 24);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:v1}]
"#,
    );
    rollout(&s, "statefulset/db");
    let first = revisions(&s, "app=db");
    assert_eq!(first.len(), 1);
    let rev1 = first[0].1.clone();
    let sts = get(&s, &["get", "statefulset", "db"]);
    assert_eq!(sts["status"]["updateRevision"], rev1.as_str());
    assert_eq!(sts["status"]["currentRevision"], rev1.as_str());
    assert!(pods(&s, "app=db").iter().all(|(_, h)| *h == rev1));

    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "statefulset/db",
            "c=docker.io/library/busybox:v2",
        ],
    );
    rollout(&s, "statefulset/db");
    let two = revisions(&s, "app=db");
    assert_eq!(two.len(), 2, "{two:?}");
    let rev2 = two[1].1.clone();
    let sts = eventually(WAIT, || {
        let sts = get(&s, &["get", "statefulset", "db"]);
        (sts["status"]["currentRevision"] == rev2.as_str()).then_some(sts)
    })
    .expect("currentRevision moves to the update revision");
    assert_eq!(sts["status"]["updateRevision"], rev2.as_str());
    assert_eq!(
        pods(&s, "app=db"),
        vec![
            ("docker.io/library/busybox:v2".to_string(), rev2.clone()),
            ("docker.io/library/busybox:v2".to_string(), rev2.clone())
        ]
    );
    let history = s.k(KUBECTL_NEW, &["rollout", "history", "statefulset/db"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    let out = s.k(KUBECTL_OLD, &["rollout", "undo", "statefulset/db"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout(&s, "statefulset/db");
    assert!(
        eventually(WAIT, || {
            let sts = get(&s, &["get", "statefulset", "db"]);
            (sts["status"]["updateRevision"] == rev1.as_str()
                && sts["status"]["currentRevision"] == rev1.as_str()
                && pods(&s, "app=db")
                    .iter()
                    .all(|(i, h)| i.ends_with(":v1") && *h == rev1))
            .then_some(())
        })
        .is_some(),
        "{:?}",
        pods(&s, "app=db")
    );
    assert_eq!(revisions(&s, "app=db"), vec![(2, rev2), (3, rev1.clone())]);

    // No history kept: only the revision in use stays.
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "statefulset/db",
            "-p",
            r#"{"spec":{"revisionHistoryLimit":0}}"#,
        ],
    );
    assert!(
        eventually(WAIT, || (revisions(&s, "app=db")
            == vec![(3, rev1.clone())])
        .then_some(()))
        .is_some(),
        "{:?}",
        revisions(&s, "app=db")
    );
}
