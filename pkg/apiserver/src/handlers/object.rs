//! What every write shares: server-set metadata, the spec/status split, generation, defaulting,
//! validation, and committing to the store.

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use crate::storage;
use kubox_core::meta::{self, set_meta};
use kubox_core::resources::ResourceDef;
use serde_json::{Value, json};

/// The definition of the version `def`'s objects are stored in.
pub(crate) fn storage_def(state: &ApiState, def: &ResourceDef) -> ResourceDef {
    state
        .registry
        .read()
        .ok()
        .and_then(|r| r.by_storage(&def.storage).first().map(|d| (*d).clone()))
        .unwrap_or_else(|| def.clone())
}

/// Reads the object a request names: (object in the request's version, its revision).
pub(crate) async fn read_object(ctx: &Ctx) -> ApiResult<(Value, i64)> {
    let key = storage::key(&ctx.def, ctx.namespace(), ctx.name());
    match ctx.state.store.get(&key).await? {
        Some(kv) => Ok((storage::decode(&ctx.def, &kv)?, kv.mod_revision)),
        None => Err(ctx.not_found()),
    }
}

/// Kinds whose `metadata.generation` counts spec changes.
pub fn tracks_generation(def: &ResourceDef) -> bool {
    def.custom
        || matches!(
            def.group.as_str(),
            "apps"
                | "batch"
                | "autoscaling"
                | "policy"
                | "networking.k8s.io"
                | "apiextensions.k8s.io"
                | "admissionregistration.k8s.io"
        )
        || def.kind == "ReplicationController"
}

/// Checks the body's apiVersion/kind against the endpoint, filling them in when absent.
pub fn check_type(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let want_av = ctx.def.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(ctx.def.kind),
        Some(k) if k == ctx.def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                ctx.def.kind
            )));
        }
    }
    if obj
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Checks metadata.namespace against the URL, filling it in.
pub fn check_namespace(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    match ctx.namespace() {
        Some(ns) => match meta::namespace(obj) {
            None | Some("") => set_meta(obj, "namespace", json!(ns)),
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        },
        None => {
            if !ctx.def.namespaced {
                set_meta(obj, "namespace", Value::Null);
            }
        }
    }
    Ok(())
}

/// Refuses writes into a missing or terminating namespace.
pub async fn check_namespace_writable(ctx: &Ctx, creating: bool) -> ApiResult<()> {
    let Some(ns) = ctx.namespace() else {
        return Ok(());
    };
    let key = format!("{}core/namespaces/{ns}", storage::PREFIX);
    match ctx.state.store.get(&key).await? {
        None => Err(ApiError::not_found("namespaces", "", ns)),
        Some(kv) => {
            if creating {
                let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                if obj
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|v| !v.is_null())
                {
                    return Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ))
                    .with_details(json!({"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})));
                }
            }
            Ok(())
        }
    }
}

/// Defaults, then validates, a built-in object; 422 with field causes on failure.
pub fn default_and_validate(
    def: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if !def.custom {
        kubox_core::defaults::apply_defaults(&def.group, &def.version, &def.kind, obj);
        if def.group == "batch" && def.kind == "Job" && old.is_none() {
            kubox_core::defaults::job_selector_defaults(obj);
        }
        if def.group.is_empty() && def.kind == "Secret" {
            merge_string_data(obj);
        }
    }
    let mut errors = Vec::new();
    let name = meta::name(obj).unwrap_or_default().to_string();
    if name.is_empty() {
        errors.push((
            "FieldValueRequired".to_string(),
            "metadata.name".to_string(),
            "Required value: name or generateName is required".to_string(),
        ));
    } else if let Some(why) =
        kubox_core::names::name_error(&name, matches!(def.kind.as_str(), "Namespace" | "Service"))
    {
        errors.push((
            "FieldValueInvalid".into(),
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {why}"),
        ));
    }
    if !def.custom {
        for e in kubox_core::validation::validate(&def.group, &def.version, &def.kind, obj, old) {
            if e.field == "metadata.name" && !errors.is_empty() {
                continue;
            }
            errors.push((e.reason, e.field, e.message));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&def.kind, &def.group, &name, errors))
    }
}

/// A pod written through `ephemeralcontainers`: defaults for the new containers, then the
/// pod checked as an update of that list only (existing ones unchanged), 422 otherwise.
pub fn default_and_validate_ephemeral(
    def: &ResourceDef,
    new: &mut Value,
    old: &Value,
) -> ApiResult<()> {
    kubox_core::defaults::apply_defaults(&def.group, &def.version, &def.kind, new);
    let errors: Vec<(String, String, String)> =
        kubox_core::validation::validate_ephemeral_containers_update(new, old)
            .into_iter()
            .map(|e| (e.reason, e.field, e.message))
            .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        let name = meta::name(new).unwrap_or_default().to_string();
        Err(ApiError::invalid(&def.kind, &def.group, &name, errors))
    }
}

/// Moves a Secret's `stringData` into `data` (base64), as upstream does on every write.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(sd) = sd.as_object() else { return };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Resets status on create where upstream does, and sets the initial status of a few kinds.
pub fn prepare_status_for_create(def: &ResourceDef, obj: &mut Value) {
    if !def.has_status() || def.kind == "Node" {
        return;
    }
    let status = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => json!({"phase": "Active"}),
        ("", "Pod") => json!({"phase": "Pending", "qosClass": qos_class(obj)}),
        ("", "PersistentVolumeClaim" | "PersistentVolume") => json!({"phase": "Pending"}),
        ("", "Service") => json!({"loadBalancer": {}}),
        _ => Value::Null,
    };
    if let Some(m) = obj.as_object_mut() {
        if status.is_null() {
            m.remove("status");
        } else {
            m.insert("status".into(), status);
        }
    }
    if def.kind == "Namespace" && def.group.is_empty() {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        let has = |m: Option<&serde_json::Map<String, Value>>, k: &str| {
            m.and_then(|m| m.get(k)).is_some()
        };
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            // Guaranteed needs a limit for cpu and memory, and any request equal to it.
            let request_differs =
                has(req, r) && req.and_then(|m| m.get(r)) != lim.and_then(|m| m.get(r));
            if !has(lim, r) || request_differs {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Everything but metadata and status: what `generation` counts.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Applies upstream's update rules for the main resource or a subresource:
/// server-owned metadata is kept, the spec/status split is enforced, generation is bumped.
pub fn prepare_for_update(ctx: &Ctx, old: &Value, mut new: Value) -> ApiResult<Value> {
    let sub = ctx.info.subresource.as_deref();
    // Server-owned metadata never changes through an update.
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        set_meta(
            &mut new,
            field,
            old.pointer(&format!("/metadata/{field}"))
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    for field in ["name", "namespace"] {
        set_meta(
            &mut new,
            field,
            old.pointer(&format!("/metadata/{field}"))
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    match sub {
        Some("status") => {
            // Only status changes; everything else is the stored object's.
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new = merged;
        }
        Some("ephemeralcontainers") => {
            // Only the pod's ephemeral containers change (kubectl debug).
            let list = new.pointer("/spec/ephemeralContainers").cloned();
            let mut merged = old.clone();
            if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                match list.filter(|l| !l.is_null()) {
                    Some(l) => spec.insert("ephemeralContainers".into(), l),
                    None => spec.remove("ephemeralContainers"),
                };
            }
            new = merged;
        }
        // CertificateSigningRequest approval: crate::csr::prepare_update below.
        Some("approval") => {}
        Some("finalize") => {
            let spec = new.get("spec").cloned().unwrap_or(json!({}));
            let mut merged = old.clone();
            merged["spec"] = spec;
            new = merged;
        }
        _ => {
            if ctx.def.has_status() && ctx.def.kind != "Node" || ctx.def.kind == "Namespace" {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
    }
    if crate::csr::is_csr(ctx) {
        crate::csr::prepare_update(sub, old, &mut new);
    }
    if tracks_generation(&ctx.def) {
        let gen_old = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bumped = matches!(sub, None | Some("scale")) && spec_part(old) != spec_part(&new);
        set_meta(
            &mut new,
            "generation",
            json!(if bumped { gen_old + 1 } else { gen_old }),
        );
    }
    Ok(new)
}

/// Writes an update conditioned on `expected_rev`. A deleting object whose last finalizer
/// is removed is deleted instead, unless it is still in its grace period. Returns the object as stored, with its new resourceVersion.
pub async fn commit_update(
    ctx: &Ctx,
    new: Value,
    expected_rev: i64,
    dry_run: bool,
) -> ApiResult<Value> {
    let key = storage::key(&ctx.def, ctx.namespace(), ctx.name());
    let sdef = storage_def(&ctx.state, &ctx.def);
    let stored = storage::to_storage(&ctx.def, &sdef, new.clone());
    let deleting = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if dry_run {
        return Ok(new);
    }
    let namespace_held = ctx.def.group.is_empty()
        && ctx.def.kind == "Namespace"
        && super::delete::has_spec_finalizers(&new);
    // A pod in its grace period stays until its kubelet ends it (upstream's
    // ShouldDeleteDuringUpdate: only a zero deletionGracePeriodSeconds deletes).
    let graceful = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    if deleting && meta::finalizers(&new).is_empty() && !namespace_held && !graceful {
        // Last finalizer gone: the object goes away now.
        let bytes = storage::encode(&stored)?;
        let updated = ctx
            .state
            .store
            .update(&key, bytes, expected_rev)
            .await
            .map_err(|e| map_write_err(ctx, e))?;
        // A DELETE racing this update may have removed the object already; the update
        // still happened, so it answers 200 (upstream's deleteWithoutFinalizers ignores
        // NotFound the same way).
        let rev = match ctx.state.store.delete(&key, None).await {
            Ok((rev, _)) => rev,
            Err(kubox_store::Error::NotFound(_)) => updated,
            Err(e) => return Err(map_write_err(ctx, e)),
        };
        let mut out = new;
        set_meta(&mut out, "resourceVersion", json!(rev.to_string()));
        return Ok(out);
    }
    let bytes = storage::encode(&stored)?;
    let rev = ctx
        .state
        .store
        .update(&key, bytes, expected_rev)
        .await
        .map_err(|e| map_write_err(ctx, e))?;
    let mut out = new;
    set_meta(&mut out, "resourceVersion", json!(rev.to_string()));
    Ok(out)
}

/// Maps store write failures to upstream's errors for this object.
pub fn map_write_err(ctx: &Ctx, e: kubox_store::Error) -> ApiError {
    match e {
        kubox_store::Error::Conflict { .. } => {
            ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name())
        }
        kubox_store::Error::NotFound(_) => ctx.not_found(),
        kubox_store::Error::AlreadyExists(_) => {
            ApiError::already_exists(&ctx.def.plural, &ctx.def.group, ctx.name())
        }
        other => other.into(),
    }
}

/// The stored resourceVersion a client sent, if any.
pub fn client_rv(obj: &Value) -> ApiResult<Option<i64>> {
    match meta::meta_str(obj, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {s:?}: must be an integer"))
        }),
    }
}
