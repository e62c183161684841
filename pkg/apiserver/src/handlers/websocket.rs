//! Websocket clients of `exec`, `attach` and `portforward`, translated to SPDY/3.1 towards the
//! kubelet as upstream's API server does (its StreamTranslator and tunnelling handler): the
//! kubelet side (kubox's, and containerd's streaming server behind it) only has to speak SPDY.
//!
//! - exec/attach: the channel protocols `v5.channel.k8s.io` (with the close signal, channel
//!   255, that half-closes stdin), `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`,
//!   `channel.k8s.io` and `base64.channel.k8s.io` (and none at all, as `channel.k8s.io`). Each
//!   message is a channel byte (in the base64 forms, an ASCII digit and base64 text) and data:
//!   0 stdin, 1 stdout, 2 stderr, 3 status, 4 terminal size. The SPDY side is
//!   `v4.channel.k8s.io`: one stream per channel; the status that arrives on its error stream
//!   is passed on as JSON (v4, v5) or, before v4, as the failure's message only.
//! - portforward, `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+): the client speaks SPDY itself
//!   inside binary messages; the bytes are copied to a `portforward.k8s.io` SPDY upgrade.
//! - portforward, `v4.channel.k8s.io` and the older forms (kube-rs, the Python client): per
//!   requested port a data channel (2i) and an error channel (2i+1), each starting with the
//!   port in 2 bytes little-endian; a SPDY error and data stream pair per port.

use std::pin::Pin;

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::spdy::Session;

/// The SPDY-in-websocket port-forward protocol of kubectl 1.31+.
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Exec/attach channel protocols, preferred first: (name, version, base64).
const EXEC_PROTOCOLS: &[(&str, u8, bool)] = &[
    ("v5.channel.k8s.io", 5, false),
    ("v4.channel.k8s.io", 4, false),
    ("v4.base64.channel.k8s.io", 4, true),
    ("channel.k8s.io", 1, false),
    ("base64.channel.k8s.io", 1, true),
];

/// Port-forward channel protocols, preferred first.
const PORT_FORWARD_PROTOCOLS: &[(&str, bool)] = &[
    ("v4.channel.k8s.io", false),
    ("v4.base64.channel.k8s.io", true),
    ("channel.k8s.io", false),
    ("base64.channel.k8s.io", true),
];

/// Whether a request asks for a websocket.
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// What an exec or attach asks for.
#[derive(Clone, Copy)]
pub(super) struct ExecOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What the streaming request is, once its websocket protocol is chosen.
pub(super) enum Target {
    Exec(ExecOptions),
    PortForward(Vec<u16>),
}

#[derive(Clone, Copy)]
enum Mode {
    Exec { version: u8, base64: bool },
    PortForward { base64: bool },
    Tunnel,
}

fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The protocol to answer with (none when the client named none) and what it means.
fn choose(target: &Target, offered: &[String]) -> ApiResult<(Option<&'static str>, Mode)> {
    let has = |p: &str| offered.iter().any(|o| o == p);
    let supported: Vec<&str> = match target {
        Target::Exec(_) => {
            if offered.is_empty() {
                return Ok((
                    None,
                    Mode::Exec {
                        version: 1,
                        base64: false,
                    },
                ));
            }
            if let Some((name, version, base64)) = EXEC_PROTOCOLS.iter().find(|p| has(p.0)) {
                return Ok((
                    Some(*name),
                    Mode::Exec {
                        version: *version,
                        base64: *base64,
                    },
                ));
            }
            EXEC_PROTOCOLS.iter().map(|p| p.0).collect()
        }
        Target::PortForward(_) => {
            if offered.is_empty() {
                return Ok((None, Mode::PortForward { base64: false }));
            }
            if has(TUNNEL) {
                return Ok((Some(TUNNEL), Mode::Tunnel));
            }
            if let Some((name, base64)) = PORT_FORWARD_PROTOCOLS.iter().find(|p| has(p.0)) {
                return Ok((Some(*name), Mode::PortForward { base64: *base64 }));
            }
            std::iter::once(TUNNEL)
                .chain(PORT_FORWARD_PROTOCOLS.iter().map(|p| p.0))
                .collect()
        }
    };
    Err(ApiError::bad_request(format!(
        "unable to upgrade: requested protocol(s) {offered:?} are not supported; supported: {supported:?}"
    )))
}

/// Serves a websocket `exec`, `attach` or `portforward`: a SPDY upgrade at the kubelet's
/// `path` (at `addr`), then the client's websocket, translated in a task of its own.
pub(super) async fn serve(
    ctx: &Ctx,
    upgrade: hyper::upgrade::OnUpgrade,
    addr: std::net::SocketAddr,
    path: &str,
    target: Target,
) -> ApiResult<Response> {
    let (protocol, mode) = choose(&target, &offered(&ctx.headers))?;
    if let (Mode::PortForward { .. }, Target::PortForward(ports)) = (mode, &target)
        && ports.is_empty()
    {
        // The tunnelled form names its ports in SPDY headers instead.
        return Err(ApiError::bad_request("at least one port must be specified"));
    }
    let key = ctx
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("websocket request without Sec-WebSocket-Key"))?;
    let accept = derive_accept_key(key.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(match mode {
            Mode::Exec { .. } => "v4.channel.k8s.io",
            Mode::PortForward { .. } | Mode::Tunnel => "portforward.k8s.io",
        }),
    );
    let mut resp = crate::kubelet::request(&ctx.state, addr, Method::POST, path, headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(crate::kubelet::error(resp).await);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    tracing::debug!(
        protocol = protocol.unwrap_or(""),
        path,
        "websocket stream translated to SPDY"
    );
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(upgrade, kubelet_upgrade) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "a streaming upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        let kubelet = TokioIo::new(kubelet);
        let result = match (mode, target) {
            (Mode::Tunnel, _) => tunnel(ws, kubelet).await,
            (Mode::Exec { version, base64 }, Target::Exec(opts)) => {
                let spdy = Session::start(kubelet);
                let r = exec(ws, &spdy, opts, version, base64).await;
                spdy.close().await;
                r
            }
            (Mode::PortForward { base64 }, Target::PortForward(ports)) => {
                let spdy = Session::start(kubelet);
                let r = port_forward(ws, &spdy, &ports, base64).await;
                spdy.close().await;
                r
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "a websocket stream ended with an error");
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    Ok(r)
}

type Client = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Kubelet = TokioIo<hyper::upgrade::Upgraded>;

fn encode(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut t = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        t.push(char::from(b'0' + channel));
        STANDARD.encode_string(data, &mut t);
        Message::text(t)
    } else {
        let mut b = Vec::with_capacity(1 + data.len());
        b.push(channel);
        b.extend_from_slice(data);
        Message::binary(b)
    }
}

/// A client message as (channel, data); None for control messages and malformed ones.
fn decode(msg: &Message, base64: bool) -> Option<(u8, Vec<u8>)> {
    let raw: &[u8] = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_bytes(),
        _ => return None,
    };
    let (&first, rest) = raw.split_first()?;
    if base64 {
        let channel = first.checked_sub(b'0').filter(|c| *c <= 9)?;
        Some((channel, STANDARD.decode(rest).ok()?))
    } else {
        Some((first, rest.to_vec()))
    }
}

/// Ends the websocket with a Normal Closure (1000), which clients take as the end of every
/// channel (Go's clients take a close without a code as an error).
async fn close<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// A receiver that may not exist: never yields then.
async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(r) => r.recv().await,
        None => None,
    }
}

async fn exec(
    ws: Client,
    spdy: &Session,
    opts: ExecOptions,
    version: u8,
    base64: bool,
) -> std::io::Result<()> {
    let (_, mut status_rx) = spdy.open(&[("streamtype", "error")]).await?;
    let stdin = match opts.stdin {
        true => Some(spdy.open(&[("streamtype", "stdin")]).await?.0),
        false => None,
    };
    let mut stdout = match opts.stdout {
        true => Some(spdy.open(&[("streamtype", "stdout")]).await?.1),
        false => None,
    };
    let mut stderr = match opts.stderr && !opts.tty {
        true => Some(spdy.open(&[("streamtype", "stderr")]).await?.1),
        false => None,
    };
    let resize = match opts.tty {
        true => Some(spdy.open(&[("streamtype", "resize")]).await?.0),
        false => None,
    };
    let (mut sink, mut source) = ws.split();
    let input = {
        let spdy = spdy.clone();
        async move {
            while let Some(Ok(msg)) = source.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                let Some((channel, data)) = decode(&msg, base64) else {
                    continue;
                };
                let sent = match (channel, stdin, resize) {
                    (0, Some(id), _) => spdy.send(id, &data, false).await,
                    (4, _, Some(id)) => spdy.send(id, &data, false).await,
                    // v5: the client closes a channel; only stdin is the client's to close.
                    (255, Some(id), _) if version >= 5 && data.first() == Some(&0) => {
                        spdy.send(id, &[], true).await
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        }
    };
    let mut input = Box::pin(input);
    let (mut out_open, mut err_open, mut status_open, mut client_open) =
        (stdout.is_some(), stderr.is_some(), true, true);
    let mut status = Vec::new();
    while out_open || err_open || status_open {
        tokio::select! {
            d = recv(&mut stdout), if out_open => match d {
                Some(d) => sink.send(encode(1, &d, base64)).await.map_err(std::io::Error::other)?,
                None => out_open = false,
            },
            d = recv(&mut stderr), if err_open => match d {
                Some(d) => sink.send(encode(2, &d, base64)).await.map_err(std::io::Error::other)?,
                None => err_open = false,
            },
            d = status_rx.recv(), if status_open => match d {
                Some(d) => status.extend_from_slice(&d),
                None => status_open = false,
            },
            _ = &mut input, if client_open => {
                client_open = false;
                // The client went away: end the command's streams.
                spdy.close().await;
            }
        }
    }
    if client_open {
        if let Some(msg) = status_message(&status, version) {
            sink.send(encode(3, &msg, base64))
                .await
                .map_err(std::io::Error::other)?;
        }
        close(&mut sink).await;
    }
    Ok(())
}

/// What the error channel carries for the kubelet's v4 status: the Status itself from v4 on,
/// a failure's message before (nothing on success).
fn status_message(status: &[u8], version: u8) -> Option<Vec<u8>> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(status).ok();
    let Some(parsed) = parsed else {
        let s = serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": "the container runtime ended the stream without a status",
            "reason": "InternalError",
            "code": 500,
        });
        return Some(if version >= 4 {
            s.to_string().into_bytes()
        } else {
            s["message"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        });
    };
    if version >= 4 {
        return Some(status.to_vec());
    }
    (parsed["status"] != "Success").then(|| {
        parsed["message"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec()
    })
}

async fn port_forward(
    ws: Client,
    spdy: &Session,
    ports: &[u16],
    base64: bool,
) -> std::io::Result<()> {
    let mut data_ids = Vec::new();
    type Out = Pin<Box<dyn futures::Stream<Item = (u8, Bytes)> + Send>>;
    let mut outputs: Vec<Out> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (p, r) = (port.to_string(), i.to_string());
        let (_, error) = spdy
            .open(&[("streamtype", "error"), ("port", &p), ("requestid", &r)])
            .await?;
        let (id, data) = spdy
            .open(&[("streamtype", "data"), ("port", &p), ("requestid", &r)])
            .await?;
        data_ids.push(id);
        let channel = u8::try_from(i * 2).map_err(std::io::Error::other)?;
        outputs.push(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(data).map(move |b| (channel, b)),
        ));
        outputs.push(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(error).map(move |b| (channel + 1, b)),
        ));
    }
    let (mut sink, mut source) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        for channel in [i * 2, i * 2 + 1] {
            let channel = u8::try_from(channel).map_err(std::io::Error::other)?;
            sink.send(encode(channel, &port.to_le_bytes(), base64))
                .await
                .map_err(std::io::Error::other)?;
        }
    }
    let input = {
        let spdy = spdy.clone();
        let data_ids = data_ids.clone();
        async move {
            while let Some(Ok(msg)) = source.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                let Some((channel, data)) = decode(&msg, base64) else {
                    continue;
                };
                let Some(id) = data_ids.get(usize::from(channel / 2)) else {
                    continue;
                };
                if channel % 2 == 0
                    && !data.is_empty()
                    && spdy.send(*id, &data, false).await.is_err()
                {
                    break;
                }
            }
            for id in data_ids {
                let _ = spdy.send(id, &[], true).await;
            }
        }
    };
    let mut input = Box::pin(input);
    let mut outputs = futures::stream::select_all(outputs);
    let mut client_open = true;
    loop {
        tokio::select! {
            o = outputs.next() => match o {
                Some((channel, data)) => sink
                    .send(encode(channel, &data, base64))
                    .await
                    .map_err(std::io::Error::other)?,
                None => break,
            },
            _ = &mut input, if client_open => client_open = false,
        }
    }
    if client_open {
        close(&mut sink).await;
    }
    Ok(())
}

/// `SPDY/3.1+portforward.k8s.io`: binary messages carry the client's SPDY bytes both ways.
async fn tunnel(ws: Client, kubelet: Kubelet) -> std::io::Result<()> {
    let (mut k_read, mut k_write) = tokio::io::split(kubelet);
    let (mut sink, mut source) = ws.split();
    let up = async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) => k_write.write_all(&b).await?,
                Message::Text(t) => k_write.write_all(t.as_bytes()).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        k_write.shutdown().await
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = k_read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sink.send(Message::binary(buf[..n].to_vec()))
                .await
                .map_err(std::io::Error::other)?;
        }
        close(&mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    let (u, d) = tokio::join!(up, down);
    u.and(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn protocols_are_chosen_as_upstream() {
        let exec = Target::Exec(ExecOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        });
        let pf = Target::PortForward(vec![80]);
        let (p, _) = choose(&exec, &offer(&["v4.channel.k8s.io", "v5.channel.k8s.io"])).unwrap();
        assert_eq!(p, Some("v5.channel.k8s.io"));
        let (p, m) = choose(&exec, &offer(&["base64.channel.k8s.io"])).unwrap();
        assert_eq!(p, Some("base64.channel.k8s.io"));
        assert!(matches!(
            m,
            Mode::Exec {
                version: 1,
                base64: true
            }
        ));
        assert!(matches!(
            choose(&exec, &[]).unwrap(),
            (None, Mode::Exec { .. })
        ));
        assert!(choose(&exec, &offer(&["v9.channel.k8s.io"])).is_err());
        let (p, m) = choose(&pf, &offer(&["SPDY/3.1+portforward.k8s.io"])).unwrap();
        assert_eq!(p, Some(TUNNEL));
        assert!(matches!(m, Mode::Tunnel));
        // kube-rs offers v5 and v4; port-forward has no v5.
        let (p, _) = choose(&pf, &offer(&["v5.channel.k8s.io", "v4.channel.k8s.io"])).unwrap();
        assert_eq!(p, Some("v4.channel.k8s.io"));
    }

    #[test]
    fn channel_messages_round_trip() {
        for base64 in [false, true] {
            let m = encode(2, b"hi\0there", base64);
            assert_eq!(decode(&m, base64), Some((2, b"hi\0there".to_vec())));
        }
        assert_eq!(
            encode(1, b"ab", true),
            Message::text(format!("1{}", STANDARD.encode(b"ab")))
        );
    }

    #[test]
    fn the_status_is_json_from_v4_and_a_message_before() {
        let failure = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(status_message(failure, 5).unwrap(), failure.to_vec());
        assert_eq!(
            status_message(failure, 1).unwrap(),
            b"command terminated with non-zero exit code: exit status 3".to_vec()
        );
        let ok = br#"{"metadata":{},"status":"Success"}"#;
        assert_eq!(status_message(ok, 1), None);
        assert_eq!(status_message(ok, 4).unwrap(), ok.to_vec());
    }
}
