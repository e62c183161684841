use super::*;
use crate::scheduler::fit::tests::{node, pod, snapshot};
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::json;

fn zoned(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
    node(
        name,
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
    )
}

fn web(uid: &str) -> Pod {
    pod(json!({"metadata": {"uid": uid, "labels": {"app": "web"}}}))
}

fn spread_pod(constraint: serde_json::Value) -> Pod {
    let mut c = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
    crate::scheduler::fit::tests::merge(&mut c, constraint);
    pod(json!({"metadata": {"uid": "new", "labels": {"app": "web"}},
        "spec": {"topologySpreadConstraints": [c]}}))
}

fn verdicts(p: &Pod, snap: &Snapshot) -> Vec<Option<&'static str>> {
    let st = prepare(p, snap, &Selecting::default());
    snap.nodes.iter().map(|n| filter(&st, n)).collect()
}

#[test]
fn max_skew_one_fills_the_emptier_zone_first() {
    let snap = snapshot(
        vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")],
        vec![("a1", web("w1"))],
    );
    let p = spread_pod(json!({}));
    assert_eq!(verdicts(&p, &snap), vec![Some(SKEW), Some(SKEW), None]);
    // Balanced again: any zone.
    let snap = snapshot(
        vec![zoned("a1", "a"), zoned("b1", "b")],
        vec![("a1", web("w1")), ("b1", web("w2"))],
    );
    assert_eq!(verdicts(&p, &snap), vec![None, None]);
}

#[test]
fn a_node_without_the_key_is_refused_and_not_counted() {
    let snap = snapshot(
        vec![zoned("a1", "a"), node("bare", json!({}))],
        vec![("bare", web("w1"))],
    );
    let p = spread_pod(json!({}));
    assert_eq!(verdicts(&p, &snap), vec![None, Some(MISSING_LABEL)]);
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    let snap = snapshot(
        vec![zoned("a1", "a"), zoned("b1", "b")],
        vec![("a1", web("w1")), ("b1", web("w2"))],
    );
    let p = spread_pod(json!({"minDomains": 3}));
    assert_eq!(verdicts(&p, &snap), vec![Some(SKEW), Some(SKEW)]);
}

#[test]
fn node_affinity_policy_decides_which_nodes_count() {
    // A pod on a node the incoming pod may not use does not count (Honor), unless Ignore.
    let mut other = zoned("b1", "b");
    other
        .metadata
        .labels
        .get_or_insert_default()
        .insert("disk".into(), "hdd".into());
    let snap = snapshot(
        vec![zoned("a1", "a"), other, zoned("c1", "c")],
        vec![("b1", web("w1")), ("b1", web("w2"))],
    );
    let mut p = spread_pod(json!({}));
    p.spec.as_mut().unwrap().node_selector =
        Some([("topology.kubernetes.io/zone".to_string(), "a".to_string())].into());
    // Domains a and c only (b is not eligible): a has 0 pods, fine.
    assert_eq!(verdicts(&p, &snap)[0], None);
    let mut ignore = spread_pod(json!({"nodeAffinityPolicy": "Ignore"}));
    ignore.spec.as_mut().unwrap().node_selector = p.spec.as_ref().unwrap().node_selector.clone();
    assert_eq!(verdicts(&ignore, &snap)[0], None);
    let st = prepare(&ignore, &snap, &Selecting::default());
    assert_eq!(st.constraints[0].counts.get("b"), Some(&2));
}

#[test]
fn schedule_anyway_prefers_the_emptier_domain() {
    let snap = snapshot(
        vec![zoned("a1", "a"), zoned("b1", "b")],
        vec![("a1", web("w1"))],
    );
    let p = spread_pod(json!({"whenUnsatisfiable": "ScheduleAnyway"}));
    let st = prepare(&p, &snap, &Selecting::default());
    assert_eq!(filter(&st, &snap.nodes[0]), None);
    let raw: Vec<Option<f64>> = snap.nodes.iter().map(|n| score(&st, n)).collect();
    let s = normalize(&raw);
    assert!(s[1] > s[0], "{s:?}");
}

fn scores_of(p: &Pod, snap: &Snapshot, selecting: &Selecting) -> Vec<i64> {
    let st = prepare(p, snap, selecting);
    assert!(scores(&st));
    let raw: Vec<Option<f64>> = snap.nodes.iter().map(|n| score(&st, n)).collect();
    normalize(&raw)
}

fn replica_set(name: &str, selector: serde_json::Value) -> Arc<ReplicaSet> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector, "template": {}}}))
        .unwrap(),
    )
}

fn service(selector: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": selector}}))
        .unwrap(),
    )
}

fn owned(uid: &str, labels: serde_json::Value) -> Pod {
    pod(
        json!({"metadata": {"uid": uid, "labels": labels, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1",
         "controller": true}]}}),
    )
}

#[test]
fn pods_of_a_replicaset_spread_by_its_selector() {
    let rs = replica_set("rs", json!({"matchLabels": {"app": "web"}}));
    let selecting = Selecting::new(&[], &[], &[rs], &[]);
    // Pods the ReplicaSet's selector matches count, whoever owns them (a replaced
    // ReplicaSet's pods too); pods it does not match do not.
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![
            ("n1", owned("a", json!({"app": "web"}))),
            ("n1", web("orphan")),
            (
                "n2",
                pod(json!({"metadata": {"uid": "x", "labels": {"app": "db"}}})),
            ),
            (
                "n2",
                pod(json!({"metadata": {"uid": "y", "labels": {"app": "db"}}})),
            ),
        ],
    );
    let s = scores_of(&owned("c", json!({"app": "web"})), &snap, &selecting);
    assert!(s[1] > s[0], "{s:?}");
    // Another namespace's pods do not count.
    let mut elsewhere = web("z");
    elsewhere.metadata.namespace = Some("other".into());
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![
            ("n1", elsewhere.clone()),
            ("n1", elsewhere),
            ("n2", web("w")),
        ],
    );
    let s = scores_of(&owned("c", json!({"app": "web"})), &snap, &selecting);
    assert!(s[0] > s[1], "{s:?}");
    // An owner the scheduler does not know (or of another kind) adds nothing: no constraints.
    let unknown = Selecting::new(&[], &[], &[replica_set("other", json!({}))], &[]);
    let p = owned("c", json!({"app": "web"}));
    assert!(!scores(&prepare(&p, &snap, &unknown)));
    // A bare pod no Service selects has no default constraints.
    assert!(!scores(&prepare(&web("x"), &snap, &selecting)));
}

#[test]
fn services_and_the_controller_select_together() {
    let rs = replica_set("rs", json!({"matchLabels": {"app": "web"}}));
    let selecting = Selecting::new(&[service(json!({"tier": "front"}))], &[], &[rs], &[]);
    let p = owned("c", json!({"app": "web", "tier": "front"}));
    assert_eq!(
        selecting.default_selector(&p).to_string(),
        "tier=front,app=web"
    );
    // Pods matching only one of the two selectors do not count.
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![
            ("n1", web("a")),
            (
                "n1",
                pod(json!({"metadata": {"uid": "b", "labels": {"tier": "front"}}})),
            ),
            (
                "n2",
                pod(json!({"metadata": {"uid": "d", "labels": {"app": "web", "tier": "front"}}})),
            ),
        ],
    );
    let s = scores_of(&p, &snap, &selecting);
    assert!(s[0] > s[1], "{s:?}");
    // A pod only a Service selects spreads over that Service's pods.
    let only_service = Selecting::new(&[service(json!({"app": "web"}))], &[], &[], &[]);
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n2", web("a"))],
    );
    let s = scores_of(&web("x"), &snap, &only_service);
    assert!(s[0] > s[1], "{s:?}");
}
