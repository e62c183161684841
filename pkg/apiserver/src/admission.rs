//! Built-in admission run on every create and update after defaulting and validation:
//! RBAC escalation prevention (a user grants only permissions they hold, unless allowed to
//! `escalate`/`bind`), NodeRestriction (a node creates only its own Node, Lease and CSINode),
//! and the ServiceAccount plugin (pods run as an existing service account and get the
//! `kube-api-access-*` token volume).

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::rbac::{Attributes, PolicyRule, covers};
use kubox_core::meta;
use serde_json::{Value, json};

/// Admission for `obj` about to be written by `ctx` (`old` on updates).
pub async fn admit(ctx: &Ctx, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    if ctx.info.subresource.is_some() {
        return Ok(());
    }
    match (ctx.def.group.as_str(), ctx.def.plural.as_str()) {
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => no_role_escalation(ctx, obj),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            no_binding_escalation(ctx, obj, old)
        }
        ("", "nodes") | ("coordination.k8s.io", "leases") | ("storage.k8s.io", "csinodes") => {
            node_restriction(ctx, obj)
        }
        ("", "pods") if old.is_none() => service_account(ctx, obj).await,
        _ => Ok(()),
    }
}

fn rules(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

fn may(ctx: &Ctx, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    crate::authz::decide(
        &ctx.state,
        &ctx.user,
        &Attributes::resource(verb, "rbac.authorization.k8s.io", resource, "", ns, name),
    )
    .allowed
}

/// Fails unless the requesting user holds every permission in `wanted` within `ns`.
fn confirm_no_escalation(
    ctx: &Ctx,
    wanted: &[PolicyRule],
    ns: &str,
    what: ApiError,
) -> ApiResult<()> {
    let owned: Vec<PolicyRule> = ctx
        .state
        .rbac
        .rules_for(&ctx.user, ns)
        .into_iter()
        .flat_map(|(_, r)| r.as_ref().clone())
        .collect();
    let missing: Vec<&PolicyRule> = wanted.iter().filter(|r| !covers(&owned, r)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    Err(ApiError::forbidden(format!(
        "{}: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{list}",
        what.message, ctx.user.name, ctx.user.groups
    ))
    .with_details(what.details.unwrap_or_default()))
}

fn forbidden_on(ctx: &Ctx, name: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{}.{} {name:?} is forbidden",
        ctx.def.plural, ctx.def.group
    ))
    .with_details(json!({"name": name, "group": ctx.def.group, "kind": ctx.def.plural}))
}

fn no_role_escalation(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let ns = ctx.namespace().unwrap_or_default();
    let name = meta::name(obj).unwrap_or_default();
    if may(ctx, "escalate", &ctx.def.plural, ns, name) {
        return Ok(());
    }
    confirm_no_escalation(ctx, &rules(obj), ns, forbidden_on(ctx, name))
}

fn no_binding_escalation(ctx: &Ctx, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let ns = ctx.namespace().unwrap_or_default();
    let name = meta::name(obj).unwrap_or_default();
    if let Some(old) = old
        && old.get("roleRef") != obj.get("roleRef")
    {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} {name:?} is invalid: roleRef: Invalid value: cannot change roleRef",
                ctx.def.kind
            ),
        )
        .with_details(json!({"name": name, "group": ctx.def.group, "kind": ctx.def.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: cannot change roleRef", "field": "roleRef"}]})));
    }
    let kind = obj
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = obj
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (plural, role_ns) = if kind == "Role" {
        ("roles", ns)
    } else {
        ("clusterroles", "")
    };
    if may(ctx, "bind", plural, ns, role)
        || (role_ns.is_empty() && may(ctx, "bind", plural, "", role))
    {
        return Ok(());
    }
    let wanted = if kind == "Role" {
        ctx.state.rbac.role(ns, role)
    } else {
        ctx.state.rbac.cluster_role(role)
    };
    let Some(wanted) = wanted else {
        return Err(ApiError::forbidden(format!(
            "{}: {kind} {role:?} not found, and user {:?} may not bind it",
            forbidden_on(ctx, name).message,
            ctx.user.name
        )));
    };
    confirm_no_escalation(ctx, &wanted, ns, forbidden_on(ctx, name))
}

fn node_restriction(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let Some(node) = ctx.user.as_node() else {
        return Ok(());
    };
    let name = meta::name(obj).unwrap_or_default();
    if name != node {
        return Err(ApiError::forbidden(format!(
            "node {node:?} is not allowed to modify {} {name:?}",
            ctx.def.singular
        )));
    }
    Ok(())
}

/// Upstream's ServiceAccount admission for new pods.
async fn service_account(ctx: &Ctx, pod: &mut Value) -> ApiResult<()> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let sa_name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let ns = ctx.namespace().unwrap_or_default().to_string();
    let sa =
        crate::storage::get_stored(&ctx.state, "core/serviceaccounts", Some(&ns), &sa_name).await?;
    let Some(sa) = sa else {
        return Err(ApiError::forbidden(format!(
            "pods {:?} is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount {sa_name:?} not found",
            meta::name(pod).unwrap_or_default()
        ))
        .with_details(json!({"name": meta::name(pod).unwrap_or_default(), "kind": "pods"})));
    };
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::internal("pod spec vanished"))?;
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let mounted = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT))
    };
    let volume = format!(
        "kube-api-access-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..5]
    );
    let mut added = false;
    for group in ["initContainers", "containers"] {
        for c in spec
            .get_mut(group)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if mounted(c) {
                continue;
            }
            let mounts = c
                .as_object_mut()
                .map(|o| o.entry("volumeMounts").or_insert_with(|| json!([])));
            if let Some(Value::Array(m)) = mounts {
                m.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT}));
                added = true;
            }
        }
    }
    if added {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Value::Array(v) = volumes {
            v.push(json!({
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }
    Ok(())
}
