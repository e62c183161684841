use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::config;
use crate::{Identity, ServerPki, ensure_server_pki, identity_from_cert_der, server_tls_config};

fn client_config(pki: &ServerPki, client: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.server_ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

/// Runs a handshake over an in-memory pipe; returns the identity the server
/// saw (if any) and the negotiated ALPN, or the handshake error.
async fn handshake(
    pki: &ServerPki,
    client: Option<(&str, &str)>,
    server_name: &str,
) -> Result<(Option<Identity>, Option<Vec<u8>>), String> {
    let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(pki).unwrap()));
    let connector = TlsConnector::from(Arc::new(client_config(pki, client)));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let server = tokio::spawn(async move {
        let mut tls = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let identity = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity_from_cert_der(c));
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((identity, alpn))
    });
    let client_result = async {
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_result = server.await.unwrap();
    client_result?;
    server_result
}

#[tokio::test]
async fn admin_client_certificate_authenticates_as_system_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let (identity, alpn) = handshake(
        &pki,
        Some((pki.admin_cert_pem(), pki.admin_key_pem())),
        "127.0.0.1",
    )
    .await
    .unwrap();
    assert_eq!(
        identity,
        Some(Identity {
            user: "system:admin".into(),
            groups: vec!["system:masters".into()]
        })
    );
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn client_without_certificate_is_allowed_anonymously() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let (identity, _) = handshake(&pki, None, "kubernetes.default.svc")
        .await
        .unwrap();
    assert_eq!(identity, None);
}

#[tokio::test]
async fn client_certificate_from_a_foreign_ca_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ensure_server_pki(&config(other_dir.path())).unwrap();
    let result = handshake(
        &pki,
        Some((other.admin_cert_pem(), other.admin_key_pem())),
        "localhost",
    )
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn serving_certificate_is_not_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    // Signed by the server CA, not the client CA: must be refused.
    let result = handshake(
        &pki,
        Some((pki.serving_cert_pem(), pki.serving_key_pem())),
        "localhost",
    )
    .await;
    assert!(result.is_err());
}

#[test]
fn identity_of_garbage_is_none() {
    assert_eq!(identity_from_cert_der(b"not a certificate"), None);
}
