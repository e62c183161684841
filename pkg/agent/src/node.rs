//! The Node object: registration (labels, taints, addresses, capacity, nodeInfo), status with
//! the Ready/MemoryPressure/DiskPressure/PIDPressure conditions, and the heartbeat Lease in
//! `kube-node-lease` renewed every 10 s.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubox_containerd::cri::Cri;
use serde_json::{Value, json};

use crate::AgentConfig;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const KUBELET_VERSION: &str = kubox_core::KUBE_GIT_VERSION;
use kubox_core::go_arch as arch;

/// Total memory in KiB from /proc/meminfo.
fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn disk_kib(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks() * s.fragment_size() / 1024)
        .unwrap_or(0)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The node's status (everything but conditions' readiness inputs).
pub fn status(
    cfg: &AgentConfig,
    ready: bool,
    why_not: &str,
    runtime_version: &str,
    previous: Option<&Node>,
) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_kib()),
        "pods": "110",
        "ephemeral-storage": format!("{}Ki", disk_kib(&cfg.data_dir)),
    });
    let now = kubox_core::meta::now_rfc3339();
    let since = |t: &str, status: &str| {
        previous
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == t && c.status == status))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| kubox_core::meta::format_time(t.0))
            .unwrap_or_else(|| now.clone())
    };
    let under = cfg
        .node
        .eviction_hard
        .evaluate(&crate::pressure::Filesystems {
            nodefs: cfg.data_dir.clone(),
            imagefs: cfg.data_dir.join("agent").join("containerd"),
        });
    // Upstream's reasons and messages, for the condition holding or not.
    let pressure = |t: &str, holds: bool, [ok_reason, ok_message, reason, message]: [&str; 4]| {
        let (status, reason, message) = if holds {
            ("True", reason, message)
        } else {
            ("False", ok_reason, ok_message)
        };
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since(t, status)})
    };
    let ready_status = if ready { "True" } else { "False" };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            pressure("MemoryPressure", under.memory, ["KubeletHasSufficientMemory", "kubelet has sufficient memory available", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"]),
            pressure("DiskPressure", under.disk, ["KubeletHasNoDiskPressure", "kubelet has no disk pressure", "KubeletHasDiskPressure", "kubelet has disk pressure"]),
            pressure("PIDPressure", under.pid, ["KubeletHasSufficientPID", "kubelet has sufficient PID available", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"]),
            {
                "type": "Ready",
                "status": ready_status,
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if ready { "kubelet is posting ready status".to_string() } else { why_not.to_string() },
                "lastHeartbeatTime": now,
                "lastTransitionTime": since("Ready", ready_status),
            },
        ],
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip.to_string()},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet.port}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "kernelVersion": kernel(),
            "osImage": os_image(),
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": arch(),
        },
    })
}

/// Creates the Node (or updates its labels and taints) and returns it.
pub async fn register(client: &Client, cfg: &AgentConfig) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = json!({
        "kubernetes.io/hostname": cfg.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch(),
    });
    for (k, v) in &cfg.node.labels {
        labels[k] = json!(v);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": {"taints": cfg.node.taints},
    });
    match nodes.get_opt(&cfg.node_name).await? {
        None => {
            let n: Node = serde_json::from_value(node).map_err(kube::Error::SerdeError)?;
            match nodes.create(&PostParams::default(), &n).await {
                Ok(n) => {
                    tracing::info!(node = %cfg.node_name, "registered node");
                    Ok(n)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => nodes.get(&cfg.node_name).await,
                Err(e) => Err(e),
            }
        }
        Some(_) => {
            let patch = json!({"metadata": {"labels": labels}});
            nodes
                .patch(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
        }
    }
}

/// Whether CRI's runtime and network are ready, with the upstream-style reason if not.
pub async fn runtime_ready(cri: &Cri) -> (bool, String) {
    match cri.ready().await {
        Ok((true, true, _)) => (true, String::new()),
        Ok((runtime, network, why)) => (
            false,
            format!(
                "container runtime {}not ready: {why}",
                if runtime && !network { "network " } else { "" }
            ),
        ),
        Err(e) => (false, format!("container runtime is down: {}", e.message())),
    }
}

/// Posts the node status now and then, and renews the node's Lease every 10 s.
pub async fn heartbeat(client: Client, cri: Cri, cfg: AgentConfig, runtime_version: String) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let mut last_ready: Option<bool> = None;
    let mut last_post = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        let (ready, why) = runtime_ready(&cri).await;
        // Readiness changes are posted at once; otherwise every 60 s (the lease is the
        // heartbeat), or when the stored Ready condition is not ours (the node lifecycle
        // controller set it Unknown while this agent was not heard from).
        let previous = nodes.get_opt(&cfg.node_name).await.ok().flatten();
        let stored_ready = previous
            .as_ref()
            .and_then(|n| n.status.as_ref()?.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True");
        if last_ready != Some(ready)
            || stored_ready != Some(ready)
            || last_post.elapsed() >= Duration::from_secs(60)
        {
            let st = status(&cfg, ready, &why, &runtime_version, previous.as_ref());
            match nodes
                .patch_status(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": st})),
                )
                .await
            {
                Ok(_) => {
                    if last_ready != Some(ready) {
                        tracing::info!(node = %cfg.node_name, ready, reason = %why, "node status");
                    }
                    last_ready = Some(ready);
                    last_post = std::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "posting node status failed"),
            }
        }
        if let Err(e) = renew_lease(&leases, &nodes, &cfg.node_name).await {
            tracing::debug!(error = %e, "renewing the node lease failed");
        }
        tokio::time::sleep(Duration::from_secs(if ready { 10 } else { 2 })).await;
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    nodes: &Api<Node>,
    name: &str,
) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    match leases.get_opt(name).await? {
        Some(_) => {
            let patch = json!({"spec": {"holderIdentity": name, "renewTime": now, "leaseDurationSeconds": 40}});
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        None => {
            let node = nodes.get(name).await?;
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid,
                }]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            }))
            .map_err(kube::Error::SerdeError)?;
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
