//! `metrics.k8s.io/v1beta1`: NodeMetrics (`nodes`) and PodMetrics (`pods`), get and list,
//! answered from the scraped samples in [`crate::metrics`] as metrics-server answers them.
//! A metrics object exists for each Node or Pod that exists and has been scraped twice; it
//! carries the object's labels, so label selectors select on those (field selectors on
//! `metadata.name`/`metadata.namespace`).

use super::list::{Filter, read_page};
use super::{Ctx, object_response};
use crate::error::{ApiError, ApiResult};
use crate::metrics::usage_json;
use axum::response::Response;
use http::StatusCode;
use kubox_core::resources::ResourceDef;
use serde_json::{Value, json};

/// Whether `def` is one of the metrics.k8s.io resources.
pub fn is_metrics(def: &ResourceDef) -> bool {
    def.group == "metrics.k8s.io"
}

/// `get`/`list` of NodeMetrics or PodMetrics.
pub async fn serve(ctx: &Ctx) -> ApiResult<Response> {
    let pods = ctx.def.plural == "pods";
    // The Nodes or Pods the metrics belong to, read as those resources.
    let source_def = ctx
        .state
        .registry()
        .lookup("", "v1", if pods { "pods" } else { "nodes" })
        .cloned()
        .ok_or_else(|| ApiError::internal("nodes and pods are not registered"))?;
    let mut source = ctx.clone();
    source.def = source_def;
    if ctx.info.verb == "get" {
        let obj = match super::read_object(&source).await {
            Ok((o, _)) => o,
            Err(e) if e.code == 404 => return Err(ctx.not_found()),
            Err(e) => return Err(e),
        };
        let mut m = metrics_of(ctx, &obj).ok_or_else(|| ctx.not_found())?;
        m["kind"] = json!(ctx.def.kind);
        m["apiVersion"] = json!(ctx.def.api_version());
        return object_response(ctx, StatusCode::OK, m);
    }
    let filter = Filter::from_ctx(ctx)?;
    let page = read_page(&source, &filter).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .filter_map(|o| metrics_of(ctx, o))
        .collect();
    let body = crate::negotiate::render_list(ctx, items, json!({}))?;
    Ok(super::json_response(StatusCode::OK, &body))
}

/// The metrics object of a Node or Pod, if it has been scraped twice.
fn metrics_of(ctx: &Ctx, obj: &Value) -> Option<Value> {
    let name = kubox_core::meta::name(obj)?;
    let mut metadata = json!({
        "name": name,
        "creationTimestamp": kubox_core::meta::now_rfc3339(),
    });
    if let Some(labels) = obj.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    let metrics = &ctx.state.metrics;
    if ctx.def.plural == "pods" {
        let ns = kubox_core::meta::namespace(obj)?;
        metadata["namespace"] = json!(ns);
        let containers = metrics.pod(ns, name);
        let first = containers.first()?.1;
        let timestamp = containers
            .iter()
            .map(|(_, u)| u.timestamp_ms)
            .max()
            .unwrap_or(first.timestamp_ms);
        let mut m = usage_json(&crate::metrics::Usage {
            timestamp_ms: timestamp,
            ..first
        });
        if let Some(o) = m.as_object_mut() {
            o.remove("usage");
        }
        m["metadata"] = metadata;
        m["containers"] = containers
            .iter()
            .map(|(c, u)| json!({"name": c, "usage": usage_json(u)["usage"]}))
            .collect();
        Some(m)
    } else {
        let mut m = usage_json(&metrics.node(name)?);
        m["metadata"] = metadata;
        Some(m)
    }
}
