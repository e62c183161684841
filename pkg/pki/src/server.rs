//! Server PKI bootstrap: CAs, serving/client certificates, SA keys and token.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::KeyPair;

use crate::certs::{self, CertInfo, LeafKind, LeafSpec, San};
use crate::error::{Error, Result};
use crate::fsutil::{ensure_dir, read_optional, write_atomic};
use crate::token;

/// File names under `<data_dir>/server/tls/`.
pub mod files {
    /// CA that signs serving certificates (clients trust it).
    pub const SERVER_CA: &str = "server-ca";
    /// CA that signs client certificates.
    pub const CLIENT_CA: &str = "client-ca";
    /// CA for the front-proxy / request-header authenticator.
    pub const REQUEST_HEADER_CA: &str = "request-header-ca";
    /// Service-account signing key (`.key`, PKCS#8) and public key (`.pub`, SPKI).
    pub const SERVICE_ACCOUNT: &str = "service";
    /// kube-apiserver serving certificate.
    pub const SERVING_APISERVER: &str = "serving-kube-apiserver";
    /// Admin client certificate (system:admin / system:masters).
    pub const CLIENT_ADMIN: &str = "client-admin";
    /// kube-apiserver's own client certificate.
    pub const CLIENT_APISERVER: &str = "client-kube-apiserver";
    /// kube-controller-manager client certificate.
    pub const CLIENT_CONTROLLER: &str = "client-controller";
    /// kube-scheduler client certificate.
    pub const CLIENT_SCHEDULER: &str = "client-scheduler";
}

const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Inputs for [`ensure_server_pki`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPkiConfig {
    /// Data directory; files go to `<data_dir>/server/`.
    pub data_dir: PathBuf,
    /// Cluster DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// First IP of the service CIDR (the `kubernetes` service), e.g. `10.43.0.1`.
    pub service_ip: IpAddr,
    /// This node's hostname.
    pub hostname: String,
    /// This node's IPs.
    pub node_ips: Vec<IpAddr>,
    /// Extra SANs for the serving certificate (IPs or DNS names).
    pub tls_sans: Vec<String>,
    /// `--token`: full form or bare secret.
    pub token: Option<String>,
}

/// The server's PKI material, loaded or created by [`ensure_server_pki`].
#[derive(Clone)]
pub struct ServerPki {
    /// `<data_dir>/server/tls`.
    pub tls_dir: PathBuf,
    /// PEM of the CA that signs serving certificates.
    pub server_ca_pem: String,
    /// PEM of the CA that signs client certificates.
    pub client_ca_pem: String,
    /// PEM of the request-header (front-proxy) CA.
    pub request_header_ca_pem: String,
    /// Full join token `K10<hash>::server:<secret>`.
    pub token: String,
    server_ca_key_pem: String,
    client_ca_key_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    apiserver_client_cert_pem: String,
    apiserver_client_key_pem: String,
    sa_key_pem: String,
    sa_pub_pem: String,
}

impl fmt::Debug for ServerPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPki")
            .field("tls_dir", &self.tls_dir)
            .finish_non_exhaustive()
    }
}

struct Ca {
    cert_pem: String,
    key: KeyPair,
    info: CertInfo,
}

impl ServerPki {
    /// Path of `<name>` inside the TLS directory (e.g. `files::CLIENT_ADMIN` + ".crt").
    pub fn file(&self, name: &str) -> PathBuf {
        self.tls_dir.join(name)
    }

    /// Admin client certificate PEM (CN=system:admin, O=system:masters).
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }

    /// Admin client private key PEM.
    pub fn admin_key_pem(&self) -> &str {
        &self.admin_key_pem
    }

    /// kube-apiserver's own client certificate PEM (CN=system:kube-apiserver,
    /// O=system:masters): what it presents to kubelets.
    pub fn apiserver_client_cert_pem(&self) -> &str {
        &self.apiserver_client_cert_pem
    }

    /// kube-apiserver's own client private key PEM.
    pub fn apiserver_client_key_pem(&self) -> &str {
        &self.apiserver_client_key_pem
    }

    /// kube-apiserver serving certificate PEM.
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving_cert_pem
    }

    /// kube-apiserver serving private key PEM.
    pub fn serving_key_pem(&self) -> &str {
        &self.serving_key_pem
    }

    /// Service-account token signing key (PKCS#8 PEM).
    pub fn sa_signing_key_pem(&self) -> &str {
        &self.sa_key_pem
    }

    /// Service-account token verification key (SPKI PEM).
    pub fn sa_public_key_pem(&self) -> &str {
        &self.sa_pub_pem
    }

    /// Issues a client certificate signed by the client CA; returns (cert PEM, key PEM).
    /// `orgs` become the user's groups (at most two are supported).
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        days: u32,
    ) -> Result<(String, String)> {
        let spec = LeafSpec {
            cn: cn.to_string(),
            orgs: orgs.iter().map(|o| o.to_string()).collect(),
            sans: BTreeSet::new(),
            kind: LeafKind::Client,
        };
        self.issue(&self.client_ca_pem, &self.client_ca_key_pem, &spec, days)
    }

    /// Issues a serving certificate signed by the server CA; returns (cert PEM, key PEM).
    /// Each SAN is an IP literal or a DNS name.
    pub fn issue_serving_cert(
        &self,
        cn: &str,
        sans: &[String],
        days: u32,
    ) -> Result<(String, String)> {
        let spec = LeafSpec {
            cn: cn.to_string(),
            orgs: Vec::new(),
            sans: sans.iter().map(|s| San::parse(s)).collect(),
            kind: LeafKind::Serving,
        };
        self.issue(&self.server_ca_pem, &self.server_ca_key_pem, &spec, days)
    }

    fn issue(
        &self,
        ca_pem: &str,
        ca_key_pem: &str,
        spec: &LeafSpec,
        days: u32,
    ) -> Result<(String, String)> {
        if days == 0 {
            return Err(Error::InvalidInput(
                "validity must be at least one day".into(),
            ));
        }
        let ca_key = certs::parse_key(Path::new("<in-memory CA key>"), ca_key_pem)?;
        let key = certs::new_key()?;
        let cert = certs::issue_leaf(ca_pem, &ca_key, spec, &key, certs::expiry_in_days(days))?;
        Ok((cert, key.serialize_pem()))
    }
}

/// The SANs wanted on the kube-apiserver serving certificate.
pub(crate) fn apiserver_sans(cfg: &ServerPkiConfig) -> BTreeSet<San> {
    let mut sans = BTreeSet::new();
    if !cfg.hostname.is_empty() {
        sans.insert(San::parse(&cfg.hostname));
    }
    sans.extend(cfg.node_ips.iter().map(|ip| San::Ip(*ip)));
    sans.insert(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.insert(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    for name in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ] {
        sans.insert(San::Dns(name.to_string()));
    }
    let domain = cfg.cluster_domain.trim_matches('.');
    if !domain.is_empty() {
        sans.insert(San::Dns(format!("kubernetes.default.svc.{domain}")));
    }
    sans.insert(San::Ip(cfg.service_ip));
    sans.extend(
        cfg.tls_sans
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| San::parse(s)),
    );
    sans
}

fn client_spec(cn: &str, orgs: &[&str]) -> LeafSpec {
    LeafSpec {
        cn: cn.to_string(),
        orgs: orgs.iter().map(|o| o.to_string()).collect(),
        sans: BTreeSet::new(),
        kind: LeafKind::Client,
    }
}

/// Loads the CA `<base>.crt/.key`, creating it if absent. A key without a
/// certificate gets a new self-signed certificate; a certificate without its
/// key is an error (regenerating would silently break trust).
fn ensure_ca(dir: &Path, base: &str) -> Result<Ca> {
    let crt_path = dir.join(format!("{base}.crt"));
    let key_path = dir.join(format!("{base}.key"));
    let crt = read_optional(&crt_path)?;
    let key_pem = read_optional(&key_path)?;
    let key = match &key_pem {
        Some(pem) => certs::parse_key(&key_path, pem)?,
        None => {
            if crt.is_some() {
                return Err(Error::invalid(
                    &key_path,
                    "CA private key is missing while its certificate exists; \
                     restore it or remove the certificate to create a new CA",
                ));
            }
            let key = certs::new_key()?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
            key
        }
    };
    let cert_pem = match crt {
        Some(pem) => pem,
        None => {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let pem = certs::new_ca(&format!("kubox-{base}@{stamp}"), &key)?;
            write_atomic(&crt_path, pem.as_bytes(), CERT_MODE)?;
            pem
        }
    };
    let info = certs::parse_cert_pem(&crt_path, &cert_pem)?;
    if !info.matches_key(&key) {
        return Err(Error::invalid(
            &crt_path,
            format!(
                "certificate does not match private key {}",
                key_path.display()
            ),
        ));
    }
    Ok(Ca {
        cert_pem,
        key,
        info,
    })
}

/// Loads `<base>.crt/.key` if still good, else (re-)issues it from `ca`.
/// Returns (cert PEM, key PEM).
fn ensure_leaf(dir: &Path, base: &str, ca: &Ca, spec: &LeafSpec) -> Result<(String, String)> {
    let crt_path = dir.join(format!("{base}.crt"));
    let key_path = dir.join(format!("{base}.key"));
    let (key, key_pem, key_is_new) = match read_optional(&key_path)? {
        Some(pem) => (certs::parse_key(&key_path, &pem)?, pem, false),
        None => {
            let key = certs::new_key()?;
            let pem = key.serialize_pem();
            (key, pem, true)
        }
    };
    if let Some(pem) = read_optional(&crt_path)? {
        let info = certs::parse_cert_pem(&crt_path, &pem)?;
        let reusable = !key_is_new
            && info.matches_key(&key)
            && info.issued_by(&ca.info)
            && !info.needs_renewal()
            && info.satisfies(spec);
        if reusable {
            return Ok((pem, key_pem));
        }
    }
    if key_is_new {
        write_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)?;
    }
    let cert = certs::issue_leaf(
        &ca.cert_pem,
        &ca.key,
        spec,
        &key,
        certs::expiry_in_days(certs::LEAF_VALIDITY_DAYS),
    )?;
    write_atomic(&crt_path, cert.as_bytes(), CERT_MODE)?;
    Ok((cert, key_pem))
}

/// Loads or creates the service-account key pair; returns (private PEM, public PEM).
fn ensure_sa_key(dir: &Path) -> Result<(String, String)> {
    let key_path = dir.join(format!("{}.key", files::SERVICE_ACCOUNT));
    let pub_path = dir.join(format!("{}.pub", files::SERVICE_ACCOUNT));
    let (key, key_pem) = match read_optional(&key_path)? {
        Some(pem) => (certs::parse_key(&key_path, &pem)?, pem),
        None => {
            let key = certs::new_key()?;
            let pem = key.serialize_pem();
            write_atomic(&key_path, pem.as_bytes(), KEY_MODE)?;
            (key, pem)
        }
    };
    let pub_pem = key.public_key_pem();
    if read_optional(&pub_path)?.as_deref() != Some(pub_pem.as_str()) {
        write_atomic(&pub_path, pub_pem.as_bytes(), CERT_MODE)?;
    }
    Ok((key_pem, pub_pem))
}

/// Loads or writes `<data_dir>/server/token`; returns the full token.
fn ensure_token(server_dir: &Path, ca_pem: &str, wanted: Option<&str>) -> Result<String> {
    let path = server_dir.join("token");
    let stored = read_optional(&path)?;
    let stored_secret = match stored.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Some(
            token::server_secret_from(s)
                .map_err(|e| Error::invalid(&path, format!("unusable token: {e}")))?,
        ),
        _ => None,
    };
    let secret = match (wanted, stored_secret) {
        (Some(w), _) => token::server_secret_from(w)?,
        (None, Some(s)) => s,
        (None, None) => token::random_secret(),
    };
    let full = token::server_token(ca_pem, &secret);
    let content = format!("{full}\n");
    if stored.as_deref() != Some(content.as_str()) {
        write_atomic(&path, content.as_bytes(), KEY_MODE)?;
    }
    Ok(full)
}

/// Creates (first boot) or loads (later boots) the server PKI under
/// `<data_dir>/server/`. Leaves expiring within 120 days, and a serving
/// certificate missing wanted SANs, are re-issued from the existing CAs.
pub fn ensure_server_pki(cfg: &ServerPkiConfig) -> Result<ServerPki> {
    let server_dir = cfg.data_dir.join("server");
    let tls_dir = server_dir.join("tls");
    ensure_dir(&server_dir, DIR_MODE)?;
    ensure_dir(&tls_dir, DIR_MODE)?;

    let server_ca = ensure_ca(&tls_dir, files::SERVER_CA)?;
    let client_ca = ensure_ca(&tls_dir, files::CLIENT_CA)?;
    let request_header_ca = ensure_ca(&tls_dir, files::REQUEST_HEADER_CA)?;
    let (sa_key_pem, sa_pub_pem) = ensure_sa_key(&tls_dir)?;

    let serving_spec = LeafSpec {
        cn: "kube-apiserver".to_string(),
        orgs: Vec::new(),
        sans: apiserver_sans(cfg),
        kind: LeafKind::Serving,
    };
    let (serving_cert_pem, serving_key_pem) = ensure_leaf(
        &tls_dir,
        files::SERVING_APISERVER,
        &server_ca,
        &serving_spec,
    )?;

    let masters = ["system:masters"];
    let (admin_cert_pem, admin_key_pem) = ensure_leaf(
        &tls_dir,
        files::CLIENT_ADMIN,
        &client_ca,
        &client_spec("system:admin", &masters),
    )?;
    let (apiserver_client_cert_pem, apiserver_client_key_pem) = ensure_leaf(
        &tls_dir,
        files::CLIENT_APISERVER,
        &client_ca,
        &client_spec("system:kube-apiserver", &masters),
    )?;
    ensure_leaf(
        &tls_dir,
        files::CLIENT_CONTROLLER,
        &client_ca,
        &client_spec("system:kube-controller-manager", &[]),
    )?;
    ensure_leaf(
        &tls_dir,
        files::CLIENT_SCHEDULER,
        &client_ca,
        &client_spec("system:kube-scheduler", &[]),
    )?;

    let token = ensure_token(&server_dir, &server_ca.cert_pem, cfg.token.as_deref())?;

    Ok(ServerPki {
        tls_dir,
        server_ca_key_pem: server_ca.key.serialize_pem(),
        client_ca_key_pem: client_ca.key.serialize_pem(),
        server_ca_pem: server_ca.cert_pem,
        client_ca_pem: client_ca.cert_pem,
        request_header_ca_pem: request_header_ca.cert_pem,
        token,
        serving_cert_pem,
        serving_key_pem,
        admin_cert_pem,
        admin_key_pem,
        apiserver_client_cert_pem,
        apiserver_client_key_pem,
        sa_key_pem,
        sa_pub_pem,
    })
}
