//! Forwarding to upstream resolvers: the query goes out as the client sent it (with an ID of
//! ours) over UDP from a socket of its own, retried over TCP when the answer is truncated; a
//! timeout, an error, SERVFAIL or REFUSED moves on to the next upstream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer taken over UDP from an upstream.
const UDP_BUF: usize = 4096;

/// The response code in a raw DNS header.
fn rcode(msg: &[u8]) -> u8 {
    msg.get(3).map_or(0, |b| b & 0x0f)
}

fn truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// Sends `query` (a whole DNS message) to the upstreams in turn, starting with
/// `upstreams[start % len]`; returns the first usable answer with the client's ID back in
/// place, or the last unusable one (SERVFAIL/REFUSED), or None when none answered.
pub async fn forward(upstreams: &[SocketAddr], start: usize, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || upstreams.is_empty() {
        return None;
    }
    let client_id = [query[0], query[1]];
    let mut last = None;
    for i in 0..upstreams.len() {
        let upstream = upstreams[(start + i) % upstreams.len()];
        let mut q = query.to_vec();
        let id: u16 = rand::random();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let answer = match udp(upstream, &q).await {
            Ok(a) if truncated(&a) => tcp(upstream, &q).await,
            other => other,
        };
        match answer {
            Ok(mut a) => {
                a[..2].copy_from_slice(&client_id);
                // 2 = SERVFAIL, 5 = REFUSED: another upstream may do better.
                if matches!(rcode(&a), 2 | 5) {
                    last = Some(a);
                    continue;
                }
                return Some(a);
            }
            Err(e) => tracing::debug!(%upstream, error = %e, "upstream DNS server failed"),
        }
    }
    last
}

fn io_timeout() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time")
}

/// One UDP exchange: answers with another ID (late answers to an earlier query) are ignored.
async fn udp(upstream: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(q).await?;
    let mut buf = vec![0u8; UDP_BUF];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| io_timeout())??;
        if n >= 12 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange (two-byte length prefix).
async fn tcp(upstream: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut s = TcpStream::connect(upstream).await?;
        let len = u16::try_from(q.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let mut framed = Vec::with_capacity(q.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(q);
        s.write_all(&framed).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await?;
        if buf.len() < 12 || buf[..2] != q[..2] {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "answer does not match the query",
            ));
        }
        Ok(buf)
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| io_timeout())?
}
