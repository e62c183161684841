//! Container probes as kubelet runs them: startup, liveness and readiness; exec (CRI
//! ExecSync), httpGet (HTTP/1.1 from the node to the pod), tcpSocket and grpc
//! (`grpc.health.v1.Health/Check`, SERVING is success) handlers; initial
//! delay, period, timeout and success/failure thresholds. A failed liveness or startup probe
//! kills the container (the restart policy then applies); readiness decides the container's
//! `ready` and so the pod's Ready condition.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubox_containerd::cri::{Cri, api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the probes of one container have concluded so far.
#[derive(Debug, Clone)]
pub struct ProbeState {
    /// The container these results belong to (a new container starts over).
    pub container_id: String,
    pub started_at: Instant,
    pub startup_done: bool,
    pub ready: bool,
    counts: [(u32, u32); 3],
    last_run: [Option<Instant>; 3],
}

/// What the worker must do after probing.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Kill the container: (probe kind, message).
    Kill(&'static str, String),
}

/// The User-Agent of HTTP and gRPC probes, as kubelet 1.33's.
const USER_AGENT: &str = "kube-probe/1.33";

const STARTUP: usize = 0;
const LIVENESS: usize = 1;
const READINESS: usize = 2;

impl ProbeState {
    pub fn new(container_id: String, has_readiness: bool) -> ProbeState {
        ProbeState {
            container_id,
            started_at: Instant::now(),
            startup_done: false,
            ready: !has_readiness,
            counts: [(0, 0); 3],
            last_run: [None; 3],
        }
    }
}

fn due(p: &Probe, state: &ProbeState, kind: usize, now: Instant) -> bool {
    let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    now >= state.started_at + delay && state.last_run[kind].is_none_or(|t| now >= t + period)
}

/// Runs the probes of `c` that are due; updates `state`.
pub async fn probe(cri: &Cri, c: &Container, pod_ip: &str, state: &mut ProbeState) -> Verdict {
    let now = Instant::now();
    let startup = c.startup_probe.as_ref();
    if let Some(p) = startup.filter(|_| !state.startup_done) {
        if due(p, state, STARTUP, now) {
            state.last_run[STARTUP] = Some(now);
            let (ok, msg) = run(cri, c, p, pod_ip, &state.container_id).await;
            if record(p, state, STARTUP, ok) == Some(true) {
                state.startup_done = true;
            } else if state.counts[STARTUP].1 >= p.failure_threshold.unwrap_or(3).max(1) as u32 {
                return Verdict::Kill("Startup", msg);
            }
        }
        return Verdict::Healthy;
    }
    state.startup_done = true;
    if let Some(p) = &c.liveness_probe
        && due(p, state, LIVENESS, now)
    {
        state.last_run[LIVENESS] = Some(now);
        let (ok, msg) = run(cri, c, p, pod_ip, &state.container_id).await;
        if record(p, state, LIVENESS, ok) == Some(false) {
            return Verdict::Kill("Liveness", msg);
        }
    }
    if let Some(p) = &c.readiness_probe
        && due(p, state, READINESS, now)
    {
        state.last_run[READINESS] = Some(now);
        let (ok, _) = run(cri, c, p, pod_ip, &state.container_id).await;
        if let Some(ready) = record(p, state, READINESS, ok) {
            state.ready = ready;
        }
    }
    Verdict::Healthy
}

/// Counts consecutive results; Some(true) once the success threshold is met, Some(false) once
/// the failure threshold is, None in between.
fn record(p: &Probe, state: &mut ProbeState, kind: usize, ok: bool) -> Option<bool> {
    let (succ, fail) = &mut state.counts[kind];
    if ok {
        *succ += 1;
        *fail = 0;
    } else {
        *fail += 1;
        *succ = 0;
    }
    if ok && *succ >= p.success_threshold.unwrap_or(1).max(1) as u32 {
        Some(true)
    } else if !ok && *fail >= p.failure_threshold.unwrap_or(3).max(1) as u32 {
        Some(false)
    } else {
        None
    }
}

fn port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => name.parse().ok().or_else(|| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }),
    }
}

/// Runs a lifecycle hook (postStart, preStop) of `c` within `timeout`: exec, httpGet and
/// tcpSocket as a probe would, `sleep` by sleeping. (success, message for events).
pub async fn run_hook(
    cri: &Cri,
    c: &Container,
    h: &LifecycleHandler,
    pod_ip: &str,
    container_id: &str,
    timeout: Duration,
) -> (bool, String) {
    if let Some(sleep) = &h.sleep {
        let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
        tokio::time::sleep(wanted.min(timeout)).await;
        return (true, String::new());
    }
    let as_probe = Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        tcp_socket: h.tcp_socket.clone(),
        timeout_seconds: Some(timeout.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    run(cri, c, &as_probe, pod_ip, container_id).await
}

/// One probe run: (success, message for events).
async fn run(
    cri: &Cri,
    c: &Container,
    p: &Probe,
    pod_ip: &str,
    container_id: &str,
) -> (bool, String) {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &p.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let req = api::ExecSyncRequest {
            container_id: container_id.into(),
            cmd: cmd.clone(),
            timeout: timeout.as_secs() as i64,
        };
        return match tokio::time::timeout(
            timeout + Duration::from_secs(1),
            cri.runtime.clone().exec_sync(req),
        )
        .await
        {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let out = String::from_utf8_lossy(&r.stdout).trim().to_string();
                (
                    r.exit_code == 0,
                    format!("probe command {cmd:?} exited with {}: {out}", r.exit_code),
                )
            }
            Ok(Err(e)) => (false, format!("probe command failed: {}", e.message())),
            Err(_) => (false, format!("command {cmd:?} timed out")),
        };
    }
    if let Some(h) = &p.http_get {
        let Some(port) = port(c, &h.port) else {
            return (false, format!("unknown port {:?}", h.port));
        };
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut headers = String::new();
        for hh in h.http_headers.iter().flatten() {
            headers.push_str(&format!("{}: {}\r\n", hh.name, hh.value));
        }
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n{headers}\r\n"
        );
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            s.write_all(req.as_bytes()).await?;
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await?;
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&buf[..n]).to_string())
        };
        return match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(resp)) => {
                let code: u16 = resp
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                (
                    (200..400).contains(&code),
                    format!("HTTP probe failed with statuscode: {code}"),
                )
            }
            Ok(Err(e)) => (false, format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => (
                false,
                format!("Get \"http://{host}:{port}{path}\": context deadline exceeded"),
            ),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port(c, &t.port) else {
            return (false, format!("unknown port {:?}", t.port));
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(e)) => (false, format!("dial tcp {host}:{port}: {e}")),
            Err(_) => (false, format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return (false, format!("invalid port {}", g.port));
        };
        let service = g.service.clone().unwrap_or_default();
        return grpc_health(pod_ip, port, &service, timeout).await;
    }
    // A probe without a handler is refused by validation; nothing to run.
    (true, String::new())
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// One gRPC health check of `service` at `host:port` (plaintext, as kubelet's), connection and
/// call within `timeout`: (SERVING, message as kubelet words it).
async fn grpc_health(host: &str, port: u16, service: &str, timeout: Duration) -> (bool, String) {
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(USER_AGENT))
    {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return (false, format!("invalid address {addr}: {e}")),
    };
    let connected = tokio::time::timeout(timeout, endpoint.connect()).await;
    let channel = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return (
                false,
                format!(
                    "timeout: failed to connect service {addr:?} within {}s: {}",
                    timeout.as_secs(),
                    error_chain(&e)
                ),
            );
        }
        Err(_) => {
            return (
                false,
                format!(
                    "timeout: failed to connect service {addr:?} within {}s",
                    timeout.as_secs()
                ),
            );
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(error_chain(&e)))?;
        grpc.unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => {
            let status = r.into_inner().status;
            if status == 1 {
                (true, String::new())
            } else {
                let name = usize::try_from(status)
                    .ok()
                    .and_then(|i| SERVING_STATUS.get(i))
                    .copied()
                    .unwrap_or("UNKNOWN");
                (
                    false,
                    format!("service unhealthy (responded with {name:?})"),
                )
            }
        }
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => (
            false,
            format!(
                "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ),
        ),
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => (
            false,
            format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            ),
        ),
        Ok(Err(s)) => (
            false,
            format!("rpc error: code = {:?} desc = {}", s.code(), s.message()),
        ),
        Err(_) => (
            false,
            format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            ),
        ),
    }
}

/// An error with its sources, `: `-separated (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let p = probe(json!({"successThreshold": 2, "failureThreshold": 2}));
        let mut s = ProbeState::new("c".into(), true);
        assert_eq!(record(&p, &mut s, READINESS, true), None);
        assert_eq!(record(&p, &mut s, READINESS, true), Some(true));
        assert_eq!(record(&p, &mut s, READINESS, false), None);
        assert_eq!(
            record(&p, &mut s, READINESS, true),
            None,
            "a failure resets the successes"
        );
        assert_eq!(record(&p, &mut s, READINESS, false), None);
        assert_eq!(record(&p, &mut s, READINESS, false), Some(false));
    }

    #[test]
    fn probes_wait_for_their_initial_delay_and_period() {
        let p = probe(json!({"initialDelaySeconds": 5, "periodSeconds": 3}));
        let mut s = ProbeState::new("c".into(), false);
        let now = s.started_at;
        assert!(!due(&p, &s, LIVENESS, now));
        assert!(due(&p, &s, LIVENESS, now + Duration::from_secs(5)));
        s.last_run[LIVENESS] = Some(now + Duration::from_secs(5));
        assert!(!due(&p, &s, LIVENESS, now + Duration::from_secs(7)));
        assert!(due(&p, &s, LIVENESS, now + Duration::from_secs(8)));
    }
}
