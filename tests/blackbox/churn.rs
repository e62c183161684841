//! Pod churn leaks nothing: after pods come and go (deleted gracefully or at once, or while
//! the node agent was down) the node's IP leases, host veths, pod network namespaces and
//! containerd containers are what they were before. The long version (1000 cycles) is
//! `kubox-bench churn`.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::node::ready_node;

/// What pods hold on a node, each list sorted.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    /// IPAM lease files (`<data-dir>/agent/cni/ipam/kubox/<ip>`).
    leases: Vec<String>,
    /// Host ends of pod veth pairs in the node's network namespace.
    veths: Vec<String>,
    /// Pod network namespaces containerd made (`/run/netns` of the node's mount namespace).
    netns: Vec<String>,
    /// containerd containers in CRI's namespace (pod sandboxes and their containers).
    containers: Vec<String>,
}

/// The sorted non-empty lines of a command's output; one line naming the failure when it
/// failed (containerd may still be starting), which matches no baseline.
fn lines(out: std::process::Output) -> Vec<String> {
    if !out.status.success() {
        return vec![format!("failed: {}", String::from_utf8_lossy(&out.stderr))];
    }
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn dir_names(dir: PathBuf, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn leases(s: &Server) -> Vec<String> {
    dir_names(s.data_dir().join("agent/cni/ipam/kubox"), |n| {
        n.parse::<std::net::Ipv4Addr>().is_ok()
    })
}

fn held(s: &Server) -> Held {
    let leases = leases(s);
    let veths = lines(
        s.command("ip")
            .args(["-o", "link", "show", "type", "veth"])
            .output()
            .unwrap(),
    )
    .into_iter()
    .filter_map(|l| {
        let name = l.split(": ").nth(1)?;
        Some(name.split('@').next()?.to_string())
    })
    .collect();
    // /proc/PID/root resolves paths in that process's mount namespace: the node's tmpfs.
    let pid = s.node_kubox_pid().expect("the node's kubox process");
    let netns = dir_names(PathBuf::from(format!("/proc/{pid}/root/run/netns")), |_| {
        true
    });
    let socket = s.dir.path().join("run/containerd/containerd.sock");
    let containers = lines(
        Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .unwrap(),
    );
    Held {
        leases,
        veths,
        netns,
        containers,
    }
}

/// `count` pods of batch `batch` (kubox's pause image as their one container); odd ones
/// have no grace period, so the API deletes them before the agent has torn them down.
fn pods(batch: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {batch}-{i}, labels: {{batch: {batch}}}}}\n\
                 spec:\n  terminationGracePeriodSeconds: {}\n  automountServiceAccountToken: false\n  \
                 containers: [{{name: c, image: docker.io/kubox/pause:3.10}}]\n",
                if i % 2 == 1 { 0 } else { 30 }
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Creates a batch and waits until every pod is Ready (so each has its sandbox, veth, netns
/// and lease).
fn create(s: &Server, batch: &str, count: usize) {
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &pods(batch, count));
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            &format!("batch={batch}"),
            "--timeout=150s",
        ],
    );
    assert!(
        out.status.success(),
        "batch {batch}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])
    );
}

/// Until what the node holds is `base` again (teardown finishes after the pod object may be
/// gone); the last reading on failure.
fn back_to(s: &Server, base: &Held, within: Duration) -> Result<(), Held> {
    eventually(within, || (held(s) == *base).then_some(())).ok_or_else(|| held(s))
}

#[test]
fn pod_churn_leaves_no_leases_veths_netns_or_sandboxes() {
    let s = ready_node();
    let base = held(&s);
    // Two batches of 20 pods, each made at once and deleted at once: 40 cycles.
    for batch in ["churn-a", "churn-b"] {
        create(&s, batch, 20);
        // While the pods exist each holds a lease, a veth and a netns: the checks see them.
        let h = held(&s);
        assert_eq!(
            (h.leases.len(), h.veths.len(), h.netns.len()),
            (
                base.leases.len() + 20,
                base.veths.len() + 20,
                base.netns.len() + 20
            ),
            "{h:?}"
        );
        assert!(h.containers.len() >= base.containers.len() + 40, "{h:?}");
        s.k(
            KUBECTL_NEW,
            &[
                "delete",
                "pod",
                "-l",
                &format!("batch={batch}"),
                "--wait",
                "--timeout=150s",
            ],
        );
    }
    if let Err(now) = back_to(&s, &base, Duration::from_secs(30)) {
        panic!(
            "after 40 pods came and went the node still holds more than before\nbefore: {base:?}\nafter:  {now:?}\n{}",
            s.log()
        );
    }
}

#[test]
fn leases_of_pods_deleted_while_the_agent_was_down_are_released_when_it_returns() {
    let mut s = ready_node();
    let base = held(&s);
    create(&s, "gone", 3);
    // The server alone (no agent, hence no containerd; shims and containers keep running),
    // and the pods are force-deleted: no agent sees them go.
    let config = s.dir.path().join("config.yaml");
    std::fs::write(&config, "disable-agent: true\n").unwrap();
    s.restart_node_process("TERM");
    s.k(
        KUBECTL_NEW,
        &[
            "delete",
            "pod",
            "-l",
            "batch=gone",
            "--force",
            "--grace-period=0",
        ],
    );
    assert!(
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
    );
    let leases = leases(&s);
    assert_eq!(
        leases.len(),
        base.leases.len() + 3,
        "the pods' leases are still held while no agent runs: {leases:?}"
    );
    // The agent returns: it finds sandboxes of pods that no longer exist and removes them.
    std::fs::write(&config, "").unwrap();
    s.restart_node_process("TERM");
    if let Err(now) = back_to(&s, &base, Duration::from_secs(90)) {
        panic!(
            "the returning agent left what the deleted pods held\nbefore: {base:?}\nafter:  {now:?}\n{}",
            s.log()
        );
    }
}
