//! DELETE of one object (grace periods, preconditions, propagation, finalizers) and
//! DELETE of a collection.

use super::list::{Filter, read_page};
use super::object::map_write_err;
use super::{Ctx, json_response, object_response};
use crate::error::{ApiError, ApiResult};
use crate::request::decode_body;
use crate::storage;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use kubox_core::meta::{self, set_meta};
use serde_json::{Value, json};

/// The DeleteOptions of a request: body first, then query parameters.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub(crate) fn parse(ctx: &Ctx, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            dry_run: ctx.query.dry_run()?,
            ..Default::default()
        };
        o.grace_period = ctx.query.i64("gracePeriodSeconds")?;
        o.propagation = ctx.query.get("propagationPolicy").map(String::from);
        if ctx.query.get("orphanDependents").is_some() && o.propagation.is_none() {
            o.propagation = Some(
                if ctx.query.bool("orphanDependents") {
                    "Orphan"
                } else {
                    "Background"
                }
                .into(),
            );
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            // client-go sends DeleteOptions in the request's content type (protobuf for
            // clients that prefer it, such as helm's release storage).
            let b = decode_body(ctx.content_type(), body)?;
            if !b.is_object() {
                return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
            }
            if let Some(g) = b.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
                o.grace_period = Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?);
            }
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.to_string());
            } else if let Some(orphan) = b.get("orphanDependents").and_then(Value::as_bool) {
                o.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
            }
            o.uid = b
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            o.resource_version = b
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
                for v in d {
                    match v.as_str() {
                        Some("All") => o.dry_run = true,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "Invalid dry run value: {:?}; supported values: \"All\"",
                                other.unwrap_or_default()
                            )));
                        }
                    }
                }
            }
        }
        if let Some(p) = &o.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![(
                    "FieldValueNotSupported".into(),
                    "propagationPolicy".into(),
                    format!(
                        "Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                )],
            ));
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            o.grace_period = Some(1);
        }
        Ok(o)
    }
}

pub async fn delete(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(ctx, &body)?;
    let (code, out) = delete_one(ctx, ctx.name(), &opts).await?;
    match out {
        Deleted::Object(obj) => object_response(ctx, code, obj),
        Deleted::Status(s) => Ok(json_response(code, &s)),
    }
}

pub(crate) enum Deleted {
    Object(Value),
    Status(Value),
}

/// Kinds whose DELETE answers with the deleted object rather than a Status.
fn returns_object(ctx: &Ctx) -> bool {
    ctx.def.group.is_empty() && matches!(ctx.def.kind.as_str(), "Pod" | "Service" | "Namespace")
}

/// Deletes (or starts deleting) one object named `name`.
fn already_terminating(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub(crate) async fn delete_one(
    ctx: &Ctx,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<(StatusCode, Deleted)> {
    let key = storage::key(&ctx.def, ctx.namespace(), name);
    let not_found = || ApiError::not_found(&ctx.def.plural, &ctx.def.group, name);
    for _ in 0..8 {
        let Some(kv) = ctx.state.store.get(&key).await? else {
            return Err(not_found());
        };
        let obj = storage::decode(&ctx.def, &kv)?;
        if let Some(uid) = &opts.uid
            && meta::meta_str(&obj, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &ctx.def.plural,
                &ctx.def.group,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::meta_str(&obj, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != &kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                &ctx.def.plural,
                &ctx.def.group,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            ));
        }
        if !already_terminating(&obj) {
            let mut subject = obj.clone();
            crate::webhooks::admit(ctx, false, "DELETE", &mut subject, Some(&obj), opts.dry_run)
                .await?;
        }
        let mut pending = obj.clone();
        let mut finalizers = meta::finalizers(&obj);
        let already_deleting = already_terminating(&obj);
        // Propagation finalizers are honoured only while a garbage collector runs to remove them.
        if ctx.state.gc_running() {
            match opts.propagation.as_deref() {
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                    finalizers.push("orphan".into())
                }
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                _ => {}
            }
        }
        let grace = graceful_period(ctx, &obj, opts);
        let namespace_kind = ctx.def.group.is_empty() && ctx.def.kind == "Namespace";
        // A Namespace waits for the namespace controller to empty and finalize it.
        let must_wait = !finalizers.is_empty() || grace > 0 || has_spec_finalizers(&obj);
        let forced = already_deleting
            && opts.grace_period == Some(0)
            && finalizers.is_empty()
            && !has_spec_finalizers(&obj);
        if !must_wait || forced {
            if opts.dry_run {
                return Ok((StatusCode::OK, deleted_response(ctx, &obj)));
            }
            match ctx.state.store.delete(&key, Some(kv.mod_revision)).await {
                Ok((rev, _)) => {
                    let mut out = obj;
                    set_meta(&mut out, "resourceVersion", json!(rev.to_string()));
                    return Ok((StatusCode::OK, deleted_response(ctx, &out)));
                }
                Err(kubox_store::Error::Conflict { .. }) => continue,
                Err(kubox_store::Error::NotFound(_)) => return Err(not_found()),
                Err(e) => return Err(map_write_err(ctx, e)),
            }
        }
        if !already_deleting {
            let now = jiff::Timestamp::now();
            let when = now
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(now);
            set_meta(
                &mut pending,
                "deletionTimestamp",
                json!(meta::format_time(when)),
            );
            set_meta(&mut pending, "deletionGracePeriodSeconds", json!(grace));
            if namespace_kind {
                pending["status"]["phase"] = json!("Terminating");
            }
        } else if let Some(g) = opts.grace_period {
            // A shorter grace period may be given while terminating.
            let cur = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if g < cur {
                set_meta(&mut pending, "deletionGracePeriodSeconds", json!(g));
            }
        }
        set_meta(
            &mut pending,
            "finalizers",
            if finalizers.is_empty() {
                Value::Null
            } else {
                json!(finalizers)
            },
        );
        if pending == obj {
            return Ok((StatusCode::OK, Deleted::Object(obj)));
        }
        if opts.dry_run {
            return Ok((StatusCode::OK, Deleted::Object(pending)));
        }
        let stored = storage::to_storage(
            &ctx.def,
            &super::storage_def(&ctx.state, &ctx.def),
            pending.clone(),
        );
        match ctx
            .state
            .store
            .update(&key, storage::encode(&stored)?, kv.mod_revision)
            .await
        {
            Ok(rev) => {
                set_meta(&mut pending, "resourceVersion", json!(rev.to_string()));
                return Ok((StatusCode::OK, Deleted::Object(pending)));
            }
            Err(kubox_store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(map_write_err(ctx, e)),
        }
    }
    Err(ApiError::stale(&ctx.def.plural, &ctx.def.group, name))
}

/// A Namespace's `spec.finalizers` (such as `kubernetes`) hold its deletion like
/// metadata finalizers.
pub(crate) fn has_spec_finalizers(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// The grace period a deletion waits: pods bound to a node default to their spec's period.
fn graceful_period(ctx: &Ctx, obj: &Value, opts: &DeleteOptions) -> i64 {
    if !(ctx.def.group.is_empty() && ctx.def.kind == "Pod") {
        return 0;
    }
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !scheduled || matches!(phase, "Succeeded" | "Failed") {
        return 0;
    }
    opts.grace_period
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
}

fn deleted_response(ctx: &Ctx, obj: &Value) -> Deleted {
    if returns_object(ctx) {
        return Deleted::Object(obj.clone());
    }
    Deleted::Status(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": meta::name(obj).unwrap_or_default(),
            "group": ctx.def.group,
            "kind": ctx.def.plural,
            "uid": meta::meta_str(obj, "uid").unwrap_or_default(),
        }
    }))
}

/// DELETE on a collection: every object matching the selectors, answered with the list.
pub async fn delete_collection(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(ctx, &body)?;
    let filter = Filter::from_ctx(ctx)?;
    let page = read_page(ctx, &filter).await?;
    let mut items = Vec::new();
    for obj in page.items {
        let name = meta::name(&obj).unwrap_or_default().to_string();
        let ns = meta::namespace(&obj).map(String::from);
        let mut sub = ctx.clone_for(ns);
        sub.info.name = Some(name.clone());
        match delete_one(&sub, &name, &opts).await {
            Ok((_, Deleted::Object(o))) => items.push(o),
            Ok((_, Deleted::Status(_))) => items.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": ctx.def.list_kind(),
        "apiVersion": ctx.def.api_version(),
        "metadata": {"resourceVersion": ctx.state.store.current_revision().to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}
