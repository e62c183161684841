//! GET of one object, and of the scale subresource.

use super::{Ctx, json_bytes_response, object_response, read_object};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Negotiated;
use crate::storage;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

pub async fn get(ctx: &Ctx) -> ApiResult<Response> {
    if ctx.accept == Negotiated::Json {
        // Plain JSON is written from the stored bytes when no conversion applies.
        let key = storage::key(&ctx.def, ctx.namespace(), ctx.name());
        let kv = ctx
            .state
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ctx.not_found())?;
        let mut body = Vec::new();
        storage::write_json(&ctx.def, &ctx.def.api_version(), &kv, &mut body)?;
        return Ok(json_bytes_response(StatusCode::OK, body));
    }
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

#[cfg(test)]
mod tests {
    use super::super::list::tests::{ctx, fill, state};
    use super::*;

    #[tokio::test]
    async fn plain_json_gets_are_the_bytes_of_the_full_decode() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = state(dir.path());
        fill(&state).await;
        for (gvr, ns, name) in [
            (("", "v1", "configmaps"), Some("default"), "cm-0"),
            (("", "v1", "configmaps"), Some("other"), "cm-3"),
            (("", "v1", "pods"), Some("default"), "p1"),
            (
                ("autoscaling", "v1", "horizontalpodautoscalers"),
                Some("default"),
                "h",
            ),
            (
                ("autoscaling", "v2", "horizontalpodautoscalers"),
                Some("default"),
                "h",
            ),
            (("events.k8s.io", "v1", "events"), Some("default"), "e"),
            (("", "v1", "namespaces"), None, "n"),
            (("", "v1", "configmaps"), Some("default"), "missing"),
        ] {
            let c = ctx(&state, "get", gvr, ns, Some(name), "");
            let want = match read_object(&c).await {
                Ok((obj, _)) => Ok(serde_json::to_vec(&obj).expect("json")),
                Err(e) => Err(e.status()),
            };
            let got = match get(&c).await {
                Ok(resp) => Ok(axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .expect("body")
                    .to_vec()),
                Err(e) => Err(e.status()),
            };
            assert_eq!(got, want, "{gvr:?} {name}");
        }
    }
}
