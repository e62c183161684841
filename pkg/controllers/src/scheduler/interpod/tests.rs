use super::*;
use crate::scheduler::fit::tests::{node, pod, snapshot};
use serde_json::json;

fn zoned(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
    node(
        name,
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
    )
}

fn labelled(uid: &str, ns: &str, labels: serde_json::Value) -> Pod {
    pod(json!({"metadata": {"uid": uid, "namespace": ns, "labels": labels}}))
}

fn with_affinity(uid: &str, labels: serde_json::Value, affinity: serde_json::Value) -> Pod {
    pod(json!({"metadata": {"uid": uid, "labels": labels}, "spec": {"affinity": affinity}}))
}

fn term(app: &str, key: &str) -> serde_json::Value {
    json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
}

fn verdicts(p: &Pod, snap: &Snapshot) -> Vec<Option<&'static str>> {
    let st = prepare(p, snap);
    snap.nodes.iter().map(|n| filter(&st, n)).collect()
}

#[test]
fn required_anti_affinity_keeps_replicas_apart() {
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n1", labelled("a", "default", json!({"app": "web"})))],
    );
    let p = with_affinity(
        "b",
        json!({"app": "web"}),
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
    );
    assert_eq!(verdicts(&p, &snap), vec![Some(ANTI_AFFINITY), None]);
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain() {
    let snap = snapshot(
        vec![
            zoned("n1", "a"),
            zoned("n2", "a"),
            zoned("n3", "b"),
            node("n4", json!({})),
        ],
        vec![("n1", labelled("db", "default", json!({"app": "db"})))],
    );
    let p = with_affinity(
        "web",
        json!({"app": "web"}),
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "topology.kubernetes.io/zone")]}}),
    );
    assert_eq!(
        verdicts(&p, &snap),
        vec![None, None, Some(AFFINITY), Some(AFFINITY)]
    );
    // A pod in another namespace does not count unless the term names it.
    let snap = snapshot(
        vec![zoned("n1", "a"), zoned("n3", "b")],
        vec![("n1", labelled("db", "other", json!({"app": "db"})))],
    );
    assert_eq!(verdicts(&p, &snap), vec![Some(AFFINITY), Some(AFFINITY)]);
    let mut t = term("db", "topology.kubernetes.io/zone");
    t["namespaceSelector"] = json!({});
    let everywhere = with_affinity(
        "web",
        json!({"app": "web"}),
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}),
    );
    assert_eq!(verdicts(&everywhere, &snap), vec![None, Some(AFFINITY)]);
}

#[test]
fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
    let snap = snapshot(vec![zoned("n1", "a"), node("n2", json!({}))], vec![]);
    let p = with_affinity(
        "w1",
        json!({"app": "web"}),
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "topology.kubernetes.io/zone")]}}),
    );
    // The node without the topology key still fails.
    assert_eq!(verdicts(&p, &snap), vec![None, Some(AFFINITY)]);
}

#[test]
fn existing_pods_required_anti_affinity_is_honoured() {
    let loner = with_affinity(
        "l",
        json!({"app": "loner"}),
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
    );
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n1", loner)],
    );
    let web = labelled("w", "default", json!({"app": "web"}));
    assert_eq!(
        verdicts(&web, &snap),
        vec![Some(EXISTING_ANTI_AFFINITY), None]
    );
    let other = labelled("o", "default", json!({"app": "other"}));
    assert_eq!(verdicts(&other, &snap), vec![None, None]);
}

#[test]
fn mismatch_label_keys_narrow_the_selector() {
    // Anti-affinity to pods of the same app but another tenant.
    let p = pod(
        json!({"metadata": {"uid": "p", "labels": {"app": "web", "tenant": "a"}},
        "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname",
            "mismatchLabelKeys": ["tenant"]}]}}}}),
    );
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![
            (
                "n1",
                labelled("x", "default", json!({"app": "web", "tenant": "a"})),
            ),
            (
                "n2",
                labelled("y", "default", json!({"app": "web", "tenant": "b"})),
            ),
        ],
    );
    assert_eq!(verdicts(&p, &snap), vec![None, Some(ANTI_AFFINITY)]);
}

#[test]
fn preferred_terms_score_both_ways() {
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n2", labelled("db", "default", json!({"app": "db"})))],
    );
    let p = with_affinity(
        "web",
        json!({"app": "web"}),
        json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": term("db", "kubernetes.io/hostname")}]}}),
    );
    let st = prepare(&p, &snap);
    assert!(scores(&st));
    assert_eq!(score(&st, &snap.nodes[0]), 0);
    assert_eq!(score(&st, &snap.nodes[1]), 50);
    // Symmetry: an existing pod preferring to avoid web pods lowers its node's score.
    let shy = with_affinity(
        "s",
        json!({"app": "shy"}),
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": term("web", "kubernetes.io/hostname")}]}}),
    );
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![("n1", shy)],
    );
    let st = prepare(&labelled("w", "default", json!({"app": "web"})), &snap);
    assert_eq!(score(&st, &snap.nodes[0]), -10);
    assert_eq!(score(&st, &snap.nodes[1]), 0);
}
