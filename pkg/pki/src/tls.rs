//! rustls server configuration and client-certificate identities.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::certs;
use crate::error::{Error, Result};
use crate::server::{ServerPki, files};

/// The authenticated user named by a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject common name.
    pub user: String,
    /// Every subject organization, in certificate order.
    pub groups: Vec<String>,
}

/// Extracts the Kubernetes identity (CN, every O) from a DER certificate.
/// `None` if the certificate does not parse or has no common name.
pub fn identity_from_cert_der(der: &[u8]) -> Option<Identity> {
    let info = certs::parse_cert_der(der)?;
    let user = info.cn.filter(|cn| !cn.is_empty())?;
    Some(Identity {
        user,
        groups: info.orgs,
    })
}

/// Parses every certificate of a PEM bundle; `what` names the source in errors.
pub(crate) fn certs_from_pem(what: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(what, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(what, "no certificate found"));
    }
    Ok(certs)
}

/// Builds the kube-apiserver TLS configuration: the serving certificate,
/// optional client certificates verified against the client CA, ALPN
/// `h2`/`http/1.1`, using the ring crypto provider explicitly.
pub fn server_tls_config(pki: &ServerPki) -> Result<rustls::ServerConfig> {
    let mut config = serving_tls_config(
        &pki.file(&format!("{}.crt", files::SERVING_APISERVER)),
        pki.serving_cert_pem(),
        pki.serving_key_pem(),
        &pki.client_ca_pem,
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS server configuration serving `cert_pem`/`key_pem` (`what` names them in errors),
/// with optional client certificates verified against `client_ca_pem` (the peer's identity
/// is then read from its certificate; requests without one are anonymous). No ALPN.
pub fn serving_tls_config(
    what: &Path,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(what, client_ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::invalid(what, format!("unusable client CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain = certs_from_pem(what, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::invalid(what, format!("bad PEM private key: {e}")))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// A TLS client configuration trusting `ca_pem` and presenting `cert_pem`/`key_pem` (`what`
/// names them in errors): how the API server reaches kubelets.
pub fn client_tls_config(
    what: &Path,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(what, ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::invalid(what, format!("unusable CA certificate: {e}")))?;
    }
    let chain = certs_from_pem(what, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::invalid(what, format!("bad PEM private key: {e}")))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?)
}
