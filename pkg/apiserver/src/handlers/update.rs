//! PUT: replace an object (optimistic concurrency), its status, or its scale.

use super::create::{create_object, default_manager};
use super::object::{
    check_namespace, check_type, client_rv, commit_update, default_and_validate, prepare_for_update,
};
use super::{Ctx, object_response};
use crate::error::{ApiError, ApiResult};
use crate::request::decode_body;
use crate::storage;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use kubox_core::meta;
use serde_json::{Value, json};

/// Kinds upstream lets a PUT create when the object is missing.
fn allow_create_on_update(ctx: &Ctx) -> bool {
    ctx.info.subresource.is_none()
        && matches!(
            (ctx.def.group.as_str(), ctx.def.kind.as_str()),
            ("", "Endpoints" | "Event")
                | ("coordination.k8s.io", "Lease")
                | ("events.k8s.io", "Event")
                | ("rbac.authorization.k8s.io", _)
        )
}

pub async fn update(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let mut obj = decode_body(ctx.content_type(), &body)?;
    let dry_run = ctx.query.dry_run()?;
    check_type(ctx, &mut obj)?;
    check_namespace(ctx, &mut obj)?;
    match meta::name(&obj) {
        Some(n) if n == ctx.name() => {}
        None | Some("") => meta::set_meta(&mut obj, "name", json!(ctx.name())),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                ctx.name()
            )));
        }
    }
    crate::fieldvalidation::check(ctx, &obj)?;
    let want_rv = client_rv(&obj)?;
    let key = storage::key(&ctx.def, ctx.namespace(), ctx.name());
    let Some(kv) = ctx.state.store.get(&key).await? else {
        if allow_create_on_update(ctx) {
            let created = create_object(ctx, obj, dry_run, true).await?;
            return object_response(ctx, StatusCode::CREATED, created);
        }
        return Err(ctx.not_found());
    };
    if want_rv.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name()));
    }
    let old = storage::decode(&ctx.def, &kv)?;
    let manager = manager(ctx);
    let out = write_update(ctx, &old, obj, kv.mod_revision, &manager, dry_run).await?;
    object_response(ctx, StatusCode::OK, out)
}

/// The field manager named by the request, or the one derived from its user agent.
pub(crate) fn manager(ctx: &Ctx) -> String {
    ctx.query
        .get("fieldManager")
        .map(String::from)
        .unwrap_or_else(|| default_manager(ctx))
}

/// Everything an update shares with patch: server-owned metadata, spec/status split,
/// defaulting, validation, allocations, managed fields, and the conditional write.
/// An update that changes nothing is not written (its resourceVersion stays).
pub(crate) async fn write_update(
    ctx: &Ctx,
    old: &Value,
    new: Value,
    old_rev: i64,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Value> {
    let mut new = prepare_for_update(ctx, old, new)?;
    crate::crds::admit(ctx, &mut new)?;
    match ctx.info.subresource.as_deref() {
        None | Some("scale") => default_and_validate(&ctx.def, &mut new, Some(old))?,
        Some("ephemeralcontainers") => {
            super::object::default_and_validate_ephemeral(&ctx.def, &mut new, old)?
        }
        _ => {}
    }
    if crate::csr::is_csr(ctx) {
        crate::csr::validate(&new, Some(old))?;
    }
    crate::admission::admit(ctx, &mut new, Some(old)).await?;
    if crate::webhooks::admit(ctx, true, "UPDATE", &mut new, Some(old), dry_run).await?
        && (ctx.info.subresource.is_none() || ctx.info.subresource.as_deref() == Some("scale"))
    {
        default_and_validate(&ctx.def, &mut new, Some(old))?;
    }
    crate::webhooks::admit(ctx, false, "UPDATE", &mut new, Some(old), dry_run).await?;
    // Pods are checked when created; their later updates cannot change what is checked.
    if !(ctx.def.group.is_empty() && ctx.def.plural == "pods") {
        crate::podsecurity::admit(ctx, &new).await?;
    }
    let _alloc = crate::allocate::on_update(ctx, old, &mut new).await?;
    crate::managed::record(ctx, Some(old), &mut new, manager, "Update");
    let mut cmp_new = new.clone();
    let mut cmp_old = old.clone();
    for o in [&mut cmp_new, &mut cmp_old] {
        meta::set_meta(o, "resourceVersion", Value::Null);
        meta::set_meta(o, "managedFields", Value::Null);
    }
    if cmp_new == cmp_old {
        return Ok(old.clone());
    }
    commit_update(ctx, new, old_rev, dry_run).await
}

/// PUT <resource>/<name>/scale: sets spec.replicas from an autoscaling/v1 Scale.
pub async fn update_scale(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let scale = decode_body(ctx.content_type(), &body)?;
    let dry_run = ctx.query.dry_run()?;
    let replicas = scale_replicas(ctx, &scale)?;
    let (old, rev) = super::read_object(ctx).await?;
    if client_rv(&scale)?.is_some_and(|rv| rv != rev) {
        return Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name()));
    }
    let out = set_replicas(ctx, &old, rev, replicas, dry_run).await?;
    Ok(super::json_response(
        StatusCode::OK,
        &super::get::scale_of(ctx, &out)?,
    ))
}

/// spec.replicas of a Scale body, validated as upstream does.
pub(crate) fn scale_replicas(ctx: &Ctx, scale: &Value) -> ApiResult<i64> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            ctx.name(),
            vec![(
                "FieldValueInvalid".into(),
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    Ok(replicas)
}

/// Writes a new spec.replicas onto the scalable object.
pub(crate) async fn set_replicas(
    ctx: &Ctx,
    old: &Value,
    rev: i64,
    replicas: i64,
    dry_run: bool,
) -> ApiResult<Value> {
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let manager = manager(ctx);
    write_update(ctx, old, new, rev, &manager, dry_run).await
}
