//! Certificate signing requests: parsing and checking a PEM CSR as the API server's validation
//! does, checking a `status.certificate` bundle, and a CA signer that issues a certificate for
//! a CSR (what kube-controller-manager's `--cluster-signing-*` signers do).

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::{PemObject, SectionKind};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::certs;
use crate::error::{Error, Result};
use crate::fsutil::read_optional;

/// The subject of a certificate signing request, as the signers' rules look at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrSubject {
    /// The subject's common name ("" when it has none).
    pub common_name: String,
    /// The subject's organizations, in order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email subject alternative names.
    pub emails: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
}

/// Parses a PEM `CERTIFICATE REQUEST` and checks its signature; the error is upstream's
/// reason text for `spec.request`.
pub fn parse_csr(pem: &[u8]) -> std::result::Result<CsrSubject, String> {
    let der = csr_der(pem)?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("failed to parse certificate request: {e}"))?;
    req.verify_signature()
        .map_err(|e| format!("failed to verify the signature of the certificate request: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let mut out = CsrSubject {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
        ..CsrSubject::default()
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                    GeneralName::URI(u) => out.uris.push(u.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            out.ip_addresses.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// The DER of the one PEM `CERTIFICATE REQUEST` block of `pem`.
fn csr_der(pem: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut found = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| format!("failed to decode PEM: {e}"))?;
        match kind {
            SectionKind::Csr if found.is_none() => found = Some(der),
            SectionKind::Csr => return Err("more than one PEM block found".into()),
            _ => return Err("PEM block type must be CERTIFICATE REQUEST".into()),
        }
    }
    found.ok_or_else(|| "PEM block type must be CERTIFICATE REQUEST".to_string())
}

/// Checks a `status.certificate` value: one or more PEM `CERTIFICATE` blocks, each a
/// certificate that parses. Empty is fine (not issued yet).
pub fn check_certificate_bundle(pem: &[u8]) -> std::result::Result<(), String> {
    if pem.is_empty() {
        return Ok(());
    }
    let mut n = 0;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| format!("failed to decode PEM: {e}"))?;
        if kind != SectionKind::Certificate {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {kind:?}"
            ));
        }
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("failed to parse certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// A CA that signs CSRs: a `--cluster-signing-*-cert-file`/`-key-file` pair.
pub struct CsrSigner {
    ca_pem: String,
    key: KeyPair,
    ca_not_after: i64,
}

impl std::fmt::Debug for CsrSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrSigner")
            .field("ca_not_after", &self.ca_not_after)
            .finish_non_exhaustive()
    }
}

impl CsrSigner {
    /// Loads the CA certificate and its key from disk.
    pub fn load(cert: &Path, key: &Path) -> Result<CsrSigner> {
        let ca_pem = read_optional(cert)?
            .ok_or_else(|| Error::invalid(cert, "CA certificate file is missing"))?;
        let key_pem =
            read_optional(key)?.ok_or_else(|| Error::invalid(key, "CA key file is missing"))?;
        let info = certs::parse_cert_pem(cert, &ca_pem)?;
        let key = certs::parse_key(key, &key_pem)?;
        if !info.matches_key(&key) {
            return Err(Error::invalid(cert, "certificate does not match its key"));
        }
        Ok(CsrSigner {
            ca_pem,
            key,
            ca_not_after: info.not_after,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a certificate (PEM) for the PEM CSR `request`, with the CSR's subject and
    /// subject alternative names, the given `usages` (upstream's key usage names) and a
    /// validity of `ttl` from now (backdated 5 minutes, never past the CA's own expiry).
    pub fn sign(
        &self,
        request: &[u8],
        usages: &[String],
        ttl: std::time::Duration,
    ) -> Result<String> {
        let der = csr_der(request).map_err(Error::InvalidInput)?;
        let subject = parse_csr(request).map_err(Error::InvalidInput)?;
        let mut csr = CertificateSigningRequestParams::from_der(
            &CertificateSigningRequestDer::from(der.as_slice()),
        )?;
        let params = &mut csr.params;
        // rcgen keeps one value per attribute type: organizations are written again as
        // issue_leaf writes them (a second one under the attribute's custom-OID twin).
        params.distinguished_name.remove(DnType::OrganizationName);
        match subject.organizations.as_slice() {
            [] => {}
            [o] => params
                .distinguished_name
                .push(DnType::OrganizationName, o.as_str()),
            [o1, o2] => {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, o1.as_str());
                params.distinguished_name.push(
                    DnType::CustomDnType(certs::ORG_NAME_OID.to_vec()),
                    o2.as_str(),
                );
            }
            _ => {
                return Err(Error::InvalidInput(
                    "at most two organizations per certificate are supported".into(),
                ));
            }
        }
        params.key_usages.clear();
        params.extended_key_usages.clear();
        for u in usages {
            match usage(u) {
                Some(Usage::Key(k)) => {
                    if !params.key_usages.contains(&k) {
                        params.key_usages.push(k);
                    }
                }
                Some(Usage::Extended(e)) => {
                    if !params.extended_key_usages.contains(&e) {
                        params.extended_key_usages.push(e);
                    }
                }
                None => return Err(Error::InvalidInput(format!("unknown usage {u:?}"))),
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(certs::random_serial());
        let now = OffsetDateTime::now_utc();
        let ttl = Duration::try_from(ttl)
            .map_err(|_| Error::InvalidInput("validity out of range".into()))?;
        let ca_end = OffsetDateTime::from_unix_timestamp(self.ca_not_after)
            .map_err(|_| Error::InvalidInput("CA expiry out of range".into()))?;
        params.not_before = now - Duration::minutes(5);
        params.not_after = (now + ttl).min(ca_end);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.key)?;
        Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
    }
}

enum Usage {
    Key(KeyUsagePurpose),
    Extended(ExtendedKeyUsagePurpose),
}

/// Upstream's key usage names (`certificates.k8s.io/v1` `KeyUsage`).
fn usage(name: &str) -> Option<Usage> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Some(match name {
        "signing" | "digital signature" => Usage::Key(K::DigitalSignature),
        "content commitment" => Usage::Key(K::ContentCommitment),
        "key encipherment" => Usage::Key(K::KeyEncipherment),
        "key agreement" => Usage::Key(K::KeyAgreement),
        "data encipherment" => Usage::Key(K::DataEncipherment),
        "cert sign" => Usage::Key(K::KeyCertSign),
        "crl sign" => Usage::Key(K::CrlSign),
        "encipher only" => Usage::Key(K::EncipherOnly),
        "decipher only" => Usage::Key(K::DecipherOnly),
        "any" => Usage::Extended(E::Any),
        "server auth" => Usage::Extended(E::ServerAuth),
        "client auth" => Usage::Extended(E::ClientAuth),
        "code signing" => Usage::Extended(E::CodeSigning),
        "email protection" | "s/mime" => Usage::Extended(E::EmailProtection),
        "ipsec end system" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "timestamping" => Usage::Extended(E::TimeStamping),
        "ocsp signing" => Usage::Extended(E::OcspSigning),
        "microsoft sgc" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => Usage::Extended(E::Other(vec![2, 16, 840, 1, 113730, 4, 1])),
        _ => return None,
    })
}

/// Every key usage name `certificates.k8s.io/v1` accepts, sorted as upstream lists them.
pub const KEY_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = orgs.first() {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        let csr = params.serialize_request(&key).unwrap();
        (csr.pem().unwrap(), key)
    }

    #[test]
    fn parses_subject_and_sans() {
        let (pem, _) = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]);
        let s = parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(s.common_name, "system:node:n1");
        assert_eq!(s.organizations, vec!["system:nodes"]);
        assert_eq!(s.dns_names, vec!["n1"]);
        assert_eq!(s.ip_addresses, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn rejects_other_pem_blocks_and_tampered_requests() {
        let (pem, key) = request("tamper-me", &[], &[]);
        let err = parse_csr(key.serialize_pem().as_bytes()).unwrap_err();
        assert!(err.contains("CERTIFICATE REQUEST"), "{err}");
        let mut der = csr_der(pem.as_bytes()).unwrap();
        // Change the subject's common name (signed content): the signature no longer holds.
        let pos = der.windows(9).position(|w| w == b"tamper-me").unwrap();
        der[pos] = b'x';
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        );
        let err = parse_csr(tampered.as_bytes()).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        assert!(parse_csr(b"").is_err());
    }

    #[test]
    fn signs_with_requested_subject_usages_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = certs::new_ca("test-ca", &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
        let signer =
            CsrSigner::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        let (pem, key) = request("alice", &["devs"], &[]);
        let usages = vec!["digital signature".to_string(), "client auth".to_string()];
        let cert = signer
            .sign(
                pem.as_bytes(),
                &usages,
                std::time::Duration::from_secs(3600),
            )
            .unwrap();
        check_certificate_bundle(cert.as_bytes()).unwrap();
        let info = certs::parse_cert_pem(Path::new("x"), &cert).unwrap();
        assert_eq!(info.cn.as_deref(), Some("alice"));
        assert_eq!(info.orgs, vec!["devs"]);
        assert!(info.matches_key(&key));
        let ca = certs::parse_cert_pem(Path::new("ca"), &ca_pem).unwrap();
        assert!(info.issued_by(&ca));
        let left = info.not_after - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3500..=3600).contains(&left), "{left}");
    }
}
