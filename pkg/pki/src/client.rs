//! A minimal HTTPS client for kubox's own calls to other parties: an agent joining its server,
//! the API server calling admission webhooks. One request per connection (HTTP/1.1), the
//! server's certificate verified against a given CA bundle (or, only to fetch a CA that is
//! then checked by hash, not at all).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The server presented a certificate the CA bundle does not vouch for.
    #[error("{0}")]
    Certificate(String),
    /// Connecting, the handshake, the request or the answer failed (or timed out).
    #[error("{0}")]
    Transport(String),
    /// Bad input (a CA bundle without certificates, an invalid server name).
    #[error("{0}")]
    Invalid(String),
}

/// Accepts any certificate (see [`tls_config`]).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client TLS config trusting the certificates of `ca_pem`; with None, trusting anything —
/// only for fetching a CA whose content the caller then checks against a known hash.
pub fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Invalid(format!("TLS setup: {e}")))?;
    let Some(pem) = ca_pem else {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()).flatten() {
        roots
            .add(cert)
            .map_err(|e| HttpsError::Invalid(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(HttpsError::Invalid(
            "the CA bundle holds no certificate".into(),
        ));
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Sends `req` to `host:port`, verifying the server as `server_name`, within `timeout`;
/// returns the status and body.
pub async fn request(
    host: &str,
    port: u16,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    req: http::Request<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), HttpsError> {
    let target = format!("{host}:{port}");
    let work = async {
        let transport = |what: &str, e: &dyn std::fmt::Display| {
            HttpsError::Transport(format!("{what} {target} failed: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| transport("connecting to", &e))?;
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| {
                HttpsError::Invalid(format!("{server_name:?} is not a server name: {e}"))
            })?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(
                |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(c)) => HttpsError::Certificate(format!(
                        "{target} presented a certificate its CA does not vouch for: {c:?}"
                    )),
                    _ => transport("a TLS handshake with", &e),
                },
            )?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport("an HTTP handshake with", &e))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(req.map(|b| Full::new(bytes::Bytes::from(b))))
            .await
            .map_err(|e| transport("a request to", &e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport("reading the answer of", &e))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpsError::Transport(format!("{target} did not answer within {timeout:?}")))?
}
