use std::fs;

use super::config;
use crate::{ca_hash, ensure_server_pki, parse_token};

#[test]
fn server_token_embeds_the_sha256_of_the_server_ca_pem() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_server_pki(&config(tmp.path())).unwrap();
    let ca_bytes = fs::read(tmp.path().join("server/tls/server-ca.crt")).unwrap();
    let ca_text = String::from_utf8(ca_bytes).unwrap();
    let hash = ca_hash(&ca_text);
    assert_eq!(hash.len(), 64);
    let parsed = parse_token(&pki.token).unwrap();
    assert_eq!(parsed.ca_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(parsed.username, "server");
    assert_eq!(parsed.password.len(), 32);
    assert!(parsed.password.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(pki.token.starts_with(&format!("K10{hash}::server:")));
    let file = fs::read_to_string(tmp.path().join("server/token")).unwrap();
    assert_eq!(file.trim(), pki.token);
}

#[test]
fn given_token_secret_is_used_and_updates_the_stored_one() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_server_pki(&config(tmp.path())).unwrap();
    let mut cfg = config(tmp.path());
    cfg.token = Some("mysecret".into());
    let second = ensure_server_pki(&cfg).unwrap();
    assert_ne!(first.token, second.token);
    assert!(second.token.ends_with("::server:mysecret"));
    // A full-form token contributes only its secret.
    cfg.token = Some(format!("K10{}::server:other", "ab".repeat(32)));
    let third = ensure_server_pki(&cfg).unwrap();
    assert!(third.token.ends_with("::server:other"));
    assert!(
        third
            .token
            .starts_with(&format!("K10{}", ca_hash(&third.server_ca_pem)))
    );
    // Without --token the stored secret is reused.
    let fourth = ensure_server_pki(&config(tmp.path())).unwrap();
    assert_eq!(fourth.token, third.token);
}

#[test]
fn parse_token_accepts_full_and_bare_forms() {
    let hash = "0123456789abcdef".repeat(4);
    let t = parse_token(&format!("K10{hash}::node:pw")).unwrap();
    assert_eq!(t.ca_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(t.username, "node");
    assert_eq!(t.password, "pw");
    assert_eq!(t.to_full_string(), format!("K10{hash}::node:pw"));

    let bare = parse_token("just-a-secret").unwrap();
    assert_eq!(bare.ca_hash, None);
    assert_eq!(bare.username, "server");
    assert_eq!(bare.password, "just-a-secret");

    let no_hash = parse_token("K10::server:pw").unwrap();
    assert_eq!(no_hash.ca_hash, None);
    assert_eq!(no_hash.password, "pw");
}

#[test]
fn parse_token_rejects_malformed_tokens() {
    assert!(parse_token("").is_err());
    assert!(parse_token("K10abc::server:pw").is_err());
    assert!(parse_token(&format!("K10{}::nopassword", "a".repeat(64))).is_err());
    assert!(parse_token(&format!("K10{}::server:", "a".repeat(64))).is_err());
}
