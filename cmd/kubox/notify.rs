//! systemd's service notification protocol (`sd_notify`): the units install.sh writes are
//! `Type=notify`, so systemd counts kubox as started only once it says `READY=1` — the server
//! when its API answers `/readyz`, the agent when its node is registered (its kubelet API,
//! started right after registration, answers `/healthz`). Each message is one datagram to
//! the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`).

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The socket systemd (or a test) listens on, when kubox runs under it.
pub fn socket() -> Option<OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())
}

/// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=…`, newline-separated) to `socket`.
pub fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let sent = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None => sock.send_to(state.as_bytes(), socket)?,
    };
    if sent != state.len() {
        return Err(std::io::Error::other("the notification was truncated"));
    }
    Ok(())
}

/// What says kubox is ready: an HTTPS GET of `path` at `host:port` answering 200, the
/// server's certificate checked against the CA in `ca_file` (which exists once the PKI does).
#[derive(Debug, Clone)]
pub struct Probe {
    pub host: IpAddr,
    pub port: u16,
    pub path: &'static str,
    pub ca_file: PathBuf,
}

impl Probe {
    async fn ok(&self) -> bool {
        let Ok(ca) = std::fs::read_to_string(&self.ca_file) else {
            return false;
        };
        let Ok(tls) = kubox_pki::client::tls_config(Some(&ca)) else {
            return false;
        };
        let host = self.host.to_string();
        let Ok(req) = http::Request::get(self.path)
            .header(http::header::HOST, &host)
            .body(Vec::new())
        else {
            return false;
        };
        matches!(
            kubox_pki::client::request(
                &host,
                self.port,
                &host,
                Arc::new(tls),
                req,
                Duration::from_secs(2),
            )
            .await,
            Ok((200, _))
        )
    }
}

/// Waits until `probe` succeeds, then sends `READY=1` to `socket`.
pub async fn ready_when(socket: OsString, probe: Probe) {
    while !probe.ok().await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match send(&socket, "READY=1\nSTATUS=ready") {
        Ok(()) => tracing::debug!("told systemd kubox is ready"),
        Err(e) => tracing::warn!(error = %e, socket = ?socket, "cannot notify systemd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1").expect("send");
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kubox-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind");
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
