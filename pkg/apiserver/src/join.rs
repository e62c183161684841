//! The join endpoint on the API port (k3s serves the same under `/v1-k3s/`):
//! `POST /v1-kubox/join` with `Authorization: Bearer <token secret>` and
//! `{"nodeName", "nodeIPs", "nodePassword"}` answers the node's client certificate
//! (CN=system:node:NAME, O=system:nodes), its kubelet serving certificate, the CAs and the
//! settings an agent needs. The caller has already verified our CA against the hash in its
//! token (anonymous `/cacerts`), so the secret only ever goes to this server.
//!
//! A node name is claimed by the first agent that joins with it: the hash of its node password
//! is kept in the Secret `kube-system/<name>.node-password.kubox`, and a later join under the
//! same name must present the same password (k3s's node-password check).

use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use base64::Engine;
use serde_json::{Value, json};

/// What the server needs to admit nodes.
pub struct JoinAuthority {
    pub pki: kubox_pki::ServerPki,
    /// The secret part of the join token.
    pub token_secret: String,
    /// Cluster settings handed to agents (cluster/service CIDRs, DNS, domain, ...).
    pub agent_settings: Value,
}

impl std::fmt::Debug for JoinAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinAuthority").finish_non_exhaustive()
    }
}

/// Path of the join endpoint.
pub const PATH: &str = "/v1-kubox/join";

/// Certificates are valid for a year; agents join again when within 120 days of expiry.
const CERT_DAYS: u32 = 365;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Handles `POST /v1-kubox/join`.
pub async fn join(state: &ApiState, headers: &http::HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let auth = state
        .config
        .join
        .as_ref()
        .ok_or_else(ApiError::not_found_path)?;
    let presented = crate::authn::bearer_token(headers).unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), auth.token_secret.as_bytes()) {
        tracing::warn!("a node tried to join with a wrong token");
        return Err(ApiError::unauthorized());
    }
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the join request is not JSON: {e}")))?;
    let name = req["nodeName"].as_str().unwrap_or_default().to_string();
    if !kubox_core::names::is_dns1123_subdomain(&name) {
        return Err(ApiError::bad_request(format!(
            "invalid node name {name:?}: it must be a lowercase RFC 1123 subdomain"
        )));
    }
    let password = req["nodePassword"].as_str().unwrap_or_default();
    if password.len() < 16 {
        return Err(ApiError::bad_request(
            "the join request lacks a node password",
        ));
    }
    let ips: Vec<String> = req["nodeIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(String::from)
        .collect();
    claim_node_name(state, &name, password).await?;
    let (client_cert, client_key) = auth
        .pki
        .issue_client_cert(&format!("system:node:{name}"), &["system:nodes"], CERT_DAYS)
        .map_err(|e| ApiError::internal(format!("issuing the node's client certificate: {e}")))?;
    let mut sans = vec![name.clone(), "localhost".to_string()];
    sans.extend(ips.iter().cloned());
    let (serving_cert, serving_key) = auth
        .pki
        .issue_serving_cert(&name, &sans, CERT_DAYS)
        .map_err(|e| ApiError::internal(format!("issuing the node's serving certificate: {e}")))?;
    tracing::info!(node = %name, ips = ?ips, "node joined");
    Ok(json!({
        "clientCert": client_cert,
        "clientKey": client_key,
        "servingCert": serving_cert,
        "servingKey": serving_key,
        "serverCA": auth.pki.server_ca_pem,
        "clientCA": auth.pki.client_ca_pem,
        "settings": auth.agent_settings,
    }))
}

/// Records the node password of a new node name, or checks it for a known one.
async fn claim_node_name(state: &ApiState, name: &str, password: &str) -> ApiResult<()> {
    let secret_name = format!("{name}.node-password.kubox");
    let key = format!(
        "{}core/secrets/kube-system/{secret_name}",
        crate::storage::PREFIX
    );
    let hash = sha256_hex(password);
    let stored =
        crate::storage::get_stored(state, "core/secrets", Some("kube-system"), &secret_name)
            .await?;
    if let Some(s) = stored {
        let known = s
            .pointer("/data/hash")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        if !constant_time_eq(&known, hash.as_bytes()) {
            return Err(ApiError::forbidden(format!(
                "node password mismatch: another node already joined as {name:?}; choose another --node-name, or delete the secret kube-system/{secret_name} if that node is gone"
            )));
        }
        return Ok(());
    }
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": "kube-system",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": kubox_core::meta::now_rfc3339(),
        },
        "type": "kubox.io/node-password",
        "immutable": true,
        "data": {"hash": base64::engine::general_purpose::STANDARD.encode(&hash)},
    });
    let bytes = crate::storage::encode(&secret)?;
    match state.store.create(&key, bytes).await {
        Ok(_) => Ok(()),
        // Two joins raced; the other one's password must match ours.
        Err(kubox_store::Error::AlreadyExists(_)) => {
            Box::pin(claim_node_name(state, name, password)).await
        }
        Err(e) => Err(ApiError::internal(format!(
            "recording the node password: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert_eq!(sha256_hex("abc").len(), 64);
    }
}
