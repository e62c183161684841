//! `POST pods/{name}/eviction` (policy/v1 Eviction): a pod deletion that respects its
//! PodDisruptionBudget, as upstream's eviction REST: a pod no budget covers, or one that is
//! not running yet, terminal or already deleting, is deleted at once; with one budget, an
//! allowed disruption is taken (`disruptionsAllowed` decremented, the pod recorded in
//! `disruptedPods` for the disruption controller) before the pod is deleted, otherwise the
//! answer is 429; more than one budget is an error.

use super::delete::{DeleteOptions, delete_one};
use super::update::write_update;
use super::{Ctx, json_response};
use crate::error::{ApiError, ApiResult};
use crate::request::decode_body;
use crate::storage;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use kubox_core::meta;
use kubox_core::selectors::LabelSelector;
use serde_json::{Value, json};

/// Upstream's cap on `status.disruptedPods` (evictions the controller has not confirmed).
const MAX_DISRUPTED_PODS: usize = 2000;

pub async fn evict(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let eviction = decode_body(ctx.content_type(), &body)?;
    if meta::name(&eviction).is_some_and(|n| !n.is_empty() && n != ctx.name()) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = eviction
        .get("deleteOptions")
        .filter(|o| !o.is_null())
        .map(|o| serde_json::to_vec(o).unwrap_or_default())
        .unwrap_or_default();
    let opts = DeleteOptions::parse(ctx, &options)?;
    let (pod, _) = super::read_object(ctx).await?;
    if !can_ignore_pdb(&pod) {
        let mut attempts = 0;
        loop {
            match take_disruption(ctx, &pod, opts.dry_run).await {
                Err(e) if e.code == 409 && attempts < 20 => attempts += 1,
                other => break other?,
            }
        }
    }
    if !opts.dry_run {
        mark_disruption_target(ctx).await?;
    }
    delete_one(ctx, ctx.name(), &opts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "code": 201}),
    ))
}

/// Gives a pod that is not finished the `DisruptionTarget` condition upstream's eviction sets
/// (`EvictionByEvictionAPI`) before it is deleted, so Jobs' podFailurePolicy can see why it
/// went.
async fn mark_disruption_target(ctx: &Ctx) -> ApiResult<()> {
    for _ in 0..20 {
        let (pod, rev) = super::read_object(ctx).await?;
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return Ok(());
        }
        let mut new = pod.clone();
        let condition = json!({"type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
            "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
        let mut conditions: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "DisruptionTarget")
            .cloned()
            .collect();
        conditions.push(condition);
        new["status"]["conditions"] = json!(conditions);
        let mut status_ctx = ctx.clone();
        status_ctx.info.verb = "update".into();
        status_ctx.info.subresource = Some("status".into());
        match write_update(&status_ctx, &pod, new, rev, "kube-apiserver", false).await {
            Err(e) if e.code == 409 => continue,
            other => return other.map(|_| ()),
        }
    }
    Err(ApiError::stale("pods", "", ctx.name()))
}

/// Pods whose eviction no budget guards: not yet running, finished, or already deleting.
fn can_ignore_pdb(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
        || pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Takes one disruption from the pod's budget (if it has one); Ok when the pod may go.
async fn take_disruption(ctx: &Ctx, pod: &Value, dry_run: bool) -> ApiResult<()> {
    let def = ctx
        .state
        .registry()
        .lookup("policy", "v1", "poddisruptionbudgets")
        .cloned()
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
    let prefix = storage::prefix(&def, ctx.namespace());
    let mut matching = Vec::new();
    for kv in ctx.state.store.list(&prefix, None, None, None).await?.items {
        let pdb = storage::decode(&def, &kv)?;
        // policy/v1: an empty selector selects every pod of the namespace; none selects none.
        let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else {
            continue;
        };
        let Ok(sel) = LabelSelector::from_object(sel) else {
            continue;
        };
        if sel.matches_object(pod) {
            matching.push((pdb, kv.mod_revision));
        }
    }
    let (pdb, rev) = match matching.len() {
        0 => return Ok(()),
        1 => matching.remove(0),
        _ => {
            return Err(ApiError::internal(
                "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let pdb_name = meta::name(&pdb).unwrap_or_default().to_string();
    let status = |f: &str| {
        pdb.pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let healthy = pod_ready(pod);
    let policy = pdb
        .pointer("/spec/unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        .unwrap_or("IfHealthyBudget");
    if !healthy {
        if policy == "AlwaysAllow" {
            return Ok(());
        }
        let desired = status("desiredHealthy");
        if status("currentHealthy") >= desired && desired > 0 {
            return Ok(());
        }
    }
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status("observedGeneration") < generation {
        return Err(too_many_requests(format!(
            "The disruption budget {pdb_name} is still being processed by the server."
        )));
    }
    let allowed = status("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(format!(
            "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
            status("desiredHealthy"),
            status("currentHealthy")
        )));
    }
    let mut new = pdb.clone();
    new["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !new["status"]["disruptedPods"].is_object() {
        new["status"]["disruptedPods"] = json!({});
    }
    new["status"]["disruptedPods"][ctx.name()] = json!(meta::now_rfc3339());
    let mut pdb_ctx = ctx.clone();
    pdb_ctx.def = def;
    pdb_ctx.info.group = "policy".into();
    pdb_ctx.info.version = "v1".into();
    pdb_ctx.info.resource = "poddisruptionbudgets".into();
    pdb_ctx.info.verb = "update".into();
    pdb_ctx.info.name = Some(pdb_name);
    pdb_ctx.info.subresource = Some("status".into());
    write_update(&pdb_ctx, &pdb, new, rev, "kube-apiserver", dry_run).await?;
    Ok(())
}

/// Upstream's refusal of an eviction: 429 with a `DisruptionBudget` cause.
fn too_many_requests(cause: String) -> ApiError {
    ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pods_not_being_deleted_need_a_budget() {
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_pdb(&json!({"status": {"phase": "Succeeded"}})));
        assert!(can_ignore_pdb(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_pdb(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn refusal_is_upstreams_429() {
        let s = too_many_requests("x".into()).status();
        assert_eq!(s["code"], 429);
        assert_eq!(s["reason"], "TooManyRequests");
        assert_eq!(s["details"]["causes"][0]["reason"], "DisruptionBudget");
    }
}
