//! `cargo run --release -p kubox-bench -- schedule [NODES [PODS...]]`: how fast the scheduler
//! binds pods on a cluster of simulated nodes registered through the API (Ready, 8 CPUs,
//! 32 GiB, 110 pods each, Leases renewed so the node lifecycle controller keeps them Ready;
//! no containers run). For each round of PODS pods: the create rate (the baseline, measured in
//! the same run: the API alone), the bind rate (created to bound, the scheduler's
//! throughput), their ratio, and the resident memory of the process (server and client).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::rss_mib;

fn now() -> String {
    kubox_core::meta::now_rfc3339()
}

async fn register_nodes(client: &kube::Client, n: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for i in 0..n {
        let name = format!("sim-{i}");
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )?;
        nodes.create(&PostParams::default(), &node).await?;
        let status = json!({"status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": kubox_core::meta::now_micro_rfc3339()}}))?;
        leases.create(&PostParams::default(), &lease).await?;
    }
    Ok(())
}

/// Renews every simulated node's Lease every 5 s, as agents do every 10 s.
async fn renew(client: kube::Client, n: usize) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        for i in 0..n {
            let patch = json!({"spec": {"renewTime": kubox_core::meta::now_micro_rfc3339()}});
            let _ = leases
                .patch(
                    &format!("sim-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
    }
}

/// One round: create `count` pods named `<prefix>-<i>` with `concurrency` requests in flight;
/// returns (seconds to create all, seconds until all are bound).
async fn round(
    client: &kube::Client,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<(f64, f64)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Count bindings from a watch started before the first create.
    let bound = {
        let prefix = format!("{prefix}-");
        let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut stream = stream.boxed();
            while let Some(Ok(p)) = stream.next().await {
                let name = p.metadata.name.clone().unwrap_or_default();
                if name.starts_with(&prefix)
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                {
                    seen.insert(name);
                    if seen.len() == count {
                        return Instant::now();
                    }
                }
            }
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let created = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = created.clone().acquire_owned().await?;
        let pods = pods.clone();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{prefix}-{i}"), "labels": {"app": prefix}},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
        }))?;
        tasks.push(tokio::spawn(async move {
            let r = pods.create(&PostParams::default(), &pod).await;
            drop(permit);
            r
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_secs = start.elapsed().as_secs_f64();
    let done = tokio::time::timeout(Duration::from_secs(600), bound).await??;
    Ok((create_secs, done.duration_since(start).as_secs_f64()))
}

pub async fn run(
    client: kube::Client,
    nodes: usize,
    rounds: &[usize],
    concurrency: usize,
) -> Result<()> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sas.get_opt("default").await?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no default service account after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    register_nodes(&client, nodes).await?;
    println!(
        "registered {nodes} nodes in {:.1} s; RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        rss_mib("self")
    );
    let renewer = tokio::spawn(renew(client.clone(), nodes));
    println!(
        "{:>8} {:>14} {:>13} {:>16} {:>9}",
        "pods", "created pods/s", "bound pods/s", "bound/created", "RSS MiB"
    );
    for (r, &count) in rounds.iter().enumerate() {
        let (create, bind) = round(&client, &format!("r{r}"), count, concurrency).await?;
        let (c, b) = (count as f64 / create, count as f64 / bind);
        println!(
            "{count:>8} {c:>14.0} {b:>13.0} {:>16.2} {:>9.0}",
            b / c,
            rss_mib("self")
        );
    }
    renewer.abort();
    Ok(())
}
