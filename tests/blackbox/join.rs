//! `kubox agent --join`: a node joins a server with the join token, the server's CA pinned by
//! the hash in the token, and runs pods with its own credentials. The server (without its own
//! agent) and the agent share one network namespace; each has its own PID and mount namespaces.
use crate::common::{
    KUBECTL_NEW, Server, TEST_EVICTION_HARD, eventually, forget_pid, in_node_namespaces, record_pid,
};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

pub(crate) struct Agent {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            forget_pid(&c);
        }
    }
}

/// A data dir for an agent, with the busybox test image among its airgap images.
pub(crate) fn agent_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    let images = dir.path().join("data/agent/images");
    std::fs::create_dir_all(&images).unwrap();
    crate::images::write_busybox_image(&images.join("busybox.tar"), "test");
    dir
}

/// The server's full join token.
pub(crate) fn join_token(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir().join("server/token"))
        .unwrap()
        .trim()
        .to_string()
}

/// `kubox agent --join server_url` as node `name` with `node_ip`, inside network namespace `ns`
/// (and PID and mount namespaces of its own), its data and run dirs under `dir`.
pub(crate) fn join_command(
    ns: &str,
    server_url: &str,
    dir: &std::path::Path,
    token: &str,
    name: &str,
    node_ip: &str,
) -> std::process::Command {
    let mut c = in_node_namespaces(ns, &dir.join("no-restart"));
    c.args([
        "agent",
        "--join",
        server_url,
        "--token",
        token,
        "--node-name",
        name,
    ])
    .args(["--node-ip", node_ip, "--log-level", "info"])
    .arg(format!("--eviction-hard={TEST_EVICTION_HARD}"))
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--run-dir")
    .arg(dir.join("run"))
    .env("KUBOX_CONFIG", dir.join("config.yaml"));
    c
}

pub(crate) fn agent_command(
    s: &Server,
    dir: &std::path::Path,
    token: &str,
    name: &str,
) -> std::process::Command {
    let ns = s.netns.as_deref().expect("a node server");
    let mut c = join_command(ns, &s.url(), dir, token, name, "127.0.0.1");
    c.args([
        "--node-label",
        "tier=edge",
        "--node-taint",
        "dedicated=edge:NoSchedule",
    ]);
    c
}

/// Runs an agent that is expected to give up: its output.
fn agent_fails(s: &Server, token: &str, name: &str) -> Output {
    let dir = agent_dir();
    let out = agent_command(s, dir.path(), token, name)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent joined with {token:?}");
    out
}

/// Starts `cmd` (a [`join_command`] on `dir`), its output going to `dir/agent.log`.
pub(crate) fn spawn_agent(mut cmd: std::process::Command, dir: tempfile::TempDir) -> Agent {
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    record_pid(&child, dir.path());
    Agent {
        dir,
        child: Some(child),
    }
}

fn start_agent(s: &Server, token: &str, name: &str) -> Agent {
    let dir = agent_dir();
    let cmd = agent_command(s, dir.path(), token, name);
    spawn_agent(cmd, dir)
}

impl Agent {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn an_agent_joins_with_the_token_and_runs_pods_with_its_own_credentials() {
    let s = Server::start_node(&["--disable-agent"], |_| {});
    let token = join_token(&s);
    let (hash_part, secret) = token.split_once("::server:").unwrap();

    // Refused: a wrong secret, a token whose CA hash is not this server's, a bare secret.
    let e = String::from_utf8_lossy(
        &agent_fails(&s, &format!("{hash_part}::server:wrong"), "n-x").stderr,
    )
    .to_string();
    assert!(e.contains("refused the join token"), "{e}");
    let e = String::from_utf8_lossy(
        &agent_fails(
            &s,
            &format!("K10{}::server:{secret}", "0".repeat(64)),
            "n-x",
        )
        .stderr,
    )
    .to_string();
    assert!(
        e.contains("does not match the hash in the join token"),
        "{e}"
    );
    let e = String::from_utf8_lossy(&agent_fails(&s, secret, "n-x").stderr).to_string();
    assert!(e.contains("must be the full token"), "{e}");
    assert!(
        s.kubectl(KUBECTL_NEW, &["get", "node", "n-x"])
            .status
            .code()
            != Some(0),
        "a refused agent registered a node"
    );

    let agent = start_agent(&s, &token, "node-2");
    let node = eventually(Duration::from_secs(120), || {
        let out = s.kubectl(KUBECTL_NEW, &["get", "node", "node-2", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let n = json(&String::from_utf8_lossy(&out.stdout));
        let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        ready.then_some(n)
    })
    .unwrap_or_else(|| panic!("node-2 did not become Ready:\n{}\n{}", agent.log(), s.log()));
    assert_eq!(node["metadata"]["labels"]["tier"], "edge");
    assert_eq!(node["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(node["spec"]["taints"][0]["effect"], "NoSchedule");

    // The agent's credentials and kubeconfig are private; its client cert names the node.
    let data = agent.dir.path().join("data/agent");
    for f in [
        "kubelet.kubeconfig",
        "tls/client-kubelet.key",
        "tls/serving-kubelet.key",
        "node-password",
    ] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let who = s
        .command(crate::common::kubectl_path(KUBECTL_NEW))
        .args(["--kubeconfig"])
        .arg(data.join("kubelet.kubeconfig"))
        .args(["auth", "whoami", "-o", "json"])
        .env("HOME", agent.dir.path())
        .output()
        .unwrap();
    let who = json(&String::from_utf8_lossy(&who.stdout));
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-2");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:nodes"), "{groups}");

    // A pod for the node runs there.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"edge-web"},"spec":{
            "tolerations":[{"key":"dedicated","operator":"Equal","value":"edge","effect":"NoSchedule"}],
            "nodeSelector":{"tier":"edge"},
            "containers":[{"name":"web","image":"docker.io/library/busybox:test","command":["httpd","-f","-p","8080"]}]}}"#,
    );
    let running = eventually(Duration::from_secs(90), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "edge-web", "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .unwrap_or_else(|| panic!("the pod did not run:\n{}", agent.log()));
    assert_eq!(running["spec"]["nodeName"], "node-2");
    // The API server reaches the joined node's kubelet API (its joined serving certificate).
    assert_eq!(
        s.k(
            KUBECTL_NEW,
            &["exec", "edge-web", "--", "cat", "/etc/hostname"]
        ),
        "edge-web\n"
    );

    // Another agent cannot take the name: it lacks the node's password.
    let e = String::from_utf8_lossy(&agent_fails(&s, &token, "node-2").stderr).to_string();
    assert!(e.contains("node password mismatch"), "{e}");
}
