//! `cargo run --release -p kubox-bench -- podstart [PODS]` (root, containerd and runc
//! installed): pod start latency on a real node ([`crate::node`]: a `kubox server
//! --disable-agent` and a joined `kubox agent` in the bench's network namespace, the agent in
//! PID and mount namespaces of its own). Pods run kubox's pause image, which the agent imports
//! at start, so the image is present and nothing is pulled.
//!
//! Prints the idle resident memory of the agent process and of its containerd (separately),
//! then pod start latency — from the create request to the watch showing the pod `Running` —
//! as p50/p90/p99/max for PODS pods created one at a time (each after the previous one runs:
//! the unloaded latency) and for PODS pods created at once (8 requests in flight: a burst),
//! and the memory again with all those pods running (shims summed).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::ms;
use crate::node::Node;

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "podstart"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": kubox_containerd::pause::PAUSE_IMAGE}],
        },
    }))?)
}

/// Latencies of one round, by pod: from the create request to the pod seen Running.
struct Round {
    name: &'static str,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Round {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// Runs the benchmark on a node with a separate agent started from `kubox`.
pub async fn run(kubox: &Path, pods: usize) -> Result<()> {
    let t = Instant::now();
    let node = Node::start_with_separate_agent(kubox).await?;
    println!(
        "node Ready {:.1} s after the server started",
        t.elapsed().as_secs_f64()
    );
    measure(&node, kubox, pods)
        .await
        .map_err(|e| node.failed(e))
}

async fn measure(node: &Node, kubox: &Path, pods: usize) -> Result<()> {
    let client = node.client.clone();
    // Let start-up work (image import, first Lease, DNS) settle before measuring idle memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (agent, containerd, _, _) = node.memory(kubox);
    println!("idle RSS: agent {agent:.1} MiB, containerd {containerd:.1} MiB (no pods)");

    // One watch sees every pod reach Running; it reports each pod's first time once.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, mut running) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = {
        let stream = watcher(
            api.clone(),
            watcher::Config::default().labels("bench=podstart"),
        )
        .applied_objects();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut stream = stream.boxed();
            while let Some(Ok(p)) = stream.next().await {
                let name = p.metadata.name.clone().unwrap_or_default();
                let up = p.status.and_then(|s| s.phase).as_deref() == Some("Running");
                if up && seen.insert(name.clone()) && tx.send((name, Instant::now())).is_err() {
                    return;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rounds = Vec::new();

    // One at a time.
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(pods);
    for i in 0..pods {
        let name = format!("seq-{i}");
        let t = Instant::now();
        api.create(&PostParams::default(), &pod(&name)?).await?;
        let up = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some((n, at)) = running.recv().await {
                if n == name {
                    return Some(at);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .with_context(|| format!("pod {name} did not run within 120 s"))?;
        latencies.push(up.duration_since(t));
    }
    rounds.push(Round {
        name: "one at a time",
        latencies,
        elapsed: start.elapsed(),
    });

    // A burst: all created at once, 8 requests in flight.
    let start = Instant::now();
    let created: HashMap<String, Instant> = futures::stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("burst-{i}");
                let t = Instant::now();
                api.create(&PostParams::default(), &pod(&name)?).await?;
                Ok::<_, anyhow::Error>((name, t))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut latencies = Vec::with_capacity(pods);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while latencies.len() < pods {
        let (name, at) = tokio::time::timeout_at(deadline, running.recv())
            .await
            .ok()
            .flatten()
            .context("the burst's pods did not all run within 300 s")?;
        if let Some(t) = created.get(&name) {
            latencies.push(at.duration_since(*t));
        }
    }
    rounds.push(Round {
        name: "burst",
        latencies,
        elapsed: start.elapsed(),
    });
    watch.abort();

    println!(
        "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "pods created", "pods", "p50 ms", "p90 ms", "p99 ms", "max ms", "pods/s"
    );
    for r in &rounds {
        println!(
            "{:<14} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8.1}",
            r.name,
            r.latencies.len(),
            ms(r.pct(0.5)),
            ms(r.pct(0.9)),
            ms(r.pct(0.99)),
            ms(r.pct(1.0)),
            r.latencies.len() as f64 / r.elapsed.as_secs_f64(),
        );
    }
    let (agent, containerd, shims, n) = node.memory(kubox);
    println!(
        "RSS with {} pods running: agent {agent:.1} MiB, containerd {containerd:.1} MiB, {n} shims {shims:.1} MiB",
        2 * pods
    );
    Ok(())
}
