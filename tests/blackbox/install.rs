//! install.sh (download from a release URL, airgap tarball, agent mode), the uninstall script
//! it writes, and `kubox server` telling systemd it is ready (sd_notify). Every path the
//! installer writes is under a tempdir; nothing starts a service (this machine has no systemd).
use crate::common::{KUBECTL_NEW, free_port, kubectl_path, kubox_bin};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The release architecture name of this machine, as install.sh and dist.sh name artifacts.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => "arm",
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An installation target: bin, systemd, config, data and run dirs inside a tempdir.
struct Target {
    dir: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        Target {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn bin(&self) -> PathBuf {
        self.path("bin")
    }
    fn systemd(&self) -> PathBuf {
        self.path("systemd")
    }
    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }
    /// The debug kubox, placed where a release binary would be.
    fn place_binary(&self, at: &Path) {
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        if std::fs::hard_link(kubox_bin(), at).is_err() {
            std::fs::copy(kubox_bin(), at).unwrap();
        }
    }
    /// Runs `script` as `sh script args` with only the installer's variables set.
    fn install(&self, script: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.command("sh", env)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    }
    fn command(&self, program: &str, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", PATH)
            .env("HOME", self.dir.path())
            .env("INSTALL_KUBOX_BIN_DIR", self.bin())
            .env("INSTALL_KUBOX_SYSTEMD_DIR", self.systemd())
            .env("INSTALL_KUBOX_CONFIG_DIR", self.path("etc-kubox"))
            .env("KUBOX_DATA_DIR", self.path("data"))
            .env("KUBOX_RUN_DIR", self.path("run"))
            .env("INSTALL_KUBOX_SKIP_ENABLE", "true")
            .env("INSTALL_KUBOX_SKIP_START", "true")
            .envs(env.iter().copied());
        c
    }
    /// `path`'s text with this target's directories replaced by install.sh's defaults.
    fn as_default(&self, p: &str) -> String {
        self.read(p)
            .replace(&self.bin().display().to_string(), "/usr/local/bin")
            .replace(&self.systemd().display().to_string(), "/etc/systemd/system")
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn sha256sum_line(file: &Path, name: &str) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    assert_ok(&out, "sha256sum");
    let hash = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!("{hash}  {name}\n")
}

/// Serves the files of `dir` over plain HTTP on loopback (GET only); returns the base URL.
fn serve_files(dir: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                // The last segment of the path names a file of `dir`.
                let name = request
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.rsplit('/').next())
                    .unwrap_or_default();
                let mut conn = conn;
                match std::fs::File::open(dir.join(name)) {
                    Ok(mut f) if !name.is_empty() && name != ".." => {
                        let len = f.metadata().unwrap().len();
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        );
                        let _ = std::io::copy(&mut f, &mut conn);
                    }
                    _ => {
                        let _ = conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/v0.0.0-test")
}

fn unit_line<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter(|l| l.starts_with(&format!("{key}=")))
        .collect()
}

#[test]
fn installs_from_a_release_url_with_a_notify_unit_and_a_kubectl_link() {
    let t = Target::new();
    let release = tempfile::tempdir().unwrap();
    let artifact = release.path().join(format!("kubox-{}", arch()));
    t.place_binary(&artifact);
    std::fs::write(
        release.path().join(format!("sha256sum-{}.txt", arch())),
        sha256sum_line(&artifact, &format!("kubox-{}", arch())),
    )
    .unwrap();
    let url = serve_files(release.path().to_path_buf());

    let out = t.install(
        &repo().join("install.sh"),
        &[
            ("INSTALL_KUBOX_DOWNLOAD_URL", url.as_str()),
            ("INSTALL_KUBOX_SYMLINK", "force"),
        ],
        &[
            "server",
            "--tls-san",
            "edge one",
            "--node-label",
            "tier=$edge",
        ],
    );
    assert_ok(&out, "install.sh");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("not started"), "{stdout}");

    let version = Command::new(t.bin().join("kubox"))
        .arg("--version")
        .output()
        .unwrap();
    assert_ok(&version, "kubox --version");
    assert!(text(&version.stdout).starts_with("kubox v"));

    let unit = t.read("systemd/kubox.service");
    for line in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
        "LimitNOFILE=1048576",
        "ExecStartPre=-/sbin/modprobe br_netfilter",
        "ExecStartPre=-/sbin/modprobe overlay",
        "ExecStartPre=-/sbin/modprobe vxlan",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    assert_eq!(
        unit_line(&unit, "EnvironmentFile").last().copied(),
        Some(
            format!(
                "EnvironmentFile=-{}/kubox.service.env",
                t.systemd().display()
            )
            .as_str()
        )
    );
    // Arguments are quoted for systemd, `$` doubled so systemd does not expand it.
    assert_eq!(
        unit_line(&unit, "ExecStart"),
        vec![
            format!(
                "ExecStart={}/kubox server \"--tls-san\" \"edge one\" \"--node-label\" \"tier=$$edge\"",
                t.bin().display()
            )
            .as_str()
        ]
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(t.systemd().join("kubox.service"))
            .output()
            .unwrap();
        assert_ok(&verify, "systemd-analyze verify");
        assert!(
            !text(&verify.stderr).contains("kubox.service"),
            "{}",
            text(&verify.stderr)
        );
    }

    // kubectl through kubox: the real kubectl later on PATH, with kubox's kubeconfig.
    let link = t.bin().join("kubectl");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("kubox"));
    let real_kubectl_dir = kubectl_path(KUBECTL_NEW).parent().unwrap().to_path_buf();
    let out = Command::new(&link)
        .args(["version", "--client"])
        .env(
            "PATH",
            format!("{}:{}", t.bin().display(), real_kubectl_dir.display()),
        )
        .output()
        .unwrap();
    assert_ok(&out, "kubectl (kubox) version --client");
    assert!(text(&out.stdout).contains("Client Version"));
    // With no other kubectl on PATH it says so instead of running itself.
    let out = Command::new(&link)
        .args(["version", "--client"])
        .env("PATH", t.bin())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("kubectl was not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_wrong_checksum_installs_nothing() {
    let t = Target::new();
    let release = tempfile::tempdir().unwrap();
    std::fs::write(
        release.path().join(format!("kubox-{}", arch())),
        b"#!/bin/sh\necho tampered\n",
    )
    .unwrap();
    std::fs::write(
        release.path().join(format!("sha256sum-{}.txt", arch())),
        format!("{}  kubox-{}\n", "0".repeat(64), arch()),
    )
    .unwrap();
    let url = serve_files(release.path().to_path_buf());
    let out = t.install(
        &repo().join("install.sh"),
        &[("INSTALL_KUBOX_DOWNLOAD_URL", url.as_str())],
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does not match its checksum"), "{err}");
    assert!(err.contains("nothing was installed"), "{err}");
    assert!(!t.bin().exists(), "the bin dir was written");
    assert!(!t.systemd().exists(), "the systemd dir was written");
}

#[test]
fn airgap_tarball_installs_offline_with_its_images() {
    let t = Target::new();
    // The tarball as packaging/dist.sh lays it out, with the debug binary.
    let stage = tempfile::tempdir().unwrap();
    let top = format!("kubox-airgap-{}", arch());
    let air = stage.path().join(&top);
    let artifact = air.join(format!("kubox-{}", arch()));
    t.place_binary(&artifact);
    std::fs::write(
        air.join(format!("sha256sum-{}.txt", arch())),
        sha256sum_line(&artifact, &format!("kubox-{}", arch())),
    )
    .unwrap();
    std::fs::copy(repo().join("install.sh"), air.join("install.sh")).unwrap();
    for unit in ["kubox.service", "kubox-agent.service"] {
        std::fs::copy(repo().join("packaging").join(unit), air.join(unit)).unwrap();
    }
    std::fs::create_dir_all(air.join("bin")).unwrap();
    std::fs::create_dir_all(air.join("images")).unwrap();
    crate::images::write_busybox_image(&air.join("images/busybox.tar"), "test");
    let tarball = stage.path().join(format!("{top}.tar.gz"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -C "$1" -cf - "$2" | gzip -1 > "$3""#)
        .arg("sh")
        .arg(stage.path())
        .arg(&top)
        .arg(&tarball)
        .output()
        .unwrap();
    assert_ok(&out, "tar");
    // Unpacked on the target machine, then installed with no network at all.
    let unpacked = tempfile::tempdir().unwrap();
    let out = Command::new("tar")
        .arg("-C")
        .arg(unpacked.path())
        .arg("-xzf")
        .arg(&tarball)
        .output()
        .unwrap();
    assert_ok(&out, "tar -x");
    let script = unpacked.path().join(&top).join("install.sh");
    let out = t
        .command("unshare", &[("INSTALL_KUBOX_SKIP_DOWNLOAD", "true")])
        .args(["--net", "sh"])
        .arg(&script)
        .output()
        .unwrap();
    assert_ok(&out, "install.sh from the airgap tarball");
    let version = Command::new(t.bin().join("kubox"))
        .arg("--version")
        .output()
        .unwrap();
    assert_ok(&version, "kubox --version");
    assert_eq!(
        std::fs::read(t.path("data/agent/images/busybox.tar")).unwrap(),
        std::fs::read(air.join("images/busybox.tar")).unwrap()
    );
    assert!(t.systemd().join("kubox.service").is_file());

    // A tampered binary in the tarball is refused like a tampered download.
    let bad = unpacked.path().join(&top).join(format!("kubox-{}", arch()));
    std::fs::remove_file(&bad).unwrap();
    std::fs::write(&bad, b"#!/bin/sh\n").unwrap();
    let t2 = Target::new();
    let out = t2.install(&script, &[("INSTALL_KUBOX_SKIP_DOWNLOAD", "true")], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not match its checksum"));
    assert!(!t2.bin().join("kubox").exists());
}

#[test]
fn agent_install_keeps_the_token_out_of_the_unit_and_units_match_packaging() {
    let token = "K10deadbeef::server:s3cret";
    let agent = Target::new();
    agent.place_binary(&agent.bin().join("kubox"));
    let out = agent.install(
        &repo().join("install.sh"),
        &[
            ("INSTALL_KUBOX_SKIP_DOWNLOAD", "true"),
            ("KUBOX_URL", "https://192.0.2.10:6443"),
            ("KUBOX_TOKEN", token),
        ],
        &[],
    );
    assert_ok(&out, "install.sh (agent)");
    let unit = agent.read("systemd/kubox-agent.service");
    assert!(!unit.contains("s3cret"), "{unit}");
    assert_eq!(
        unit_line(&unit, "ExecStart"),
        vec![format!("ExecStart={}/kubox agent", agent.bin().display()).as_str()]
    );
    let env_file = agent.systemd().join("kubox-agent.service.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", env_file.display());
    let env = agent.read("systemd/kubox-agent.service.env");
    assert!(env.lines().any(|l| l == format!("KUBOX_TOKEN={token}")));
    assert!(
        env.lines()
            .any(|l| l == "KUBOX_URL=https://192.0.2.10:6443")
    );
    // A kubectl is on PATH already: no link.
    assert!(!agent.bin().join("kubectl").exists());
    assert!(text(&out.stdout).contains("kubectl is on PATH"));
    assert!(agent.bin().join("kubox-agent-uninstall.sh").is_file());
    assert_eq!(
        agent.as_default("systemd/kubox-agent.service"),
        std::fs::read_to_string(repo().join("packaging/kubox-agent.service")).unwrap(),
        "packaging/kubox-agent.service differs from what install.sh writes"
    );

    let server = Target::new();
    server.place_binary(&server.bin().join("kubox"));
    let out = server.install(
        &repo().join("install.sh"),
        &[("INSTALL_KUBOX_SKIP_DOWNLOAD", "true")],
        &[],
    );
    assert_ok(&out, "install.sh (server)");
    assert_eq!(
        server.as_default("systemd/kubox.service"),
        std::fs::read_to_string(repo().join("packaging/kubox.service")).unwrap(),
        "packaging/kubox.service differs from what install.sh writes"
    );

    // INSTALL_KUBOX_EXEC comes before the arguments.
    let t = Target::new();
    t.place_binary(&t.bin().join("kubox"));
    let out = t.install(
        &repo().join("install.sh"),
        &[
            ("INSTALL_KUBOX_SKIP_DOWNLOAD", "true"),
            ("INSTALL_KUBOX_EXEC", "server --disable-agent"),
        ],
        &["--tls-san", "10.0.0.5"],
    );
    assert_ok(&out, "install.sh (INSTALL_KUBOX_EXEC)");
    assert_eq!(
        unit_line(&t.read("systemd/kubox.service"), "ExecStart"),
        vec![
            format!(
                "ExecStart={}/kubox server \"--disable-agent\" \"--tls-san\" \"10.0.0.5\"",
                t.bin().display()
            )
            .as_str()
        ]
    );

    // An agent without its token is refused in one sentence.
    let t = Target::new();
    t.place_binary(&t.bin().join("kubox"));
    let out = t.install(
        &repo().join("install.sh"),
        &[
            ("INSTALL_KUBOX_SKIP_DOWNLOAD", "true"),
            ("KUBOX_URL", "https://192.0.2.10:6443"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert_eq!(text(&out.stderr).trim().lines().count(), 1);
    assert!(text(&out.stderr).contains("KUBOX_TOKEN"));
    assert!(!t.systemd().exists());
}

#[test]
fn uninstall_removes_what_was_installed() {
    let t = Target::new();
    t.place_binary(&t.bin().join("kubox"));
    std::fs::write(t.bin().join("not-kubox"), b"keep me").unwrap();
    let out = t.install(
        &repo().join("install.sh"),
        &[
            ("INSTALL_KUBOX_SKIP_DOWNLOAD", "true"),
            ("INSTALL_KUBOX_SYMLINK", "force"),
        ],
        &[],
    );
    assert_ok(&out, "install.sh");
    // What a server that ran leaves: data, config, run dirs, and a mount containerd made.
    for f in [
        "data/server/token",
        "etc-kubox/kubox.yaml",
        "run/containerd/x",
    ] {
        let p = t.path(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    let mnt = t.path("data/agent/containerd/rootfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let uninstall = t.bin().join("kubox-uninstall.sh");
    assert!(uninstall.is_file());
    // Own mount and network namespaces: the script's unmounts, nft and link clean-up touch
    // nothing of this host.
    let out = t
        .command("unshare", &[])
        .args(["--mount", "--net", "sh", "-c"])
        .arg(r#"mount -t tmpfs kubox-test "$1" && sh "$2""#)
        .arg("sh")
        .arg(&mnt)
        .arg(&uninstall)
        .output()
        .unwrap();
    assert_ok(&out, "kubox-uninstall.sh");
    for gone in [
        "bin/kubox",
        "bin/kubectl",
        "bin/kubox-uninstall.sh",
        "systemd/kubox.service",
        "systemd/kubox.service.env",
        "data",
        "etc-kubox",
        "run",
    ] {
        assert!(
            std::fs::symlink_metadata(t.path(gone)).is_err(),
            "{gone} is still there"
        );
    }
    assert_eq!(t.read("bin/not-kubox"), "keep me");
}

/// A child process killed (and forgotten by the PID record) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        crate::common::forget_pid(&self.0);
    }
}

#[test]
fn server_tells_systemd_it_is_ready_once_readyz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let port = free_port();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(kubox_bin())
        .args(["server", "--disable-agent", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .args(["--https-listen-port", &port.to_string()])
        .args(["--bind-address", "127.0.0.1", "--node-ip", "127.0.0.1"])
        .args(["--log-level", "warn"])
        .env("KUBOX_CONFIG", "/dev/null")
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    crate::common::record_pid(&child, dir.path());
    let mut server = Running(child);
    let server_log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();

    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}):\n{}", server_log()));
    let msg = text(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    // Ready means served: /readyz answers at once.
    let readyz = Command::new(kubectl_path(KUBECTL_NEW))
        .args(["get", "--raw", "/readyz"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_ok(&readyz, "kubectl get --raw /readyz");
    assert_eq!(text(&readyz.stdout).trim(), "ok");

    // Stopping is announced too.
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no STOPPING=1 ({e}):\n{}", server_log()));
    assert_eq!(text(&buf[..n]), "STOPPING=1");
    let _ = server.0.wait();
}

#[test]
fn agent_tells_systemd_it_is_ready_once_its_node_is_registered() {
    let s = crate::common::Server::start_node(&["--disable-agent"], |_| {});
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    let dir = crate::join::agent_dir();
    // A socket path (abstract names are per network namespace; the agent runs in the node's).
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = crate::join::agent_command(&s, dir.path(), token.trim(), "node-ready")
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    crate::common::record_pid(&child, dir.path());
    let _agent = Running(child);
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}):\n{}", agent_log()));
    // The first message is the agent's own (containerd, its child, does not get the socket),
    // and by then the Node exists.
    let msg = text(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    let node = s.kubectl(KUBECTL_NEW, &["get", "node", "node-ready", "-o", "name"]);
    assert_ok(&node, "kubectl get node node-ready");
    assert_eq!(text(&node.stdout).trim(), "node/node-ready");
}

#[test]
fn airgap_prerequisites_come_from_the_tarball_or_are_named() {
    // A machine whose PATH has the installer's tools but no containerd, runc or nft.
    let t = Target::new();
    let tools = t.path("tools");
    std::fs::create_dir_all(&tools).unwrap();
    for tool in [
        "sh",
        "sed",
        "grep",
        "cp",
        "chmod",
        "mv",
        "mkdir",
        "cat",
        "env",
        "id",
        "uname",
        "dirname",
        "basename",
        "cut",
        "head",
        "sha256sum",
        "mktemp",
        "rm",
        "ln",
        "readlink",
    ] {
        let found = std::env::split_paths(PATH)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, tools.join(tool)).unwrap();
    }
    let path = format!("{}", tools.display());
    // An unpacked tarball carrying containerd, its shim and runc (stand-ins) in bin/.
    let air = t.path("kubox-airgap");
    std::fs::create_dir_all(air.join("bin")).unwrap();
    let stand_in = |p: &Path| {
        std::fs::write(p, b"#!/bin/sh\necho stand-in\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let artifact = air.join(format!("kubox-{}", arch()));
    stand_in(&artifact);
    std::fs::write(
        air.join(format!("sha256sum-{}.txt", arch())),
        sha256sum_line(&artifact, &format!("kubox-{}", arch())),
    )
    .unwrap();
    for cmd in ["containerd", "containerd-shim-runc-v2", "runc"] {
        stand_in(&air.join("bin").join(cmd));
    }
    std::fs::copy(repo().join("install.sh"), air.join("install.sh")).unwrap();
    let install = || {
        t.command(&format!("{}/sh", tools.display()), &[])
            .env("PATH", &path)
            .env("INSTALL_KUBOX_SKIP_DOWNLOAD", "true")
            .arg(air.join("install.sh"))
            .output()
            .unwrap()
    };

    // nft is not in the tarball: offline, one sentence names it and the package.
    let out = install();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("kubox needs nft on PATH") && err.contains("nftables"),
        "{err}"
    );
    assert!(
        !t.bin().exists() && !t.systemd().exists(),
        "files were written"
    );

    // With nft there, the rest comes from the tarball.
    let nft = std::env::split_paths(PATH)
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .expect("nft is installed");
    std::os::unix::fs::symlink(nft, tools.join("nft")).unwrap();
    let out = install();
    assert_ok(&out, "install.sh");
    for cmd in ["containerd", "containerd-shim-runc-v2", "runc"] {
        assert_eq!(
            std::fs::read(t.bin().join(cmd)).unwrap(),
            std::fs::read(air.join("bin").join(cmd)).unwrap(),
            "{cmd}"
        );
    }
    assert!(t.systemd().join("kubox.service").is_file());
}
