//! Certificate signing requests: parsing and checking a PEM CSR as the API server's validation
//! does, checking a `status.certificate` bundle, and a CA signer that issues a certificate for
//! a CSR (what kube-controller-manager's `--cluster-signing-*` signers do).

use std::net::IpAddr;
use std::path::Path;

use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SigningKey, SubjectPublicKeyInfo,
};
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

    /// Issues a certificate (PEM) for the PEM CSR `request`, with the CSR's subject (its
    /// attributes exactly as requested, any number of organizations) and subject alternative
    /// names, the given `usages` (upstream's key usage names) and a validity of `ttl` from now
    /// (backdated 5 minutes, never past the CA's own expiry). Other extensions the CSR asks
    /// for are not copied (as upstream's signer). [`Error::InvalidInput`]: the request cannot
    /// be signed (it does not parse, or its key type is not supported).
    pub fn sign(
        &self,
        request: &[u8],
        usages: &[String],
        ttl: std::time::Duration,
    ) -> Result<String> {
        let der = csr_der(request).map_err(Error::InvalidInput)?;
        let subject = parse_csr(request).map_err(Error::InvalidInput)?;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .map_err(|e| {
                Error::InvalidInput(format!("failed to parse certificate request: {e}"))
            })?;
        let info = &req.certification_request_info;
        let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| Error::InvalidInput(format!("unsupported public key: {e}")))?;
        let mut params = CertificateParams::default();
        // rcgen keeps one value per attribute type: the subject is written with a stand-in
        // and replaced by the CSR's own afterwards (see `with_subject`).
        params.distinguished_name = DistinguishedName::new();
        let has_subject = info.subject.iter().next().is_some();
        if has_subject {
            params
                .distinguished_name
                .push(DnType::CommonName, "kubox-subject");
        }
        params.subject_alt_names = subject_alt_names(&subject)?;
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
        let cert = params.signed_by(&public_key, &issuer)?;
        if !has_subject {
            return Ok(cert.pem());
        }
        let der = with_subject(cert.der(), info.subject.as_raw(), &self.key)?;
        Ok(certificate_pem(&der))
    }
}

/// The CSR's subject alternative names as rcgen writes them.
fn subject_alt_names(subject: &CsrSubject) -> Result<Vec<SanType>> {
    let ia5 = |s: &String| {
        s.clone()
            .try_into()
            .map_err(|e| Error::InvalidInput(format!("subjectAltName {s:?}: {e}")))
    };
    let mut out = Vec::new();
    for d in &subject.dns_names {
        out.push(SanType::DnsName(ia5(d)?));
    }
    for e in &subject.emails {
        out.push(SanType::Rfc822Name(ia5(e)?));
    }
    for ip in &subject.ip_addresses {
        out.push(SanType::IpAddress(*ip));
    }
    for u in &subject.uris {
        out.push(SanType::URI(ia5(u)?));
    }
    Ok(out)
}

/// The elements of a DER SEQUENCE, each as its own DER.
fn der_elements(der: &[u8]) -> Result<Vec<Vec<u8>>> {
    yasna::parse_der(der, |r| {
        let mut out = Vec::new();
        r.read_sequence_of(|r| {
            out.push(r.read_der()?);
            Ok(())
        })?;
        Ok(out)
    })
    .map_err(|e| Error::InvalidInput(format!("re-encoding the certificate: {e}")))
}

/// Certificate `cert` (DER) with its subject replaced by `subject` (a DER Name), signed again
/// by `key` with the same algorithm.
fn with_subject(cert: &[u8], subject: &[u8], key: &KeyPair) -> Result<Vec<u8>> {
    // TBSCertificate: version [0], serialNumber, signature, issuer, validity, subject, ...
    resigned(
        cert,
        |fields| {
            if fields.len() < 7 || fields[0].first() != Some(&0xa0) {
                return Err(Error::InvalidInput(
                    "unexpected TBSCertificate layout".into(),
                ));
            }
            fields[5] = subject.to_vec();
            Ok(())
        },
        key,
    )
}

/// A signed DER structure (certificate or CSR: SEQUENCE { signed SEQUENCE, algorithm,
/// signature }) with the signed part's elements changed by `edit` and signed again by `key`.
fn resigned(
    der: &[u8],
    edit: impl FnOnce(&mut Vec<Vec<u8>>) -> Result<()>,
    key: &KeyPair,
) -> Result<Vec<u8>> {
    let parts = der_elements(der)?;
    let [signed, algorithm, _] = parts.as_slice() else {
        return Err(Error::InvalidInput(
            "signed structure is not three elements".into(),
        ));
    };
    let mut fields = der_elements(signed)?;
    edit(&mut fields)?;
    let signed = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for f in &fields {
                w.next().write_der(f);
            }
        })
    });
    let signature = key.sign(&signed)?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&signed);
            w.next().write_der(algorithm);
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
        })
    }))
}

fn certificate_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
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
    use rustls::pki_types::CertificateDer;

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

    /// A DER Name of the given RDNs, each a set of (attribute OID, UTF-8 value).
    fn name(rdns: &[&[(&[u64], &str)]]) -> Vec<u8> {
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for rdn in rdns {
                    w.next().write_set(|w| {
                        for (oid, value) in rdn.iter() {
                            w.next().write_sequence(|w| {
                                w.next()
                                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                                w.next().write_utf8_string(value);
                            })
                        }
                    })
                }
            })
        })
    }

    fn signer() -> (tempfile::TempDir, CsrSigner, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = certs::new_ca("test-ca", &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();
        let signer =
            CsrSigner::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        (dir, signer, ca_pem)
    }

    fn pem(kind: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
            lines.join("\n")
        )
    }

    const O: &[u64] = &[2, 5, 4, 10];
    const CN: &[u64] = &[2, 5, 4, 3];

    #[test]
    fn every_organization_is_kept_one_rdn_each_or_all_in_one() {
        let (_dir, signer, ca_pem) = signer();
        let ca = certs::parse_cert_pem(Path::new("ca"), &ca_pem).unwrap();
        let usages = vec!["client auth".to_string()];
        // openssl writes one RDN per attribute, Go one RDN holding every organization.
        let subjects = [
            name(&[&[(O, "a")], &[(O, "b")], &[(O, "c")], &[(CN, "alice")]]),
            name(&[&[(O, "a"), (O, "b"), (O, "c")], &[(CN, "alice")]]),
        ];
        for subject in subjects {
            let (request, key) = request("placeholder", &[], &["alice.example"]);
            let der = csr_der(request.as_bytes()).unwrap();
            // CertificationRequestInfo: version, subject, subjectPKInfo, attributes.
            let der = resigned(
                &der,
                |f| {
                    f[1] = subject.clone();
                    Ok(())
                },
                &key,
            )
            .unwrap();
            let request = pem("CERTIFICATE REQUEST", &der);
            let parsed = parse_csr(request.as_bytes()).unwrap();
            assert_eq!(parsed.organizations, vec!["a", "b", "c"]);
            let cert = signer
                .sign(
                    request.as_bytes(),
                    &usages,
                    std::time::Duration::from_secs(600),
                )
                .unwrap();
            check_certificate_bundle(cert.as_bytes()).unwrap();
            let info = certs::parse_cert_pem(Path::new("x"), &cert).unwrap();
            assert_eq!(info.cn.as_deref(), Some("alice"));
            assert_eq!(info.orgs, vec!["a", "b", "c"]);
            assert!(info.matches_key(&key));
            assert!(info.issued_by(&ca), "the re-encoded certificate verifies");
            let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
            let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert_eq!(x.tbs_certificate.subject.as_raw(), subject.as_slice());
            let san = x.subject_alternative_name().unwrap().unwrap();
            assert!(
                !san.critical,
                "a certificate with a subject has a plain SAN"
            );
        }
    }

    #[test]
    fn extensions_the_request_asks_for_are_not_copied() {
        let (_dir, signer, _) = signer();
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "bob");
        let mut odd =
            rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
        odd.set_criticality(true);
        params.custom_extensions.push(odd);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let request = params.serialize_request(&key).unwrap().pem().unwrap();
        let usages = vec!["client auth".to_string()];
        let cert = signer
            .sign(
                request.as_bytes(),
                &usages,
                std::time::Duration::from_secs(600),
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let oids: Vec<String> = x
            .extensions()
            .iter()
            .map(|e| e.oid.to_id_string())
            .collect();
        assert!(
            !oids.contains(&"1.3.6.1.4.1.99999.1".to_string()),
            "{oids:?}"
        );
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca, "never a CA, whatever the request asks");
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
