use super::*;
use serde_json::json;

/// A snapshot of `nodes` with `placed` pods (node name, pod).
pub(crate) fn snapshot(
    nodes: Vec<Node>,
    placed: Vec<(&str, Pod)>,
) -> super::super::cluster::Snapshot {
    let mut s = super::super::cluster::Snapshot::new(nodes.into_iter().map(std::sync::Arc::new));
    for (n, p) in placed {
        s.place(n, std::sync::Arc::new(p));
    }
    s
}

pub(crate) fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut n = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "10Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut n, extra);
    serde_json::from_value(n).expect("node")
}

pub(crate) fn pod(extra: serde_json::Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "image": "busybox:test"}]},
    });
    merge(&mut p, extra);
    serde_json::from_value(p).expect("pod")
}

pub(crate) fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub(crate) fn requests(cpu: &str, mem: &str) -> serde_json::Value {
    json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
}

#[test]
fn a_plain_pod_fits_a_ready_node() {
    assert!(
        filter(
            &pod(json!({})),
            &node("n1", json!({})),
            &NodeUsage::default()
        )
        .is_empty()
    );
}

#[test]
fn requests_beyond_allocatable_say_insufficient_cpu() {
    let p = pod(requests("3", "1Mi"));
    let reasons = filter(&p, &node("n1", json!({})), &NodeUsage::default());
    assert_eq!(reasons, vec!["Insufficient cpu".to_string()]);
    assert_eq!(
        unschedulable_message(1, &[reasons]),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
}

#[test]
fn requests_add_up_across_pods_on_a_node() {
    let n = node("n1", json!({}));
    let mut usage = NodeUsage::default();
    usage.add_pod(&pod(requests("1500m", "1Gi")));
    assert!(filter(&pod(requests("500m", "1Gi")), &n, &usage).is_empty());
    assert_eq!(
        filter(&pod(requests("600m", "1Gi")), &n, &usage),
        vec!["Insufficient cpu".to_string()]
    );
}

#[test]
fn cordoned_not_ready_and_tainted_nodes_are_refused_unless_tolerated() {
    let p = pod(json!({}));
    let cordoned = node("n1", json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        filter(&p, &cordoned, &NodeUsage::default()),
        vec!["node(s) were unschedulable".to_string()]
    );
    let not_ready = node(
        "n2",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(
        filter(&p, &not_ready, &NodeUsage::default()),
        vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string()]
    );
    let tainted = node(
        "n3",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(filter(&p, &tainted, &NodeUsage::default()).len(), 1);
    let tolerant = pod(
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}),
    );
    assert!(filter(&tolerant, &tainted, &NodeUsage::default()).is_empty());
    let exists_all = pod(json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
    assert!(filter(&exists_all, &tainted, &NodeUsage::default()).is_empty());
}

#[test]
fn node_selector_and_required_affinity_filter_nodes() {
    let n = node(
        "n1",
        json!({"metadata": {"labels": {"disk": "ssd", "gen": "5"}}}),
    );
    let want_hdd = pod(json!({"spec": {"nodeSelector": {"disk": "hdd"}}}));
    assert_eq!(
        filter(&want_hdd, &n, &NodeUsage::default()),
        vec!["node(s) didn't match Pod's node affinity/selector".to_string()]
    );
    let affinity = |op: &str, values: serde_json::Value| {
        pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": op, "values": values}]}]
            }}}}}),
        )
    };
    assert!(filter(&affinity("Gt", json!(["4"])), &n, &NodeUsage::default()).is_empty());
    assert_eq!(
        filter(&affinity("Lt", json!(["4"])), &n, &NodeUsage::default()).len(),
        1
    );
    assert!(
        filter(
            &affinity("In", json!(["5", "6"])),
            &n,
            &NodeUsage::default()
        )
        .is_empty()
    );
    assert_eq!(
        filter(&affinity("NotIn", json!(["5"])), &n, &NodeUsage::default()).len(),
        1
    );
}

#[test]
fn host_ports_conflict_on_the_same_protocol_and_port() {
    let with_port = |port: i32| {
        pod(
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": port}]}]}}),
        )
    };
    let mut usage = NodeUsage::default();
    usage.add_pod(&with_port(8080));
    let n = node("n1", json!({}));
    assert_eq!(filter(&with_port(8080), &n, &usage).len(), 1);
    assert!(filter(&with_port(8081), &n, &usage).is_empty());
}

#[test]
fn the_emptier_node_scores_higher() {
    let p = pod(json!({}));
    let n = node("n1", json!({}));
    let mut busy = NodeUsage::default();
    busy.add_pod(&pod(requests("1", "2Gi")));
    assert!(score(&p, &n, &NodeUsage::default()) > score(&p, &n, &busy));
}

#[test]
fn preemption_message_counts_nodes_like_upstream() {
    assert_eq!(
        preemption_message(&[true, false, false]),
        "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod., 2 Preemption is not helpful for scheduling."
    );
    assert!(!unresolvable("Insufficient cpu"));
    assert!(!unresolvable(super::super::interpod::ANTI_AFFINITY));
    assert!(unresolvable(super::super::interpod::AFFINITY));
    assert!(unresolvable(
        "node(s) didn't match Pod's node affinity/selector"
    ));
}

#[test]
fn reasons_are_counted_and_sorted_like_upstream() {
    let msg = unschedulable_message(
        3,
        &[
            vec!["node(s) were unschedulable".into()],
            vec!["Insufficient cpu".into()],
            vec!["node(s) were unschedulable".into()],
        ],
    );
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were unschedulable."
    );
    assert_eq!(
        unschedulable_message(0, &[]),
        "no nodes available to schedule pods"
    );
}

#[test]
fn init_containers_and_limits_count_toward_requests() {
    let p = pod(json!({"spec": {
        "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
        "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "300m"}}}],
    }}));
    assert_eq!(pod_requests(&p).cpu, 1000);
}
