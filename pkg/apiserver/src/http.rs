//! The HTTPS listener (rustls; HTTP/2 and HTTP/1.1 with upgrades) and request routing.

use crate::authn::{User, anonymous_allowed};
use crate::error::ApiError;
use crate::request::{MAX_BODY_BYTES, Query, parse_resource_path};
use crate::state::ApiState;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serves the API on `listener` until `shutdown` resolves. Each connection's client
/// certificate (verified by the TLS config against the client CA) names its user.
pub async fn serve(
    state: Arc<ApiState>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls_stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let user = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| kubox_pki::identity_from_cert_der(c.as_ref()))
                .map(|id| User::from_cert(id.user, id.groups))
                .unwrap_or_else(User::anonymous);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(state, user, req.map(Body::new)).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls_stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn text(code: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A tower service answering requests in process as `user`, without TCP or TLS: the
/// transport of the scheduler's and controllers' `kube::Client`. Requests without a
/// User-Agent get `program`'s (see [`kubox_core::user_agent`]).
pub fn in_process<B>(
    state: Arc<ApiState>,
    user: User,
    program: &'static str,
) -> impl tower::Service<
    Request<B>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let agent = http::HeaderValue::from_str(&kubox_core::user_agent(program)).ok();
    tower::service_fn(move |mut req: Request<B>| {
        let state = state.clone();
        let user = user.clone();
        if let Some(agent) = &agent {
            req.headers_mut()
                .entry(http::header::USER_AGENT)
                .or_insert_with(|| agent.clone());
        }
        async move { Ok(handle(state, user, req.map(Body::new)).await) }
    })
}

/// Reads a request body, refusing more than [`MAX_BODY_BYTES`] with 413.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "reading the request body failed: {e}"
                )))
            }
        }
    }
}

/// Routes one request of `user`. The TLS listener calls it per request; in-process clients
/// (the controllers and the scheduler) call it directly with their own identity.
pub async fn handle(state: Arc<ApiState>, user: User, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let resp = match authenticate_and_route(&state, user, &method, &path, parts, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}

/// Authentication (a client certificate, else a bearer token), impersonation and
/// authorization, then routing.
async fn authenticate_and_route(
    state: &Arc<ApiState>,
    mut user: User,
    method: &Method,
    path: &str,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    if path == crate::join::PATH {
        // Authenticated by the join token itself.
        if method != Method::POST {
            return Err(ApiError::method_not_allowed("use POST to join"));
        }
        let body = read_body(body).await?;
        let answer = crate::join::join(state, &parts.headers, &body).await?;
        return Ok(crate::handlers::json_response(StatusCode::OK, &answer));
    }
    if user.is_anonymous()
        && let Some(token) = crate::authn::bearer_token(&parts.headers)
    {
        user = crate::authn::authenticate_token(state, token)
            .await
            .ok_or_else(ApiError::unauthorized)?;
    }
    if anonymous_allowed(path) {
        return route(state, user, method, path, parts, body).await;
    }
    if user.is_anonymous() {
        return Err(ApiError::unauthorized());
    }
    let user = crate::authz::impersonate(state, user, &parts.headers)?;
    let query = Query::parse(parts.uri.query());
    let info = parse_resource_path(method, path, &query);
    let attrs = crate::authz::attributes(method, path, info.as_ref(), &query);
    crate::authz::check(state, &user, &attrs)?;
    route(state, user, method, path, parts, body).await
}

async fn route(
    state: &Arc<ApiState>,
    user: User,
    method: &Method,
    path: &str,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let get_only = || -> Result<(), ApiError> {
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )))
        }
    };
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => {
            get_only()?;
            return Ok(text(StatusCode::OK, "ok"));
        }
        ["version"] => {
            get_only()?;
            return Ok(crate::handlers::json_response(
                StatusCode::OK,
                &crate::discovery::version(),
            ));
        }
        ["cacerts"] => {
            get_only()?;
            let mut r = Response::new(Body::from(state.config.server_ca_pem.clone()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        ["api"] => {
            get_only()?;
            return Ok(crate::discovery::api(state, &parts.headers));
        }
        ["apis"] => {
            get_only()?;
            return Ok(crate::discovery::apis(state, &parts.headers));
        }
        ["api", v] => {
            get_only()?;
            return crate::discovery::resource_list(state, "", v);
        }
        ["apis", g] => {
            get_only()?;
            return crate::discovery::group(state, g);
        }
        ["apis", g, v] => {
            get_only()?;
            return crate::discovery::resource_list(state, g, v);
        }
        ["openapi", "v2"] => {
            get_only()?;
            let protobuf = parts
                .headers
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("com.github.proto-openapi.spec.v2"));
            let openapi = state.openapi.clone();
            let doc =
                tokio::task::spawn_blocking(move || openapi.v2(crate::discovery::KUBE_GIT_VERSION))
                    .await
                    .map_err(|e| ApiError::internal(format!("building /openapi/v2: {e}")))?
                    .map_err(|e| ApiError::internal(format!("building /openapi/v2: {e}")))?;
            let (body, content_type) = if protobuf {
                (
                    doc.protobuf.clone(),
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )
            } else {
                (doc.json.clone(), "application/json")
            };
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            if let Ok(etag) = http::HeaderValue::from_str(&doc.etag) {
                r.headers_mut().insert(http::header::ETAG, etag);
            }
            return Ok(r);
        }
        ["openapi", "v3"] => {
            get_only()?;
            let body = serde_json::to_vec(&state.openapi.index()).unwrap_or_default();
            return Ok(json_bytes(body));
        }
        ["openapi", "v3", rest @ ..] => {
            get_only()?;
            let gv = rest.join("/");
            let doc = state
                .openapi
                .document(&gv)
                .ok_or_else(ApiError::not_found_path)?;
            let mut r = json_bytes(doc.as_ref().clone());
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, immutable"),
            );
            return Ok(r);
        }
        _ => {}
    }
    let query = Query::parse(parts.uri.query());
    let info = parse_resource_path(method, path, &query).ok_or_else(ApiError::not_found_path)?;
    let mut parts = parts;
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let body = read_body(body).await?;
    let req = crate::handlers::ResourceRequest {
        info,
        query,
        headers: parts.headers,
        body,
        upgrade,
    };
    Ok(crate::handlers::serve_resource(state.clone(), req, user).await)
}
