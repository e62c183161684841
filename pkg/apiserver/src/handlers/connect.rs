//! The connect subresources of pods, served by the pod's node: `log` is streamed from the
//! kubelet API's `/containerLogs`, and `exec`, `attach` and `portforward` proxy the client's
//! upgraded connection (SPDY/3.1 or websocket) to the kubelet's `/exec`, `/attach` and
//! `/portForward`: SPDY byte for byte, as upstream's UpgradeAwareHandler does, and websocket
//! translated to SPDY (`websocket.rs`). The API server
//! presents its own client certificate and checks the kubelet's serving certificate against
//! the server CA; the kubelet is reached on its node's InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`.

use super::Ctx;
use super::websocket::{ExecOptions, Target};
use crate::error::{ApiError, ApiResult};
use crate::kubelet;
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kubox_core::net::percent_encode;
use serde_json::Value;

/// `GET pods/{name}/log`.
pub async fn log(ctx: &Ctx) -> ApiResult<Response> {
    let q = &ctx.query;
    let tail = q.i64("tailLines")?;
    let limit = q.i64("limitBytes")?;
    let since_seconds = q.i64("sinceSeconds")?;
    let since_time = q.get("sinceTime");
    let mut problems = Vec::new();
    if tail.is_some_and(|t| t < 0) {
        problems.push("tailLines: Invalid value: must be greater than or equal to 0");
    }
    if limit.is_some_and(|l| l < 1) {
        problems.push("limitBytes: Invalid value: must be greater than 0");
    }
    if since_seconds.is_some_and(|s| s < 1) {
        problems.push("sinceSeconds: Invalid value: must be greater than 0");
    }
    if since_seconds.is_some() && since_time.is_some() {
        problems.push("sinceSeconds: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified");
    }
    if let Some(t) = since_time
        && t.parse::<jiff::Timestamp>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "parsing time {t:?} as RFC 3339 failed"
        )));
    }
    if !problems.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "PodLogOptions \"{}\" is invalid: {}",
                ctx.name(),
                problems.join(", ")
            ),
        ));
    }
    let (pod, _) = super::read_object(ctx).await?;
    let container = container_of(ctx, &pod)?;
    let Some(node) = node_name(&pod) else {
        // Not scheduled yet: upstream answers an empty log.
        return Ok(text_response(Body::empty()));
    };
    let mut params = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if q.bool(key) {
            params.push(format!("{key}=true"));
        }
    }
    for (key, v) in [
        ("tailLines", tail),
        ("limitBytes", limit),
        ("sinceSeconds", since_seconds),
    ] {
        if let Some(v) = v {
            params.push(format!("{key}={v}"));
        }
    }
    if let Some(t) = since_time {
        params.push(format!("sinceTime={}", percent_encode(t)));
    }
    let path = format!(
        "/containerLogs/{}/{}/{}?{}",
        percent_encode(ctx.namespace().unwrap_or_default()),
        percent_encode(ctx.name()),
        percent_encode(&container),
        params.join("&")
    );
    let addr = kubelet::address(&ctx.state, &node).await?;
    let resp = kubelet::request(&ctx.state, addr, Method::GET, &path, HeaderMap::new()).await?;
    if resp.status() != StatusCode::OK {
        return Err(kubelet::error(resp).await);
    }
    Ok(text_response(Body::new(resp.into_body())))
}

fn text_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// `pods/{name}/exec`, `attach` and `portforward` (GET or POST with an upgrade).
pub async fn stream(ctx: &Ctx) -> ApiResult<Response> {
    let sub = ctx.info.subresource.clone().unwrap_or_default();
    if !ctx.headers.contains_key(http::header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let upgrade = ctx
        .upgrade
        .clone()
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let (pod, _) = super::read_object(ctx).await?;
    let q = &ctx.query;
    let ns = percent_encode(ctx.namespace().unwrap_or_default());
    let name = percent_encode(ctx.name());
    let path = if sub == "portforward" {
        let ports: Vec<String> = q
            .all("ports")
            .into_iter()
            .map(|p| format!("port={}", percent_encode(&p)))
            .collect();
        format!("/portForward/{ns}/{name}?{}", ports.join("&"))
    } else {
        let container = container_of(ctx, &pod)?;
        let mut params = Vec::new();
        if sub == "exec" {
            let command = q.all("command");
            if command.is_empty() {
                return Err(ApiError::bad_request(
                    "you must specify at least one command for the container",
                ));
            }
            params.extend(
                command
                    .iter()
                    .map(|c| format!("command={}", percent_encode(c))),
            );
        }
        let (stdin, stdout, stderr, tty) = (
            q.bool("stdin"),
            q.bool("stdout"),
            q.bool("stderr"),
            q.bool("tty"),
        );
        if !stdin && !stdout && !stderr {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        for (key, on) in [
            ("input", stdin),
            ("output", stdout),
            ("error", stderr),
            ("tty", tty),
        ] {
            if on {
                params.push(format!("{key}=1"));
            }
        }
        let kind = if sub == "exec" { "exec" } else { "attach" };
        format!(
            "/{kind}/{ns}/{name}/{}?{}",
            percent_encode(&container),
            params.join("&")
        )
    };
    let Some(node) = node_name(&pod) else {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            ctx.name()
        )));
    };
    let addr = kubelet::address(&ctx.state, &node).await?;
    if super::websocket::is_websocket(&ctx.headers) {
        let target = if sub == "portforward" {
            Target::PortForward(ports(ctx)?)
        } else {
            Target::Exec(ExecOptions {
                stdin: q.bool("stdin"),
                stdout: q.bool("stdout"),
                stderr: q.bool("stderr"),
                tty: q.bool("tty"),
            })
        };
        return super::websocket::serve(ctx, upgrade, addr, &path, target).await;
    }
    // The client's upgrade headers go along (Connection, Upgrade, X-Stream-Protocol-Version,
    // Sec-WebSocket-*); its credentials do not.
    let mut headers = HeaderMap::new();
    for (k, v) in &ctx.headers {
        let name = k.as_str();
        if k != http::header::HOST
            && k != http::header::AUTHORIZATION
            && k != http::header::CONTENT_LENGTH
            && !name.starts_with("impersonate-")
        {
            headers.append(k.clone(), v.clone());
        }
    }
    let method = if ctx.info.verb == "create" {
        Method::POST
    } else {
        Method::GET
    };
    let mut resp = kubelet::request(&ctx.state, addr, method, &path, headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        return Ok(r);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::join!(upgrade, kubelet_upgrade) {
            (Ok(client), Ok(kubelet)) => {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(kubelet),
                )
                .await;
            }
            (c, k) => {
                tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "a streaming upgrade failed");
            }
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = resp.headers().clone();
    Ok(r)
}

/// The ports of a port-forward (`ports`, repeated or comma-separated; maybe none).
fn ports(ctx: &Ctx) -> ApiResult<Vec<u16>> {
    let mut ports = Vec::new();
    for p in ctx.query.all("ports").iter().flat_map(|v| v.split(',')) {
        let p = p.trim();
        match p.parse::<u16>() {
            Ok(n) if n > 0 => ports.push(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unable to parse {p:?} as a port"
                )));
            }
        }
    }
    Ok(ports)
}

fn node_name(pod: &Value) -> Option<String> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(String::from)
}

/// The container a request names (`container`), defaulted to the only one, as upstream.
fn container_of(ctx: &Ctx, pod: &Value) -> ApiResult<String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let containers = names("containers");
    let name = ctx.name();
    match ctx.query.get("container") {
        Some(c) => {
            let known = ["containers", "initContainers", "ephemeralContainers"]
                .iter()
                .any(|f| names(f).iter().any(|n| n == c));
            if known {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            many => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                );
                let init = names("initContainers");
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::bad_request(msg))
            }
        },
    }
}

/// `GET nodes/{name}/proxy/{path}`: the request is sent to the node's kubelet and its answer
/// passed back (status, content type and body, streamed).
pub async fn node_proxy(ctx: &Ctx) -> ApiResult<Response> {
    let query = ctx.query.encoded();
    let mut path = format!("/{}", ctx.info.subpath);
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let addr = kubelet::address(&ctx.state, ctx.name()).await?;
    let mut headers = HeaderMap::new();
    if let Some(a) = ctx.headers.get(http::header::ACCEPT) {
        headers.insert(http::header::ACCEPT, a.clone());
    }
    let resp = kubelet::request(&ctx.state, addr, Method::GET, &path, headers).await?;
    let status = resp.status();
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut r = Response::new(Body::new(resp.into_body()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Ok(r)
}
