//! REST handlers for resource paths: one file per verb, dispatched from [`serve_resource`].

mod connect;
mod create;
mod delete;
mod eviction;
mod get;
mod list;
mod metrics;
mod object;
mod patch;
mod update;
mod watch;
mod websocket;

use crate::authn::User;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Negotiated;
use crate::request::{Query, RequestInfo};
use crate::state::ApiState;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use kubox_core::resources::ResourceDef;
use serde_json::Value;
use std::sync::Arc;

pub(crate) use object::{read_object, storage_def};

/// Everything a verb handler needs about one request.
#[derive(Clone)]
pub struct Ctx {
    pub state: Arc<ApiState>,
    pub info: RequestInfo,
    pub def: ResourceDef,
    pub query: Query,
    pub headers: HeaderMap,
    pub accept: Negotiated,
    pub user: User,
    /// Warnings for the client (`Warning: 299 - "..."` response headers).
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// The connection's upgrade, for the streaming subresources (exec, attach, portforward).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Ctx {
    /// The same request, aimed at another namespace (collection operations across namespaces).
    pub fn clone_for(&self, namespace: Option<String>) -> Ctx {
        let mut c = self.clone();
        if namespace.is_some() {
            c.info.namespace = namespace;
        }
        c
    }
    pub fn namespace(&self) -> Option<&str> {
        if self.def.namespaced {
            self.info.namespace.as_deref()
        } else {
            None
        }
    }
    pub fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or_default()
    }
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.def.plural, &self.def.group, self.name())
    }
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }
}

/// One resource request after authentication: what it names, its query and headers, its
/// body and the connection's upgrade (None in process).
pub struct ResourceRequest {
    pub info: RequestInfo,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Serves one resource request after authentication.
pub async fn serve_resource(state: Arc<ApiState>, req: ResourceRequest, user: User) -> Response {
    match dispatch(state, req, user).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(state: Arc<ApiState>, req: ResourceRequest, user: User) -> ApiResult<Response> {
    let ResourceRequest {
        info,
        query,
        headers,
        body,
        upgrade,
    } = req;
    let def = {
        let reg = state
            .registry
            .read()
            .map_err(|_| ApiError::internal("registry lock poisoned"))?;
        reg.lookup(&info.group, &info.version, &info.resource)
            .cloned()
    }
    .ok_or_else(ApiError::not_found_path)?;
    if let Some(sub) = &info.subresource
        && def.subresource(sub).is_none()
    {
        return Err(ApiError::not_found_path());
    }
    let accept = crate::negotiate::negotiate(&headers)?;
    let ctx = Ctx {
        state,
        info,
        def,
        query,
        headers,
        accept,
        user,
        warnings: Arc::default(),
        upgrade,
    };
    let result = run_verb(&ctx, body).await;
    let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    result.map(|mut resp| {
        for w in warnings {
            let quoted = serde_json::to_string(&w).unwrap_or_default();
            if let Ok(v) = http::HeaderValue::from_str(&format!("299 - {quoted}")) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
        resp
    })
}

async fn run_verb(ctx: &Ctx, body: Bytes) -> ApiResult<Response> {
    let ctx = ctx.clone();
    let verb = ctx.info.verb.clone();
    let sub = ctx.info.subresource.clone();
    let allowed = match &sub {
        Some(s) => ctx.def.subresource(s).is_some_and(|d| {
            d.verbs
                .iter()
                .any(|v| v == &verb || (verb == "get" && v == "get"))
        }),
        None => ctx.def.has_verb(&verb),
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported on resources of kind \"{}\"",
            ctx.def.qualified_name()
        )));
    }
    // Upstream serves no PUT/PATCH on collections and no POST to a named object (outside
    // subresources such as binding/eviction).
    let named = ctx.info.name.is_some();
    if (matches!(verb.as_str(), "update" | "patch") && !named)
        || (verb == "create" && named && sub.is_none())
    {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if ctx.def.namespaced
        && ctx.info.namespace.is_none()
        && !matches!(verb.as_str(), "list" | "watch")
    {
        return Err(ApiError::not_found_path());
    }
    match (verb.as_str(), sub.as_deref()) {
        ("get" | "list", None) if metrics::is_metrics(&ctx.def) => metrics::serve(&ctx).await,
        ("get", None | Some("status")) => get::get(&ctx).await,
        ("get", Some("ephemeralcontainers")) if is_pods(&ctx.def) => get::get(&ctx).await,
        ("get", Some("scale")) => get::get_scale(&ctx).await,
        ("list", None) => list::list(&ctx).await,
        ("watch", None) => watch::watch(ctx).await,
        ("create", None) if is_review(&ctx.def) => crate::reviews::create(&ctx, body).await,
        ("create", None) => create::create(&ctx, body).await,
        ("create", Some("token")) => crate::reviews::token_request(&ctx, body).await,
        ("create", Some("binding")) => create::bind(&ctx, body).await,
        ("create", Some("eviction")) => eviction::evict(&ctx, body).await,
        ("update", None | Some("status") | Some("finalize") | Some("approval")) => {
            update::update(&ctx, body).await
        }
        ("update", Some("scale")) => update::update_scale(&ctx, body).await,
        ("update", Some("ephemeralcontainers")) if is_pods(&ctx.def) => {
            update::update(&ctx, body).await
        }
        ("patch", Some("ephemeralcontainers")) if is_pods(&ctx.def) => {
            patch::patch(&ctx, body).await
        }
        ("patch", None | Some("status") | Some("scale") | Some("approval")) => {
            patch::patch(&ctx, body).await
        }
        ("get", Some("log")) if is_pods(&ctx.def) => connect::log(&ctx).await,
        ("get" | "create", Some("exec" | "attach" | "portforward")) if is_pods(&ctx.def) => {
            connect::stream(&ctx).await
        }
        ("get", Some("proxy")) if ctx.def.group.is_empty() && ctx.def.plural == "nodes" => {
            connect::node_proxy(&ctx).await
        }
        ("delete", None) => delete::delete(&ctx, body).await,
        ("deletecollection", None) => delete::delete_collection(&ctx, body).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "{verb} on {}/{} is not supported by kubox yet",
            ctx.def.plural,
            sub.unwrap_or_default()
        ))),
    }
}

fn is_pods(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "pods"
}

/// Review kinds (answered from the request, never stored).
fn is_review(def: &ResourceDef) -> bool {
    matches!(
        def.group.as_str(),
        "authentication.k8s.io" | "authorization.k8s.io"
    ) && def.plural.ends_with("reviews")
}

/// A JSON response with `code`.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    json_bytes_response(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A response with `code` carrying `bytes`, JSON already serialized.
pub fn json_bytes_response(code: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Renders one object (or its Table / metadata form) for the client.
pub fn object_response(ctx: &Ctx, code: StatusCode, obj: Value) -> ApiResult<Response> {
    let body = crate::negotiate::render_object(ctx, obj)?;
    Ok(json_response(code, &body))
}
