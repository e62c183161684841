use super::*;
use crate::scheduler::fit::tests::{node, pod, snapshot};
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
    let st = prepare(p, snap, &[]);
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
    let st = prepare(&ignore, &snap, &[]);
    assert_eq!(st.constraints[0].counts.get("b"), Some(&2));
}

#[test]
fn schedule_anyway_prefers_the_emptier_domain() {
    let snap = snapshot(
        vec![zoned("a1", "a"), zoned("b1", "b")],
        vec![("a1", web("w1"))],
    );
    let p = spread_pod(json!({"whenUnsatisfiable": "ScheduleAnyway"}));
    let st = prepare(&p, &snap, &[]);
    assert_eq!(filter(&st, &snap.nodes[0]), None);
    let raw: Vec<Option<f64>> = snap.nodes.iter().map(|n| score(&st, n)).collect();
    let s = normalize(&raw);
    assert!(s[1] > s[0], "{s:?}");
}

#[test]
fn pods_of_a_replicaset_spread_by_default() {
    let owned = |uid: &str| {
        pod(
            json!({"metadata": {"uid": uid, "labels": {"app": "web"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]}}),
        )
    };
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n1", owned("a")), ("n1", owned("b"))],
    );
    let st = prepare(&owned("c"), &snap, &[]);
    assert!(scores(&st));
    let raw: Vec<Option<f64>> = snap.nodes.iter().map(|n| score(&st, n)).collect();
    let s = normalize(&raw);
    assert!(s[1] > s[0], "{s:?}");
    // A bare pod no Service selects has no default constraints.
    assert!(!scores(&prepare(&web("x"), &snap, &[])));
    // One a Service selects does.
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}}}))
        .unwrap();
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n2", web("a"))],
    );
    let st = prepare(&web("x"), &snap, &[Arc::new(svc)]);
    let raw: Vec<Option<f64>> = snap.nodes.iter().map(|n| score(&st, n)).collect();
    let s = normalize(&raw);
    assert!(s[0] > s[1], "{s:?}");
}
