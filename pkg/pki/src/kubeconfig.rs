//! Kubeconfig files in the k3s layout (one cluster, user and context).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil::{ensure_dir, write_atomic};

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    clusters: Vec<NamedCluster<'a>>,
    contexts: Vec<NamedContext<'a>>,
    #[serde(rename = "current-context")]
    current_context: &'a str,
    kind: &'a str,
    preferences: Preferences,
    users: Vec<NamedUser<'a>>,
}

#[derive(Serialize)]
struct Preferences {}

#[derive(Serialize)]
struct NamedCluster<'a> {
    cluster: Cluster<'a>,
    name: &'a str,
}

#[derive(Serialize)]
struct Cluster<'a> {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
    server: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    context: Context<'a>,
    name: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: User,
}

#[derive(Serialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

/// Renders a kubeconfig whose cluster, user and context are all named `context_name`.
pub fn render_kubeconfig(
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    context_name: &str,
) -> Result<String> {
    let name = if context_name.is_empty() {
        "default"
    } else {
        context_name
    };
    let cfg = Kubeconfig {
        api_version: "v1",
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: STANDARD.encode(ca_pem),
                server: server_url,
            },
            name,
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: name,
                user: name,
            },
            name,
        }],
        current_context: name,
        kind: "Config",
        preferences: Preferences {},
        users: vec![NamedUser {
            name,
            user: User {
                client_certificate_data: STANDARD.encode(cert_pem),
                client_key_data: STANDARD.encode(key_pem),
            },
        }],
    };
    serde_saphyr::to_string(&cfg).map_err(|e| Error::Serialize(e.to_string()))
}

/// Writes a kubeconfig atomically with permission bits `mode` (usually 0600);
/// the file never exists with wider permissions. Creates the parent directory.
pub fn write_kubeconfig(
    path: &Path,
    mode: u32,
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    context_name: &str,
) -> Result<()> {
    let yaml = render_kubeconfig(server_url, ca_pem, cert_pem, key_pem, context_name)?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        ensure_dir(parent, 0o755)?;
    }
    write_atomic(path, yaml.as_bytes(), mode & 0o7777)
}
