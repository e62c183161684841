//! Authentication, PKI on disk, and error Statuses for bad input.
use crate::common::{KUBECTL_NEW, Server};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// curl without client credentials (CA verified): (HTTP code, body).
fn anonymous(s: &Server, path: &str) -> (u16, String) {
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", s.url()),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// curl with the admin client certificate: (HTTP code, body).
fn admin(s: &Server, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let tls = s.data_dir().join("server/tls");
    let body_file = s.dir.path().join("body.bin");
    std::fs::write(&body_file, body).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            tls.join("server-ca.crt").to_str().unwrap(),
            "--cert",
            tls.join("client-admin.crt").to_str().unwrap(),
            "--key",
            tls.join("client-admin.key").to_str().unwrap(),
            "-X",
            method,
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            &format!("@{}", body_file.display()),
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", s.url()),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn only_health_version_and_cacerts_are_anonymous() {
    let s = Server::start();
    for p in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(anonymous(&s, p).0, 200, "{p}");
    }
    let (code, body) = anonymous(&s, "/cacerts");
    assert_eq!(code, 200);
    let ca = std::fs::read_to_string(s.data_dir().join("server/tls/server-ca.crt")).unwrap();
    assert_eq!(body.trim(), ca.trim());
    for p in [
        "/api",
        "/apis",
        "/api/v1/namespaces",
        "/openapi/v3",
        "/api/v1/namespaces/default/secrets",
    ] {
        let (code, body) = anonymous(&s, p);
        assert_eq!(code, 401, "{p}: {body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
    }
}

#[test]
fn keys_and_kubeconfig_are_private_and_second_boot_reuses_them() {
    let mut s = Server::start();
    let tls = s.data_dir().join("server/tls");
    let mut keys = Vec::new();
    for e in std::fs::read_dir(&tls).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            keys.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    for want in [
        "server-ca.key",
        "client-ca.key",
        "request-header-ca.key",
        "service.key",
        "serving-kube-apiserver.key",
        "client-admin.key",
    ] {
        assert!(
            keys.iter().any(|(p, _)| p.ends_with(want)),
            "{want} missing"
        );
    }
    let mode = std::fs::metadata(s.kubeconfig())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    let ca = std::fs::read(tls.join("server-ca.crt")).unwrap();
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&ca))
    };
    assert!(token.starts_with(&format!("K10{hash}::server:")), "{token}");
    s.restart();
    for (p, bytes) in keys {
        assert_eq!(
            std::fs::read(&p).unwrap(),
            bytes,
            "{} was regenerated",
            p.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(s.data_dir().join("server/token")).unwrap(),
        token
    );
    s.k(KUBECTL_NEW, &["get", "ns"]);
}

#[test]
fn malformed_oversized_and_protobuf_bodies_get_4xx_statuses() {
    let s = Server::start();
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, st) = admin(&s, "POST", path, "application/json", b"{not json");
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["kind"], "Status");
    let (code, st) = admin(&s, "POST", path, "application/yaml", b"a: [unclosed");
    assert_eq!(code, 400, "{st}");
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (code, st) = admin(&s, "POST", path, "application/json", big.as_bytes());
    assert_eq!(code, 413, "{st}");
    assert_eq!(st["reason"], "RequestEntityTooLarge");
    let (code, st) = admin(
        &s,
        "POST",
        path,
        "application/vnd.kubernetes.protobuf",
        b"k8s\x00\x0a",
    );
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["reason"], "BadRequest");
    // A protobuf body of a kind without a protobuf schema (custom resources are JSON only).
    let (code, st) = admin(
        &s,
        "POST",
        path,
        "application/vnd.kubernetes.protobuf",
        b"k8s\x00\x0a\x14\x0a\x0eexample.com/v1\x12\x02Wd\x12\x00",
    );
    assert_eq!(code, 415, "{st}");
    assert_eq!(st["reason"], "UnsupportedMediaType");
    let (code, _) = admin(
        &s,
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{}",
    );
    assert_eq!(code, 405);
    let (code, st) = admin(
        &s,
        "GET",
        "/api/v1/namespaces/default/nothings",
        "application/json",
        b"",
    );
    assert_eq!(code, 404, "{st}");
    // Nothing partial was written.
    let out = s.k(KUBECTL_NEW, &["get", "configmaps", "-o", "name"]);
    assert!(!out.contains("big"), "{out}");
}

#[test]
fn aggregated_discovery_is_answered_with_its_own_content_type() {
    let s = Server::start();
    let tls = s.data_dir().join("server/tls");
    for (path, v) in [("/api", "v2"), ("/apis", "v2"), ("/apis", "v2beta1")] {
        let out = Command::new("curl")
            .args([
                "-s", "-D", "-", "-o", "/dev/null",
                "--cacert", tls.join("server-ca.crt").to_str().unwrap(),
                "--cert", tls.join("client-admin.crt").to_str().unwrap(),
                "--key", tls.join("client-admin.key").to_str().unwrap(),
                "-H", &format!("Accept: application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList,application/json"),
                &format!("{}{path}", s.url()),
            ])
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            headers.contains(&format!("content-type: application/json;g=apidiscovery.k8s.io;v={v};as=apigroupdiscoverylist")),
            "{path} {v}: {headers}"
        );
    }
}
