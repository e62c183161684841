//! `kubox-bench net [SECONDS]`: the Service proxy's cost against pod-to-pod traffic in the same
//! run. On a real node ([`crate::node`]) a server pod and a client pod run `tcpbench`
//! (`tcpbench.c`, built static with `cc` here and shipped as an image archive); the client
//! measures, against the server's pod IP (the baseline: bridged) and its ClusterIP (the
//! `ip kubox-proxy` nftables DNAT), TCP connections/s (connect, 1-byte request, answer,
//! close) and bulk throughput (one connection, 64 KiB writes), each for SECONDS, twice,
//! interleaved. Prints both figures and the ClusterIP/pod IP ratio.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;

use crate::node::Node;

const IMAGE: &str = "docker.io/kubox/tcpbench:bench";
const PORT: u16 = 5001;

/// Builds `tcpbench` (static) into `<data>/agent/images/tcpbench.tar`, an airgap archive.
pub fn prepare_image(data: &Path) -> Result<()> {
    let build = tempfile::tempdir()?;
    let src = build.path().join("tcpbench.c");
    std::fs::write(&src, include_str!("tcpbench.c"))?;
    let bin = build.path().join("tcpbench");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .context("running cc (the net bench needs gcc and libc6-dev)")?;
    anyhow::ensure!(
        out.status.success(),
        "building tcpbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = std::fs::read(&bin)?;
    let archive = kubox_containerd::pause::image_archive(
        IMAGE,
        &[("tcpbench", bin.as_slice(), 0o755)],
        json!({"Entrypoint": ["/tcpbench"], "WorkingDir": "/"}),
        "kubox-bench tcpbench (pkg/bench/src/tcpbench.c)",
    );
    let images = data.join("agent").join("images");
    std::fs::create_dir_all(&images)?;
    std::fs::write(images.join("tcpbench.tar"), archive)?;
    Ok(())
}

async fn wait_phase(pods: &Api<Pod>, name: &str, done: &[&str], within: Duration) -> Result<Pod> {
    let deadline = Instant::now() + within;
    loop {
        let p = pods.get(name).await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if done.contains(&phase.as_str()) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("pod {name} is {phase:?} after {within:?}: {:?}", p.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(node: &Node, seconds: u32) -> Result<()> {
    let client = node.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client, "default");
    let server: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tcpserver", "labels": {"app": "tcpserver"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{
            "name": "serve", "image": IMAGE, "args": ["serve", PORT.to_string()],
            "ports": [{"containerPort": PORT}],
        }]},
    }))?;
    pods.create(&PostParams::default(), &server).await?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "tcpserver"},
        "spec": {"selector": {"app": "tcpserver"}, "ports": [{"port": PORT, "targetPort": PORT}]},
    }))?;
    let service = services.create(&PostParams::default(), &service).await?;
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?;
    let server = wait_phase(&pods, "tcpserver", &["Running"], Duration::from_secs(120)).await?;
    let pod_ip = server
        .status
        .and_then(|s| s.pod_ip)
        .context("the server pod has no IP")?;
    // The client waits (up to 60 s) until both addresses answer: the proxy's rules follow the
    // EndpointSlice.
    let client_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "tcpclient"},
        "spec": {"automountServiceAccountToken": false, "restartPolicy": "Never", "containers": [{
            "name": "run", "image": IMAGE,
            "args": ["run", seconds.to_string(), PORT.to_string(),
                     "podip", pod_ip, "clusterip", cluster_ip],
        }]},
    }))?;
    pods.create(&PostParams::default(), &client_pod).await?;
    let within = Duration::from_secs(180 + 8 * u64::from(seconds));
    let finished = wait_phase(&pods, "tcpclient", &["Succeeded", "Failed"], within).await?;
    let logs = pods
        .logs("tcpclient", &LogParams::default())
        .await
        .context("reading the client's log")?;
    let phase = finished.status.and_then(|s| s.phase).unwrap_or_default();
    if phase != "Succeeded" {
        bail!("the client pod failed:\n{logs}");
    }
    // (label, kind) → (count, seconds), summed over the rounds.
    let mut sums: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for line in logs.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["RESULT", label, kind, count, secs] = f.as_slice() {
            let e = sums
                .entry((label.to_string(), kind.to_string()))
                .or_default();
            e.0 += count.parse::<f64>().context("a RESULT count")?;
            e.1 += secs.parse::<f64>().context("a RESULT duration")?;
        }
    }
    let rate = |label: &str, kind: &str| -> Result<f64> {
        let (n, s) = sums
            .get(&(label.to_string(), kind.to_string()))
            .with_context(|| format!("no {kind} result for {label} in:\n{logs}"))?;
        Ok(n / s)
    };
    let (crr_pod, crr_svc) = (rate("podip", "crr")?, rate("clusterip", "crr")?);
    let mib = 1024.0 * 1024.0;
    let (bulk_pod, bulk_svc) = (
        rate("podip", "bulk")? / mib,
        rate("clusterip", "bulk")? / mib,
    );
    println!(
        "{:<34} {:>14} {:>16}",
        "client pod → server pod", "connections/s", "throughput MiB/s"
    );
    println!(
        "{:<34} {crr_pod:>14.0} {bulk_pod:>16.0}",
        "pod IP (bridge, baseline)"
    );
    println!(
        "{:<34} {crr_svc:>14.0} {bulk_svc:>16.0}",
        "ClusterIP (nftables DNAT)"
    );
    println!(
        "{:<34} {:>14.3} {:>16.3}",
        "ClusterIP / pod IP",
        crr_svc / crr_pod,
        bulk_svc / bulk_pod
    );
    Ok(())
}
