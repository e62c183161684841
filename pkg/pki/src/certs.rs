//! Low-level certificate helpers: key generation, CA and leaf issuance, parsing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::error::{Error, Result};

/// Validity of a CA certificate.
pub(crate) const CA_VALIDITY_DAYS: i64 = 3650;
/// Default validity of a leaf certificate.
pub(crate) const LEAF_VALIDITY_DAYS: u32 = 365;
/// Leaves expiring within this many days are re-issued at boot.
pub(crate) const RENEW_BEFORE_DAYS: i64 = 120;
/// OID of the X.520 organizationName attribute.
pub(crate) const ORG_NAME_OID: &[u64] = &[2, 5, 4, 10];

/// A subject alternative name, normalised for set comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    /// Parses an IP literal, else treats the string as a DNS name (lower-cased).
    pub(crate) fn parse(s: &str) -> San {
        let t = s.trim();
        match t
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(t.to_ascii_lowercase()),
        }
    }

    fn to_rcgen(&self) -> Result<SanType> {
        Ok(match self {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(d) => {
                if d.is_empty() {
                    return Err(Error::InvalidInput("empty DNS SAN".into()));
                }
                SanType::DnsName(
                    d.clone()
                        .try_into()
                        .map_err(|_| Error::InvalidInput(format!("invalid DNS SAN {d:?}")))?,
                )
            }
        })
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    Client,
    Serving,
}

/// The wanted contents of a leaf certificate.
#[derive(Debug, Clone)]
pub(crate) struct LeafSpec {
    pub cn: String,
    pub orgs: Vec<String>,
    pub sans: BTreeSet<San>,
    pub kind: LeafKind,
}

/// Facts about a parsed certificate that the reuse logic needs.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    pub not_after: i64,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub public_key: Vec<u8>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub cn: Option<String>,
    pub orgs: Vec<String>,
    pub sans: BTreeSet<San>,
}

/// Generates a fresh ECDSA P-256 key pair.
pub(crate) fn new_key() -> Result<KeyPair> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// Parses a PEM private key; `path` is only used in the error.
pub(crate) fn parse_key(path: &Path, pem: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| Error::invalid(path, format!("unusable private key: {e}")))
}

pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of constant length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Creates a self-signed CA certificate (PEM) for `key`.
pub(crate) fn new_ca(cn: &str, key: &KeyPair) -> Result<String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let start = now();
    params.not_before = start - Duration::minutes(5);
    params.not_after = start + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    Ok(params.self_signed(key)?.pem())
}

/// Issues a leaf certificate for `key`, signed by the CA, valid until `not_after`.
pub(crate) fn issue_leaf(
    ca_cert_pem: &str,
    ca_key: &KeyPair,
    spec: &LeafSpec,
    key: &KeyPair,
    not_after: OffsetDateTime,
) -> Result<String> {
    if spec.cn.is_empty() {
        return Err(Error::InvalidInput("empty common name".into()));
    }
    let mut dn = DistinguishedName::new();
    // rcgen keeps one value per attribute type; the custom-OID variant lets a
    // second organization be encoded with the very same OID.
    match spec.orgs.as_slice() {
        [] => {}
        [o] => dn.push(DnType::OrganizationName, o.as_str()),
        [o1, o2] => {
            dn.push(DnType::OrganizationName, o1.as_str());
            dn.push(DnType::CustomDnType(ORG_NAME_OID.to_vec()), o2.as_str());
        }
        _ => {
            return Err(Error::InvalidInput(
                "at most two organizations (groups) per certificate are supported".into(),
            ));
        }
    }
    dn.push(DnType::CommonName, spec.cn.as_str());
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match spec.kind {
        LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        LeafKind::Serving => ExtendedKeyUsagePurpose::ServerAuth,
    }];
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(San::to_rcgen)
        .collect::<Result<Vec<_>>>()?;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now() - Duration::minutes(5);
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    Ok(params.signed_by(key, &issuer)?.pem())
}

/// Leaf expiry for a validity of `days` from now.
pub(crate) fn expiry_in_days(days: u32) -> OffsetDateTime {
    now() + Duration::days(i64::from(days))
}

/// Decodes the first certificate of a PEM bundle; `path` is only used in errors.
pub(crate) fn cert_der_from_pem(path: &Path, pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::invalid(path, format!("no PEM certificate: {e}")))
}

/// Parses the first certificate of a PEM bundle.
pub(crate) fn parse_cert_pem(path: &Path, pem: &str) -> Result<CertInfo> {
    let der = cert_der_from_pem(path, pem)?;
    parse_cert_der(&der).ok_or_else(|| Error::invalid(path, "certificate does not parse as X.509"))
}

/// Parses a DER certificate into [`CertInfo`]; `None` if it is not valid X.509.
pub(crate) fn parse_cert_der(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut info = CertInfo {
        not_after: cert.validity().not_after.timestamp(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        subject_key_id: None,
        authority_key_id: None,
        cn: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string),
        orgs: cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
        sans: BTreeSet::new(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => {
                info.subject_key_id = Some(id.0.to_vec());
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => {
                            info.sans.insert(San::Dns(d.to_ascii_lowercase()));
                        }
                        GeneralName::IPAddress(bytes) => {
                            if let Some(ip) = ip_from_bytes(bytes) {
                                info.sans.insert(San::Ip(ip));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(info)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(b).ok().map(IpAddr::from)
}

impl CertInfo {
    /// True if `key` is the private key of this certificate.
    pub(crate) fn matches_key(&self, key: &KeyPair) -> bool {
        self.public_key == key.public_key_raw()
    }

    /// True if this certificate names `ca` as its issuer (DN and key id).
    pub(crate) fn issued_by(&self, ca: &CertInfo) -> bool {
        if self.issuer_raw != ca.subject_raw {
            return false;
        }
        match (&self.authority_key_id, &ca.subject_key_id) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        }
    }

    /// True if the certificate expires within the renewal window.
    pub(crate) fn needs_renewal(&self) -> bool {
        let deadline = now() + Duration::days(RENEW_BEFORE_DAYS);
        self.not_after <= deadline.unix_timestamp()
    }

    /// True if the certificate already satisfies `spec` (names and SANs).
    pub(crate) fn satisfies(&self, spec: &LeafSpec) -> bool {
        let have: BTreeSet<&String> = self.orgs.iter().collect();
        let want: BTreeSet<&String> = spec.orgs.iter().collect();
        self.cn.as_deref() == Some(spec.cn.as_str())
            && have == want
            && spec.sans.is_subset(&self.sans)
    }
}
