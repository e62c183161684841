use std::fs;
use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::write_kubeconfig;

#[test]
fn kubeconfig_is_private_and_parses_as_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("etc/kubox/kubox.yaml");
    write_kubeconfig(
        &path,
        0o600,
        "https://127.0.0.1:6443",
        "CA PEM",
        "CERT PEM",
        "KEY PEM",
        "default",
    )
    .unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "default");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], "default");
    assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
    assert_eq!(
        cluster["cluster"]["certificate-authority-data"],
        STANDARD.encode("CA PEM")
    );
    let user = &doc["users"][0];
    assert_eq!(user["name"], "default");
    assert_eq!(
        user["user"]["client-certificate-data"],
        STANDARD.encode("CERT PEM")
    );
    assert_eq!(user["user"]["client-key-data"], STANDARD.encode("KEY PEM"));
    let ctx = &doc["contexts"][0];
    assert_eq!(ctx["name"], "default");
    assert_eq!(ctx["context"]["cluster"], "default");
    assert_eq!(ctx["context"]["user"], "default");
}

#[test]
fn kubeconfig_rewrite_honours_the_requested_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k.yaml");
    write_kubeconfig(&path, 0o600, "https://a:6443", "a", "b", "c", "default").unwrap();
    write_kubeconfig(&path, 0o644, "https://b:6443", "a", "b", "c", "default").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("https://b:6443")
    );
}
