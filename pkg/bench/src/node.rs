//! A whole kubox node for the node benchmarks (`churn`, `net`, `podstart`): the real `kubox
//! server` binary with its agent, containerd, runc and CNI plugin, inside a network namespace
//! the bench creates (`kubox-bench-<pid>`: its bridge, routes and nftables never touch the
//! host) and private mount and PID namespaces (`unshare --kill-child`: containerd, shims and
//! containers die with it), on a temporary data dir. As root only. For `podstart` the agent is
//! a `kubox agent --join`ed to a `kubox server --disable-agent`, so their memory is told apart.
//!
//! The bench process itself enters that network namespace before its runtime starts
//! ([`enter_netns`]), so it reaches the API server on the namespace's loopback and sees the
//! node's links.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node as K8sNode, ServiceAccount};
use kube::api::Api;

/// The node's name.
pub const NODE_NAME: &str = "bench-node";

/// The network namespace created for this run, entered by the calling thread (and so by
/// every thread it starts afterwards). Deleted on drop.
pub struct Netns {
    pub name: String,
}

/// Creates `kubox-bench-<pid>` and moves the calling thread into it. Call before any other
/// thread exists.
pub fn enter_netns() -> Result<Netns> {
    let name = format!("kubox-bench-{}", std::process::id());
    run(Command::new("ip").args(["netns", "add", &name]))
        .context("the node benchmarks run a real node: run them as root")?;
    let ns = Netns { name };
    run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
    let file = File::open(format!("/run/netns/{}", ns.name))
        .with_context(|| format!("opening network namespace {}", ns.name))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the bench's network namespace")?;
    Ok(ns)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The kubox binary: `$KUBOX_BIN`, else `kubox` next to this bench binary (so
/// `cargo build --release --bin kubox` first).
pub fn kubox_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBOX_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let p = exe
        .parent()
        .context("the bench binary has no directory")?
        .join("kubox");
    anyhow::ensure!(
        p.is_file(),
        "{} is missing: build it first (cargo build --release --bin kubox), or point KUBOX_BIN at a kubox binary",
        p.display()
    );
    Ok(p)
}

/// A running node.
pub struct Node {
    pub dir: tempfile::TempDir,
    /// `unshare`, whose child (the PID namespace's init) runs the node: `kubox server`, or
    /// `kubox agent` when the server runs apart.
    child: Child,
    /// `kubox server --disable-agent`, when the agent runs on its own.
    server: Option<Child>,
    pub client: kube::Client,
}

/// A temporary directory for a node (KUBOX_BENCH_KEEP=1 keeps it for a post-mortem) with an
/// empty `config.yaml`, and a free port for its API server.
fn node_dir() -> Result<(tempfile::TempDir, u16)> {
    let dir = tempfile::Builder::new()
        .prefix("kubox-bench-")
        .disable_cleanup(std::env::var_os("KUBOX_BENCH_KEEP").is_some())
        .tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    std::fs::write(dir.path().join("config.yaml"), "")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok((dir, port))
}

/// `kubox` with `args`, logging to `<dir>/<log>` at KUBOX_BENCH_LOG's level (warn); in
/// private mount and PID namespaces when `isolated` (the node's containerd and containers).
fn spawn(kubox: &Path, dir: &Path, log: &str, isolated: bool, args: &[OsString]) -> Result<Child> {
    let log = File::create(dir.join(log))?;
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .args(["--kill-child", "--mount-proc", "sh", "-c"])
            // sh stays PID 1 and reaps the shims that outlive their parents.
            .arg(
                "mkdir -p /run/netns /run/containerd && mount -t tmpfs tmpfs /run/netns && \
                 mount -t tmpfs tmpfs /run/containerd && \"$0\" \"$@\"",
            )
            .arg(kubox);
        c
    } else {
        Command::new(kubox)
    };
    cmd.args(args)
        .arg("--log-level")
        .arg(std::env::var("KUBOX_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .env("KUBOX_CONFIG", dir.join("config.yaml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting kubox {args:?}"))
}

/// `kubox server` flags for a node in `dir` serving on `port` of the namespace's loopback.
fn server_args(dir: &Path, port: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["server".into(), "--data-dir".into()];
    args.push(dir.join("data").into());
    args.extend(["--run-dir".into(), dir.join("run").into()]);
    args.extend([
        "--write-kubeconfig".into(),
        dir.join("kubeconfig.yaml").into(),
    ]);
    for a in [
        "--https-listen-port",
        port,
        "--bind-address",
        "127.0.0.1",
        "--node-ip",
        "127.0.0.1",
        "--node-name",
        NODE_NAME,
    ] {
        args.push(a.into());
    }
    args
}

impl Node {
    /// Starts `kubox server` in the current network namespace; `prepare` gets the data dir
    /// first (to drop image archives into `agent/images`). Returns once the Node is Ready and
    /// the `default` ServiceAccount exists.
    pub async fn start(kubox: &Path, prepare: impl FnOnce(&Path) -> Result<()>) -> Result<Node> {
        let (dir, port) = node_dir()?;
        prepare(&dir.path().join("data"))?;
        let args = server_args(dir.path(), &port.to_string());
        let child = spawn(kubox, dir.path(), "server.log", true, &args)?;
        Node::ready(dir, child, None).await
    }

    /// Starts `kubox server --disable-agent` and, once it has written its join token, a
    /// `kubox agent --join`ed to it (the one in the PID namespace).
    pub async fn start_with_separate_agent(kubox: &Path) -> Result<Node> {
        let (dir, port) = node_dir()?;
        let mut args = server_args(dir.path(), &port.to_string());
        args.push("--disable-agent".into());
        let mut server = spawn(kubox, dir.path(), "server.log", false, &args)?;
        let token_file = dir.path().join("data/server/token");
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = loop {
            if let Ok(t) = std::fs::read_to_string(&token_file) {
                break t.trim().to_string();
            }
            if Instant::now() > deadline || matches!(server.try_wait(), Ok(Some(_))) {
                let _ = server.kill();
                let _ = server.wait();
                bail!("the server wrote no join token:\n{}", log(dir.path()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = format!("https://127.0.0.1:{port}");
        let mut args: Vec<OsString> = [
            "agent",
            "--join",
            &url,
            "--token",
            &token,
            "--node-name",
            NODE_NAME,
            "--node-ip",
            "127.0.0.1",
        ]
        .map(OsString::from)
        .to_vec();
        args.extend([
            "--data-dir".into(),
            dir.path().join("agent").into(),
            "--run-dir".into(),
            dir.path().join("agent-run").into(),
        ]);
        let agent = match spawn(kubox, dir.path(), "agent.log", true, &args) {
            Ok(a) => a,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        };
        Node::ready(dir, agent, Some(server)).await
    }

    async fn ready(
        dir: tempfile::TempDir,
        mut child: Child,
        server: Option<Child>,
    ) -> Result<Node> {
        match wait_ready(&mut child, dir.path()).await {
            Ok(client) => Ok(Node {
                dir,
                child,
                server,
                client,
            }),
            Err(e) => {
                for mut c in [Some(child), server].into_iter().flatten() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                Err(e)
            }
        }
    }

    /// Resident memory of the node's PID namespace in MiB: (kubox, containerd, shims, number
    /// of shims). With a separate agent, `kubox` is the agent alone.
    pub fn memory(&self, kubox: &Path) -> (f64, f64, f64, usize) {
        let kubox = std::fs::canonicalize(kubox).unwrap_or_else(|_| kubox.to_path_buf());
        let (mut own, mut containerd, mut shims, mut n) = (0.0, 0.0, 0.0, 0);
        for pid in self.processes() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let rss = crate::rss_mib(&pid.to_string());
            let name = exe.file_name().map(|n| n.to_string_lossy().to_string());
            if exe == kubox {
                own += rss;
            } else if name.as_deref() == Some("containerd") {
                containerd += rss;
            } else if name.is_some_and(|n| n.starts_with("containerd-shim")) {
                shims += rss;
                n += 1;
            }
        }
        (own, containerd, shims, n)
    }

    pub fn log(&self) -> String {
        log(self.dir.path())
    }

    /// `e` with the last lines of the node's log and where the log is.
    pub fn failed(&self, e: anyhow::Error) -> anyhow::Error {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        e.context(format!(
            "the last lines of the node's log ({}):\n{tail}",
            self.dir.path().join("server.log").display()
        ))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.path().join("run/containerd/containerd.sock")
    }

    /// Host PIDs of the processes in the node's PID namespace (its PID 1 shell, kubox,
    /// containerd, shims, containers).
    pub fn processes(&self) -> Vec<u32> {
        let Some(init) = self.init_pid() else {
            return Vec::new();
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
            return Vec::new();
        };
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out: Vec<u32> = procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns))
            .collect();
        out.sort();
        out
    }

    /// The host PID of the node's PID 1 (unshare's child; a process in its mount namespace).
    pub fn init_pid(&self) -> Option<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// The node's logs: the server's, then the separate agent's if there is one.
fn log(dir: &Path) -> String {
    let mut out = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    if let Ok(agent) = std::fs::read_to_string(dir.join("agent.log")) {
        out.push_str("--- agent.log ---\n");
        out.push_str(&agent);
    }
    out
}

/// Waits until the Node is Ready and the `default` ServiceAccount exists: the API client.
async fn wait_ready(child: &mut Child, dir: &Path) -> Result<kube::Client> {
    let kubeconfig = dir.join("kubeconfig.yaml");
    let kubeconfig = kubeconfig.as_path();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut client = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("kubox exited with {status}:\n{}", log(dir));
        }
        if client.is_none()
            && kubeconfig.exists()
            && let Ok(kc) = kube::config::Kubeconfig::read_from(kubeconfig)
            && let Ok(c) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            && let Ok(c) = kube::Client::try_from(c)
        {
            client = Some(c);
        }
        if let Some(c) = &client {
            let nodes: Api<K8sNode> = Api::all(c.clone());
            let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
            let ready = nodes
                .get_opt(NODE_NAME)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if ready && matches!(sas.get_opt("default").await, Ok(Some(_))) {
                return Ok(c.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("the node was not Ready within 120 s:\n{}", log(dir));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // PID 1 of the node's namespace dies with unshare: containerd, shims and containers go.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
