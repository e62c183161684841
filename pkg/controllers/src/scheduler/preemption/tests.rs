use super::*;
use crate::scheduler::fit::tests::{merge, node, pod, requests, snapshot};
use serde_json::json;

fn prio(uid: &str, priority: i32, cpu: &str, labels: serde_json::Value) -> Pod {
    let mut p = requests(cpu, "1Mi");
    merge(
        &mut p,
        json!({"metadata": {"uid": uid, "name": uid, "labels": labels}, "spec": {"priority": priority}}),
    );
    pod(p)
}

fn fits_cpu(pod: &Pod) -> impl Fn(&Snapshot, usize) -> bool + '_ {
    move |s: &Snapshot, i: usize| {
        crate::scheduler::fit::filter(pod, &s.nodes[i].node, &s.nodes[i].usage).is_empty()
    }
}

fn victims(c: &Candidate) -> Vec<&str> {
    c.victims
        .iter()
        .map(|v| v.metadata.uid.as_deref().unwrap_or_default())
        .collect()
}

#[test]
fn lower_priority_pods_are_preempted_and_equal_ones_are_not() {
    let snap = snapshot(
        vec![node("n1", json!({}))],
        vec![("n1", prio("low", 0, "2", json!({})))],
    );
    let high = prio("high", 1000, "1", json!({}));
    let c = find(&high, &snap, &[true], &[], fits_cpu(&high)).expect("candidate");
    assert_eq!((c.node, victims(&c)), (0, vec!["low"]));
    let same = prio("same", 0, "1", json!({}));
    assert!(find(&same, &snap, &[true], &[], fits_cpu(&same)).is_none());
    // Not where preemption cannot help.
    assert!(find(&high, &snap, &[false], &[], fits_cpu(&high)).is_none());
}

#[test]
fn only_as_many_victims_as_needed_lowest_priority_first() {
    let snap = snapshot(
        vec![node("n1", json!({}))],
        vec![
            ("n1", prio("mid", 10, "1", json!({}))),
            ("n1", prio("low", 1, "1", json!({}))),
        ],
    );
    let high = prio("high", 1000, "1", json!({}));
    let c = find(&high, &snap, &[true], &[], fits_cpu(&high)).expect("candidate");
    assert_eq!(victims(&c), vec!["low"]);
}

#[test]
fn budgets_steer_preemption_to_unprotected_pods() {
    let snap = snapshot(
        vec![node("n1", json!({})), node("n2", json!({}))],
        vec![
            ("n1", prio("guarded", 0, "2", json!({"app": "db"}))),
            ("n2", prio("free", 5, "2", json!({"app": "batch"}))),
        ],
    );
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, "maxUnavailable": 0},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
    .unwrap();
    let high = prio("high", 1000, "1", json!({}));
    let c = find(
        &high,
        &snap,
        &[true, true],
        &[Arc::new(pdb)],
        fits_cpu(&high),
    )
    .expect("candidate");
    // The budget wins over the lower priority of the guarded pod.
    assert_eq!(
        (c.node, victims(&c), c.pdb_violations),
        (1, vec!["free"], 0)
    );
}

#[test]
fn preemption_policy_never_and_terminating_victims_make_a_pod_wait() {
    let snap = snapshot(vec![node("n1", json!({}))], vec![]);
    let mut never = prio("n", 1000, "1", json!({}));
    never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
    assert_eq!(
        ineligible(&never, &snap),
        Some("not eligible due to preemptionPolicy=Never.")
    );
    let mut leaving = prio("low", 0, "1", json!({}));
    leaving.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let snap = snapshot(vec![node("n1", json!({}))], vec![("n1", leaving)]);
    let mut nominated = prio("high", 1000, "1", json!({}));
    nominated.status = Some(k8s_openapi::api::core::v1::PodStatus {
        nominated_node_name: Some("n1".into()),
        ..Default::default()
    });
    assert!(ineligible(&nominated, &snap).is_some());
    assert!(ineligible(&prio("x", 1000, "1", json!({})), &snap).is_none());
}
