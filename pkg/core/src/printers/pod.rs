//! Pod rows: upstream's `printPod` READY / STATUS / RESTARTS computation.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::Column;
use super::util::{
    age_cell, arr, col, condition_status, int, name_cell, name_col, since, st, wide,
};
use crate::meta;

pub(super) fn columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        super::util::age_col(),
        wide(
            "IP",
            "string",
            "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        wide(
            "Node",
            "string",
            "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
        ),
        wide(
            "Nominated Node",
            "string",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
        ),
        wide(
            "Readiness Gates",
            "string",
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ]
}

/// The READY, STATUS and RESTARTS cells of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodSummary {
    pub ready: String,
    pub status: String,
    pub restarts: String,
}

fn object<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|v| v.is_object())
}

/// `lastState.terminated.finishedAt` of a container status.
fn last_finished(c: &Value) -> Option<jiff::Timestamp> {
    c.pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
}

fn later(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// "Signal:9" / "ExitCode:1" for a terminated state without reason.
fn exit_reason(term: &Value) -> String {
    match int(term, "/signal") {
        0 => format!("ExitCode:{}", int(term, "/exitCode")),
        sig => format!("Signal:{sig}"),
    }
}

/// Upstream's `printPod` status logic, on a JSON pod.
pub(super) fn summarize(pod: &Value) -> PodSummary {
    let init_specs = arr(pod, "/spec/initContainers");
    let sidecars: HashSet<&str> = init_specs
        .iter()
        .filter(|c| st(c, "/restartPolicy") == "Always")
        .map(|c| st(c, "/name"))
        .collect();
    let total = arr(pod, "/spec/containers").len() + sidecars.len();
    let phase = st(pod, "/status/phase");
    let mut reason = match st(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    for c in arr(pod, "/status/conditions") {
        if st(c, "/type") == "PodScheduled" && st(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }

    let (mut restarts, mut sidecar_restarts, mut ready) = (0i64, 0i64, 0usize);
    let (mut last_restart, mut last_sidecar_restart) = (None, None);
    let mut initializing = false;
    for (i, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        restarts += int(c, "/restartCount");
        last_restart = later(last_restart, last_finished(c));
        let is_sidecar = sidecars.contains(st(c, "/name"));
        if is_sidecar {
            sidecar_restarts += int(c, "/restartCount");
            last_sidecar_restart = later(last_sidecar_restart, last_finished(c));
        }
        let state = c.get("state").unwrap_or(&Value::Null);
        let terminated = object(state, "terminated");
        let waiting = object(state, "waiting");
        match (terminated, waiting) {
            (Some(t), _) if int(t, "/exitCode") == 0 => continue,
            _ if is_sidecar && c.get("started").and_then(Value::as_bool) == Some(true) => {
                if c.get("ready").and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            (Some(t), _) => {
                reason = match st(t, "/reason") {
                    "" => format!("Init:{}", exit_reason(t)),
                    r => format!("Init:{r}"),
                };
            }
            (None, Some(w))
                if !st(w, "/reason").is_empty() && st(w, "/reason") != "PodInitializing" =>
            {
                reason = format!("Init:{}", st(w, "/reason"));
            }
            _ => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    let initialized = condition_status(pod, "/status/conditions", "Initialized") == Some("True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            last_restart = later(last_restart, last_finished(c));
            let state = c.get("state").unwrap_or(&Value::Null);
            let waiting_reason = object(state, "waiting").map_or("", |w| st(w, "/reason"));
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = object(state, "terminated") {
                reason = match st(t, "/reason") {
                    "" => exit_reason(t),
                    r => r.to_string(),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && object(state, "running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = match condition_status(pod, "/status/conditions", "Ready") {
                Some("True") => "Running".into(),
                _ => "NotReady".into(),
            };
        }
    }

    if meta::meta_str(pod, "deletionTimestamp").is_some() {
        if st(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", since(Some(&meta::format_time(t))))
        }
        _ => restarts.to_string(),
    };
    PodSummary {
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts,
    }
}

/// Upstream's READINESS GATES cell: "<none>" or "true/total".
fn readiness_gates(pod: &Value) -> String {
    let gates = arr(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".into();
    }
    let true_count = gates
        .iter()
        .filter(|g| {
            condition_status(pod, "/status/conditions", st(g, "/conditionType")) == Some("True")
        })
        .count();
    format!("{true_count}/{}", gates.len())
}

fn or_none(v: &str) -> Value {
    json!(if v.is_empty() { "<none>" } else { v })
}

pub(super) fn row(pod: &Value) -> Vec<Value> {
    let sum = summarize(pod);
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| st(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| st(pod, "/status/podIP"));
    vec![
        name_cell(pod),
        json!(sum.ready),
        json!(sum.status),
        json!(sum.restarts),
        age_cell(pod),
        or_none(ip),
        or_none(st(pod, "/spec/nodeName")),
        or_none(st(pod, "/status/nominatedNodeName")),
        json!(readiness_gates(pod)),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(pod: Value) -> String {
        summarize(&pod).status
    }

    fn ago(secs: i64) -> String {
        meta::format_time(
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - secs).unwrap(),
        )
    }

    #[test]
    fn running_pod_counts_ready_containers() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"running": {}}}]}});
        let s = summarize(&pod);
        assert_eq!(
            (s.ready.as_str(), s.status.as_str(), s.restarts.as_str()),
            ("1/2", "Running", "0")
        );
    }

    #[test]
    fn pending_init_containers_show_progress() {
        let pod = json!({"spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "state": {"running": {}}}]}});
        assert_eq!(status(pod), "Init:1/2");
        let pod = json!({"spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(status(pod), "Init:0/1");
    }

    #[test]
    fn failing_init_containers_show_their_reason() {
        let pod = json!({"spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(status(pod), "Init:CrashLoopBackOff");
        let pod = json!({"spec": {"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]},
            "status": {"initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}});
        assert_eq!(status(pod), "Init:ExitCode:3");
    }

    #[test]
    fn waiting_containers_show_crash_loop_back_off() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}}]}});
        let s = summarize(&pod);
        assert_eq!(s.status, "CrashLoopBackOff");
        assert_eq!(s.restarts, "3 (5m ago)");
        assert_eq!(s.ready, "0/1");
    }

    #[test]
    fn finished_pods_show_completed_or_error() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(status(pod), "Completed");
        let pod = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}});
        assert_eq!(status(pod), "Signal:9");
    }

    #[test]
    fn completed_container_next_to_running_one_is_not_ready() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
                {"name": "a", "ready": true, "state": {"running": {}}},
                {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(status(pod), "NotReady");
    }

    #[test]
    fn deleted_pods_are_terminating_unless_finished() {
        let pod = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(status(pod), "Terminating");
        let pod = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Succeeded"}});
        assert_eq!(status(pod), "Succeeded");
        let pod = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running", "reason": "NodeLost"}});
        assert_eq!(status(pod), "Unknown");
    }

    #[test]
    fn scheduling_gated_pods_say_so() {
        let pod = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(status(pod), "SchedulingGated");
    }

    #[test]
    fn started_sidecars_count_toward_ready_and_total() {
        let pod = json!({"spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}],
                                  "containers": [{"name": "a"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "side", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
        let s = summarize(&pod);
        assert_eq!(
            (s.ready.as_str(), s.status.as_str(), s.restarts.as_str()),
            ("2/2", "Running", "1")
        );
    }

    #[test]
    fn wide_cells_default_to_none() {
        let r = row(
            &json!({"metadata": {"name": "p"}, "spec": {"readinessGates": [{"conditionType": "x"}]},
            "status": {"podIPs": [{"ip": "10.42.0.5"}], "conditions": [{"type": "x", "status": "True"}]}}),
        );
        assert_eq!(
            r[5..],
            [
                json!("10.42.0.5"),
                json!("<none>"),
                json!("<none>"),
                json!("1/1")
            ]
        );
    }
}
