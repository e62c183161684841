//! A pod's status as kubelet reports it, from what CRI says of its sandbox and containers:
//! phase, conditions, container statuses (state, lastState, restartCount, ids), IPs. The QoS
//! class is the API server's (set at creation; the merge patch keeps it).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kubox_containerd::cri::api;
use serde_json::{Value, json};

use crate::pods::View;
use crate::spec;

type StatusResult = Result<Value, Box<dyn std::error::Error + Send + Sync>>;

/// One container's status: (JSON, running, ready, finished, exit code).
type Entry = (Value, bool, bool, bool, Option<i32>);

fn state_json(st: &api::ContainerStatus) -> Value {
    match api::ContainerState::try_from(st.state).unwrap_or(api::ContainerState::ContainerUnknown) {
        api::ContainerState::ContainerRunning => {
            json!({"running": {"startedAt": spec::time_from_nanos(st.started_at)}})
        }
        api::ContainerState::ContainerExited => {
            let reason = if st.reason.is_empty() {
                if st.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string()
            } else {
                st.reason.clone()
            };
            let mut t = json!({
                "exitCode": st.exit_code,
                "reason": reason,
                "startedAt": spec::time_from_nanos(st.started_at),
                "finishedAt": spec::time_from_nanos(st.finished_at),
                "containerID": format!("containerd://{}", st.id),
            });
            if !st.message.is_empty() {
                t["message"] = json!(st.message);
            }
            json!({ "terminated": t })
        }
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    }
}

/// The status of `pod` (only the fields kubelet owns).
pub(crate) async fn compute(
    w: &impl View,
    pod: &Pod,
    sandbox_id: Option<&str>,
    ip: &str,
) -> StatusResult {
    let ctx = w.ctx();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut by_name: HashMap<String, Vec<api::ContainerStatus>> = HashMap::new();
    if let Some(sid) = sandbox_id {
        let mut cri = ctx.cri.runtime.clone();
        let containers = crate::pods::containers_in(&ctx.cri, sid).await?;
        for c in containers {
            let st = cri
                .container_status(api::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            let name = st
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            by_name.entry(name).or_default().push(st);
        }
    }
    for list in by_name.values_mut() {
        list.sort_by_key(|s| std::cmp::Reverse(s.metadata.as_ref().map_or(0, |m| m.attempt)));
    }
    let status_of = |c: &k8s_openapi::api::core::v1::Container| -> Entry {
        let list = by_name.get(&c.name);
        let cur = list.and_then(|l| l.first());
        let prev = list.and_then(|l| l.get(1));
        let mut state = match cur {
            Some(st) => state_json(st),
            None => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let running = state.get("running").is_some();
        let exit = cur
            .filter(|_| state.get("terminated").is_some())
            .map(|s| s.exit_code);
        if let Some((reason, message)) = w.waiting(&c.name)
            && !running
        {
            // A container waiting to be (re)started: its last run becomes lastState.
            state = json!({"waiting": {"reason": reason, "message": message}});
        }
        let last_state = match (cur, state.get("waiting").is_some(), prev) {
            (Some(c), true, _)
                if api::ContainerState::try_from(c.state)
                    == Ok(api::ContainerState::ContainerExited) =>
            {
                state_json(c)
            }
            (_, _, Some(p)) => state_json(p),
            _ => json!({}),
        };
        let restarts = cur.map_or(0, |s| s.metadata.as_ref().map_or(0, |m| m.attempt));
        let has_probes = c.readiness_probe.is_some() || c.startup_probe.is_some();
        let (ready, started) = match cur.and_then(|st| w.probed(&c.name, &st.id)) {
            Some((r, s)) => (running && r, running && s),
            None if has_probes => (false, running && c.startup_probe.is_none()),
            None => (running, running),
        };
        let mut v = json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": cur.map(|s| s.image_ref.clone()).unwrap_or_default(),
            "ready": ready,
            "started": started,
            "restartCount": restarts,
            "state": state,
            "lastState": last_state,
        });
        if let Some(st) = cur {
            v["containerID"] = json!(format!("containerd://{}", st.id));
        }
        (v, running, ready, exit.is_some(), exit)
    };
    let init: Vec<Entry> = spec
        .init_containers
        .iter()
        .flatten()
        .map(status_of)
        .collect();
    let main: Vec<Entry> = spec.containers.iter().map(status_of).collect();
    // Ephemeral containers are reported, but count for neither phase nor readiness.
    let ephemeral: Vec<Value> = crate::pods::ephemeral_containers(pod)
        .iter()
        .map(|(c, _)| {
            let (mut v, ..) = status_of(c);
            if let Some(m) = v.as_object_mut() {
                m.remove("started");
            }
            v["ready"] = json!(false);
            v
        })
        .collect();
    let initialized = init
        .iter()
        .all(|(_, _, _, done, code)| *done && *code == Some(0));
    let all_ready = !main.is_empty() && main.iter().all(|(_, _, ready, _, _)| *ready);
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let all_done = !main.is_empty() && main.iter().all(|(_, _, _, done, _)| *done);
    let any_failed = main
        .iter()
        .any(|(_, _, _, _, code)| code.is_some_and(|c| c != 0))
        || (restart_policy == "Never"
            && init
                .iter()
                .any(|(_, _, _, _, code)| code.is_some_and(|c| c != 0)));
    let phase = if all_done && restart_policy != "Always" {
        if any_failed { "Failed" } else { "Succeeded" }
    } else if restart_policy == "Never"
        && init
            .iter()
            .any(|(_, _, _, _, code)| code.is_some_and(|c| c != 0))
    {
        "Failed"
    } else if initialized
        && main
            .iter()
            .any(|(_, running, _, done, _)| *running || *done)
    {
        "Running"
    } else {
        "Pending"
    };
    let old_conditions: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let now = kubox_core::meta::now_rfc3339();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c["type"] == t && c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ready = all_ready && phase == "Running";
    let mut conditions = vec![
        cond("PodReadyToStartContainers", sandbox_id.is_some(), None),
        cond("Initialized", initialized, Some("ContainersNotInitialized")),
        cond("Ready", ready, Some("ContainersNotReady")),
        cond("ContainersReady", ready, Some("ContainersNotReady")),
        cond("PodScheduled", true, None),
    ];
    // Conditions others own (DisruptionTarget, readiness gates) are kept as they are.
    let own: Vec<Value> = conditions.iter().map(|c| c["type"].clone()).collect();
    conditions.extend(
        old_conditions
            .iter()
            .filter(|c| !own.contains(&c["type"]))
            .cloned(),
    );
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| kubox_core::meta::format_time(t.0))
        .unwrap_or(now);
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": ctx.node_ip,
        "hostIPs": [{"ip": ctx.node_ip}],
        "startTime": start_time,
        "containerStatuses": main.into_iter().map(|(v, ..)| v).collect::<Vec<_>>(),
    });
    if !ephemeral.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral);
    }
    if !init.is_empty() {
        status["initContainerStatuses"] =
            json!(init.into_iter().map(|(v, ..)| v).collect::<Vec<_>>());
    }
    if !ip.is_empty() {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    Ok(status)
}
