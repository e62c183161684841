//! The scheduler's pod affinity, anti-affinity, topology spread and preemption, with kubectl
//! against nodes registered through the API alone ([`StandInNode`]).
use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::controllers::{StandInNode, WAIT, json, pods_of};
use serde_json::Value;

/// The pod's PodScheduled condition, if it has one.
fn scheduled_condition(s: &Server, pod: &str) -> Option<Value> {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned())
}

/// Live (not terminating) pods of `selector` per node name; unbound ones under "".
fn placement(s: &Server, selector: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pods_of(s, selector)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until `count` pods match `selector` and every one is bound: (node, pod) pairs.
fn all_placed(s: &Server, selector: &str, count: usize) -> Vec<(String, String)> {
    eventually(WAIT, || {
        let p = placement(s, selector);
        (p.len() == count && p.iter().all(|(n, _)| !n.is_empty())).then_some(p)
    })
    .unwrap_or_else(|| panic!("{}", s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])))
}

fn deployment(name: &str, replicas: u32, spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: docker.io/library/busybox:test}}]
{spec_extra}
"#
    )
}

#[test]
fn anti_affinity_spreads_replicas_and_leaves_the_extra_one_pending() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 31);
    let _b = StandInNode::start(&s, "node-b", 32);
    let anti = r#"      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname"#;
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &deployment("web", 3, anti),
    );
    let placed = eventually(WAIT, || {
        let p = placement(&s, "app=web");
        (p.len() == 3 && p.iter().filter(|(n, _)| !n.is_empty()).count() == 2).then_some(p)
    })
    .unwrap_or_else(|| panic!("{}", s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])));
    assert_eq!(placed[0].0, "", "one replica stays pending: {placed:?}");
    assert_eq!(
        (placed[1].0.as_str(), placed[2].0.as_str()),
        ("node-a", "node-b"),
        "one replica per node"
    );
    let pending = placed[0].1.clone();
    let want = "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. \
                preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod..";
    let cond = eventually(WAIT, || {
        scheduled_condition(&s, &pending).filter(|c| c["message"] == want)
    });
    assert!(cond.is_some(), "{:?}", scheduled_condition(&s, &pending));
    assert_eq!(cond.unwrap()["reason"], "Unschedulable");
    let described = s.k(KUBECTL_OLD, &["describe", "pod", &pending]);
    assert!(
        described.contains("FailedScheduling")
            && described.contains("didn't match pod anti-affinity rules"),
        "{described}"
    );
    // A third node takes it.
    let _c = StandInNode::start(&s, "node-c", 33);
    let bound = eventually(WAIT, || {
        let p = placement(&s, "app=web");
        p.iter()
            .find(|(_, name)| *name == pending)
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, _)| n.clone())
    });
    assert_eq!(bound.as_deref(), Some("node-c"));
}

#[test]
fn pod_affinity_co_locates_and_waits_for_its_target() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 34);
    let _b = StandInNode::start(&s, "node-b", 35);
    let _c = StandInNode::start(&s, "node-c", 36);
    assert!(s.default_service_account_within("default", WAIT));
    let affine = r#"      affinity:
        podAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: cache}}
            topologyKey: kubernetes.io/hostname"#;
    // Nothing to be near yet: pending, and preemption cannot help.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &deployment("web", 2, affine),
    );
    let want = "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
                preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let first = eventually(WAIT, || {
        let p = placement(&s, "app=web");
        (p.len() == 2).then(|| p[0].1.clone())
    })
    .expect("web pods");
    let cond = eventually(WAIT, || {
        scheduled_condition(&s, &first).filter(|c| c["message"] == want)
    });
    assert!(cond.is_some(), "{:?}", scheduled_condition(&s, &first));
    // The cache pod lands on node-b; both web replicas follow it there.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: cache, labels: {app: cache}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-b}
  containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    let nodes = eventually(WAIT, || {
        let p = placement(&s, "app=web");
        (p.len() == 2 && p.iter().all(|(n, _)| !n.is_empty()))
            .then(|| p.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
    });
    assert_eq!(
        nodes,
        Some(vec!["node-b".to_string(), "node-b".to_string()])
    );
}

#[test]
fn topology_spread_with_max_skew_one_balances_zones() {
    let s = Server::start();
    let _a1 = StandInNode::start(&s, "a1", 37);
    let _a2 = StandInNode::start(&s, "a2", 38);
    let _b1 = StandInNode::start(&s, "b1", 39);
    for (node, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        s.k(
            KUBECTL_NEW,
            &[
                "label",
                "node",
                node,
                &format!("topology.kubernetes.io/zone={zone}"),
            ],
        );
    }
    let spread = r#"      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: web}}"#;
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &deployment("web", 4, spread),
    );
    let placed = all_placed(&s, "app=web", 4);
    let in_b = placed.iter().filter(|(n, _)| n == "b1").count();
    assert_eq!(in_b, 2, "two per zone: {placed:?}");
    // A fifth replica may go to either zone; a sixth must even them out again.
    s.k(KUBECTL_NEW, &["scale", "deployment", "web", "--replicas=6"]);
    let placed = all_placed(&s, "app=web", 6);
    let in_b = placed.iter().filter(|(n, _)| n == "b1").count();
    assert_eq!(in_b, 3, "three per zone: {placed:?}");
}

#[test]
fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_node() {
    let s = Server::start();
    let _node = StandInNode::start_with_cpu(&s, "node-a", 40, "4");
    assert!(s.default_service_account_within("default", WAIT));
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: polite}
value: 5000
preemptionPolicy: Never
---
apiVersion: v1
kind: Pod
metadata:
  name: low
  # Keeps the preempted pod visible until the test lets it go.
  finalizers: [example.com/hold]
spec:
  priorityClassName: low
  containers: [{name: c, image: docker.io/library/busybox:test, resources: {requests: {cpu: "3"}}}]
"#,
    );
    let running = |s: &Server, pod: &str| {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(p)
    };
    assert!(eventually(WAIT, || running(&s, "low")).is_some());
    // A pod that may not preempt waits, whatever its priority.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: polite}
spec:
  priorityClassName: polite
  containers: [{name: c, image: docker.io/library/busybox:test, resources: {requests: {cpu: "2"}}}]
"#,
    );
    let want = "0/1 nodes are available: 1 Insufficient cpu. \
                preemption: not eligible due to preemptionPolicy=Never.";
    let cond = eventually(WAIT, || {
        scheduled_condition(&s, "polite").filter(|c| c["message"] == want)
    });
    assert!(cond.is_some(), "{:?}", scheduled_condition(&s, "polite"));
    let polite = json(&s.k(KUBECTL_NEW, &["get", "pod", "polite", "-o", "json"]));
    assert_eq!(
        polite["spec"]["preemptionPolicy"], "Never",
        "from its class"
    );
    s.k(KUBECTL_NEW, &["delete", "pod", "polite", "--wait=false"]);
    // The high-priority pod nominates the node and its victim is marked and deleted.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: high}
spec:
  priorityClassName: high
  containers: [{name: c, image: docker.io/library/busybox:test, resources: {requests: {cpu: "2"}}}]
"#,
    );
    let victim = eventually(WAIT, || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "low", "-o", "json"]));
        (!p["metadata"]["deletionTimestamp"].is_null()).then_some(p)
    })
    .expect("the low-priority pod is deleted");
    let target = victim["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .unwrap_or_else(|| panic!("{victim}"));
    assert_eq!(target["status"], "True");
    assert_eq!(target["reason"], "PreemptionByScheduler");
    assert_eq!(
        target["message"],
        "default-scheduler: preempting to accommodate a higher priority pod"
    );
    let high = json(&s.k(KUBECTL_NEW, &["get", "pod", "high", "-o", "json"]));
    assert_eq!(high["status"]["nominatedNodeName"], "node-a");
    let uid = high["metadata"]["uid"].as_str().unwrap().to_string();
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=low,reason=Preempted",
            "-o",
            "json",
        ],
    );
    assert!(
        events.contains(&format!("Preempted by pod {uid} on node node-a")),
        "{events}"
    );
    // The cpu the victim leaves free (1 of 4) is not free for a lower-priority pod: the
    // nominated pod's request counts on its node.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: filler}
spec:
  containers: [{name: c, image: docker.io/library/busybox:test, resources: {requests: {cpu: "1"}}}]
"#,
    );
    let cond = eventually(WAIT, || scheduled_condition(&s, "filler"));
    assert!(
        cond.as_ref().is_some_and(|c| c["message"]
            .as_str()
            .unwrap_or("")
            .contains("Insufficient cpu")),
        "{cond:?}"
    );
    // Not bound while the victim still holds the cpu; bound once it is gone.
    std::thread::sleep(std::time::Duration::from_secs(1));
    for pod in ["high", "filler"] {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
        assert!(p["spec"]["nodeName"].is_null(), "{p}");
    }
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "pod",
            "low",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    assert!(eventually(WAIT, || running(&s, "high")).is_some());
    let high = json(&s.k(KUBECTL_NEW, &["get", "pod", "high", "-o", "json"]));
    assert_eq!(high["spec"]["nodeName"], "node-a");
    // Bound, the nomination is spent; the lower-priority pod takes the cpu left over.
    assert!(high["status"]["nominatedNodeName"].is_null(), "{high}");
    assert!(eventually(WAIT, || running(&s, "filler")).is_some());
}

/// Upstream's system default spreading (hostname maxSkew 3, ScheduleAnyway) over the pods the
/// Services and the controller selecting a pod select. Pods without requests tie on every
/// other score (the tie goes to the first node by name), so only spreading moves them.
#[test]
fn default_spreading_follows_services_and_controllers_selectors() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 41);
    let _b = StandInNode::start(&s, "node-b", 42);
    assert!(s.default_service_account_within("default", WAIT));
    let bare = |name: &str, app: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
             spec:\n  containers: [{{name: c, image: docker.io/library/busybox:test}}]\n---\n"
        )
    };
    // Pods nothing selects all take the tie's node.
    let mut docs = String::new();
    for i in 0..2 {
        docs.push_str(&bare(&format!("lone-{i}"), "lone"));
    }
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &docs);
    let lone = all_placed(&s, "app=lone", 2);
    assert!(lone.iter().all(|(n, _)| n == "node-a"), "{lone:?}");
    // A Deployment's replicas (their ReplicaSet's selector) spread over both nodes.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &deployment("web", 4, ""),
    );
    let web = all_placed(&s, "app=web", 4);
    let on_b = web.iter().filter(|(n, _)| n == "node-b").count();
    assert_eq!(on_b, 2, "{web:?}");
    // Pods without an owner that a Service selects spread too.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: solo}\n\
         spec: {selector: {app: solo}, ports: [{port: 80}]}\n",
    );
    let mut docs = String::new();
    for i in 0..4 {
        docs.push_str(&bare(&format!("solo-{i}"), "solo"));
    }
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &docs);
    let solo = all_placed(&s, "app=solo", 4);
    let on_b = solo.iter().filter(|(n, _)| n == "node-b").count();
    assert_eq!(on_b, 2, "{solo:?}");
}
