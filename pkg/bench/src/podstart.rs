//! `cargo run --release -p kubox-bench -- podstart [PODS] [--kubox PATH]` (root, containerd and
//! runc installed): pod start latency on a real node. Starts the `kubox` binary (by default
//! the one next to this program, so build it first: `cargo build --release --bin kubox`) as
//! a server without agent and a joined `kubox agent`, each in PID and mount namespaces of its
//! own, both in a network namespace this program creates and deletes (the node's bridge,
//! routes and nftables never touch the host). Pods run kubox's pause image, which the agent
//! imports at start, so the image is present and nothing is pulled.
//!
//! Prints the idle resident memory of the agent process and of its containerd (separately),
//! then pod start latency — from the create request to the watch showing the pod `Running` —
//! as p50/p90/p99/max for PODS pods created one at a time (each after the previous one runs:
//! the unloaded latency) and for PODS pods created at once (8 requests in flight: a burst),
//! and the memory again with all those pods running (shims summed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::{ms, rss_mib};

const NODE: &str = "bench-node";

/// The processes of the benchmark's node; everything is killed and the network namespace
/// deleted on drop.
struct Cluster {
    dir: tempfile::TempDir,
    netns: String,
    kubox: PathBuf,
    server: Option<Child>,
    /// `unshare`, whose child (the PID namespace's init) runs `kubox agent`.
    agent: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Killing `unshare` kills its child (`--kill-child`), the PID namespace's init, and
        // so every process of the namespace: agent, containerd, shims, containers.
        for c in [self.agent.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

impl Cluster {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn port() -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    fn start(kubox: &Path) -> Result<(Cluster, u16)> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("config.yaml"), "")?;
        let netns = format!("kubox-bench-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &netns]).status()?;
        anyhow::ensure!(
            ok.success(),
            "ip netns add {netns} failed (podstart needs root)"
        );
        let mut cluster = Cluster {
            dir,
            netns,
            kubox: kubox.to_path_buf(),
            server: None,
            agent: None,
        };
        let _ = Command::new("ip")
            .args(["-n", &cluster.netns, "link", "set", "lo", "up"])
            .status();
        let port = Self::port()?;
        let log = std::fs::File::create(cluster.path("server.log"))?;
        let server = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", cluster.netns))
            .arg(kubox)
            .args(["server", "--disable-agent", "--log-level", "warn"])
            .args(["--bind-address", "127.0.0.1", "--node-ip", "127.0.0.1"])
            .args(["--https-listen-port", &port.to_string()])
            .arg("--data-dir")
            .arg(cluster.path("server"))
            .arg("--write-kubeconfig")
            .arg(cluster.path("kubeconfig.yaml"))
            .env("KUBOX_CONFIG", cluster.path("config.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting kubox server")?;
        cluster.server = Some(server);
        Ok((cluster, port))
    }

    /// Starts `kubox agent --join` once the server has written its token.
    fn start_agent(&mut self, port: u16) -> Result<()> {
        let token_file = self.path("server/server/token");
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = loop {
            if let Ok(t) = std::fs::read_to_string(&token_file) {
                break t.trim().to_string();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the server wrote no token within 60 s; see {}",
                self.path("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = std::fs::File::create(self.path("agent.log"))?;
        let agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
            ])
            .args(["--kill-child", "--mount-proc", "sh", "-c"])
            .arg(
                "mkdir -p /run/netns /run/containerd && mount -t tmpfs tmpfs /run/netns && \
                 mount -t tmpfs tmpfs /run/containerd && \"$0\" \"$@\"",
            )
            .arg(&self.kubox)
            .args(["agent", "--join", &format!("https://127.0.0.1:{port}")])
            .args(["--token", &token, "--node-name", NODE])
            .args(["--node-ip", "127.0.0.1", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(self.path("agent"))
            .arg("--run-dir")
            .arg(self.path("agent-run"))
            .env("KUBOX_CONFIG", self.path("config.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting kubox agent")?;
        self.agent = Some(agent);
        Ok(())
    }

    /// Host PIDs of every process under the agent's `unshare`, with their executables.
    fn agent_processes(&self) -> Vec<(u32, PathBuf)> {
        let Some(root) = self.agent.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            out.push((pid, exe));
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let children = std::fs::read_to_string(task.path().join("children"));
                todo.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        out
    }

    /// (agent MiB, containerd MiB, shims MiB, number of shims).
    fn memory(&self) -> (f64, f64, f64, usize) {
        let kubox = std::fs::canonicalize(&self.kubox).unwrap_or_else(|_| self.kubox.clone());
        let (mut agent, mut containerd, mut shims, mut n) = (0.0, 0.0, 0.0, 0);
        for (pid, exe) in self.agent_processes() {
            let rss = rss_mib(&pid.to_string());
            let name = exe.file_name().map(|n| n.to_string_lossy().to_string());
            if exe == kubox {
                agent += rss;
            } else if name.as_deref() == Some("containerd") {
                containerd += rss;
            } else if name.is_some_and(|n| n.starts_with("containerd-shim")) {
                shims += rss;
                n += 1;
            }
        }
        (agent, containerd, shims, n)
    }
}

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

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists()
            && let Ok(kc) = kube::config::Kubeconfig::read_from(kubeconfig)
            && let Ok(c) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            && let Ok(client) = kube::Client::try_from(c)
            && client.apiserver_version().await.is_ok()
        {
            return Ok(client);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        anyhow::ensure!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn measure(cluster: &mut Cluster, port: u16, pods: usize) -> Result<()> {
    let client = client(&cluster.path("kubeconfig.yaml")).await?;
    cluster.start_agent(port)?;
    let nodes: Api<Node> = Api::all(client.clone());
    let t = Instant::now();
    wait_for("no Ready node", 120, async || {
        nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await
    .with_context(|| format!("see {}", cluster.path("agent.log").display()))?;
    println!(
        "node Ready {:.1} s after the agent started",
        t.elapsed().as_secs_f64()
    );
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_for("no default ServiceAccount", 60, async || {
        sas.get_opt("default").await.ok().flatten().is_some()
    })
    .await?;
    // Let start-up work (image import, first Lease, DNS) settle before measuring idle memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (agent, containerd, _, _) = cluster.memory();
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
    let (agent, containerd, shims, n) = cluster.memory();
    println!(
        "RSS with {} pods running: agent {agent:.1} MiB, containerd {containerd:.1} MiB, {n} shims {shims:.1} MiB",
        2 * pods
    );
    Ok(())
}

/// Runs the benchmark; `args` are what follows `podstart`.
pub fn run(args: Vec<String>) -> Result<()> {
    let mut pods = 30usize;
    let mut kubox = None;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubox" => kubox = Some(PathBuf::from(args.next().context("--kubox needs a path")?)),
            n => pods = n.parse().context("PODS must be a number")?,
        }
    }
    let kubox = match kubox {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("kubox"),
    };
    anyhow::ensure!(
        kubox.is_file(),
        "{} is missing: build it first (cargo build --release --bin kubox) or pass --kubox PATH",
        kubox.display()
    );
    println!(
        "kubox-bench podstart: {} (server and joined agent in a network namespace of their own); {pods} pods of {} one at a time, then {pods} at once",
        kubox.display(),
        kubox_containerd::pause::PAUSE_IMAGE
    );
    let (mut cluster, port) = Cluster::start(&kubox)?;
    let netns = std::fs::File::open(format!("/run/netns/{}", cluster.netns))?;
    // The API is on the namespace's loopback: the client runs on a thread inside it (threads
    // the runtime spawns from there inherit the namespace).
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the benchmark's network namespace")?;
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?
                    .block_on(measure(&mut cluster, port, pods))
            })
            .join()
    });
    match result {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the measuring thread panicked"),
    }
}
