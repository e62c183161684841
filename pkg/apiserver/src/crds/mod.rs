//! CustomResourceDefinitions served dynamically: a watch on stored CRDs keeps the registry,
//! OpenAPI and discovery current, marks CRDs Established, and deletes a removed CRD's objects.

pub mod schema;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::state::{ApiState, CustomVersion};
use crate::storage;
use futures::StreamExt;
use kubox_core::meta;
use kubox_core::resources::{ResourceDef, SubresourceDef};
use kubox_store::EventKind;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Defaults, prunes and validates a custom resource against its version's schema.
pub fn admit(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if !ctx.def.custom {
        return Ok(());
    }
    let Some(cv) = ctx
        .state
        .custom_version(&ctx.def.group, &ctx.def.version, &ctx.def.plural)
    else {
        return Ok(());
    };
    let Some(s) = &cv.schema else { return Ok(()) };
    schema::apply_defaults(s, obj);
    if !cv.preserve_unknown {
        schema::prune(s, obj, true);
    }
    let failures = schema::validate(s, obj);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &ctx.def.kind,
            &ctx.def.group,
            meta::name(obj).unwrap_or_default(),
            failures,
        ))
    }
}

/// Kubernetes version priority: v10 > v2 > v1 > v11beta2 > v10beta3 > v3beta1 > v12alpha1 > foo.
fn version_rank(v: &str) -> (u8, u64, u64, String) {
    let rest = v.strip_prefix('v').unwrap_or("");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0, v.to_string());
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0, String::new());
    }
    for (stage, rank) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(stage)
            && let Ok(minor) = n.parse::<u64>()
        {
            return (rank, major, minor, String::new());
        }
    }
    (0, 0, 0, v.to_string())
}

/// Served versions, most preferred first.
fn sorted_versions(crd: &Value) -> Vec<Value> {
    let mut vs: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .collect();
    vs.sort_by(|a, b| {
        let ra = version_rank(a["name"].as_str().unwrap_or(""));
        let rb = version_rank(b["name"].as_str().unwrap_or(""));
        rb.0.cmp(&ra.0)
            .then(rb.1.cmp(&ra.1))
            .then(rb.2.cmp(&ra.2))
            .then(ra.3.cmp(&rb.3))
    });
    vs
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Serves every version of `crd`.
fn install(state: &ApiState, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let kind = names["kind"].as_str().unwrap_or("").to_string();
    let plural = names["plural"].as_str().unwrap_or("").to_string();
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return;
    }
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
    let versions = sorted_versions(crd);
    let Ok(mut reg) = state.registry.write() else {
        return;
    };
    let Ok(mut custom) = state.custom.write() else {
        return;
    };
    reg.remove_custom(&group, &plural);
    custom.retain(|(g, _, p), _| !(g == &group && p == &plural));
    for v in &versions {
        let version = v["name"].as_str().unwrap_or("").to_string();
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push(SubresourceDef {
                name: "status".into(),
                response: (group.clone(), version.clone(), kind.clone()),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        if v.pointer("/subresources/scale").is_some() {
            subresources.push(SubresourceDef {
                name: "scale".into(),
                response: ("autoscaling".into(), "v1".into(), "Scale".into()),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        reg.add(ResourceDef {
            group: group.clone(),
            version: version.clone(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: str_list(names.get("shortNames")),
            categories: str_list(names.get("categories")),
            verbs: [
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            subresources,
            storage: format!("{group}/{plural}"),
            custom: true,
        });
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let preserve_unknown = schema
            .as_ref()
            .and_then(|s| s.get("x-kubernetes-preserve-unknown-fields"))
            .and_then(Value::as_bool)
            == Some(true);
        if let Some(s) = &schema {
            state
                .openapi
                .set_custom(&group, &version, &kind, &plural, namespaced, s.clone());
        }
        custom.insert(
            (group.clone(), version.clone(), plural.clone()),
            CustomVersion {
                schema,
                printer_columns: v.get("additionalPrinterColumns").cloned(),
                preserve_unknown,
            },
        );
    }
    let order: Vec<String> = versions
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    reg.set_version_order(&group, &order);
    state.discovery_generation.fetch_add(1, Ordering::Relaxed);
}

fn uninstall(state: &ApiState, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Ok(mut reg) = state.registry.write() {
        reg.remove_custom(&group, &plural);
    }
    if let Ok(mut custom) = state.custom.write() {
        custom.retain(|(g, _, p), _| !(g == &group && p == &plural));
    }
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = v["name"].as_str() {
            state.openapi.remove_custom(&group, name, &kind);
        }
    }
    state.discovery_generation.fetch_add(1, Ordering::Relaxed);
}

/// Sets NamesAccepted/Established and acceptedNames once; true if the CRD was rewritten.
async fn establish(state: &ApiState, key: &str, crd: &Value, rev: i64) -> bool {
    let established = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
    let names_same = crd.pointer("/status/acceptedNames") == crd.pointer("/spec/names");
    if established && names_same {
        return false;
    }
    let now = meta::now_rfc3339();
    let mut new = crd.clone();
    new["status"] = json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| {
            vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()
        }).unwrap_or_default(),
    });
    match serde_json::to_vec(&new) {
        Ok(bytes) => state.store.update(key, bytes, rev).await.is_ok(),
        Err(_) => false,
    }
}

async fn delete_objects(state: &ApiState, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    if group.is_empty() || plural.is_empty() {
        return;
    }
    let prefix = format!("{}{group}/{plural}/", storage::PREFIX);
    if let Ok(res) = state.store.list(&prefix, None, None, None).await {
        for kv in res.items {
            let _ = state.store.delete(&kv.key, None).await;
        }
    }
}

/// Installs every stored CRD, then follows changes until the store closes.
pub async fn run(state: Arc<ApiState>) {
    loop {
        match follow(&state).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "CRD watch ended; restarting");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

async fn follow(state: &Arc<ApiState>) -> Result<(), kubox_store::Error> {
    let res = state.store.list(CRD_PREFIX, None, None, None).await?;
    for kv in &res.items {
        if let Ok(crd) = serde_json::from_slice::<Value>(&kv.value) {
            install(state, &crd);
            establish(state, &kv.key, &crd, kv.mod_revision).await;
        }
    }
    let mut events = state.store.watch(CRD_PREFIX, res.revision).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Ok(crd) = serde_json::from_slice::<Value>(&ev.kv.value) else {
            continue;
        };
        match ev.kind {
            EventKind::Create | EventKind::Update => {
                if crd
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|v| !v.is_null())
                {
                    continue;
                }
                install(state, &crd);
                if establish(state, &ev.kv.key, &crd, ev.kv.mod_revision).await {
                    tracing::info!(
                        crd = meta::name(&crd).unwrap_or_default(),
                        "custom resource definition established"
                    );
                }
            }
            EventKind::Delete => {
                let old = ev
                    .prev
                    .as_ref()
                    .and_then(|p| serde_json::from_slice::<Value>(&p.value).ok())
                    .unwrap_or(crd);
                uninstall(state, &old);
                delete_objects(state, &old).await;
                tracing::info!(
                    crd = meta::name(&old).unwrap_or_default(),
                    "custom resource definition removed"
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let crd = json!({"spec": {"versions": [
            {"name": "v1alpha1", "served": true}, {"name": "v1", "served": true},
            {"name": "v2beta1", "served": true}, {"name": "v1beta2", "served": true},
            {"name": "v3", "served": false}]}});
        let names: Vec<String> = sorted_versions(&crd)
            .iter()
            .map(|v| v["name"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, vec!["v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }
}
