//! PATCH: JSON patch, JSON merge patch, strategic merge patch and server-side apply.

use super::create::create_object;
use super::object::{check_namespace, check_type, client_rv};
use super::update::{manager, scale_replicas, set_replicas, write_update};
use super::{Ctx, object_response};
use crate::error::{ApiError, ApiResult};
use crate::request::{decode_json, decode_yaml, media_type};
use crate::storage;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use kubox_core::meta;
use serde_json::{Value, json};

/// How often a patch is re-applied when the object changed underneath it.
const MAX_RETRIES: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_kind(ctx: &Ctx) -> ApiResult<Kind> {
    let mt = media_type(ctx.content_type());
    let kind = match mt.as_str() {
        "application/json-patch+json" => Kind::Json,
        "application/merge-patch+json" => Kind::Merge,
        "application/strategic-merge-patch+json" => Kind::Strategic,
        "application/apply-patch+yaml" => Kind::Apply,
        other => {
            return Err(ApiError::unsupported_media(&format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                if ctx.def.custom {
                    ""
                } else {
                    ", application/strategic-merge-patch+json"
                }
            )));
        }
    };
    if kind == Kind::Strategic && ctx.def.custom {
        return Err(ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    Ok(kind)
}

fn patch_error(e: kubox_patch::Error) -> ApiError {
    match e {
        kubox_patch::Error::Conflict(conflicts) => {
            let message = kubox_patch::conflict_message(&conflicts);
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with {:?}", c.manager), "field": c.field})
                })
                .collect();
            ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
        }
        other => ApiError::new(other.status_code(), other.reason(), other.to_string()),
    }
}

pub async fn patch(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let kind = patch_kind(ctx)?;
    let dry_run = ctx.query.dry_run()?;
    if body.len() > crate::request::MAX_BODY_BYTES {
        return Err(ApiError::too_large());
    }
    let manager = match kind {
        Kind::Apply => ctx
            .query
            .get("fieldManager")
            .map(String::from)
            .ok_or_else(|| {
                ApiError::bad_request("PATCH, fieldManager is required for apply requests")
            })?,
        _ => manager(ctx),
    };
    // Parse the patch document once; a malformed one is a 400 before anything is read.
    let patch_doc: Value = match kind {
        Kind::Json => {
            let v = decode_json(&body)?;
            if !v.is_array() {
                return Err(ApiError::bad_request(
                    "json patch must be an array of operations",
                ));
            }
            v
        }
        Kind::Apply => decode_yaml(&body)?,
        _ => {
            let v = decode_json(&body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request("the patch must be a JSON object"));
            }
            v
        }
    };
    if ctx.info.subresource.as_deref() == Some("scale") {
        return patch_scale(ctx, kind, &patch_doc, &body, dry_run).await;
    }
    let key = storage::key(&ctx.def, ctx.namespace(), ctx.name());
    for _ in 0..MAX_RETRIES {
        let current = ctx.state.store.get(&key).await?;
        let Some(kv) = current else {
            if kind == Kind::Apply && ctx.info.subresource.is_none() {
                return apply_create(ctx, patch_doc, &manager, dry_run).await;
            }
            return Err(ctx.not_found());
        };
        let old = storage::decode(&ctx.def, &kv)?;
        let mut new = match kind {
            Kind::Apply => {
                let mut applied = patch_doc.clone();
                check_type(ctx, &mut applied)?;
                check_name(ctx, &applied)?;
                let schema = crate::managed::schema_for(ctx);
                let force = ctx.query.bool("force");
                let (api_version, now) = (ctx.def.api_version(), meta::now_rfc3339());
                kubox_patch::apply(
                    Some(&old),
                    &applied,
                    &crate::managed::writer(ctx, &manager, &api_version, &now),
                    force,
                    schema.as_ref(),
                    ctx.def.has_status() && ctx.info.subresource.is_none(),
                )
                .map_err(patch_error)?
            }
            Kind::Json => kubox_patch::json_patch(&old, &body).map_err(patch_error)?,
            Kind::Merge => kubox_patch::merge_patch(&old, &patch_doc).map_err(patch_error)?,
            Kind::Strategic => {
                let schema = crate::managed::schema_for(ctx);
                kubox_patch::strategic_merge_patch(&old, &patch_doc, schema.as_ref())
                    .map_err(patch_error)?
            }
        };
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the patched object must be a JSON object",
            ));
        }
        check_type(ctx, &mut new)?;
        check_namespace(ctx, &mut new)?;
        if meta::name(&new) != Some(ctx.name()) {
            return Err(ApiError::bad_request(
                "metadata.name cannot be changed by a patch",
            ));
        }
        crate::fieldvalidation::check(ctx, &new)?;
        // A resourceVersion the patch itself sets is a precondition; the one the patched
        // object inherited from the stored one is not (the patch is retried on a newer
        // object instead, as upstream does).
        let wanted = if patch_sets_resource_version(kind, &patch_doc) {
            client_rv(&new)?
        } else {
            None
        };
        if wanted.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name()));
        }
        // Apply already computed managedFields; an empty manager records nothing more.
        let record_manager = if kind == Kind::Apply {
            ""
        } else {
            manager.as_str()
        };
        match write_update(ctx, &old, new, kv.mod_revision, record_manager, dry_run).await {
            Ok(out) => return object_response(ctx, StatusCode::OK, out),
            Err(e)
                if e.code == 409 && e.reason == "Conflict" && wanted.is_none() && is_stale(&e) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name()))
}

fn patch_sets_resource_version(kind: Kind, patch: &Value) -> bool {
    match kind {
        Kind::Json => patch.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["path"] == "/metadata/resourceVersion" && op["op"] != "test")
        }),
        _ => patch
            .pointer("/metadata/resourceVersion")
            .is_some_and(|v| !v.is_null()),
    }
}

fn is_stale(e: &ApiError) -> bool {
    e.message.contains("the object has been modified")
}

fn check_name(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    match meta::name(obj) {
        Some(n) if n == ctx.name() => Ok(()),
        None | Some("") => Ok(()),
        Some(n) => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            ctx.name()
        ))),
    }
}

/// Server-side apply of an object that does not exist yet creates it.
async fn apply_create(
    ctx: &Ctx,
    applied: Value,
    manager: &str,
    dry_run: bool,
) -> ApiResult<Response> {
    let mut obj = applied;
    check_type(ctx, &mut obj)?;
    check_namespace(ctx, &mut obj)?;
    check_name(ctx, &obj)?;
    meta::set_meta(&mut obj, "name", json!(ctx.name()));
    crate::fieldvalidation::check(ctx, &obj)?;
    let schema = crate::managed::schema_for(ctx);
    let (api_version, now) = (ctx.def.api_version(), meta::now_rfc3339());
    let with_fields = kubox_patch::apply(
        None,
        &obj,
        &crate::managed::writer(ctx, manager, &api_version, &now),
        true,
        schema.as_ref(),
        ctx.def.has_status(),
    )
    .map_err(patch_error)?;
    let created = create_object(ctx, with_fields, dry_run, false).await?;
    object_response(ctx, StatusCode::CREATED, created)
}

/// PATCH <resource>/<name>/scale: the patch applies to the Scale view.
async fn patch_scale(
    ctx: &Ctx,
    kind: Kind,
    patch_doc: &Value,
    raw: &[u8],
    dry_run: bool,
) -> ApiResult<Response> {
    for _ in 0..MAX_RETRIES {
        let (old, rev) = super::read_object(ctx).await?;
        let scale = super::get::scale_of(ctx, &old)?;
        let patched = match kind {
            Kind::Json => kubox_patch::json_patch(&scale, raw).map_err(patch_error)?,
            _ => kubox_patch::merge_patch(&scale, patch_doc).map_err(patch_error)?,
        };
        let replicas = scale_replicas(ctx, &patched)?;
        match set_replicas(ctx, &old, rev, replicas, dry_run).await {
            Ok(out) => {
                return Ok(super::json_response(
                    StatusCode::OK,
                    &super::get::scale_of(ctx, &out)?,
                ));
            }
            Err(e) if e.code == 409 && is_stale(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, ctx.name()))
}
