//! The node agent under stress: containerd dying under it, gRPC probes, container log
//! rotation. Each test runs a whole node (see [`Server::start_node`]).
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::node::{http_get, json, node_ready, ready_node};

/// Host PIDs of the children of `pid` (every thread's: tokio spawns from worker threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The host PID of the containerd that the node's kubox supervises (its child process whose
/// executable is `containerd`).
fn containerd_pid(s: &Server) -> Option<u32> {
    let kubox = s.node_kubox_pid()?;
    children(kubox).into_iter().find(|p| {
        std::fs::read_link(format!("/proc/{p}/exe"))
            .is_ok_and(|e| e.file_name().is_some_and(|n| n == "containerd"))
    })
}

/// (containerID, restartCount, startedAt, podIP) of a pod's first container once it runs.
fn running(s: &Server, pod: &str) -> Option<(String, i64, String, String)> {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    let cs = &p["status"]["containerStatuses"][0];
    (p["status"]["phase"] == "Running" && cs["state"]["running"].is_object()).then(|| {
        (
            cs["containerID"].as_str().unwrap_or_default().to_string(),
            cs["restartCount"].as_i64().unwrap_or(-1),
            cs["state"]["running"]["startedAt"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    })
}

/// The highest `tick N` a ticker pod has logged.
fn last_tick(s: &Server, pod: &str) -> Option<u64> {
    let out = s.kubectl(KUBECTL_NEW, &["logs", pod, "--tail=5"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .max()
}

const TICKER: &str = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 1; done";

#[test]
fn containerd_killed_under_the_agent_is_restarted_and_pods_keep_running() {
    let s = ready_node();
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "web",
            "--image=docker.io/library/busybox:test",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "ticker",
            "--image=docker.io/library/busybox:test",
            "--",
            "sh",
            "-c",
            TICKER,
        ],
    );
    let pods = ["web", "ticker"];
    let before: Vec<_> = pods
        .iter()
        .map(|p| {
            eventually(Duration::from_secs(60), || running(&s, p))
                .unwrap_or_else(|| panic!("pod {p} not running:\n{}", s.log()))
        })
        .collect();
    for round in 1..=2 {
        let old = containerd_pid(&s).expect("the node's containerd process");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &old.to_string()])
            .status();
        // The supervisor starts another containerd (back-off 1 s; reset once it answers).
        let new = eventually(Duration::from_secs(30), || {
            containerd_pid(&s).filter(|p| *p != old)
        });
        assert!(
            new.is_some(),
            "round {round}: containerd was not restarted:\n{}",
            s.log()
        );
        assert!(
            eventually(Duration::from_secs(60), || node_ready(&s).then_some(())).is_some(),
            "round {round}: node not Ready after containerd's restart:\n{}",
            s.log()
        );
        // Give the agent time to look at its pods through the new containerd: it must keep
        // the containers it has, not start them again.
        let tick = eventually(Duration::from_secs(30), || last_tick(&s, "ticker"));
        std::thread::sleep(Duration::from_secs(4));
        for (pod, was) in pods.iter().zip(&before) {
            let now = eventually(Duration::from_secs(30), || running(&s, pod))
                .unwrap_or_else(|| panic!("round {round}: pod {pod} not running:\n{}", s.log()));
            assert_eq!(
                &now, was,
                "round {round}: {pod} must be the same container, not restarted"
            );
        }
        assert_eq!(
            http_get(&s, &format!("http://{}:8080/", before[0].3)).as_deref(),
            Some("hello from kubox\n"),
            "round {round}: the web pod still serves"
        );
        // The new containerd took the running container's output over: its log grows.
        let later = eventually(Duration::from_secs(30), || {
            last_tick(&s, "ticker").filter(|t| Some(*t) > tick)
        });
        assert!(
            later.is_some(),
            "round {round}: the ticker's log stopped at {tick:?}"
        );
    }
    // A new pod still starts.
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "after",
            "--image=docker.io/library/busybox:test",
            "--",
            "sleep",
            "3600",
        ],
    );
    assert!(
        eventually(Duration::from_secs(60), || running(&s, "after")).is_some(),
        "a new pod did not start:\n{}\n{}",
        s.k(KUBECTL_NEW, &["get", "pod", "after", "-o", "yaml"]),
        s.log()
    );
}
