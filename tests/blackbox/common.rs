//! Shared harness of the black-box tests: start the real `kubox` binary on a temporary data
//! dir and a free port, and drive it with real clients (kubectl 1.27/1.33, Python, kube).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KUBECTL_OLD: &str = "1.27";
pub const KUBECTL_NEW: &str = "1.33";
/// Eviction thresholds of test nodes: memory as upstream, disk only when nearly full.
pub const TEST_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<2%,imagefs.available<2%,nodefs.inodesFree<2%";
/// Where started servers' PIDs are recorded, so .ci/run can end leftovers of a killed run.
const PID_DIR: &str = "/tmp/kubox-test-pids";

/// The kubox binary under test.
pub fn kubox_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubox"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// The directory holding kubectl.1.27 … kubectl.1.33 next to the kubectl on PATH.
pub fn kubectl_path(version: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("KUBOX_TEST_KUBECTL_DIR") {
        return Path::new(&dir).join(format!("kubectl.{version}"));
    }
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl must be on PATH (tests/run.sh installs it)");
    let real = std::fs::canonicalize(&on_path).expect("resolve kubectl");
    let p = real
        .parent()
        .expect("kubectl dir")
        .join(format!("kubectl.{version}"));
    assert!(
        p.is_file(),
        "{} is missing: the tests need kubectl {version}",
        p.display()
    );
    p
}

/// A running `kubox server --disable-agent` with its own data dir and port; or, made by
/// [`Server::start_node`], a whole node (agent, containerd, pods) inside namespaces of its own.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    extra: Vec<String>,
    /// The network namespace a node runs in (`kubox-test-…`), deleted on drop.
    pub netns: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yaml"), "").expect("empty config");
        let mut s = Server {
            dir,
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: None,
        };
        s.spawn();
        s
    }

    /// A server with its node agent, in a network namespace of its own (so its bridge, routes
    /// and nftables rules never touch the host) and private mount and PID namespaces (so
    /// containerd's mounts and every container die with it). `prepare` runs on the data dir
    /// before start (e.g. to drop image archives into `agent/images`).
    pub fn start_node(extra: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        Server::start_node_in(extra, |_, data_dir| prepare(data_dir))
    }

    /// [`Server::start_node`] whose `prepare` also gets the node's network namespace (to give
    /// it links and addresses before kubox starts).
    pub fn start_node_in(extra: &[&str], prepare: impl FnOnce(&str, &Path)) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yaml"), "").expect("empty config");
        let name = format!("kubox-test-{}-{}", std::process::id(), free_port());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(
            ok.success(),
            "ip netns add {name} failed (the node tests need root)"
        );
        let _ = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        let mut s = Server {
            dir,
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: Some(name.clone()),
        };
        prepare(&name, &s.data_dir());
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The command line `kubox server` runs with (without the binary).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["server".to_string()];
        if self.netns.is_some() {
            a.extend([
                "--run-dir".to_string(),
                self.dir.path().join("run").display().to_string(),
                "--node-name".into(),
                "node-1".into(),
            ]);
        } else {
            a.push("--disable-agent".into());
        }
        a.extend([
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--write-kubeconfig".into(),
            self.kubeconfig().display().to_string(),
            "--https-listen-port".into(),
            self.port.to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--log-level".into(),
            "warn".into(),
        ]);
        // The tests share a disk that may sit near upstream's 15% imagefs threshold (build
        // trees come and go); a node in DiskPressure would refuse every test's pods. Tests of
        // pressure give their own thresholds.
        if self.netns.is_some() && !self.extra.iter().any(|a| a.starts_with("--eviction-hard")) {
            a.push(format!("--eviction-hard={TEST_EVICTION_HARD}"));
        }
        // A test may give the node an address of its own.
        if !self.extra.iter().any(|a| a == "--node-ip") {
            a.extend(["--node-ip".to_string(), "127.0.0.1".into()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let mut cmd = match &self.netns {
            None => Command::new(kubox_bin()),
            Some(ns) => in_node_namespaces(ns, &self.restart_flag()),
        };
        let child = cmd
            .args(self.args())
            .env("KUBOX_CONFIG", self.dir.path().join("config.yaml"))
            // kubox logs to stdout; both go to the log the failing tests print.
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .expect("spawn kubox server");
        record_pid(&child, self.dir.path());
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("kubox server exited early with {status}:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(KUBECTL_NEW, &["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kubox server did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            forget_pid(&c);
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            forget_pid(&c);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// kubectl `version` ("1.27", "1.33") set up to talk to this server, for a caller that
    /// adds arguments and standard streams.
    pub fn kubectl_command(&self, version: &str) -> Command {
        let mut c = self.command(kubectl_path(version));
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path());
        c
    }

    /// Runs kubectl `version` ("1.27", "1.33") against this server.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        self.kubectl_command(version)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as input.
    pub fn kubectl_stdin(&self, version: &str, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(version)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// A node's PID-1 shell starts kubox again when it exits while this file exists.
    fn restart_flag(&self) -> PathBuf {
        self.dir.path().join("restart-kubox")
    }

    /// The host PID of the kubox server process of a node (a child of the node's PID 1).
    pub fn node_kubox_pid(&self) -> Option<u32> {
        let unshare = self.child.as_ref()?.id();
        let children = |pid: u32| -> Vec<u32> {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        let kubox = kubox_bin();
        children(unshare)
            .into_iter()
            .flat_map(children)
            .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == kubox))
    }

    /// Stops a node's kubox with `signal` (`TERM`, `KILL`) and lets its PID 1 start it again:
    /// containerd, shims and containers stay, as they do when systemd restarts kubox.
    pub fn restart_node_process(&mut self, signal: &str) {
        let pid = self.node_kubox_pid().expect("the node's kubox process");
        std::fs::write(self.restart_flag(), b"").expect("restart flag");
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.node_kubox_pid() == Some(pid) {
            assert!(
                Instant::now() < deadline,
                "kubox did not exit on SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ready();
    }

    /// A command that runs where the server is (inside the node's network namespace).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(program);
                c
            }
        }
    }

    /// Runs the future `f` makes on a thread of its own that has entered the node's network
    /// namespace (where the server listens), so in-process clients such as `kube` reach it.
    pub fn block_on_in_node<T: Send, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce() -> F + Send,
    ) -> T {
        let ns = self.netns.clone().expect("a node server");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(f())
                })
                .join()
                .unwrap_or_else(|_| {
                    panic!(
                        "the client in the node's namespace failed; server log:\n{}",
                        self.log()
                    )
                })
        })
    }

    /// Whether the `default` ServiceAccount of `ns` exists within `timeout` (the serviceaccount
    /// controller makes it; the ServiceAccount admission refuses pods until it does).
    pub fn default_service_account_within(&self, ns: &str, timeout: Duration) -> bool {
        eventually(timeout, || {
            self.kubectl(KUBECTL_NEW, &["-n", ns, "get", "serviceaccount", "default"])
                .status
                .success()
                .then_some(())
        })
        .is_some()
    }

    /// kubectl that must succeed; returns stdout.
    pub fn k(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// kubectl with stdin that must succeed; returns stdout.
    pub fn k_in(&self, version: &str, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_stdin(version, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// kubectl that must fail; returns stderr.
    pub fn k_err(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert!(
            !out.status.success(),
            "kubectl {version} {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// A `kube` client for this server from its kubeconfig.
    pub async fn client(&self) -> kube::Client {
        self.client_via(None).await
    }

    /// A client that answers 429/503/504 at once instead of retrying them as kube's default
    /// client does (an eviction refused by a disruption budget is a 429).
    pub async fn client_without_retry(&self) -> kube::Client {
        let mut cfg = self.config_via(None).await;
        cfg.default_retry = false;
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// A client whose connections go to `127.0.0.1:port` (e.g. a [`Proxy`]) instead.
    pub async fn client_via(&self, port: Option<u16>) -> kube::Client {
        kube::Client::try_from(self.config_via(port).await).expect("kube client")
    }

    async fn config_via(&self, port: Option<u16>) -> kube::Config {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        if let Some(port) = port {
            cfg.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("url");
        }
        cfg
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if let Some(ns) = self.netns.take() {
            // The node's processes die with its PID namespace; give the kernel a moment.
            std::thread::sleep(Duration::from_millis(200));
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// The kubox binary run as PID 1's child of new PID and mount namespaces inside network
/// namespace `ns`: when PID 1 dies, so does every process of the node. tmpfs over /run/netns
/// and /run/containerd keeps containerd's pod netns files and shim sockets private. While
/// `restart_flag` exists, PID 1 starts kubox again when it exits.
pub fn in_node_namespaces(ns: &str, restart_flag: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .args(["unshare", "--mount", "--propagation", "private", "--pid", "--fork"])
        .args(["--kill-child", "--mount-proc", "sh", "-c"])
        .arg(format!(
            "mkdir -p /run/netns /run/containerd && mount -t tmpfs tmpfs /run/netns && mount -t tmpfs tmpfs /run/containerd && \
             while :; do \"$0\" \"$@\"; [ -e {flag} ] || exit; rm -f {flag}; done",
            flag = restart_flag.display()
        ))
        .arg(kubox_bin());
    c
}

/// Records a started process so that CI can end it if this run is interrupted.
pub fn record_pid(child: &Child, dir: &Path) {
    let _ = std::fs::create_dir_all(PID_DIR);
    let _ = std::fs::write(
        Path::new(PID_DIR).join(child.id().to_string()),
        dir.display().to_string(),
    );
}

/// Forgets a process recorded by [`record_pid`].
pub fn forget_pid(child: &Child) {
    let _ = std::fs::remove_file(Path::new(PID_DIR).join(child.id().to_string()));
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP forwarder to a server's port that the test can cut (closing every connection and
/// refusing new ones) and restore: a deterministic network partition.
pub struct Proxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let (o, g) = (o.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while o.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Proxy {
            port,
            open,
            generation,
        }
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
