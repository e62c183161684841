//! The API server's client of kubelets: where a node's kubelet listens and one request to it
//! over TLS with the API server's own client certificate (`client-kube-apiserver`, in
//! `system:masters`), the kubelet's serving certificate checked against the server CA. Used by
//! the pods' connect subresources, `nodes/{name}/proxy` and the metrics scraper.

use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use crate::storage;
use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// kubelet's port when a Node does not say.
const KUBELET_PORT: u16 = 10250;

/// Where the kubelet of a Node object listens: its InternalIP (else first address) and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn address_of(node: &Value) -> Option<SocketAddr> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let ip = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.parse::<IpAddr>().ok())?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(KUBELET_PORT);
    Some(SocketAddr::new(ip, port))
}

/// Where the kubelet of `node` listens.
pub async fn address(state: &ApiState, node: &str) -> ApiResult<SocketAddr> {
    let def = state
        .registry()
        .lookup("", "v1", "nodes")
        .cloned()
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let key = storage::key(&def, None, node);
    let obj = match state.store.get(&key).await? {
        Some(kv) => storage::decode(&def, &kv)?,
        None => return Err(ApiError::not_found("nodes", "", node)),
    };
    address_of(&obj).ok_or_else(|| {
        ApiError::internal(format!(
            "node {node:?} has no usable address for its kubelet"
        ))
    })
}

/// Sends one request (no body) to the kubelet at `addr` over TLS; the connection is kept for
/// an upgrade.
pub async fn request(
    state: &ApiState,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: HeaderMap,
) -> ApiResult<http::Response<hyper::body::Incoming>> {
    let tls = state
        .config
        .kubelet_client
        .clone()
        .ok_or_else(|| ApiError::unavailable("this API server cannot reach kubelets"))?;
    let unreachable = |e: String| ApiError::internal(format!("error dialing backend: {e}"));
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| unreachable(format!("dial tcp {addr}: i/o timeout")))?
    .map_err(|e| unreachable(format!("dial tcp {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS with the kubelet at {addr}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = http::Request::new(http_body_util::Empty::<Bytes>::new());
    *req.method_mut() = method;
    *req.uri_mut() = path
        .parse()
        .map_err(|e| ApiError::internal(format!("kubelet path {path:?}: {e}")))?;
    *req.headers_mut() = headers;
    if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// A kubelet's error answer as the API server reports it (the kubelet's text as message).
pub async fn error(resp: http::Response<hyper::body::Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    };
    ApiError::new(code, reason, msg)
}
