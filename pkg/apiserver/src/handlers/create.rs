//! POST: create an object (and the pods/binding subresource).

use super::object::{
    check_namespace, check_namespace_writable, check_type, commit_update, default_and_validate,
    map_write_err, prepare_status_for_create, storage_def, tracks_generation,
};
use super::{Ctx, object_response};
use crate::error::{ApiError, ApiResult};
use crate::request::decode_body;
use crate::storage;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use kubox_core::meta::{self, set_meta};
use serde_json::{Value, json};

pub async fn create(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let mut obj = decode_body(ctx.content_type(), &body)?;
    let dry_run = ctx.query.dry_run()?;
    check_type(ctx, &mut obj)?;
    check_namespace(ctx, &mut obj)?;
    crate::fieldvalidation::check(ctx, &obj)?;
    let obj = create_object(ctx, obj, dry_run, true).await?;
    object_response(ctx, StatusCode::CREATED, obj)
}

/// Creates `obj` (already type- and namespace-checked) and returns it as stored.
/// Creates `obj`. `record_update` adds the request's field manager as an `Update` entry; a
/// server-side apply that creates has already recorded its `Apply` entry and passes false
/// (a second entry of the same manager would own every field and make its next apply
/// conflict with itself).
pub(crate) async fn create_object(
    ctx: &Ctx,
    mut obj: Value,
    dry_run: bool,
    record_update: bool,
) -> ApiResult<Value> {
    check_namespace_writable(ctx, true).await?;
    // Name: given, or generated from generateName.
    let name = match meta::name(&obj) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match meta::meta_str(&obj, "generateName") {
            Some(prefix) if !prefix.is_empty() => {
                let base: String = prefix.chars().take(58).collect();
                let name = format!("{base}{}", random_suffix());
                set_meta(&mut obj, "name", json!(name));
                name
            }
            _ => String::new(),
        },
    };
    // Server-set metadata.
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
        "generation",
    ] {
        set_meta(&mut obj, field, Value::Null);
    }
    set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
    set_meta(&mut obj, "creationTimestamp", json!(meta::now_rfc3339()));
    if tracks_generation(&ctx.def) {
        set_meta(&mut obj, "generation", json!(1));
    }
    prepare_status_for_create(&ctx.def, &mut obj);
    if crate::csr::is_csr(ctx) {
        crate::csr::prepare_create(ctx, &mut obj);
    }
    crate::crds::admit(ctx, &mut obj)?;
    default_and_validate(&ctx.def, &mut obj, None)?;
    if crate::csr::is_csr(ctx) {
        crate::csr::validate(&obj, None)?;
    }
    crate::admission::admit(ctx, &mut obj, None).await?;
    if crate::webhooks::admit(ctx, true, "CREATE", &mut obj, None, dry_run).await? {
        default_and_validate(&ctx.def, &mut obj, None)?;
    }
    crate::webhooks::admit(ctx, false, "CREATE", &mut obj, None, dry_run).await?;
    crate::podsecurity::admit(ctx, &obj).await?;
    crate::quota::resource_quota(ctx, &obj, dry_run).await?;
    let _alloc = crate::allocate::on_create(ctx, &mut obj).await?;
    if record_update {
        let manager = ctx
            .query
            .get("fieldManager")
            .map(String::from)
            .unwrap_or_else(|| default_manager(ctx));
        crate::managed::record(ctx, None, &mut obj, &manager, "Update");
    }
    if dry_run {
        return Ok(obj);
    }
    let sdef = storage_def(&ctx.state, &ctx.def);
    let stored = storage::to_storage(&ctx.def, &sdef, obj.clone());
    let key = storage::key(&ctx.def, ctx.namespace(), &name);
    let rev = ctx
        .state
        .store
        .create(&key, storage::encode(&stored)?)
        .await
        .map_err(|e| match e {
            kubox_store::Error::AlreadyExists(_) => {
                ApiError::already_exists(&ctx.def.plural, &ctx.def.group, &name)
            }
            other => map_write_err(ctx, other),
        })?;
    set_meta(&mut obj, "resourceVersion", json!(rev.to_string()));
    Ok(obj)
}

/// The field manager upstream derives from the User-Agent ("kubectl-create", "kubectl", ...).
pub(crate) fn default_manager(ctx: &Ctx) -> String {
    let ua = ctx
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let prog = ua.split('/').next().unwrap_or("unknown");
    prog.chars().take(128).collect()
}

/// Five characters from upstream's generateName alphabet (no vowels, no ambiguous digits).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let u = uuid::Uuid::new_v4();
    u.as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// POST pods/<name>/binding (and POST bindings): assigns a node to a pending pod.
pub async fn bind(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let binding = decode_body(ctx.content_type(), &body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                "",
                ctx.name(),
                vec![(
                    "FieldValueRequired".into(),
                    "target.name".into(),
                    "Required value".into(),
                )],
            )
        })?
        .to_string();
    let (pod, rev) = super::read_object(ctx).await?;
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            "pods/binding",
            "",
            ctx.name(),
            &format!(
                "pod {} is already assigned to node {:?}",
                ctx.name(),
                pod.pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        ));
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::conflict(
            "pods/binding",
            "",
            ctx.name(),
            "pod is being deleted, cannot be assigned to a host",
        ));
    }
    let mut new = pod.clone();
    new["spec"]["nodeName"] = json!(node);
    let conds = new["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conds: Vec<Value> = conds
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()}));
    new["status"]["conditions"] = json!(conds);
    // A bound pod's nomination is spent (upstream 1.34+ clears it here for every binder).
    if let Some(status) = new["status"].as_object_mut() {
        status.remove("nominatedNodeName");
    }
    commit_update(ctx, new, rev, ctx.query.dry_run()?).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(super::json_response(StatusCode::CREATED, &status))
}
