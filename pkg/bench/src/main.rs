//! `cargo run --release -p kubox-bench [-- N [CONCURRENCY]]`: API throughput and latency of a
//! kubox server (started in process on a temporary data dir, driven over HTTPS by the `kube`
//! client with a client certificate, as kubectl would be), and the same operations on raw
//! SQLite in the same run (WAL, synchronous=FULL, one transaction per write) as the baseline.
//! Prints one line per operation: ops/s, latency percentiles, and kubox's cost relative to
//! raw SQLite. `-- schedule [NODES [PODS...]]` measures the scheduler instead (see
//! [`schedule`]), `-- podstart [PODS]` pod start latency on a real node (see [`podstart`]).
//! `-- churn [CYCLES [CONCURRENCY]]` proves pod churn leaks nothing on a real node
//! ([`churn`]); `-- net [SECONDS]` measures the Service proxy against pod-to-pod traffic
//! ([`net`]). The three run the `kubox` binary ([`node`]), as root.

mod churn;
mod net;
mod node;
mod podstart;
mod schedule;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

struct Stats {
    name: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
}

fn cm(name: &str) -> ConfigMap {
    let mut data = BTreeMap::new();
    data.insert("key".to_string(), "value-0123456789".repeat(8));
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([("bench".to_string(), "yes".to_string())].into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Runs `n` operations over `concurrency` tasks, timing each.
async fn timed<F, Fut>(name: &'static str, n: usize, concurrency: usize, op: F) -> Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let op = op.clone();
            async move {
                let t = Instant::now();
                op(i).await.map(|_| t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(Stats {
        name,
        ops: n,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn start_server(
    dir: &std::path::Path,
) -> Result<(kube::Client, tokio::sync::oneshot::Sender<()>)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cfg = kubox_server::ServerConfig::defaults();
    cfg.data_dir = dir.join("data");
    cfg.write_kubeconfig = dir.join("kubeconfig.yaml");
    cfg.https_listen_port = port;
    cfg.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.node_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    cfg.disable_agent = true;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = kubox_server::run(cfg, async move {
            let _ = stopped.await;
        })
        .await
        {
            eprintln!("kubox-bench: the server failed: {e}");
        }
    });
    let kubeconfig = dir.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if kubeconfig.exists()
            && let Ok(kc) = kube::config::Kubeconfig::read_from(&kubeconfig)
            && let Ok(c) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            && let Ok(client) = kube::Client::try_from(c)
            && client.apiserver_version().await.is_ok()
        {
            return Ok((client, stop));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bench_kubox(n: usize, concurrency: usize) -> Result<Vec<Stats>> {
    let dir = tempfile::tempdir()?;
    let (client, stop) = start_server(dir.path()).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut out = Vec::new();
    let a = api.clone();
    out.push(
        timed("create", n, concurrency, move |i| {
            let a = a.clone();
            async move {
                a.create(&PostParams::default(), &cm(&format!("cm-{i}")))
                    .await?;
                Ok(())
            }
        })
        .await?,
    );
    let a = api.clone();
    out.push(
        timed("get", n, concurrency, move |i| {
            let a = a.clone();
            async move {
                a.get(&format!("cm-{i}")).await?;
                Ok(())
            }
        })
        .await?,
    );
    let lists = (n / 100).max(5);
    let a = api.clone();
    let mut list = timed("list", lists, concurrency.min(4), move |_| {
        let a = a.clone();
        async move {
            let l = a.list(&ListParams::default().labels("bench=yes")).await?;
            anyhow::ensure!(l.items.len() >= n, "list returned {} items", l.items.len());
            Ok(())
        }
    })
    .await?;
    list.name = "list";
    out.push(list);
    // The same list without the client's typed decoding: the server's part.
    out.push(
        timed("list (raw JSON)", lists, concurrency.min(4), move |_| {
            let c = client.clone();
            async move {
                let req = http::Request::get(
                    "/api/v1/namespaces/default/configmaps?labelSelector=bench%3Dyes",
                )
                .body(Vec::new())?;
                let body = c.request_text(req).await?;
                anyhow::ensure!(body.len() > n * 100, "list returned {} bytes", body.len());
                Ok(())
            }
        })
        .await?,
    );
    // Watch: from an acknowledged create to the event reaching a watcher.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("list without resourceVersion")?;
    let mut events = api
        .watch(
            &WatchParams::default().labels("bench=watch").timeout(290),
            &rv,
        )
        .await?
        .boxed();
    let watched = (n / 4).max(50);
    let mut latencies = Vec::with_capacity(watched);
    let start = Instant::now();
    for i in 0..watched {
        let mut obj = cm(&format!("watch-{i}"));
        obj.metadata.labels = Some([("bench".to_string(), "watch".to_string())].into());
        let t = Instant::now();
        api.create(&PostParams::default(), &obj).await?;
        loop {
            match events.try_next().await? {
                Some(WatchEvent::Added(_)) => break,
                Some(_) => {}
                None => anyhow::bail!("the watch ended"),
            }
        }
        latencies.push(t.elapsed());
    }
    out.push(Stats {
        name: "create+watch event",
        ops: watched,
        elapsed: start.elapsed(),
        latencies,
    });
    let _ = stop.send(());
    Ok(out)
}

fn bench_sqlite(n: usize) -> Result<Vec<Stats>> {
    let dir = tempfile::tempdir()?;
    let db = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch("CREATE TABLE kv (name TEXT PRIMARY KEY, rev INTEGER, value BLOB)")?;
    let value = serde_json::to_vec(&cm("x"))?;
    let mut out = Vec::new();
    let mut run =
        |name: &'static str, ops: usize, f: &mut dyn FnMut(usize) -> Result<()>| -> Result<()> {
            let start = Instant::now();
            let mut latencies = Vec::with_capacity(ops);
            for i in 0..ops {
                let t = Instant::now();
                f(i)?;
                latencies.push(t.elapsed());
            }
            out.push(Stats {
                name,
                ops,
                elapsed: start.elapsed(),
                latencies,
            });
            Ok(())
        };
    run("create", n, &mut |i| {
        db.execute(
            "INSERT INTO kv (name, rev, value) VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("cm-{i}"), i as i64, value],
        )?;
        Ok(())
    })?;
    run("get", n, &mut |i| {
        let v: Vec<u8> = db.query_row(
            "SELECT value FROM kv WHERE name = ?1",
            [format!("cm-{i}")],
            |r| r.get(0),
        )?;
        anyhow::ensure!(!v.is_empty());
        Ok(())
    })?;
    run("list", (n / 100).max(5), &mut |_| {
        let mut stmt = db.prepare_cached("SELECT value FROM kv ORDER BY name")?;
        let rows: Vec<Vec<u8>> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(rows.len() >= n);
        Ok(())
    })?;
    Ok(out)
}

/// Resident memory in MiB of process `pid` (`self` for this one), 0 if it is gone.
fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn numbers(args: impl Iterator<Item = String>) -> Result<Vec<usize>> {
    args.map(|a| a.parse().with_context(|| format!("{a:?} is not a number")))
        .collect()
}

/// The node benchmarks: a real node in a network namespace of the bench's own, which this
/// thread enters before the runtime (and its threads) start.
fn node_bench(mode: &str, nums: &[usize]) -> Result<()> {
    let kubox = node::kubox_binary()?;
    let netns = node::enter_netns()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bench = async {
            match mode {
                "churn" => {
                    let cycles = nums.first().copied().unwrap_or(1000);
                    let concurrency = nums.get(1).copied().unwrap_or(16).max(1);
                    println!(
                        "kubox-bench churn: {cycles} pod create/delete cycles, {concurrency} at a time, on a real node ({}, network namespace {}); baseline: what the node held before",
                        kubox.display(),
                        netns.name
                    );
                    let node = node::Node::start(&kubox, |_| Ok(())).await?;
                    churn::run(&node, cycles, concurrency)
                        .await
                        .map_err(|e| node.failed(e))
                }
                "podstart" => {
                    let pods = nums.first().copied().unwrap_or(30).max(1);
                    println!(
                        "kubox-bench podstart: {} (server and joined agent in network namespace {}); {pods} pods of {} one at a time, then {pods} at once",
                        kubox.display(),
                        netns.name,
                        kubox_containerd::pause::PAUSE_IMAGE
                    );
                    podstart::run(&kubox, pods).await
                }
                _ => {
                    let seconds = nums.first().copied().unwrap_or(3).max(1);
                    println!(
                        "kubox-bench net: TCP from a client pod to a server pod on one node, {seconds} s per measurement, twice, interleaved; baseline: the server's pod IP, against its ClusterIP"
                    );
                    let node = node::Node::start(&kubox, net::prepare_image).await?;
                    net::run(&node, u32::try_from(seconds)?)
                        .await
                        .map_err(|e| node.failed(e))
                }
            }
        };
        tokio::select! {
            r = bench => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Nodes are dropped (killed) inside; the namespace goes last.
    drop(rt);
    drop(netns);
    r
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if let Some(mode) = args.next_if(|a| a == "churn" || a == "net" || a == "podstart") {
        return node_bench(&mode, &numbers(args)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(api_bench(args))
}

async fn api_bench(mut args: std::iter::Peekable<impl Iterator<Item = String>>) -> Result<()> {
    if args.peek().map(String::as_str) == Some("schedule") {
        args.next();
        let nums = numbers(args).context("NODES and PODS must be numbers")?;
        let nodes = nums.first().copied().unwrap_or(100);
        let rounds = if nums.len() > 1 {
            nums[1..].to_vec()
        } else {
            vec![1000, 10000]
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        println!(
            "kubox-bench schedule: {nodes} simulated nodes registered through the API; rounds of {rounds:?} pods created 16 at a time; baseline: the create rate of the same run"
        );
        let dir = tempfile::tempdir()?;
        let (client, stop) = start_server(dir.path()).await?;
        let r = schedule::run(client, nodes, &rounds, 16).await;
        let _ = stop.send(());
        return r;
    }
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(2000);
    let concurrency: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()
        .context("CONCURRENCY must be a number")?
        .unwrap_or(16);
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "kubox-bench: {n} ConfigMaps, {concurrency} concurrent requests over HTTPS; baseline: raw SQLite (WAL, synchronous=FULL), one statement at a time"
    );
    let kubox = bench_kubox(n, concurrency).await?;
    let sqlite = tokio::task::spawn_blocking(move || bench_sqlite(n)).await??;
    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>9} {:>12} {:>16}",
        "operation", "kubox op/s", "p50 ms", "p90 ms", "p99 ms", "sqlite op/s", "kubox/sqlite op/s"
    );
    for k in &kubox {
        // "list (raw JSON)" is compared with the same SQLite "list".
        let op = k.name.split(" (").next().unwrap_or(k.name);
        let base = sqlite.iter().find(|s| s.name == op);
        println!(
            "{:<20} {:>10.0} {:>9} {:>9} {:>9} {:>12} {:>16}",
            k.name,
            k.per_sec(),
            ms(k.pct(0.5)),
            ms(k.pct(0.9)),
            ms(k.pct(0.99)),
            base.map_or("-".into(), |b| format!("{:.0}", b.per_sec())),
            base.map_or("-".into(), |b| format!("{:.3}", k.per_sec() / b.per_sec())),
        );
    }
    Ok(())
}
