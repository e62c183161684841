//! The scheduler and controllers with kubectl: Deployments converge, scale, roll out and roll
//! back; killed pods are replaced; Services get Endpoints and EndpointSlices; unschedulable
//! pods say why; namespaces get their defaults; deletion cascades (background, foreground,
//! orphan).
//!
//! No containers run here: a [`StandInNode`] plays the node agent's part of the API (a Ready
//! Node; bound pods reported Running/Ready with an IP, or Succeeded when they do not restart;
//! graceful deletions finished), exactly the calls a kubelet makes. Real pods are the node
//! agent's tests.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub(crate) struct StandInNode {
    stop: Arc<AtomicBool>,
    /// Whether the node's Lease is renewed (the kubelet's heartbeat); see [`Self::set_heartbeat`].
    heartbeat: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandInNode {
    /// Registers node `name` (4 cpu, 8Gi, 110 pods, Ready) and starts answering for its pods
    /// and renewing its Lease every second.
    pub(crate) fn start(s: &Server, name: &str, subnet: u8) -> StandInNode {
        StandInNode::start_with_cpu(s, name, subnet, "4")
    }

    pub(crate) fn start_with_cpu(s: &Server, name: &str, subnet: u8, cpu: &str) -> StandInNode {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(s.client());
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(AtomicBool::new(true));
        let (node, flag, beat) = (name.to_string(), stop.clone(), heartbeat.clone());
        rt.block_on(register(&client, &node, cpu));
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let mut next_ip = 2u8;
                let mut last_beat: Option<std::time::Instant> = None;
                while !flag.load(Ordering::Relaxed) {
                    if beat.load(Ordering::Relaxed)
                        && last_beat.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        let _ = renew(&client, &node).await;
                        last_beat = Some(std::time::Instant::now());
                    }
                    let _ = tend(&client, &node, subnet, &mut next_ip).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            })
        });
        StandInNode {
            stop,
            heartbeat,
            thread: Some(thread),
        }
    }

    /// Stops (false) or resumes (true) the node's heartbeat; pods are still tended.
    pub(crate) fn set_heartbeat(&self, on: bool) {
        self.heartbeat.store(on, Ordering::Relaxed);
    }
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The kubelet's heartbeat: renews the node's Lease, and posts Ready again when the stored
/// condition says otherwise (the node lifecycle controller marks silent nodes Unknown).
async fn renew(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = kubox_core::meta::now_micro_rfc3339();
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now});
    if leases.get_opt(name).await?.is_some() {
        leases
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await?;
    } else {
        let lease: Lease =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        leases.create(&PostParams::default(), &lease).await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(name).await?;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        let ts = kubox_core::meta::now_rfc3339();
        let status = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in node is ready",
             "lastHeartbeatTime": ts, "lastTransitionTime": ts}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

async fn register(client: &kube::Client, name: &str, cpu: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in node is ready",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// One pass of the kubelet's API duties for pods bound to `node` (start and Ready transition
/// at the real time, so `minReadySeconds` counts from it).
async fn tend(
    client: &kube::Client,
    node: &str,
    subnet: u8,
    next_ip: &mut u8,
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let pods = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for pod in pods.items {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams::default().grace_period(0);
            let _ = api.delete(&name, &dp).await;
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        // Pods that do not restart (Jobs') run to completion at once.
        let completes = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .is_some_and(|p| p != "Always");
        let phase = if completes { "Succeeded" } else { "Running" };
        if status.phase.as_deref() == Some(phase) {
            continue;
        }
        let ready = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("stand-in/ready"))
            .map(String::as_str)
            != Some("false");
        let ip = format!("10.42.{subnet}.{next_ip}");
        *next_ip = next_ip.wrapping_add(1).max(2);
        let now = kubox_core::meta::now_rfc3339();
        let r = if ready && !completes { "True" } else { "False" };
        let patch = json!({"status": {
            "phase": phase,
            "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": r, "lastTransitionTime": now},
                {"type": "Ready", "status": r, "lastTransitionTime": now},
            ],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

pub(crate) fn pods_of(s: &Server, selector: &str) -> Vec<Value> {
    let out = json(&s.k(KUBECTL_NEW, &["get", "pods", "-l", selector, "-o", "json"]));
    out["items"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

#[test]
fn a_deployment_converges_scales_rolls_out_rolls_back_and_heals() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 1);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "web",
            "--image=docker.io/library/busybox:test",
            "--replicas=3",
        ],
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_of(&s, "app=web");
    assert_eq!(running(&pods), 3, "{pods:#?}");
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "node-a");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True"),
        "{conds:?}"
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
        "{conds:?}"
    );

    // Scale.
    s.k(KUBECTL_OLD, &["scale", "deployment/web", "--replicas=5"]);
    s.k(
        KUBECTL_OLD,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(
        eventually(WAIT, || (running(&pods_of(&s, "app=web")) == 5)
            .then_some(()))
        .is_some()
    );

    // Roll out a new image, then roll back.
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "deployment/web",
            "busybox=docker.io/library/busybox:v2",
        ],
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let images = |s: &Server| -> Vec<String> {
        pods_of(s, "app=web")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert!(
        eventually(WAIT, || {
            let i = images(&s);
            (i.len() == 5 && i.iter().all(|i| i.ends_with(":v2"))).then_some(())
        })
        .is_some(),
        "{:?}",
        images(&s)
    );
    let rs = json(&s.k(
        KUBECTL_NEW,
        &["get", "replicasets", "-l", "app=web", "-o", "json"],
    ));
    assert_eq!(rs["items"].as_array().unwrap().len(), 2, "{rs}");
    let history = s.k(KUBECTL_NEW, &["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.k(KUBECTL_NEW, &["rollout", "undo", "deployment/web"]);
    s.k(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(
        eventually(WAIT, || {
            let i = images(&s);
            (i.len() == 5 && i.iter().all(|i| i.ends_with(":test"))).then_some(())
        })
        .is_some(),
        "{:?}",
        images(&s)
    );
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );

    // A deleted pod is replaced.
    let victim = pods_of(&s, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.k(KUBECTL_NEW, &["delete", "pod", &victim, "--wait=false"]);
    assert!(
        eventually(WAIT, || {
            let pods = pods_of(&s, "app=web");
            (running(&pods) == 5
                && !pods
                    .iter()
                    .any(|p| p["metadata"]["name"] == victim.as_str()))
            .then_some(())
        })
        .is_some()
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    s.k(KUBECTL_NEW, &["delete", "deployment", "web"]);
    assert!(
        eventually(WAIT, || {
            let rs = json(&s.k(
                KUBECTL_NEW,
                &["get", "replicasets", "-l", "app=web", "-o", "json"],
            ));
            (rs["items"].as_array().unwrap().is_empty() && pods_of(&s, "app=web").is_empty())
                .then_some(())
        })
        .is_some(),
        "left: {}",
        s.k(KUBECTL_NEW, &["get", "all"])
    );
}

#[test]
fn a_service_gets_endpoints_and_slices_of_its_pods() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 2);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: docker.io/library/busybox:test
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: slow, labels: {app: web, stand-in/ready: "false"}}
spec:
  containers:
  - name: web
    image: docker.io/library/busybox:test
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    let ep = eventually(WAIT, || {
        let ep = json(&s.k(KUBECTL_NEW, &["get", "endpoints", "web", "-o", "json"]));
        let ready = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
        let not_ready = ep["subsets"][0]["notReadyAddresses"]
            .as_array()
            .map_or(0, Vec::len);
        (ready == 2 && not_ready == 1).then_some(ep)
    })
    .unwrap_or_else(|| {
        panic!(
            "endpoints: {}",
            s.k(KUBECTL_NEW, &["get", "endpoints", "web", "-o", "yaml"])
        )
    });
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "http");
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["targetRef"]["name"],
        "slow"
    );
    let slices = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ],
    ));
    let slice = &slices["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8080);
    let endpoints = slice["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 3, "{slice}");
    assert_eq!(
        endpoints
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .count(),
        2
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    // kubectl describe shows the endpoints.
    let out = s.k(KUBECTL_OLD, &["describe", "service", "web"]);
    assert!(out.contains("10.42.2."), "{out}");

    // Scaling down removes addresses.
    s.k(KUBECTL_NEW, &["scale", "deployment/web", "--replicas=1"]);
    assert!(
        eventually(WAIT, || {
            let ep = json(&s.k(KUBECTL_NEW, &["get", "endpoints", "web", "-o", "json"]));
            (ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len) == 1).then_some(())
        })
        .is_some()
    );
}

#[test]
fn unschedulable_pods_say_why_and_schedule_when_a_node_fits() {
    let s = Server::start();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  containers:
  - name: c
    image: docker.io/library/busybox:test
    resources: {requests: {cpu: "3"}}
"#,
    );
    let reason = |s: &Server| {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "big", "-o", "json"]));
        p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned())
    };
    let cond = eventually(WAIT, || reason(&s)).expect("PodScheduled condition");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], "no nodes available to schedule pods");
    // A node too small: upstream's message, and an event kubectl describe shows.
    let _small = StandInNode::start_with_cpu(&s, "node-small", 3, "2");
    let cond = eventually(WAIT, || {
        reason(&s).filter(|c| {
            c["message"]
                == "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        })
    });
    assert!(cond.is_some(), "{:?}", reason(&s));
    let events = s.k(KUBECTL_OLD, &["describe", "pod", "big"]);
    assert!(
        events.contains("FailedScheduling") && events.contains("Insufficient cpu"),
        "{events}"
    );
    // A cordoned node is not used either; one that fits is.
    s.k(KUBECTL_NEW, &["cordon", "node-small"]);
    let _big = StandInNode::start(&s, "node-big", 4);
    let bound = eventually(WAIT, || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "big", "-o", "json"]));
        p["spec"]["nodeName"].as_str().map(str::to_string)
    });
    assert_eq!(bound.as_deref(), Some("node-big"));
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big",
            "-o",
            "json",
        ],
    );
    assert!(
        events.contains("Successfully assigned default/big to node-big"),
        "{events}"
    );
}

#[test]
fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "team-a"]);
    let cm = eventually(WAIT, || {
        let out = s.kubectl(
            KUBECTL_NEW,
            &[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                "team-a",
                "-o",
                "json",
            ],
        );
        out.status
            .success()
            .then(|| json(&String::from_utf8_lossy(&out.stdout)))
    })
    .expect("kube-root-ca.crt");
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt")).unwrap();
    assert_eq!(cm["data"]["ca.crt"].as_str().unwrap().trim(), ca.trim());
    assert!(s.default_service_account_within("team-a", WAIT));
    // Deleted, they come back.
    s.k(
        KUBECTL_NEW,
        &["delete", "serviceaccount", "default", "-n", "team-a"],
    );
    assert!(s.default_service_account_within("team-a", WAIT));
    for ns in ["default", "kube-system"] {
        assert!(
            eventually(WAIT, || s
                .kubectl(
                    KUBECTL_NEW,
                    &["get", "configmap", "kube-root-ca.crt", "-n", ns]
                )
                .status
                .success()
                .then_some(()))
            .is_some(),
            "{ns}"
        );
    }
}

#[test]
fn deletion_cascades_in_the_background_in_the_foreground_or_orphans() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 5);
    let rs = |name: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{set: {name}}}}}
  template:
    metadata: {{labels: {{set: {name}}}}}
    spec: {{containers: [{{name: c, image: docker.io/library/busybox:test}}]}}
"#
        )
    };
    for name in ["orphaned", "foreground"] {
        s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &rs(name));
        assert!(
            eventually(WAIT, || (running(&pods_of(&s, &format!("set={name}")))
                == 2)
                .then_some(()))
            .is_some(),
            "{name}"
        );
    }
    s.k(
        KUBECTL_NEW,
        &["delete", "replicaset", "orphaned", "--cascade=orphan"],
    );
    assert!(
        eventually(WAIT, || s
            .kubectl(KUBECTL_NEW, &["get", "replicaset", "orphaned"])
            .status
            .success()
            .then_some(())
            .xor(Some(())))
        .is_some()
    );
    let left = pods_of(&s, "set=orphaned");
    assert_eq!(left.len(), 2, "orphaned pods are kept");
    for p in &left {
        assert!(
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{p}"
        );
    }
    s.k(
        KUBECTL_OLD,
        &[
            "delete",
            "replicaset",
            "foreground",
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    assert!(
        eventually(WAIT, || {
            let gone = !s
                .kubectl(KUBECTL_NEW, &["get", "replicaset", "foreground"])
                .status
                .success();
            (gone && pods_of(&s, "set=foreground").is_empty()).then_some(())
        })
        .is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "rs,pods", "-o", "wide"])
    );
}

#[test]
fn a_daemonset_covers_every_eligible_node_and_rolls_out_updates() {
    let s = Server::start();
    let _a = StandInNode::start(&s, "node-a", 6);
    let _b = StandInNode::start(&s, "node-b", 7);
    let _c = StandInNode::start(&s, "node-c", 8);
    s.k(
        KUBECTL_NEW,
        &["taint", "node", "node-c", "dedicated=db:NoSchedule"],
    );
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
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes_of = |s: &Server| -> Vec<String> {
        let mut n: Vec<String> = pods_of(s, "app=agent")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        nodes_of(&s),
        vec!["node-a", "node-b"],
        "the tainted node gets no pod"
    );
    let ds = json(&s.k(KUBECTL_NEW, &["get", "daemonset", "agent", "-o", "json"]));
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2);
    assert_eq!(ds["status"]["numberReady"], 2);
    // Tolerating the taint brings node-c in; a new image rolls out to every node.
    s.k(
        KUBECTL_NEW,
        &["patch", "daemonset", "agent", "--type=merge", "-p",
          r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}],"containers":[{"name":"c","image":"docker.io/library/busybox:v2"}]}}}}"#],
    );
    let out = s.k(
        KUBECTL_OLD,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(
        eventually(WAIT, || {
            let pods = pods_of(&s, "app=agent");
            let live: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            (live.len() == 3
                && live
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == "docker.io/library/busybox:v2"))
            .then_some(())
        })
        .is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])
    );
    assert_eq!(nodes_of(&s), vec!["node-a", "node-b", "node-c"]);
}

#[test]
fn statefulset_pods_come_up_in_order_with_stable_names_and_claims() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 9);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    );
    assert!(out.contains("roll"), "{out}");
    let pods = pods_of(&s, "app=db");
    let mut by_name: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    by_name.sort();
    let names: Vec<&str> = by_name.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["db-0", "db-1", "db-2"]);
    assert!(
        by_name.windows(2).all(|w| w[0].1 <= w[1].1),
        "created in order: {by_name:?}"
    );
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(p["spec"]["hostname"], name);
        assert_eq!(p["spec"]["subdomain"], "db");
        let claim = p["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .map(|v| v["persistentVolumeClaim"]["claimName"].clone());
        assert_eq!(claim, Some(Value::from(format!("data-{name}"))));
    }
    let claims = s.k(KUBECTL_NEW, &["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(
            claims.contains(&format!("persistentvolumeclaim/data-db-{i}")),
            "{claims}"
        );
    }
    // Scaling down removes the highest ordinals; the claims stay.
    s.k(KUBECTL_NEW, &["scale", "statefulset/db", "--replicas=1"]);
    assert!(
        eventually(WAIT, || {
            let names: Vec<String> = pods_of(&s, "app=db")
                .iter()
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            (names == vec!["db-0".to_string()]).then_some(())
        })
        .is_some()
    );
    assert!(
        s.k(KUBECTL_NEW, &["get", "pvc", "-o", "name"])
            .contains("data-db-2")
    );
    // A template change rolls out.
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "statefulset/db",
            "c=docker.io/library/busybox:v2",
        ],
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "statefulset/db", "--timeout=60s"],
    );
    assert!(out.contains("roll"), "{out}");
    assert!(
        eventually(WAIT, || {
            let pods = pods_of(&s, "app=db");
            (pods.len() == 1
                && pods[0]["spec"]["containers"][0]["image"] == "docker.io/library/busybox:v2")
                .then_some(())
        })
        .is_some()
    );
}

#[test]
fn a_replication_controller_keeps_and_scales_its_pods() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 10);
    s.k_in(
        KUBECTL_OLD,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: c, image: docker.io/library/busybox:test}]}
"#,
    );
    assert!(
        eventually(WAIT, || (running(&pods_of(&s, "app=legacy")) == 2)
            .then_some(()))
        .is_some()
    );
    s.k(KUBECTL_NEW, &["scale", "rc/legacy", "--replicas=3"]);
    assert!(
        eventually(WAIT, || (running(&pods_of(&s, "app=legacy")) == 3)
            .then_some(()))
        .is_some()
    );
    let rc = eventually(WAIT, || {
        let rc = json(&s.k(KUBECTL_NEW, &["get", "rc", "legacy", "-o", "json"]));
        (rc["status"]["readyReplicas"] == 3).then_some(rc)
    });
    assert!(
        rc.is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "rc", "legacy", "-o", "yaml"])
    );
}
