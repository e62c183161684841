//! GET of one object, and of the scale subresource.

use super::{Ctx, object_response, read_object};
use crate::error::{ApiError, ApiResult};
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

pub async fn get(ctx: &Ctx) -> ApiResult<Response> {
    let (obj, _) = read_object(ctx).await?;
    object_response(ctx, StatusCode::OK, obj)
}

pub async fn get_scale(ctx: &Ctx) -> ApiResult<Response> {
    let (obj, _) = read_object(ctx).await?;
    Ok(super::json_response(StatusCode::OK, &scale_of(ctx, &obj)?))
}

/// The autoscaling/v1 Scale view of a scalable object.
pub fn scale_of(ctx: &Ctx, obj: &Value) -> ApiResult<Value> {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| match s {
            // ReplicationControllers have a plain map selector.
            Value::Object(m)
                if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") =>
            {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => kubox_core::selectors::LabelSelector::from_object(other)
                .map(|s| s.to_string())
                .unwrap_or_default(),
        })
        .unwrap_or_default();
    let metadata = obj
        .get("metadata")
        .cloned()
        .ok_or_else(|| ApiError::internal("object without metadata"))?;
    let mut m = json!({
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "uid": metadata.get("uid"),
        "resourceVersion": metadata.get("resourceVersion"),
        "creationTimestamp": metadata.get("creationTimestamp"),
    });
    if let Some(o) = m.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let _ = ctx;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": m,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    }))
}
