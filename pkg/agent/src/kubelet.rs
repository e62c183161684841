//! The kubelet API the API server calls for `kubectl logs`, `exec`, `attach` and
//! `port-forward`: HTTPS on the node IP (port 10250 unless configured), serving the node's
//! kubelet certificate. Only clients with a certificate of the cluster's client CA in
//! `system:masters` (the API server's own client identity) are served: no certificate is 401,
//! any other identity 403.
//!
//! - `GET /containerLogs/{ns}/{pod}/{container}` reads the CRI log file of the container
//!   (`<rfc3339nano> <stream> <P|F> <message>` lines) with upstream's options (`follow`,
//!   `tailLines`, `limitBytes`, `timestamps`, `sinceSeconds`, `sinceTime`, `previous`);
//!   `follow` streams new lines until the container stops or the client goes.
//! - `/exec/{ns}/{pod}/{container}`, `/attach/...` and `/portForward/{ns}/{pod}` ask CRI for a
//!   URL on containerd's streaming server (loopback) and proxy the client's HTTP upgrade there
//!   byte for byte (SPDY/3.1 or websocket, whatever containerd agrees to), as kubelet does when
//!   it does not redirect.
//! - `GET /stats/summary` and `GET /metrics/resource`: the node's and its pods' resource usage
//!   (see [`crate::stats`]), what metrics-server scrapes.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use kubox_containerd::cri::{Cri, api};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::spec::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
use crate::stats::Stats;

/// kubelet's port.
pub const DEFAULT_PORT: u16 = 10250;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// How the kubelet API is served: port, serving certificate and the CA its clients'
/// certificates come from.
#[derive(Clone, PartialEq, Eq)]
pub struct KubeletServing {
    pub port: u16,
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

impl std::fmt::Debug for KubeletServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletServing")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Serves the kubelet API on `node_ip` until aborted (binding again every 5 s while the
/// address is unavailable).
pub async fn serve(cfg: KubeletServing, node_ip: IpAddr, cri: Cri, stats: Arc<Stats>) {
    let tls = match kubox_pki::serving_tls_config(
        Path::new("the kubelet serving certificate"),
        &cfg.cert_pem,
        &cfg.key_pem,
        &cfg.client_ca_pem,
    ) {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "the kubelet API cannot be served");
            return;
        }
    };
    let addr = SocketAddr::new(node_ip, cfg.port);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "the kubelet API cannot listen; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    tracing::info!(%addr, "kubelet API listening");
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a kubelet API connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let cri = cri.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "kubelet API TLS handshake failed");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| kubox_pki::identity_from_cert_der(c.as_ref()));
            let svc = hyper::service::service_fn(move |req| {
                let cri = cri.clone();
                let stats = stats.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handle(cri, &stats, identity, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Query parameters of a request: every value of every key, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn bool(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }
    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| format!("invalid {key}: {v:?}")))
            .transpose()
    }
}

async fn handle(
    cri: Cri,
    stats: &Stats,
    identity: Option<kubox_pki::Identity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .skip(1)
        .map(kubox_core::net::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if segs.as_slice() == ["healthz"] {
        return text(StatusCode::OK, "ok");
    }
    let Some(identity) = identity else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    if !identity.groups.iter().any(|g| g == "system:masters") {
        let sub = segs.first().copied().unwrap_or_default();
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[proxy {sub}])",
                identity.user,
                req.method().as_str().to_lowercase()
            ),
        );
    }
    let params = Params(kubox_core::net::parse_query(
        req.uri().query().unwrap_or(""),
    ));
    let get = req.method() == Method::GET;
    let stream_method = get || req.method() == Method::POST;
    let result = match segs.as_slice() {
        ["containerLogs", ns, pod, container] if get => {
            logs(&cri, ns, pod, container, &params).await
        }
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if stream_method => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec(&cri, req, &ns, &pod, &container, &params, Kind::Exec).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if stream_method => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec(&cri, req, &ns, &pod, &container, &params, Kind::Attach).await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if stream_method => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(&cri, req, &ns, &pod).await
        }
        ["stats", "summary"] if get => {
            usage(stats, "application/json", |s| {
                serde_json::to_vec(&crate::stats::summary(s)).unwrap_or_default()
            })
            .await
        }
        ["metrics", "resource"] if get => {
            usage(stats, "text/plain; version=0.0.4; charset=utf-8", |s| {
                crate::stats::resource_metrics(s).into_bytes()
            })
            .await
        }
        ["containerLogs" | "exec" | "attach" | "portForward", ..]
        | ["stats", "summary"]
        | ["metrics", "resource"] => Err(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405: Method Not Allowed",
        )),
        _ => Err(text(StatusCode::NOT_FOUND, "404 page not found")),
    };
    result.unwrap_or_else(|r| r)
}

/// A sample of the node's resource usage, rendered by `render`.
async fn usage(
    stats: &Stats,
    content_type: &'static str,
    render: impl FnOnce(&crate::stats::Sample) -> Vec<u8>,
) -> Result<Response<Body>, Response<Body>> {
    let sample = stats.sample().await.map_err(cri_error)?;
    let mut r = Response::new(
        Full::new(Bytes::from(render(&sample)))
            .map_err(|e| match e {})
            .boxed(),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(r)
}

/// A CRI failure as kubelet reports it.
fn cri_error(e: tonic::Status) -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string())
}

/// The CRI containers named `container` of the newest instance of pod `ns/pod` on this node,
/// newest attempt first.
async fn containers_of(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<api::Container>, Response<Body>> {
    let labels = [
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
        (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
    ];
    let mut list = cri
        .runtime
        .clone()
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: labels.into(),
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_error)?
        .into_inner()
        .containers;
    // A pod recreated under the same name: only the newest one counts.
    let newest_uid = list
        .iter()
        .max_by_key(|c| c.created_at)
        .and_then(|c| c.labels.get(LABEL_POD_UID).cloned());
    list.retain(|c| c.labels.get(LABEL_POD_UID) == newest_uid.as_ref());
    list.sort_by_key(|c| std::cmp::Reverse(c.metadata.as_ref().map_or(0, |m| m.attempt)));
    Ok(list)
}

async fn container_status(cri: &Cri, id: &str) -> Result<api::ContainerStatus, Response<Body>> {
    cri.runtime
        .clone()
        .container_status(api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(cri_error)?
        .into_inner()
        .status
        .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("container {id:?} not found")))
}

/// `GET /containerLogs/{ns}/{pod}/{container}`.
async fn logs(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
    params: &Params,
) -> Result<Response<Body>, Response<Body>> {
    let opts = LogOptions::parse(params).map_err(|m| text(StatusCode::BAD_REQUEST, m))?;
    let list = containers_of(cri, ns, pod, container).await?;
    let chosen = if opts.previous {
        list.get(1).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            )
        })?
    } else {
        list.first().ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                ),
            )
        })?
    };
    let status = container_status(cri, &chosen.id).await?;
    let file = tokio::fs::File::open(&status.log_path).await.map_err(|e| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to open log file {:?}: {e}", status.log_path),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let follow = opts.follow && !opts.previous;
    tokio::spawn(stream_log(
        cri.clone(),
        chosen.id.clone(),
        (file, PathBuf::from(&status.log_path)),
        opts,
        follow,
        tx,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// kubelet's log options.
#[derive(Debug, Default)]
struct LogOptions {
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail: Option<usize>,
    limit: Option<u64>,
    since: Option<jiff::Timestamp>,
}

impl LogOptions {
    fn parse(p: &Params) -> Result<LogOptions, String> {
        let since = match (p.number::<i64>("sinceSeconds")?, p.get("sinceTime")) {
            (Some(s), _) => Some(
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(s))
                    .map_err(|e| format!("invalid sinceSeconds: {e}"))?,
            ),
            (None, Some(t)) => Some(
                t.parse::<jiff::Timestamp>()
                    .map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?,
            ),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: p.bool("follow"),
            previous: p.bool("previous"),
            timestamps: p.bool("timestamps"),
            tail: p
                .number::<i64>("tailLines")?
                .map(|n| usize::try_from(n).unwrap_or(0)),
            limit: p
                .number::<i64>("limitBytes")?
                .map(|n| u64::try_from(n).unwrap_or(0)),
            since,
        })
    }
}

/// One line of a CRI log file.
struct LogEntry<'a> {
    timestamp: &'a str,
    /// `F` (the line is complete) or `P` (partial: the message continues in the next entry).
    partial: bool,
    message: &'a [u8],
}

fn parse_entry(line: &[u8]) -> Option<LogEntry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let message = parts.next().unwrap_or_default();
    Some(LogEntry {
        timestamp,
        partial: tag.first() == Some(&b'P'),
        message,
    })
}

/// Renders the complete lines of `buf` the options let through into `out`; returns false once
/// `limitBytes` is used up.
fn render(buf: &[u8], opts: &LogOptions, remaining: &mut Option<u64>, out: &mut Vec<u8>) -> bool {
    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(e) = parse_entry(line) else {
            continue;
        };
        if let Some(since) = opts.since
            && e.timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t < since)
        {
            continue;
        }
        let start = out.len();
        if opts.timestamps {
            out.extend_from_slice(e.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(e.message);
        if !e.partial {
            out.push(b'\n');
        }
        if let Some(left) = remaining.as_mut() {
            let n = (out.len() - start) as u64;
            if n >= *left {
                out.truncate(start + usize::try_from(*left).unwrap_or(0));
                *left = 0;
                return false;
            }
            *left -= n;
        }
    }
    true
}

/// The start of the last `n` lines of `buf` (which ends with a newline).
fn tail_start(buf: &[u8], n: usize) -> usize {
    if n == 0 {
        return buf.len();
    }
    let mut seen = 0;
    for (i, b) in buf.iter().enumerate().rev().skip(1) {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Sends the log of container `id` from `file` (opened at `path`) to `tx`; with `follow`, keeps
/// reading what is appended until the container is no longer running (or the receiver is
/// gone), going on in the new file at `path` once the log was rotated.
async fn stream_log(
    cri: Cri,
    id: String,
    (mut file, path): (tokio::fs::File, PathBuf),
    opts: LogOptions,
    follow: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut remaining = opts.limit;
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut idle = 0u32;
    loop {
        let n = match file.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "reading a container log failed");
                return;
            }
        };
        if n > 0 {
            idle = 0;
            pending.extend_from_slice(&chunk[..n]);
            // Read the whole existing file before applying tailLines.
            if first && n == chunk.len() {
                continue;
            }
        }
        let complete = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let mut from = 0;
        if first {
            first = false;
            if let Some(t) = opts.tail {
                from = tail_start(&pending[..complete], t);
            }
        }
        if complete > 0 {
            let mut out = Vec::new();
            let more = render(&pending[from..complete], &opts, &mut remaining, &mut out);
            pending.drain(..complete);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if !more {
                return;
            }
        }
        if n > 0 {
            continue;
        }
        if !follow || tx.is_closed() {
            return;
        }
        // At the end of a file that was rotated away: what containerd wrote to it before it
        // reopened the log, then the new file at the path.
        if rotated(&file, &path).await
            && let Ok(f) = tokio::fs::File::open(&path).await
        {
            let _ = file.read_to_end(&mut pending).await;
            file = f;
            continue;
        }
        // Nothing new: is the container still running? (checked every second of quiet)
        idle += 1;
        if idle.is_multiple_of(5) {
            let running = cri
                .runtime
                .clone()
                .container_status(api::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|s| s.into_inner().status)
                .is_some_and(|s| s.state == api::ContainerState::ContainerRunning as i32);
            if !running {
                // One last read for what was written before it stopped.
                let mut rest = Vec::new();
                let _ = file.read_to_end(&mut rest).await;
                pending.extend_from_slice(&rest);
                if !pending.ends_with(b"\n") && !pending.is_empty() {
                    pending.push(b'\n');
                }
                let mut out = Vec::new();
                render(&pending, &opts, &mut remaining, &mut out);
                if !out.is_empty() {
                    let _ = tx.send(Bytes::from(out)).await;
                }
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `path` now names another file than the open `file` (log rotation renamed it).
async fn rotated(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata().await, tokio::fs::metadata(path).await) {
        (Ok(open), Ok(now)) => (open.dev(), open.ino()) != (now.dev(), now.ino()),
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exec,
    Attach,
}

/// `/exec/...` and `/attach/...`: a CRI streaming URL for the running container, then the
/// client's upgrade proxied there.
async fn exec(
    cri: &Cri,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
    params: &Params,
    kind: Kind,
) -> Result<Response<Body>, Response<Body>> {
    let list = containers_of(cri, ns, pod, container).await?;
    let running = list
        .iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .ok_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                format!("container not found ({container:?})"),
            )
        })?;
    let (stdin, stdout, stderr, tty) = (
        params.bool("input") || params.bool("stdin"),
        params.bool("output") || params.bool("stdout"),
        params.bool("error") || params.bool("stderr"),
        params.bool("tty"),
    );
    let mut rt = cri.runtime.clone();
    let url = match kind {
        Kind::Exec => {
            let cmd = params.all("command");
            if cmd.is_empty() {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    "you must specify at least one command for the container",
                ));
            }
            rt.exec(api::ExecRequest {
                container_id: running.id.clone(),
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
            .await
            .map_err(cri_error)?
            .into_inner()
            .url
        }
        Kind::Attach => {
            rt.attach(api::AttachRequest {
                container_id: running.id.clone(),
                stdin,
                tty,
                stdout,
                stderr,
            })
            .await
            .map_err(cri_error)?
            .into_inner()
            .url
        }
    };
    Ok(proxy(req, &url).await)
}

/// `/portForward/{ns}/{pod}`: a CRI streaming URL for the pod's sandbox, then the client's
/// upgrade proxied there (the ports travel in the stream headers).
async fn port_forward(
    cri: &Cri,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Result<Response<Body>, Response<Body>> {
    let labels = [
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
    ];
    let mut rt = cri.runtime.clone();
    let sandbox = rt
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: labels.into(),
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_error)?
        .into_inner()
        .items
        .into_iter()
        .max_by_key(|s| s.created_at)
        .ok_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                format!("pod not found ({pod:?}) in namespace {ns:?}"),
            )
        })?;
    let url = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: Vec::new(),
        })
        .await
        .map_err(cri_error)?
        .into_inner()
        .url;
    Ok(proxy(req, &url).await)
}

/// Sends `req` (its method and headers; streaming requests have no body) to `url` on
/// containerd's plain-HTTP streaming server. A `101 Switching Protocols` answer is passed
/// back and both upgraded connections are then copied into each other until either side
/// closes; any other answer is passed back as it is.
async fn proxy(mut req: Request<Incoming>, url: &str) -> Response<Body> {
    let bad_gateway = |m: String| {
        tracing::debug!(url, error = %m, "proxying to the CRI streaming server failed");
        text(StatusCode::BAD_GATEWAY, m)
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad_gateway(format!("bad streaming URL {url:?}: {e}")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return bad_gateway(format!("bad streaming URL {url:?}"));
    };
    let tcp = match tokio::net::TcpStream::connect(authority.as_str()).await {
        Ok(t) => t,
        Err(e) => return bad_gateway(format!("connecting to {authority}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(c) => c,
        Err(e) => return bad_gateway(format!("connecting to {authority}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut out = Request::new(Empty::<Bytes>::new());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    for (k, v) in req.headers() {
        if k != http::header::HOST
            && k != http::header::CONTENT_LENGTH
            && k != http::header::AUTHORIZATION
        {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    if let Ok(h) = http::HeaderValue::from_str(authority.as_str()) {
        out.headers_mut().insert(http::header::HOST, h);
    }
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("sending to {authority}: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(|b| b.map_err(BoxError::from).boxed());
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                tracing::debug!(client = ?c.err(), backend = ?b.err(), "a streaming upgrade failed");
                return;
            }
        };
        let _ =
            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend))
                .await;
    });
    let mut r = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = resp.headers().clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2024-05-01T10:00:00.000000001Z stdout F one\n\
2024-05-01T10:00:01.5Z stderr F two\n\
2024-05-01T10:00:02Z stdout P thr\n\
2024-05-01T10:00:02.1Z stdout F ee\n";

    fn rendered(opts: &LogOptions, limit: Option<u64>) -> String {
        let mut out = Vec::new();
        let mut remaining = limit;
        render(LOG, opts, &mut remaining, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cri_lines_become_the_container_output() {
        assert_eq!(rendered(&LogOptions::default(), None), "one\ntwo\nthree\n");
        let ts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert!(
            rendered(&ts, None).starts_with("2024-05-01T10:00:00.000000001Z one\n"),
            "{}",
            rendered(&ts, None)
        );
        assert_eq!(rendered(&LogOptions::default(), Some(6)), "one\ntw");
        let since = LogOptions {
            since: Some("2024-05-01T10:00:01Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(rendered(&since, None), "two\nthree\n");
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(&LOG[tail_start(LOG, 2)..], &LOG[LOG.len() - 69..]);
        assert_eq!(tail_start(LOG, 10), 0);
        assert_eq!(tail_start(LOG, 0), LOG.len());
        assert!(LOG[tail_start(LOG, 1)..].starts_with(b"2024-05-01T10:00:02.1Z"));
    }
}
