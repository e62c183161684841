//! Helpers the workload controllers share: owner references, selectors, pod readiness and
//! availability, pods from templates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use kube::core::{Selector, SelectorExt};

use crate::Error;

/// The controller owner reference upstream controllers set on what they create.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of `meta`'s controller, if any.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// A label selector as a list parameter (`app=web,tier in (a,b)`); an invalid one is an error.
pub fn selector_string(sel: &LabelSelector) -> Result<String, Error> {
    let s = Selector::try_from(sel.clone()).map_err(|e| Error::invalid("selector", e))?;
    Ok(s.to_string())
}

pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    match Selector::try_from(sel.clone()) {
        // An empty selector matches nothing for workloads (upstream refuses it at validation).
        Ok(s) => !s.selects_all() && s.matches(labels),
        Err(_) => false,
    }
}

/// Not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if cond.status != "True" {
        return None;
    }
    Some(
        cond.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for `min_ready_seconds`; if it is ready but not yet long
/// enough, how long until it will be.
pub fn availability(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> (bool, Option<std::time::Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    if min_ready_seconds <= 0 {
        return (true, None);
    }
    let until = since.as_second() + i64::from(min_ready_seconds);
    if now.as_second() >= until {
        (true, None)
    } else {
        let wait = (until - now.as_second()).max(1) as u64;
        (false, Some(std::time::Duration::from_secs(wait)))
    }
}

/// A new pod from `template`, named `<prefix>-<random>` by the API server, owned by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    prefix: &str,
    namespace: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The order in which surplus pods are deleted (upstream's `ActivePods` ordering): unbound
/// before bound, Pending before Unknown before Running, not ready before ready, more restarts
/// first, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let bound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    bound(a)
        .cmp(&bound(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// An int-or-percent scaled against `total` (upstream's `GetScaledValueFromIntOrPercent`):
/// percentages round up or down as asked; a malformed percentage is an error.
pub fn scaled_value(
    v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    total: i32,
    round_up: bool,
) -> Result<i32, Error> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::invalid("int-or-percent", format!("invalid value {s:?}")))?;
            let n = i64::from(total) * pct;
            let scaled = if round_up { (n + 99) / 100 } else { n / 100 };
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// Sets `condition` (a PodCondition as JSON) on the pod's status, replacing one of its type.
pub async fn set_condition(
    api: &kube::Api<Pod>,
    pod: &Pod,
    condition: serde_json::Value,
) -> Result<Pod, kube::Error> {
    use kube::ResourceExt;
    let patch = serde_json::json!({"status": {"conditions": with_condition(pod, condition)}});
    api.patch_status(
        &pod.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
}

/// The pod's conditions with `condition` in place of any of its type.
pub fn with_condition(pod: &Pod, condition: serde_json::Value) -> Vec<serde_json::Value> {
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != condition["type"])
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(condition);
    conditions
}

/// The `DisruptionTarget` condition upstream sets on a pod it is about to delete.
pub fn disruption_target(reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": kubox_core::meta::now_rfc3339(),
    })
}
