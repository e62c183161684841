//! Node lifecycle, namespace termination and disruption budgets, against nodes registered
//! through the API ([`StandInNode`]s) with short controller periods: a node that stops
//! renewing its Lease goes Unknown and is tainted, its pods are evicted as their tolerations
//! say, and it recovers; a deleted namespace is emptied by the namespace controller with
//! upstream's conditions; `kubectl drain` evicts through a PodDisruptionBudget; the pod
//! garbage collector removes the pods of a deleted node and the oldest terminated pods.

use std::time::{Duration, Instant};

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::controllers::{StandInNode, pods_of, running};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn get(s: &Server, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(KUBECTL_NEW, &all);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap(),
                        t["effect"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A pod bound to `node` (no scheduler involved), with `tolerations` as YAML flow.
fn bound_pod(name: &str, node: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  tolerations: {tolerations}\n  containers: [{{name: c, image: docker.io/library/busybox:test}}]\n"
    )
}

fn gone(s: &Server, kind_name: &str) -> bool {
    !s.kubectl(KUBECTL_NEW, &["get", kind_name]).status.success()
}

#[test]
fn a_silent_node_goes_unknown_is_tainted_evicts_by_toleration_and_recovers() {
    let s = Server::start_with(&[
        "--node-monitor-period=1s",
        "--node-monitor-grace-period=4s",
        "--default-unreachable-toleration-seconds=0",
    ]);
    let node = StandInNode::start(&s, "node-a", 30);
    let quick = r#"[{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 6}]"#;
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &bound_pod("quick", "node-a", quick),
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &bound_pod("forever", "node-a", "[{operator: Exists}]"),
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &bound_pod("plain", "node-a", "[]"),
    );
    // DefaultTolerationSeconds used the configured unreachable period.
    let plain = get(&s, &["pod", "plain"]).unwrap();
    let tolerations = plain["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 0),
        "{tolerations:?}"
    );
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["tolerationSeconds"] == 300),
        "{tolerations:?}"
    );
    eventually(WAIT, || {
        ["quick", "forever", "plain"]
            .iter()
            .all(|p| get(&s, &["pod", p]).is_some_and(|p| p["status"]["phase"] == "Running"))
            .then_some(())
    })
    .expect("pods running");
    // Healthy while the lease is renewed, longer than the grace period.
    std::thread::sleep(Duration::from_secs(6));
    let n = get(&s, &["node", "node-a"]).unwrap();
    assert_eq!(condition(&n, "Ready")["status"], "True", "{n:#}");
    assert!(taint_keys(&n).is_empty(), "{n:#}");

    node.set_heartbeat(false);
    let silent = Instant::now();
    let n = eventually(WAIT, || {
        get(&s, &["node", "node-a"]).filter(|n| {
            taint_keys(n).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
        })
    })
    .expect("node tainted unreachable");
    let tainted_after = silent.elapsed();
    let ready = condition(&n, "Ready");
    assert_eq!(ready["status"], "Unknown", "{n:#}");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert!(
        taint_keys(&n).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{n:#}"
    );
    let tainted = Instant::now();
    // No toleration time: evicted at once.
    eventually(Duration::from_secs(5), || {
        gone(&s, "pod/plain").then_some(())
    })
    .expect("the pod without a lasting toleration is evicted at once");
    assert!(get(&s, &["pod", "quick"]).is_some(), "quick went too early");
    eventually(Duration::from_secs(20), || {
        gone(&s, "pod/quick").then_some(())
    })
    .expect("the pod tolerating 6 s is evicted");
    let quick_after = tainted.elapsed();
    assert!(
        quick_after >= Duration::from_secs(4),
        "evicted after {quick_after:?}"
    );
    assert!(
        get(&s, &["pod", "forever"]).is_some(),
        "forever was evicted"
    );
    let events = s.k(KUBECTL_NEW, &["get", "events", "-A"]);
    assert!(events.contains("NodeNotReady"), "{events}");
    assert!(events.contains("TaintManagerEviction"), "{events}");
    assert!(
        events.contains("Marking for deletion Pod default/quick"),
        "{events}"
    );

    node.set_heartbeat(true);
    let n = eventually(WAIT, || {
        get(&s, &["node", "node-a"]).filter(|n| taint_keys(n).is_empty())
    })
    .expect("taints removed after recovery");
    assert_eq!(condition(&n, "Ready")["status"], "True");
    assert!(get(&s, &["pod", "forever"]).is_some());
    eprintln!(
        "unreachable taint {tainted_after:?} after the last renewal (grace 4 s); 6 s toleration evicted after {quick_after:?}"
    );
}

#[test]
fn the_namespace_controller_empties_reports_and_finalizes() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "held"]);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: held, finalizers: [example.com/hold]}\n",
    );
    s.k(
        KUBECTL_NEW,
        &["create", "secret", "generic", "s", "-n", "held"],
    );
    s.k(
        KUBECTL_NEW,
        &["delete", "namespace", "held", "--wait=false"],
    );
    let ns = eventually(WAIT, || {
        get(&s, &["namespace", "held"]).filter(|n| {
            condition(n, "NamespaceFinalizersRemaining")["status"] == "True"
                && condition(n, "NamespaceContentRemaining")["message"]
                    == "Some resources are remaining: configmaps. has 1 resource instances"
        })
    })
    .expect("conditions reported");
    assert_eq!(ns["status"]["phase"], "Terminating");
    let remaining = condition(&ns, "NamespaceContentRemaining");
    assert_eq!(remaining["reason"], "SomeResourcesRemain");
    assert_eq!(
        remaining["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    let fin = condition(&ns, "NamespaceFinalizersRemaining");
    assert_eq!(fin["reason"], "SomeFinalizersRemain");
    assert_eq!(
        fin["message"],
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure")["reason"],
        "ResourcesDiscovered"
    );
    assert_eq!(ns["spec"]["finalizers"][0], "kubernetes");
    assert!(
        get(&s, &["secret", "s", "-n", "held"]).is_none(),
        "secret not deleted"
    );
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "configmap",
            "kept",
            "-n",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    eventually(WAIT, || gone(&s, "namespace/held").then_some(())).expect("namespace deleted");
}

#[test]
fn without_the_controller_manager_a_deleted_namespace_stays_terminating() {
    let s = Server::start_with(&["--disable-controller-manager"]);
    s.k(KUBECTL_NEW, &["create", "namespace", "stuck"]);
    s.k(KUBECTL_NEW, &["create", "configmap", "c", "-n", "stuck"]);
    s.k(
        KUBECTL_NEW,
        &["delete", "namespace", "stuck", "--wait=false"],
    );
    std::thread::sleep(Duration::from_secs(3));
    let ns = get(&s, &["namespace", "stuck"]).expect("still there");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(get(&s, &["configmap", "c", "-n", "stuck"]).is_some());
    // Finalizing by hand (what the controller does) lets the API server delete it.
    let mut body = ns.clone();
    body["spec"]["finalizers"] = serde_json::json!([]);
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &[
            "replace",
            "--raw",
            "/api/v1/namespaces/stuck/finalize",
            "-f",
            "-",
        ],
        &body.to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(WAIT, || gone(&s, "namespace/stuck").then_some(())).expect("namespace deleted");
}

fn pdb(s: &Server) -> Value {
    get(s, &["pdb", "web"]).unwrap()
}

#[test]
fn evictions_respect_disruption_budgets_and_kubectl_drain_works() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 31);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "web",
            "--image=docker.io/library/busybox:test",
            "--replicas=2",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "pdb",
            "web",
            "--selector=app=web",
            "--min-available=100%",
        ],
    );
    let p = eventually(WAIT, || {
        Some(pdb(&s))
            .filter(|p| p["status"]["expectedPods"] == 2 && p["status"]["currentHealthy"] == 2)
    })
    .expect("pdb status");
    assert_eq!(p["status"]["desiredHealthy"], 2);
    assert_eq!(p["status"]["disruptionsAllowed"], 0);
    assert_eq!(
        p["status"]["observedGeneration"],
        p["metadata"]["generation"]
    );
    let allowed = condition(&p, "DisruptionAllowed");
    assert_eq!(allowed["status"], "False");
    assert_eq!(allowed["reason"], "InsufficientPods");

    let pods = get(&s, &["pods", "-l", "app=web"]).unwrap();
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(s.client_without_retry());
    let api: Api<Pod> = Api::namespaced(client, "default");
    let err = rt
        .block_on(api.evict(&victim, &EvictParams::default()))
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 429, "{status:?}");
    assert_eq!(status.reason, "TooManyRequests");
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.first())
        .cloned()
        .unwrap();
    assert_eq!(cause.reason, "DisruptionBudget");
    assert_eq!(
        cause.message,
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );

    // Two budgets over one pod: upstream refuses with an internal error.
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "pdb",
            "web2",
            "--selector=app=web",
            "--max-unavailable=1",
        ],
    );
    let err = rt
        .block_on(api.evict(&victim, &EvictParams::default()))
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status.message.contains("more than one PodDisruptionBudget"),
        "{status:?}"
    );
    s.k(KUBECTL_NEW, &["delete", "pdb", "web2"]);

    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":1}}"#,
        ],
    );
    eventually(WAIT, || {
        Some(pdb(&s)).filter(|p| {
            p["status"]["disruptionsAllowed"] == 1
                && p["status"]["observedGeneration"] == p["metadata"]["generation"]
                && condition(p, "DisruptionAllowed")["reason"] == "SufficientPods"
        })
    })
    .expect("one disruption allowed");

    let _b = StandInNode::start(&s, "node-b", 32);
    let started = Instant::now();
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "drain",
            "node-a",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let drained_in = started.elapsed();
    assert!(stdout.contains("node/node-a cordoned"), "{stdout}");
    assert!(stdout.contains("evicted"), "{stdout}");
    assert!(stdout.contains("node/node-a drained"), "{stdout}");
    // The second eviction had to wait for the first pod's replacement.
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    let node = get(&s, &["node", "node-a"]).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    eventually(WAIT, || {
        get(&s, &["node", "node-a"]).filter(|n| {
            taint_keys(n).contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string())
        })
    })
    .expect("cordoned node tainted unschedulable");
    let pods = eventually(WAIT, || {
        get(&s, &["pods", "-l", "app=web"]).filter(|p| {
            let items = p["items"].as_array().unwrap();
            items.len() == 2
                && items
                    .iter()
                    .all(|p| p["spec"]["nodeName"] == "node-b" && p["status"]["phase"] == "Running")
        })
    });
    assert!(pods.is_some(), "pods moved to node-b");
    eventually(WAIT, || {
        Some(pdb(&s)).filter(|p| {
            p["status"]["currentHealthy"] == 2 && p["status"]["disruptedPods"].is_null()
        })
    })
    .expect("budget healthy again, no pending disruptions");
    eprintln!("kubectl drain of 2 pods under minAvailable=1 took {drained_in:?}");
}

#[test]
fn pods_of_a_deleted_node_and_old_terminated_pods_are_collected() {
    let s = Server::start_with(&[
        "--pod-gc-orphan-quarantine=2s",
        "--terminated-pod-gc-threshold=2",
    ]);
    let node = StandInNode::start(&s, "node-a", 23);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "web",
            "--image=docker.io/library/busybox:test",
            "--replicas=2",
        ],
    );
    let first = eventually(WAIT, || {
        let pods = pods_of(&s, "app=web");
        (running(&pods) == 2).then_some(pods)
    })
    .expect("two pods running on node-a");
    let uids: Vec<Value> = first.iter().map(|p| p["metadata"]["uid"].clone()).collect();
    // The node goes away for good: no kubelet is left to end its pods.
    drop(node);
    s.k(KUBECTL_NEW, &["delete", "node", "node-a"]);
    let replaced = eventually(WAIT, || {
        let pods = pods_of(&s, "app=web");
        let old_gone = pods.iter().all(|p| !uids.contains(&p["metadata"]["uid"]));
        (old_gone && pods.len() == 2).then_some(pods)
    })
    .unwrap_or_else(|| panic!("{}", s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])));
    for p in &replaced {
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
    }

    // Terminated pods beyond the threshold go, oldest first.
    for name in ["done-1", "done-2", "done-3"] {
        s.k_in(
            KUBECTL_NEW,
            &["apply", "-f", "-"],
            &format!(
                "{{apiVersion: v1, kind: Pod, metadata: {{name: {name}, labels: {{gc: done}}}}, spec: {{schedulerName: nobody, containers: [{{name: c, image: docker.io/library/busybox:test}}]}}}}"
            ),
        );
        s.k(
            KUBECTL_NEW,
            &[
                "patch",
                "pod",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Failed"}}"#,
            ],
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
    let kept = eventually(WAIT, || {
        let mut names: Vec<String> = pods_of(&s, "gc=done")
            .iter()
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        names.sort();
        (names.len() == 2).then_some(names)
    })
    .expect("the oldest terminated pod deleted");
    assert_eq!(kept, ["done-2", "done-3"]);
}
