//! Joining a cluster (`kubox agent --join URL --token TOKEN`): fetch the server's CA from the
//! anonymous `/cacerts`, check it against the hash in the token, and only then present the
//! token's secret — over TLS verified by that CA — to `/v1-kubox/join`, which answers the
//! node's certificates and the cluster settings. Files go under `<data-dir>/agent/`: the
//! certificates and keys (0600) and `kubelet.kubeconfig` (0600) that the agent's API client uses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use serde_json::{Value, json};

/// What joining needs.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// `https://SERVER:6443`.
    pub server: String,
    /// The full join token `K10<ca-hash>::server:<secret>`.
    pub token: String,
    pub node_name: String,
    pub node_ips: Vec<IpAddr>,
    pub data_dir: PathBuf,
}

/// The cluster settings the server hands to agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub kubeconfig: PathBuf,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub cluster_dns: String,
    pub cluster_domain: String,
    pub kubernetes_service: (String, u16),
    /// The node's kubelet serving certificate and key, and the client CA (on the default port).
    pub kubelet: crate::kubelet::KubeletServing,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Wrong token, wrong CA, refused: retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached or answered oddly: worth retrying.
    #[error("{0}")]
    Unreachable(String),
}

/// `(host, port)` of an `https://host[:port]` URL.
fn host_port(url: &str) -> Result<(String, u16), JoinError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        JoinError::Refused(format!("the server URL {url:?} must start with https://"))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        6443
    } else {
        port.parse().map_err(|_| {
            JoinError::Refused(format!("the server URL {url:?} has an invalid port"))
        })?
    };
    if host.is_empty() {
        return Err(JoinError::Refused(format!(
            "the server URL {url:?} has no host"
        )));
    }
    Ok((host, port))
}

/// One HTTPS request to the server; returns (status, body).
async fn request(
    server: &str,
    ca_pem: Option<&str>,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), JoinError> {
    use kubox_pki::client::HttpsError;
    let (host, port) = host_port(server)?;
    let tls =
        kubox_pki::client::tls_config(ca_pem).map_err(|e| JoinError::Refused(e.to_string()))?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(b) = bearer {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {b}"));
    }
    let req = req
        .body(body)
        .map_err(|e| JoinError::Refused(format!("building the request: {e}")))?;
    kubox_pki::client::request(
        &host,
        port,
        &host,
        Arc::new(tls),
        req,
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| match e {
        HttpsError::Transport(m) => JoinError::Unreachable(m),
        HttpsError::Certificate(m) | HttpsError::Invalid(m) => JoinError::Refused(m),
    })
}

/// This node's password: made once, kept in `<data-dir>/agent/node-password` (0600).
fn node_password(agent_dir: &Path) -> Result<String, JoinError> {
    let path = agent_dir.join("node-password");
    if let Ok(p) = std::fs::read_to_string(&path)
        && p.trim().len() >= 16
    {
        return Ok(p.trim().to_string());
    }
    let p = hex::encode(rand::random::<[u8; 16]>());
    write_private(&path, &p)?;
    Ok(p)
}

fn write_private(path: &Path, text: &str) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail =
        |e: std::io::Error| JoinError::Refused(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// Joins the cluster once (see the module docs).
pub async fn join(cfg: &JoinConfig) -> Result<Joined, JoinError> {
    let token = kubox_pki::parse_token(&cfg.token)
        .map_err(|e| JoinError::Refused(format!("the join token is not valid: {e}")))?;
    let Some(want_hash) = token.ca_hash.clone() else {
        return Err(JoinError::Refused(
            "the join token must be the full token from the server's <data-dir>/server/token (K10<ca-hash>::server:<secret>), so that the server's CA can be verified".into(),
        ));
    };
    // Fetched unverified, then checked against the hash in the token.
    let (status, ca) = request(
        &cfg.server,
        None,
        http::Method::GET,
        "/cacerts",
        None,
        Vec::new(),
    )
    .await?;
    if status != 200 {
        return Err(JoinError::Unreachable(format!(
            "{}/cacerts answered {status}; is this a kubox server?",
            cfg.server
        )));
    }
    let ca_pem = String::from_utf8_lossy(&ca).to_string();
    let got_hash = kubox_pki::ca_hash(&ca_pem);
    if got_hash != want_hash {
        return Err(JoinError::Refused(format!(
            "the CA of {} does not match the hash in the join token (token has {want_hash}, server has {got_hash}): check --join and --token",
            cfg.server
        )));
    }
    let agent_dir = cfg.data_dir.join("agent");
    let body = json!({
        "nodeName": cfg.node_name,
        "nodeIPs": cfg.node_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "nodePassword": node_password(&agent_dir)?,
    });
    let (status, answer) = request(
        &cfg.server,
        Some(&ca_pem),
        http::Method::POST,
        "/v1-kubox/join",
        Some(&token.password),
        body.to_string().into_bytes(),
    )
    .await?;
    match status {
        200 => {}
        401 => {
            return Err(JoinError::Refused(format!(
                "{} refused the join token: check --token against the server's <data-dir>/server/token",
                cfg.server
            )));
        }
        400..=499 => {
            return Err(JoinError::Refused(format!(
                "{} refused to let {} join: {}",
                cfg.server,
                cfg.node_name,
                status_message(&answer)
            )));
        }
        _ => {
            return Err(JoinError::Unreachable(format!(
                "{} answered {status} to the join request: {}",
                cfg.server,
                status_message(&answer)
            )));
        }
    }
    let a: Value = serde_json::from_slice(&answer)
        .map_err(|e| JoinError::Unreachable(format!("the join answer is not JSON: {e}")))?;
    let field = |k: &str| -> Result<String, JoinError> {
        a[k].as_str()
            .map(String::from)
            .ok_or_else(|| JoinError::Unreachable(format!("the join answer lacks {k}")))
    };
    let tls_dir = agent_dir.join("tls");
    for (file, key) in [
        ("client-kubelet.crt", "clientCert"),
        ("client-kubelet.key", "clientKey"),
        ("serving-kubelet.crt", "servingCert"),
        ("serving-kubelet.key", "servingKey"),
        ("server-ca.crt", "serverCA"),
        ("client-ca.crt", "clientCA"),
    ] {
        write_private(&tls_dir.join(file), &field(key)?)?;
    }
    let kubeconfig = agent_dir.join("kubelet.kubeconfig");
    kubox_pki::write_kubeconfig(
        &kubeconfig,
        0o600,
        &cfg.server,
        &ca_pem,
        &field("clientCert")?,
        &field("clientKey")?,
        "default",
    )
    .map_err(|e| JoinError::Refused(format!("cannot write {}: {e}", kubeconfig.display())))?;
    let s = &a["settings"];
    let setting = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    Ok(Joined {
        kubeconfig,
        kubelet: crate::kubelet::KubeletServing {
            port: crate::kubelet::DEFAULT_PORT,
            cert_pem: field("servingCert")?,
            key_pem: field("servingKey")?,
            client_ca_pem: field("clientCA")?,
        },
        cluster_cidr: setting("clusterCIDR"),
        service_cidr: setting("serviceCIDR"),
        cluster_dns: setting("clusterDNS"),
        cluster_domain: setting("clusterDomain"),
        kubernetes_service: (
            s["kubernetesService"]["ip"]
                .as_str()
                .unwrap_or("10.43.0.1")
                .to_string(),
            s["kubernetesService"]["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_host_and_port() {
        assert_eq!(
            host_port("https://10.0.0.1:6443").unwrap(),
            ("10.0.0.1".into(), 6443)
        );
        assert_eq!(
            host_port("https://srv.example").unwrap(),
            ("srv.example".into(), 6443)
        );
        assert_eq!(
            host_port("https://[fd00::1]:7443/").unwrap(),
            ("fd00::1".into(), 7443)
        );
        assert!(host_port("http://10.0.0.1:6443").is_err());
        assert!(host_port("https://:6443").is_err());
    }
}
