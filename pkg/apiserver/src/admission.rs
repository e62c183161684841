//! Built-in admission run on every create and update after defaulting and validation:
//! RBAC escalation prevention (a user grants only permissions they hold, unless allowed to
//! `escalate`/`bind`), NodeRestriction (a node creates only its own Node, Lease and CSINode),
//! the ServiceAccount plugin (pods run as an existing service account and get the
//! `kube-api-access-*` token volume), Priority (priorityClassName -> priority),
//! DefaultTolerationSeconds (300 s for not-ready/unreachable), and the token controller's
//! work on `kubernetes.io/service-account-token` Secrets (filled when created),
//! DefaultStorageClass (a claim without `storageClassName` gets the default class),
//! StorageObjectInUseProtection (PVC/PV protection finalizers); the
//! certificate plugins are in `csr`.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::rbac::{Attributes, PolicyRule, covers};
use kubox_core::meta;
use serde_json::{Value, json};

/// Admission for `obj` about to be written by `ctx` (`old` on updates).
pub async fn admit(ctx: &Ctx, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    if crate::csr::is_csr(ctx) {
        return crate::csr::admit(ctx, obj, old);
    }
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
        ("", "pods") if old.is_none() => {
            node_restriction_of_pods(ctx, obj)?;
            crate::quota::limit_ranger(ctx, obj).await?;
            if is_mirror_pod(obj) {
                mirror_pod_references(obj)?;
            } else {
                service_account(ctx, obj).await?;
            }
            priority(ctx, obj).await?;
            default_toleration_seconds(&ctx.state.config, obj);
            Ok(())
        }
        ("", "secrets") if old.is_none() => legacy_token_secret(ctx, obj).await,
        ("", "persistentvolumeclaims") if old.is_none() => {
            in_use_protection(ctx, obj, "kubernetes.io/pvc-protection");
            default_storage_class(ctx, obj).await?;
            crate::quota::limit_ranger(ctx, obj).await
        }
        ("", "persistentvolumes") if old.is_none() => {
            in_use_protection(ctx, obj, "kubernetes.io/pv-protection");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// StorageObjectInUseProtection: new claims and volumes get their protection finalizer,
/// which the controller manager's storage protection controller removes once unused (only
/// added while it runs, like the propagation finalizers, so deletes never hang without it).
fn in_use_protection(ctx: &Ctx, obj: &mut Value, finalizer: &str) {
    if !ctx.state.gc_running() {
        return;
    }
    let list = &mut obj["metadata"]["finalizers"];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(l) = list.as_array_mut()
        && !l.iter().any(|f| f == finalizer)
    {
        l.push(json!(finalizer));
    }
}

/// DefaultStorageClass: a new claim with no `storageClassName` (an empty one is an explicit
/// choice of no class) gets the class annotated as default, the newest when several are.
async fn default_storage_class(ctx: &Ctx, pvc: &mut Value) -> ApiResult<()> {
    if pvc
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
    {
        return Ok(());
    }
    let list = ctx
        .state
        .store
        .list("/registry/storage.k8s.io/storageclasses/", None, None, None)
        .await
        .map_err(|e| ApiError::internal(format!("listing storage classes: {e}")))?;
    let default = list
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|sc| {
            ["", "beta."].iter().any(|b| {
                sc.pointer(&format!(
                    "/metadata/annotations/storageclass.{b}kubernetes.io~1is-default-class"
                ))
                .and_then(Value::as_str)
                    == Some("true")
            })
        })
        .max_by(|a, b| {
            let ts = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            // Newest first; on equal times the first name wins, as upstream sorts.
            ts(a)
                .cmp(&ts(b))
                .then_with(|| meta::name(b).cmp(&meta::name(a)))
        });
    if let (Some(sc), Some(spec)) = (default, pvc.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert(
            "storageClassName".into(),
            json!(meta::name(&sc).unwrap_or_default()),
        );
    }
    Ok(())
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

pub(crate) fn forbidden_on(ctx: &Ctx, name: &str) -> ApiError {
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

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// NodeRestriction for pods: a node creates only mirror pods of its own static pods, bound to
/// itself, owned by nothing but its Node, and referencing nothing it could not read.
fn node_restriction_of_pods(ctx: &Ctx, pod: &Value) -> ApiResult<()> {
    let Some(node) = ctx.user.as_node() else {
        return Ok(());
    };
    let forbidden = |why: String| Err(ApiError::forbidden(why));
    if !is_mirror_pod(pod) {
        return forbidden(format!(
            "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return forbidden(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if owners.len() > 1
        || owners
            .iter()
            .any(|o| o["apiVersion"] != "v1" || o["kind"] != "Node" || o["name"] != node)
    {
        return forbidden(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        ));
    }
    let spec = &pod["spec"];
    let volumes = spec["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let referenced = |what: &str| {
        volumes.iter().any(|v| match what {
            "secrets" => v.get("secret").is_some(),
            "configmaps" => v.get("configMap").is_some(),
            _ => v.get("persistentVolumeClaim").is_some() || v.get("ephemeral").is_some(),
        }) || volumes
            .iter()
            .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
            .flatten()
            .any(|s| match what {
                "secrets" => s.get("secret").is_some(),
                "configmaps" => s.get("configMap").is_some(),
                _ => false,
            })
            || ["initContainers", "containers", "ephemeralContainers"]
                .iter()
                .filter_map(|g| spec[*g].as_array())
                .flatten()
                .any(|c| {
                    let (env_key, from_key) = match what {
                        "secrets" => ("secretKeyRef", "secretRef"),
                        "configmaps" => ("configMapKeyRef", "configMapRef"),
                        _ => return false,
                    };
                    c["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| e.pointer(&format!("/valueFrom/{env_key}")).is_some())
                        || c["envFrom"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|e| e.get(from_key).is_some())
                })
    };
    for (what, name) in [
        ("secrets", "secrets"),
        ("configmaps", "configmaps"),
        ("claims", "persistentvolumeclaims"),
    ] {
        if referenced(what) {
            return forbidden(format!(
                "node {node:?} can not create pods that reference {name}"
            ));
        }
    }
    Ok(())
}

/// ServiceAccount admission of a mirror pod: it gets no token and may name no service account.
fn mirror_pod_references(pod: &Value) -> ApiResult<()> {
    let named = |k: &str| {
        pod.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if named("serviceAccountName") || named("serviceAccount") {
        return Err(ApiError::forbidden(
            "a mirror pod may not reference service accounts",
        ));
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
    // A pod without image pull secrets of its own gets its service account's.
    let own_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !own_secrets
        && let Some(secrets) = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
    {
        let names: Vec<Value> = secrets
            .iter()
            .filter_map(|s| s.get("name"))
            .map(|n| json!({"name": n}))
            .collect();
        spec.insert("imagePullSecrets".into(), Value::Array(names));
    }
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

/// Upstream's Priority admission: the pod's priority comes from its PriorityClass (or the
/// global default class), never from the pod itself.
async fn priority(ctx: &Ctx, pod: &mut Value) -> ApiResult<()> {
    let name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pod_name = meta::name(pod).unwrap_or_default().to_string();
    let class = if name.is_empty() {
        // The global default class, if one exists.
        let list = ctx
            .state
            .store
            .list(
                "/registry/scheduling.k8s.io/priorityclasses/",
                None,
                None,
                None,
            )
            .await
            .map_err(|e| ApiError::internal(format!("listing priority classes: {e}")))?;
        list.items
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .find(|pc| pc["globalDefault"] == true)
    } else {
        let pc = crate::storage::get_stored(
            &ctx.state,
            "scheduling.k8s.io/priorityclasses",
            None,
            &name,
        )
        .await?;
        if pc.is_none() {
            return Err(ApiError::forbidden(format!(
                "pods {pod_name:?} is forbidden: no PriorityClass with name {name} was found"
            ))
            .with_details(json!({"name": pod_name, "kind": "pods"})));
        }
        pc
    };
    let (value, policy, class_name) = match &class {
        Some(pc) => (
            pc["value"].as_i64().unwrap_or(0),
            pc["preemptionPolicy"]
                .as_str()
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
            meta::name(pc).unwrap_or_default().to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string(), String::new()),
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(ApiError::forbidden(format!(
            "pods {pod_name:?} is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        ))
        .with_details(json!({"name": pod_name, "kind": "pods"})));
    }
    if let Some(given) = pod
        .pointer("/spec/preemptionPolicy")
        .and_then(Value::as_str)
        && given != policy
    {
        return Err(ApiError::forbidden(format!(
            "pods {pod_name:?} is forbidden: the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        ))
        .with_details(json!({"name": pod_name, "kind": "pods"})));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("priority".into(), json!(value));
        if !class_name.is_empty() {
            spec.insert("priorityClassName".into(), json!(class_name));
        }
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// Upstream's DefaultTolerationSeconds: pods tolerate a not-ready or unreachable node for
/// the configured time (300 s by default) unless they say otherwise.
fn default_toleration_seconds(cfg: &crate::state::ApiConfig, pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for (key, seconds) in [
        (
            "node.kubernetes.io/not-ready",
            cfg.default_not_ready_toleration_seconds,
        ),
        (
            "node.kubernetes.io/unreachable",
            cfg.default_unreachable_toleration_seconds,
        ),
    ] {
        let tolerated = list.iter().any(|t| {
            let effect = t["effect"].as_str().unwrap_or_default();
            let k = t["key"].as_str().unwrap_or_default();
            (effect.is_empty() || effect == "NoExecute")
                && (k == key || (k.is_empty() && t["operator"] == "Exists"))
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// A new `kubernetes.io/service-account-token` Secret gets its legacy token, the CA and the
/// namespace (upstream's token controller fills them right after creation).
async fn legacy_token_secret(ctx: &Ctx, secret: &mut Value) -> ApiResult<()> {
    if secret["type"] != "kubernetes.io/service-account-token" {
        return Ok(());
    }
    let Some(signer) = ctx.state.config.token_signer.clone() else {
        return Ok(());
    };
    let ns = ctx.namespace().unwrap_or_default().to_string();
    let name = meta::name(secret).unwrap_or_default().to_string();
    let Some(sa_name) = secret
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return Ok(());
    };
    let Some(sa) =
        crate::storage::get_stored(&ctx.state, "core/serviceaccounts", Some(&ns), &sa_name).await?
    else {
        return Ok(());
    };
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let claims = json!({
        "iss": crate::tokens::LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": name,
        "kubernetes.io/serviceaccount/service-account.name": sa_name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": crate::authn::service_account_username(&ns, &sa_name),
    });
    let token = signer.sign(&claims)?;
    let b64 = |v: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
    secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(uid);
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    secret["data"]["token"] = json!(b64(&token));
    secret["data"]["ca.crt"] = json!(b64(&ctx.state.config.server_ca_pem));
    secret["data"]["namespace"] = json!(b64(&ns));
    Ok(())
}
