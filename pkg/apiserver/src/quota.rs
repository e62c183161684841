//! LimitRanger and ResourceQuota admission.
//!
//! LimitRanger: containers without requests/limits get the `Container` defaults of the
//! namespace's LimitRanges (recorded in the `kubernetes.io/limit-ranger` annotation), and pods
//! and PVCs outside their min/max/ratio are refused. ResourceQuota: a new object is charged to
//! every quota of its namespace that tracks it; the charge is written to the quota's
//! `status.used` with a revision-conditioned update before the object is stored (so two
//! concurrent creates cannot both take the last unit), as upstream does. The quota controller
//! recomputes `status.used` from what exists (releasing what deletions freed).

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use kubox_core::meta;
use kubox_core::quota::{format_milli, milli, usage};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

async fn list_in(ctx: &Ctx, storage: &str, ns: &str) -> ApiResult<Vec<(String, i64, Value)>> {
    let prefix = format!("{}{storage}/{ns}/", crate::storage::PREFIX);
    let res = ctx
        .state
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::internal(format!("listing {storage}: {e}")))?;
    Ok(res
        .items
        .into_iter()
        .filter_map(|kv| {
            serde_json::from_slice(&kv.value)
                .ok()
                .map(|v| (kv.key, kv.mod_revision, v))
        })
        .collect())
}

fn forbidden(ctx: &Ctx, obj: &Value, why: String) -> ApiError {
    let name = meta::name(obj).unwrap_or_default();
    ApiError::forbidden(format!("{} {name:?} is forbidden: {why}", ctx.def.plural))
        .with_details(json!({"name": name, "kind": ctx.def.plural}))
}

/// LimitRanger for a new pod or PVC.
pub async fn limit_ranger(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    let Some(ns) = ctx.namespace().map(String::from) else {
        return Ok(());
    };
    let ranges = list_in(ctx, "core/limitranges", &ns).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let limits: Vec<Value> = ranges
        .iter()
        .flat_map(|(_, _, r)| r["spec"]["limits"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut problems = Vec::new();
    if ctx.def.plural == "pods" {
        let mut applied: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for l in limits.iter().filter(|l| l["type"] == "Container") {
            for group in ["initContainers", "containers"] {
                for c in obj["spec"][group].as_array_mut().into_iter().flatten() {
                    let cname = c["name"].as_str().unwrap_or_default().to_string();
                    let res = c
                        .as_object_mut()
                        .map(|o| o.entry("resources").or_insert_with(|| json!({})));
                    let Some(Value::Object(res)) = res else {
                        continue;
                    };
                    let default_limit = l["default"].as_object().cloned().unwrap_or_default();
                    let default_request = l["defaultRequest"]
                        .as_object()
                        .cloned()
                        .unwrap_or_else(|| default_limit.clone());
                    for (field, defaults, slot) in [
                        ("limits", &default_limit, 1),
                        ("requests", &default_request, 0),
                    ] {
                        let set = res.entry(field).or_insert_with(|| json!({}));
                        let Some(set) = set.as_object_mut() else {
                            continue;
                        };
                        for (k, v) in defaults {
                            // A request never defaults above an explicit limit.
                            if set.contains_key(k) {
                                continue;
                            }
                            set.insert(k.clone(), v.clone());
                            let e = applied.entry(cname.clone()).or_default();
                            if slot == 0 {
                                e.0.push(k.clone())
                            } else {
                                e.1.push(k.clone())
                            }
                        }
                    }
                    check_bounds(l, res, "Container", &mut problems);
                }
            }
        }
        if !applied.is_empty() {
            let mut parts = Vec::new();
            for (c, (req, lim)) in &applied {
                if !req.is_empty() {
                    parts.push(format!("{} request for container {c}", req.join(", ")));
                }
                if !lim.is_empty() {
                    parts.push(format!("{} limit for container {c}", lim.join(", ")));
                }
            }
            obj["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
                json!(format!("LimitRanger plugin set: {}", parts.join("; ")));
        }
    }
    if ctx.def.plural == "persistentvolumeclaims" {
        for l in limits
            .iter()
            .filter(|l| l["type"] == "PersistentVolumeClaim")
        {
            if let Some(res) = obj["spec"]["resources"].as_object() {
                check_bounds(l, &res.clone(), "PersistentVolumeClaim", &mut problems);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(forbidden(ctx, obj, format!("[{}]", problems.join(", "))))
    }
}

/// min/max/maxLimitRequestRatio of one LimitRange item against a resources block.
fn check_bounds(l: &Value, res: &Map<String, Value>, kind: &str, problems: &mut Vec<String>) {
    let get = |field: &str, k: &str| res.get(field).and_then(|m| m.get(k)).and_then(milli);
    let show = |field: &str, k: &str| {
        res.get(field)
            .and_then(|m| m.get(k))
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default()
    };
    for (k, min) in l["min"].as_object().into_iter().flatten() {
        let Some(m) = milli(min) else { continue };
        if get("requests", k).is_some_and(|r| r < m) {
            problems.push(format!(
                "minimum {k} usage per {kind} is {}, but request is {}",
                min.as_str().unwrap_or_default(),
                show("requests", k)
            ));
        }
    }
    for (k, max) in l["max"].as_object().into_iter().flatten() {
        let Some(m) = milli(max) else { continue };
        let which = if kind == "PersistentVolumeClaim" {
            "requests"
        } else {
            "limits"
        };
        if get(which, k).is_some_and(|v| v > m) {
            problems.push(format!(
                "maximum {k} usage per {kind} is {}, but {} is {}",
                max.as_str().unwrap_or_default(),
                if which == "limits" {
                    "limit"
                } else {
                    "request"
                },
                show(which, k)
            ));
        }
    }
    for (k, ratio) in l["maxLimitRequestRatio"].as_object().into_iter().flatten() {
        if let (Some(r), Some(lim), Some(req)) =
            (milli(ratio), get("limits", k), get("requests", k))
            && req > 0
            && lim * 1000 / req > r
        {
            problems.push(format!(
                "{k} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                ratio.as_str().unwrap_or_default(),
                lim as f64 / req as f64
            ));
        }
    }
}

/// ResourceQuota admission for a new object: charge it to every quota of the namespace.
pub async fn resource_quota(ctx: &Ctx, obj: &Value, dry_run: bool) -> ApiResult<()> {
    let Some(ns) = ctx.namespace().map(String::from) else {
        return Ok(());
    };
    let charge = usage(&ctx.def.group, &ctx.def.plural, obj);
    for _ in 0..10 {
        let quotas = list_in(ctx, "core/resourcequotas", &ns).await?;
        if quotas.is_empty() {
            return Ok(());
        }
        let mut conflict = false;
        for (key, rev, q) in quotas {
            let hard = q["spec"]["hard"].as_object().cloned().unwrap_or_default();
            let tracked: Vec<(&String, i128)> = hard
                .iter()
                .filter_map(|(k, v)| milli(v).map(|h| (k, h)))
                .collect();
            if tracked.is_empty() {
                continue;
            }
            let qname = meta::name(&q).unwrap_or_default().to_string();
            // Pods must say what they use of a tracked compute resource.
            if ctx.def.group.is_empty() && ctx.def.plural == "pods" {
                let mut missing = Vec::new();
                for (k, _) in &tracked {
                    let (field, res) = match k.split_once('.') {
                        Some(("requests", r)) | Some(("limits", r))
                            if matches!(r, "cpu" | "memory") =>
                        {
                            (k.split('.').next().unwrap_or_default(), r)
                        }
                        None if matches!(k.as_str(), "cpu" | "memory") => ("requests", k.as_str()),
                        _ => continue,
                    };
                    for c in obj["spec"]["containers"].as_array().into_iter().flatten() {
                        if c["resources"][field][res].is_null() {
                            missing.push(format!(
                                "{field}.{res} for: {}",
                                c["name"].as_str().unwrap_or_default()
                            ));
                        }
                    }
                }
                if !missing.is_empty() {
                    missing.sort();
                    missing.dedup();
                    return Err(forbidden(
                        ctx,
                        obj,
                        format!("failed quota: {qname}: must specify {}", missing.join("; ")),
                    ));
                }
            }
            let used = q["status"]["used"].as_object().cloned().unwrap_or_default();
            let mut new_used = used.clone();
            let mut over = Vec::new();
            let mut touched = false;
            for (k, h) in &tracked {
                let Some(c) = charge.get(*k).copied().filter(|c| *c > 0) else {
                    continue;
                };
                touched = true;
                let u = used.get(*k).and_then(milli).unwrap_or(0);
                if u + c > *h {
                    over.push((k.to_string(), c, u, *h));
                }
                new_used.insert(k.to_string(), json!(format_milli(u + c)));
            }
            if !over.is_empty() {
                let f = |sel: fn(&(String, i128, i128, i128)) -> i128| {
                    over.iter()
                        .map(|o| format!("{}={}", o.0, format_milli(sel(o))))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                return Err(forbidden(
                    ctx,
                    obj,
                    format!(
                        "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                        f(|o| o.1),
                        f(|o| o.2),
                        f(|o| o.3)
                    ),
                ));
            }
            if !touched || dry_run {
                continue;
            }
            let mut q = q;
            q["status"]["used"] = Value::Object(new_used);
            if q["status"]["hard"].is_null() {
                q["status"]["hard"] = Value::Object(hard.clone());
            }
            let bytes = crate::storage::encode(&q)?;
            match ctx.state.store.update(&key, bytes, rev).await {
                Ok(_) => {}
                Err(kubox_store::Error::Conflict { .. }) => {
                    conflict = true;
                    break;
                }
                Err(e) => return Err(ApiError::internal(format!("charging quota {qname}: {e}"))),
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        "too many concurrent changes to the namespace's resource quotas; try again",
    ))
}
