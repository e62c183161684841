//! The node agent under stress: containerd dying under it, gRPC probes, container log
//! rotation. Each test runs a whole node (see [`Server::start_node`]).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    crate::node::run_web(&s);
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

/// A `grpc.health.v1.Health` server: statuses by service name (absent: SERVICE_UNKNOWN, as
/// upstream's health server answers NOT_FOUND), and the User-Agents of the calls it got.
#[derive(Clone, Default)]
struct Health {
    statuses: Arc<Mutex<HashMap<String, i32>>>,
    agents: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl tonic::server::UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let agent = req
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.agents.lock().unwrap().push(agent);
        let status = self
            .statuses
            .lock()
            .unwrap()
            .get(&req.into_inner().service)
            .copied();
        Box::pin(async move {
            match status {
                Some(status) => Ok(tonic::Response::new(HealthCheckResponse { status })),
                None => Err(tonic::Status::not_found("unknown service")),
            }
        })
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Health {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/grpc.health.v1.Health/Check" {
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(this, req).await)
        })
    }
}

/// A TCP listener on `0.0.0.0:port` inside the network namespace at `netns` (a thread enters
/// it to bind; the socket stays in that namespace wherever it is used).
fn listen_in(netns: &Path, port: u16) -> std::net::TcpListener {
    let netns = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    })
    .join()
    .unwrap()
}

/// The pod network namespaces CRI made on the node (`/run/netns/cni-*` in its mount namespace).
fn pod_netns(s: &Server) -> Vec<PathBuf> {
    let Some(kubox) = s.node_kubox_pid() else {
        return Vec::new();
    };
    std::fs::read_dir(format!("/proc/{kubox}/root/run/netns"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cni-"))
        })
        .collect()
}

#[test]
fn grpc_probes_ask_the_pods_health_service() {
    let s = ready_node();
    // The init container holds the pod back while the test puts a real gRPC health server
    // into the pod's network namespace: the probes then reach it at the pod's IP, from the
    // node, as they would reach a server in the container.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: grpc}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: wait, image: docker.io/library/busybox:test, command: [sleep, "4"]}
  containers:
  - name: app
    image: docker.io/library/busybox:test
    command: [sleep, "3600"]
    readinessProbe: {grpc: {port: 50051}, periodSeconds: 1, failureThreshold: 1}
    livenessProbe: {grpc: {port: 50051, service: liveness}, periodSeconds: 1, failureThreshold: 2}
"#,
    );
    let netns = eventually(Duration::from_secs(60), || {
        let found = pod_netns(&s);
        (found.len() == 1).then(|| found[0].clone())
    })
    .unwrap_or_else(|| panic!("no pod network namespace:\n{}", s.log()));
    let health = Health::default();
    health
        .statuses
        .lock()
        .unwrap()
        .extend([("".to_string(), NOT_SERVING), ("liveness".into(), SERVING)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = listen_in(&netns, 50051);
    let server = health.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .serve_with_incoming(
                server,
                tonic::transport::server::TcpIncoming::from(listener),
            )
            .await
    });
    let status =
        |name: &str| json(&s.k(KUBECTL_NEW, &["get", "pod", name, "-o", "json"]))["status"].clone();
    let ready = |st: &serde_json::Value| {
        st["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let set = |service: &str, v: i32| {
        health
            .statuses
            .lock()
            .unwrap()
            .insert(service.to_string(), v);
    };
    // NOT_SERVING: running, alive, not ready.
    let running = eventually(Duration::from_secs(60), || {
        let st = status("grpc");
        (st["phase"] == "Running" && st["containerStatuses"][0]["state"]["running"].is_object())
            .then_some(st)
    })
    .unwrap_or_else(|| panic!("{}\n{}", status("grpc"), s.log()));
    std::thread::sleep(Duration::from_secs(3));
    let st = status("grpc");
    assert!(!ready(&st), "NOT_SERVING must not be ready: {st}");
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0, "{st}");
    assert!(
        health
            .agents
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("kube-probe/")),
        "the probes reached the server: {:?}",
        health.agents.lock().unwrap()
    );
    // SERVING: ready.
    set("", SERVING);
    let st = eventually(Duration::from_secs(20), || {
        let st = status("grpc");
        ready(&st).then_some(st)
    });
    assert!(
        st.is_some(),
        "SERVING must make the pod ready: {}",
        status("grpc")
    );
    // NOT_SERVING again: not ready, not restarted.
    set("", NOT_SERVING);
    let st = eventually(Duration::from_secs(20), || {
        let st = status("grpc");
        (!ready(&st)).then_some(st)
    })
    .unwrap_or_else(|| panic!("NOT_SERVING must make the pod unready: {}", status("grpc")));
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0, "{st}");
    assert_eq!(
        st["containerStatuses"][0]["containerID"],
        running["containerStatuses"][0]["containerID"]
    );
    // The liveness service stops serving: the container is killed and started again.
    set("liveness", NOT_SERVING);
    let restarted = eventually(Duration::from_secs(60), || {
        let st = status("grpc");
        (st["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(st)
    });
    assert!(restarted.is_some(), "{}\n{}", status("grpc"), s.log());
    drop(rt);
}

/// `line N` numbers of CRI log lines (`<time> stdout F line N ...`) or plain `line N ...` lines.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let at = l.find("line ")?;
            l[at + 5..].split_whitespace().next()?.parse().ok()
        })
        .collect()
}

fn contiguous(n: &[u64]) -> bool {
    n.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn container_logs_are_rotated_and_kubectl_logs_reads_the_current_file() {
    let s = crate::node::ready_node_with(&[
        "--container-log-max-size=4Ki",
        "--container-log-max-files=3",
        "--container-log-monitor-interval=1s",
    ]);
    // About 2.5 KiB of log a second: a rotation every two seconds or so.
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "chatty",
            "--image=docker.io/library/busybox:test",
            "--",
            "sh",
            "-c",
            &format!(
                "i=0; while :; do for j in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo line $i {}; i=$((i+1)); done; sleep 1; done",
                "x".repeat(80)
            ),
        ],
    );
    let pod = eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "chatty", "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .unwrap_or_else(|| panic!("chatty not running:\n{}", s.log()));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = s
        .data_dir()
        .join("agent/pods")
        .join(&uid)
        .join("logs/chatty");
    let files = || -> Vec<String> {
        let mut f: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        f.sort();
        f
    };
    // Follow the log across rotations while they happen.
    let mut follow = s
        .kubectl_command(KUBECTL_NEW)
        .args(["logs", "-f", "chatty", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Rotated twice at least: a compressed file, a plain newest one, the current one; never
    // more than --container-log-max-files.
    let mut most = 0;
    let rotated = eventually(Duration::from_secs(40), || {
        let f = files();
        most = most.max(f.len());
        let gz = f
            .iter()
            .any(|n| n.starts_with("0.log.") && n.ends_with(".gz"));
        let plain = f
            .iter()
            .any(|n| n.starts_with("0.log.") && !n.ends_with(".gz"));
        (gz && plain && f.contains(&"0.log".to_string())).then_some(f)
    });
    assert!(rotated.is_some(), "files: {:?}\n{}", files(), s.log());
    for _ in 0..30 {
        most = most.max(files().len());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most <= 3, "at most 3 log files, saw {most}: {:?}", files());
    // No line is lost in a rotation: the newest rotated file ends where the current one starts.
    let seamless = eventually(Duration::from_secs(20), || {
        let f = files();
        let plain = f
            .iter()
            .find(|n| n.starts_with("0.log.") && !n.ends_with(".gz"))?;
        let old = line_numbers(&std::fs::read_to_string(dir.join(plain)).ok()?);
        let cur = line_numbers(&std::fs::read_to_string(dir.join("0.log")).ok()?);
        (contiguous(&old) && !cur.is_empty() && old.last()? + 1 == cur[0]).then_some(())
    });
    assert!(seamless.is_some(), "files: {:?}", files());
    // The compressed ones hold older lines.
    let gz = files().into_iter().find(|n| n.ends_with(".gz")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(dir.join(&gz)).unwrap()),
        &mut text,
    )
    .unwrap();
    let old = line_numbers(&text);
    assert!(!old.is_empty() && contiguous(&old), "{gz}: {text}");
    // kubectl logs: the current file only, in order, without the rotated lines.
    let out = s.k(KUBECTL_NEW, &["logs", "chatty"]);
    let n = line_numbers(&out);
    assert!(!n.is_empty() && contiguous(&n), "{out}");
    assert!(
        n[0] > *old.last().unwrap(),
        "kubectl logs starts after the rotated lines"
    );
    assert!(
        out.len() < 16 << 10,
        "{} bytes: more than the current file",
        out.len()
    );
    // The follower went on in each new file.
    follow.kill().unwrap();
    let followed = follow.wait_with_output().unwrap();
    let f = line_numbers(&String::from_utf8_lossy(&followed.stdout));
    assert!(contiguous(&f), "kubectl logs -f skipped lines: {f:?}");
    // A 4 KiB file holds about 30 of these lines: more than 60 span rotations.
    assert!(
        f.len() > 60,
        "kubectl logs -f followed only {} lines",
        f.len()
    );
}
