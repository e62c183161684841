use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::config;
use crate::certs::{self, LeafKind, LeafSpec, San};
use crate::{Error, ensure_server_pki, files};

const ALL_FILES: &[&str] = &[
    "server-ca.crt",
    "server-ca.key",
    "client-ca.crt",
    "client-ca.key",
    "request-header-ca.crt",
    "request-header-ca.key",
    "service.key",
    "service.pub",
    "serving-kube-apiserver.crt",
    "serving-kube-apiserver.key",
    "client-admin.crt",
    "client-admin.key",
    "client-kube-apiserver.crt",
    "client-kube-apiserver.key",
    "client-controller.crt",
    "client-controller.key",
    "client-scheduler.crt",
    "client-scheduler.key",
];

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    for sub in ["server", "server/tls"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_file() {
                out.insert(
                    entry.path(),
                    (fs::read(entry.path()).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cert_info(path: &Path) -> certs::CertInfo {
    certs::parse_cert_pem(path, &fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn first_boot_creates_every_file_with_private_keys_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let tls = tmp.path().join("server/tls");
    assert_eq!(pki.tls_dir, tls);
    for name in ALL_FILES {
        assert!(tls.join(name).is_file(), "{name} missing");
        if name.ends_with(".key") {
            assert_eq!(mode(&tls.join(name)), 0o600, "{name} mode");
        }
    }
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(mode(&tmp.path().join("server")), 0o700);
    assert_eq!(mode(&tmp.path().join("server/token")), 0o600);
    // No temp files left behind.
    let leftovers: Vec<_> = fs::read_dir(&tls)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
    assert_eq!(
        pki.server_ca_pem,
        fs::read_to_string(tls.join("server-ca.crt")).unwrap()
    );
    assert!(pki.sa_signing_key_pem().contains("BEGIN PRIVATE KEY"));
    assert!(pki.sa_public_key_pem().contains("BEGIN PUBLIC KEY"));
}

#[test]
fn client_certificates_carry_the_expected_names_and_issuers() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(&config(tmp.path())).unwrap();
    let tls = tmp.path().join("server/tls");
    let client_ca = cert_info(&tls.join("client-ca.crt"));
    let server_ca = cert_info(&tls.join("server-ca.crt"));
    for (file, cn, orgs) in [
        ("client-admin.crt", "system:admin", vec!["system:masters"]),
        (
            "client-kube-apiserver.crt",
            "system:kube-apiserver",
            vec!["system:masters"],
        ),
        (
            "client-controller.crt",
            "system:kube-controller-manager",
            vec![],
        ),
        ("client-scheduler.crt", "system:kube-scheduler", vec![]),
    ] {
        let info = cert_info(&tls.join(file));
        assert_eq!(info.cn.as_deref(), Some(cn));
        assert_eq!(info.orgs, orgs);
        assert!(info.issued_by(&client_ca), "{file} issuer");
        assert!(!info.issued_by(&server_ca));
    }
    let serving = cert_info(&tls.join("serving-kube-apiserver.crt"));
    assert!(serving.issued_by(&server_ca));
    // Leaves: one year; CAs: ten years.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days = |t: i64| (t - now) / 86_400;
    assert!((364..=365).contains(&days(serving.not_after)));
    assert!((3649..=3650).contains(&days(server_ca.not_after)));
}

#[test]
fn second_boot_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_server_pki(&config(tmp.path())).unwrap();
    let before = snapshot(tmp.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = ensure_server_pki(&config(tmp.path())).unwrap();
    assert_eq!(before, snapshot(tmp.path()));
    assert_eq!(first.token, second.token);
    assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
}

#[test]
fn serving_certificate_has_every_wanted_san() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let der = certs::cert_der_from_pem(Path::new("x"), pki.serving_cert_pem()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => ips.push(b.to_vec()),
            _ => {}
        }
    }
    for want in [
        "node-a",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    ] {
        assert!(dns.iter().any(|d| d == want), "missing DNS SAN {want}");
    }
    for want in [
        "127.0.0.1",
        "::1",
        "10.43.0.1",
        "192.168.1.10",
        "fd00::10",
        "203.0.113.7",
    ] {
        let bytes = match want.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(v) => v.octets().to_vec(),
            std::net::IpAddr::V6(v) => v.octets().to_vec(),
        };
        assert!(ips.contains(&bytes), "missing IP SAN {want}");
    }
}

#[test]
fn expiring_leaf_is_reissued_from_the_same_ca_on_next_boot() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(&config(tmp.path())).unwrap();
    let tls = tmp.path().join("server/tls");
    // Test hook: replace the admin cert with one that expires in 30 days.
    let ca_pem = fs::read_to_string(tls.join("client-ca.crt")).unwrap();
    let ca_key = certs::parse_key(
        Path::new("k"),
        &fs::read_to_string(tls.join("client-ca.key")).unwrap(),
    )
    .unwrap();
    let key_pem = fs::read_to_string(tls.join("client-admin.key")).unwrap();
    let key = certs::parse_key(Path::new("k"), &key_pem).unwrap();
    let spec = LeafSpec {
        cn: "system:admin".into(),
        orgs: vec!["system:masters".into()],
        sans: Default::default(),
        kind: LeafKind::Client,
    };
    let short =
        certs::issue_leaf(&ca_pem, &ca_key, &spec, &key, certs::expiry_in_days(30)).unwrap();
    fs::write(tls.join("client-admin.crt"), &short).unwrap();
    let before = snapshot(tmp.path());

    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let after = snapshot(tmp.path());
    let renewed = cert_info(&tls.join("client-admin.crt"));
    assert!(!renewed.needs_renewal());
    assert!(renewed.issued_by(&cert_info(&tls.join("client-ca.crt"))));
    assert_eq!(
        pki.admin_cert_pem(),
        fs::read_to_string(tls.join("client-admin.crt")).unwrap()
    );
    let changed: Vec<_> = before
        .keys()
        .filter(|k| before[*k] != after[*k])
        .map(|k| k.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(changed, vec!["client-admin.crt".to_string()]);
}

#[test]
fn new_tls_san_reissues_only_the_serving_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(&config(tmp.path())).unwrap();
    let before = snapshot(tmp.path());
    let mut cfg = config(tmp.path());
    cfg.tls_sans.push("new.example.com".into());
    ensure_server_pki(&cfg).unwrap();
    let after = snapshot(tmp.path());
    let changed: Vec<_> = before
        .keys()
        .filter(|k| before[*k] != after[*k])
        .map(|k| k.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(changed, vec!["serving-kube-apiserver.crt".to_string()]);
    let info = cert_info(&tmp.path().join("server/tls/serving-kube-apiserver.crt"));
    assert!(info.sans.contains(&San::Dns("new.example.com".into())));
    // Dropping a SAN again keeps the (superset) certificate.
    let before = snapshot(tmp.path());
    ensure_server_pki(&config(tmp.path())).unwrap();
    assert_eq!(before, snapshot(tmp.path()));
}

#[test]
fn corrupt_files_give_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(&config(tmp.path())).unwrap();
    let tls = tmp.path().join("server/tls");
    for name in [
        "client-ca.crt",
        "server-ca.key",
        "client-admin.crt",
        "service.key",
    ] {
        let path = tls.join(name);
        let saved = fs::read(&path).unwrap();
        fs::write(&path, "garbage").unwrap();
        let err = ensure_server_pki(&config(tmp.path())).unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{name}: {err}");
        fs::write(&path, saved).unwrap();
    }
    ensure_server_pki(&config(tmp.path())).unwrap();
}

#[test]
fn ca_certificate_without_its_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_server_pki(&config(tmp.path())).unwrap();
    let key = tmp.path().join("server/tls/server-ca.key");
    fs::remove_file(&key).unwrap();
    let err = ensure_server_pki(&config(tmp.path())).unwrap_err();
    assert!(err.to_string().contains("server-ca.key"), "{err}");
}

#[test]
fn issued_client_cert_is_signed_by_the_client_ca_with_two_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let (cert, key) = pki
        .issue_client_cert("system:node:n1", &["system:nodes", "extra"], 10)
        .unwrap();
    let info = certs::parse_cert_pem(Path::new("c"), &cert).unwrap();
    assert_eq!(info.cn.as_deref(), Some("system:node:n1"));
    assert_eq!(info.orgs, vec!["system:nodes", "extra"]);
    assert!(info.matches_key(&certs::parse_key(Path::new("k"), &key).unwrap()));
    assert!(info.issued_by(&cert_info(&pki.file(&format!("{}.crt", files::CLIENT_CA)))));
    assert!(pki.issue_client_cert("x", &["a", "b", "c"], 1).is_err());
    assert!(pki.issue_client_cert("x", &[], 0).is_err());
}

#[test]
fn issued_serving_cert_is_signed_by_the_server_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let (cert, _key) = pki
        .issue_serving_cert("kubelet", &["n1".into(), "10.0.0.5".into()], 30)
        .unwrap();
    let info = certs::parse_cert_pem(Path::new("c"), &cert).unwrap();
    assert!(info.issued_by(&cert_info(&pki.file("server-ca.crt"))));
    assert!(info.sans.contains(&San::Ip("10.0.0.5".parse().unwrap())));
    assert!(info.sans.contains(&San::Dns("n1".into())));
}
