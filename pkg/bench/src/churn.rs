//! `kubox-bench churn [CYCLES [CONCURRENCY]]`: proof that pod churn leaks nothing. On a real
//! node ([`crate::node`]) CONCURRENCY workers run CYCLES create → Running → delete → gone
//! cycles of real pods (kubox's pause image as the container; every other pod without a
//! grace period, so the API deletes it before the agent has torn it down), then the bench
//! checks that what pods hold on a node is back to its baseline: IPAM lease files, host
//! veths, pod network namespaces, CRI sandboxes and containers, and the processes of the
//! node (containerd shims, zombies). Prints one line per resource and exits non-zero on a
//! leak.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kubox_containerd::cri::{Cri, api};
use serde_json::json;

use crate::node::Node;

/// What pods hold on a node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    leases: usize,
    veths: usize,
    netns: usize,
    sandboxes: usize,
    containers: usize,
    processes: usize,
}

impl Held {
    const NAMES: [&'static str; 6] = [
        "IPAM leases",
        "host veths",
        "pod netns",
        "CRI sandboxes",
        "CRI containers",
        "node processes",
    ];

    fn values(&self) -> [usize; 6] {
        [
            self.leases,
            self.veths,
            self.netns,
            self.sandboxes,
            self.containers,
            self.processes,
        ]
    }

    fn peak_with(&self, o: &Held) -> Held {
        Held {
            leases: self.leases.max(o.leases),
            veths: self.veths.max(o.veths),
            netns: self.netns.max(o.netns),
            sandboxes: self.sandboxes.max(o.sandboxes),
            containers: self.containers.max(o.containers),
            processes: self.processes.max(o.processes),
        }
    }
}

fn count_dir(dir: &std::path::Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| keep(n))
                .count()
        })
        .unwrap_or(0)
}

async fn held(node: &Node, cri: &Cri) -> Result<Held> {
    let leases = count_dir(&node.data_dir().join("agent/cni/ipam/kubox"), |n| {
        n.parse::<std::net::Ipv4Addr>().is_ok()
    });
    // The bench runs in the node's network namespace.
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .context("ip link")?;
    let veths = String::from_utf8_lossy(&out.stdout).lines().count();
    // /proc/PID/root resolves in that process's mount namespace: the node's /run/netns tmpfs.
    let init = node.init_pid().context("the node's PID 1 is gone")?;
    let netns = count_dir(
        std::path::Path::new(&format!("/proc/{init}/root/run/netns")),
        |_| true,
    );
    let mut rt = cri.runtime.clone();
    let sandboxes = rt
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items
        .len();
    let containers = rt
        .list_containers(api::ListContainersRequest { filter: None })
        .await?
        .into_inner()
        .containers
        .len();
    Ok(Held {
        leases,
        veths,
        netns,
        sandboxes,
        containers,
        processes: node.processes().len(),
    })
}

fn pod(i: usize) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("churn-{i}"), "labels": {"app": "churn"}},
        "spec": {
            "terminationGracePeriodSeconds": if i % 2 == 1 { 0 } else { 30 },
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": kubox_containerd::pause::PAUSE_IMAGE}],
        },
    }))?)
}

/// One cycle: create, wait Running with an IP, delete, wait gone. The pod's IP.
async fn cycle(pods: &Api<Pod>, i: usize) -> Result<String> {
    let name = format!("churn-{i}");
    pods.create(&PostParams::default(), &pod(i)?).await?;
    // Generous: on a loaded 2-core machine a cycle has taken 45 s.
    let deadline = Instant::now() + Duration::from_secs(300);
    let ip = loop {
        let p = pods.get(&name).await?;
        let st = p.status.unwrap_or_default();
        if st.phase.as_deref() == Some("Running")
            && let Some(ip) = st.pod_ip.as_ref().filter(|ip| !ip.is_empty())
        {
            break ip.clone();
        }
        if Instant::now() > deadline {
            bail!("{name} was not Running within 300 s: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pods.delete(&name, &DeleteParams::default()).await?;
    while pods.get_opt(&name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("{name} was not gone within 300 s of its creation");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ip)
}

pub async fn run(node: &Node, cycles: usize, concurrency: usize) -> Result<()> {
    let cri = Cri::connect(&node.containerd_socket())
        .await
        .context("connecting to the node's containerd")?;
    let base = held(node, &cri).await?;
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), "default");
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (pods, next) = (pods.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= cycles {
                    return Ok::<_, anyhow::Error>(done);
                }
                let t = Instant::now();
                let ip = cycle(&pods, i).await?;
                done.push((t.elapsed(), ip));
            }
        });
    }
    // Sample what the node holds while the workers run.
    let mut peak = base.clone();
    let mut results = Vec::with_capacity(cycles);
    let mut reported = 0;
    loop {
        tokio::select! {
            r = workers.join_next() => match r {
                Some(r) => results.extend(r??),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                peak = peak.peak_with(&held(node, &cri).await?);
                let started = next.load(Ordering::SeqCst).min(cycles);
                if started >= reported + cycles.div_ceil(10) {
                    reported = started;
                    println!(
                        "  {started:>6} cycles started after {:>6.1} s",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    let elapsed = start.elapsed();
    // Teardown may finish a moment after the last pod object is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = held(node, &cri).await?;
        if now == base || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut times: Vec<Duration> = results.iter().map(|(t, _)| *t).collect();
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, Duration::as_secs_f64)
    };
    let ips: BTreeSet<&str> = results.iter().map(|(_, ip)| ip.as_str()).collect();
    println!(
        "{} cycles in {:.1} s: {:.2} cycles/s; cycle (create → Running → deleted → gone) p50 {:.2} s, p90 {:.2} s, p99 {:.2} s; {} distinct pod IPs",
        results.len(),
        elapsed.as_secs_f64(),
        results.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        ips.len()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9}",
        "resource", "baseline", "peak", "after", "leaked"
    );
    let mut leaked = 0;
    for ((name, b), (p, a)) in Held::NAMES
        .iter()
        .zip(base.values())
        .zip(peak.values().into_iter().zip(after.values()))
    {
        let l = a.saturating_sub(b);
        leaked += l;
        println!("{name:<16} {b:>9} {p:>9} {a:>9} {l:>9}");
    }
    if after != base {
        bail!("the node holds more than before the churn (leaked {leaked})");
    }
    println!("no leaks: every resource is back to its baseline");
    Ok(())
}
