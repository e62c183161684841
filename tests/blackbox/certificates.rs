//! CertificateSigningRequests signed by the controller manager and used against the API
//! server, node client requests auto-approved for bootstrap tokens and nodes, static tokens
//! (`--token-auth-file`) and the bound token expiry extension.
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually, kubectl_path};

/// A PEM CSR for `cn` in `org` (if any) and its private key PEM.
fn csr(cn: &str, org: Option<&str>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if let Some(o) = org {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
    }
    let req = params.serialize_request(&key).unwrap();
    (req.pem().unwrap(), key.serialize_pem())
}

fn csr_object(name: &str, pem: &str, signer: &str, usages: &[&str], secs: Option<i64>) -> String {
    let mut spec = json!({
        "request": STANDARD.encode(pem),
        "signerName": signer,
        "usages": usages,
    });
    if let Some(s) = secs {
        spec["expirationSeconds"] = json!(s);
    }
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name}, "spec": spec})
    .to_string()
}

/// A kubeconfig for this server with `user` (a kubeconfig `user` entry) written to `path`.
fn kubeconfig(s: &Server, path: &Path, user: Value) -> PathBuf {
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let cfg = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": s.url(), "certificate-authority": ca}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    std::fs::write(path, cfg.to_string()).unwrap();
    path.to_path_buf()
}

fn kubectl_as(s: &Server, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = s
        .command(kubectl_path(KUBECTL_NEW))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", s.data_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn get_csr(s: &Server, name: &str) -> Value {
    serde_json::from_str(&s.k(KUBECTL_NEW, &["get", "csr", name, "-o", "json"])).unwrap()
}

/// The issued certificate's PEM, once there.
fn wait_issued(s: &Server, name: &str) -> String {
    let cert = eventually(Duration::from_secs(20), || {
        let c = get_csr(s, name);
        c["status"]["certificate"]
            .as_str()
            .map(|b| String::from_utf8(STANDARD.decode(b).unwrap()).unwrap())
    });
    cert.unwrap_or_else(|| panic!("{name} not issued: {}\n{}", get_csr(s, name), s.log()))
}

/// `kubectl auth whoami` as the holder of a kubeconfig: (username, groups).
fn whoami(s: &Server, kc: &Path) -> (String, Vec<String>) {
    let out = ok(kubectl_as(s, kc, &["auth", "whoami", "-o", "json"], None));
    let v: Value = serde_json::from_str(&out).unwrap();
    let info = &v["status"]["userInfo"];
    let groups = info["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (info["username"].as_str().unwrap_or_default().into(), groups)
}

/// Seconds from now until the PEM certificate's notAfter.
fn seconds_left(pem: &str) -> i64 {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    cert.validity().not_after.timestamp() - now
}

#[test]
fn user_csrs_are_approved_with_kubectl_signed_and_authenticate_and_static_tokens_work() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "s3cr3t-bob,bob,uid-bob,\"devs,csr-approvers\"\nother,carol,uid-carol\n",
    )
    .unwrap();
    let s = Server::start_with(&["--token-auth-file", tokens.to_str().unwrap()]);

    // Static token: kubectl --token authenticates as the file says.
    let bob = kubeconfig(&s, &dir.path().join("bob"), json!({"token": "s3cr3t-bob"}));
    let (name, groups) = whoami(&s, &bob);
    assert_eq!(name, "bob");
    assert_eq!(
        groups,
        vec!["devs", "csr-approvers", "system:authenticated"]
    );
    let wrong = kubeconfig(&s, &dir.path().join("wrong"), json!({"token": "nope"}));
    let err = kubectl_as(&s, &wrong, &["get", "csr"], None);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains("the server has asked for the client to provide credentials"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );

    // A user's CSR: the spec records the requester; kubectl approves; the controller signs.
    let (pem, key) = csr("alice", Some("devs"));
    s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &csr_object(
            "alice",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            Some(3600),
        ),
    );
    let c = get_csr(&s, "alice");
    assert_eq!(c["spec"]["username"], "system:admin", "{c}");
    assert!(
        c["spec"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:masters")),
        "{c}"
    );
    let table = s.k(KUBECTL_OLD, &["get", "csr", "alice"]);
    assert!(table.contains("Pending"), "{table}");

    // Bob may update approvals but not approve for this signer.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "csr-approval"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["get", "list"]},
                      {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval"], "verbs": ["update"]}]}"#,
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "clusterrolebinding",
            "csr-approval",
            "--clusterrole=csr-approval",
            "--group=csr-approvers",
        ],
    );
    let denied = eventually(Duration::from_secs(5), || {
        let out = kubectl_as(&s, &bob, &["certificate", "approve", "alice"], None);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.contains("user not permitted to approve requests with signerName")
            .then_some(err)
    });
    assert!(
        denied.as_deref().is_some_and(|e| e.contains(
            "certificatesigningrequests.certificates.k8s.io \"alice\" is forbidden: user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""
        )),
        "{denied:?}"
    );

    s.k(KUBECTL_NEW, &["certificate", "approve", "alice"]);
    let cert = wait_issued(&s, "alice");
    let c = get_csr(&s, "alice");
    let cond = &c["status"]["conditions"][0];
    assert_eq!(cond["type"], "Approved", "{c}");
    assert_eq!(cond["reason"], "KubectlApprove", "{c}");
    assert!(cond["lastUpdateTime"].is_string(), "{c}");
    // expirationSeconds is honoured (backdated 5 minutes).
    let left = seconds_left(&cert);
    assert!((3500..=3600).contains(&left), "{left}");
    let table = s.k(KUBECTL_OLD, &["get", "csr", "alice"]);
    assert!(table.contains("Approved,Issued"), "{table}");

    // The certificate authenticates as the requested user and group.
    std::fs::write(dir.path().join("alice.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("alice.key"), &key).unwrap();
    let alice = kubeconfig(
        &s,
        &dir.path().join("alice"),
        json!({"client-certificate": dir.path().join("alice.crt"), "client-key": dir.path().join("alice.key")}),
    );
    let (name, groups) = whoami(&s, &alice);
    assert_eq!(name, "alice");
    assert!(groups.contains(&"devs".to_string()), "{groups:?}");

    // The spec is immutable, conditions cannot be removed, and the certificate cannot change.
    let mut c = get_csr(&s, "alice");
    c["status"]["conditions"] = json!([]);
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &[
            "replace",
            "--raw",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/alice/approval",
            "-f",
            "-",
        ],
        &c.to_string(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("updates may not remove a condition of type \"Approved\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Denied requests are never signed; unknown signers are left alone.
    let (pem, _) = csr("mallory", None);
    s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &csr_object(
            "mallory",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            None,
        ),
    );
    s.k(KUBECTL_NEW, &["certificate", "deny", "mallory"]);
    let (pem, _) = csr("thing", None);
    s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &csr_object("thing", &pem, "example.com/thing", &["client auth"], None),
    );
    s.k(KUBECTL_NEW, &["certificate", "approve", "thing"]);
    // A request breaking its signer's usage rules fails.
    let (pem, _) = csr("srv", None);
    s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &csr_object(
            "srv",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["server auth"],
            None,
        ),
    );
    s.k(KUBECTL_NEW, &["certificate", "approve", "srv"]);
    let failed = eventually(Duration::from_secs(20), || {
        let c = get_csr(&s, "srv");
        let conds = c["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.into_iter().find(|c| c["type"] == "Failed")
    })
    .expect("srv failed");
    assert_eq!(failed["reason"], "SignerValidationFailure");
    assert_eq!(
        failed["message"],
        "invalid usage for client certificate: server auth"
    );
    for name in ["mallory", "thing", "srv"] {
        assert!(
            get_csr(&s, name)["status"]["certificate"].is_null(),
            "{name}"
        );
    }
    let table = s.k(KUBECTL_OLD, &["get", "csr", "mallory"]);
    assert!(table.contains("Denied"), "{table}");

    // Validation and subject restriction.
    let (pem, _) = csr("root", Some("system:masters"));
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "create",
            "-f",
            &write(
                &dir,
                "root.json",
                &csr_object(
                    "root",
                    &pem,
                    "kubernetes.io/kube-apiserver-client",
                    &["client auth"],
                    None,
                ),
            ),
        ],
    );
    assert!(
        err.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{err}"
    );
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "create",
            "-f",
            &write(
                &dir,
                "short.json",
                &csr_object(
                    "short",
                    &pem,
                    "example.com/x",
                    &["client auth", "client auth"],
                    Some(300),
                ),
            ),
        ],
    );
    assert!(
        err.contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 600 seconds (10 minutes)")
            && err.contains("spec.usages[1]: Duplicate value: \"client auth\""),
        "{err}"
    );
    let bad = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "bad"}, "spec": {"request": STANDARD.encode("not a csr"), "signerName": "example.com/x", "usages": ["client auth"]}});
    let err = s.k_err(
        KUBECTL_NEW,
        &["create", "-f", &write(&dir, "bad.json", &bad.to_string())],
    );
    assert!(err.contains("spec.request: Invalid value"), "{err}");
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn node_client_csrs_are_auto_approved_for_bootstrap_tokens_and_renewing_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
                           "usage-bootstrap-authentication": "true"}}"#,
    );
    let boot = kubeconfig(
        &s,
        &dir.path().join("boot"),
        json!({"token": "abcdef.0123456789abcdef"}),
    );
    let (pem, key) = csr("system:node:n1", Some("system:nodes"));
    let usages = ["digital signature", "client auth"];
    ok(kubectl_as(
        &s,
        &boot,
        &["create", "-f", "-"],
        Some(&csr_object(
            "node-csr-1",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &usages,
            None,
        )),
    ));
    let cert = wait_issued(&s, "node-csr-1");
    let c = get_csr(&s, "node-csr-1");
    assert_eq!(c["spec"]["username"], "system:bootstrap:abcdef", "{c}");
    let cond = &c["status"]["conditions"][0];
    assert_eq!(cond["type"], "Approved", "{c}");
    assert_eq!(cond["reason"], "AutoApproved", "{c}");
    assert_eq!(
        cond["message"],
        "Auto approving kubelet client certificate after SubjectAccessReview."
    );
    // One year (the signing duration) when no expirationSeconds is asked for.
    let left = seconds_left(&cert);
    assert!((364 * 86400..=365 * 86400).contains(&left), "{left}");

    std::fs::write(dir.path().join("n1.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("n1.key"), &key).unwrap();
    let n1 = kubeconfig(
        &s,
        &dir.path().join("n1"),
        json!({"client-certificate": dir.path().join("n1.crt"), "client-key": dir.path().join("n1.key")}),
    );
    let (name, groups) = whoami(&s, &n1);
    assert_eq!(name, "system:node:n1");
    assert!(groups.contains(&"system:nodes".to_string()), "{groups:?}");

    // The node renews its own certificate: selfnodeclient.
    let (pem, _) = csr("system:node:n1", Some("system:nodes"));
    ok(kubectl_as(
        &s,
        &n1,
        &["create", "-f", "-"],
        Some(&csr_object(
            "node-csr-2",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &usages,
            None,
        )),
    ));
    wait_issued(&s, "node-csr-2");
    assert_eq!(
        get_csr(&s, "node-csr-2")["status"]["conditions"][0]["message"],
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    // ... but not another node's: nodes have no nodeclient permission.
    let (pem, _) = csr("system:node:n2", Some("system:nodes"));
    ok(kubectl_as(
        &s,
        &n1,
        &["create", "-f", "-"],
        Some(&csr_object(
            "node-csr-3",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &usages,
            None,
        )),
    ));
    // A bootstrap token's request that is not a node client request is not approved.
    let (pem, _) = csr("system:node:n3", Some("devs"));
    ok(kubectl_as(
        &s,
        &boot,
        &["create", "-f", "-"],
        Some(&csr_object(
            "node-csr-4",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &usages,
            None,
        )),
    ));
    std::thread::sleep(Duration::from_secs(3));
    for name in ["node-csr-3", "node-csr-4"] {
        let c = get_csr(&s, name);
        assert!(c["status"]["conditions"].is_null(), "{c}");
    }
}

#[tokio::test]
async fn pod_bound_tokens_asked_for_3607_seconds_are_extended_to_a_year_with_warnafter() {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use kube::api::{Api, PostParams};
    let s = Server::start();
    assert!(s.default_service_account_within("default", Duration::from_secs(20)));
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    let request = |secs: i64, bound: bool| TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(secs),
            bound_object_ref: bound.then(|| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("p".into()),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let claims = |tr: &TokenRequest| -> Value {
        let token = &tr.status.as_ref().unwrap().token;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let tr = sas
        .create_token_request("default", &PostParams::default(), &request(3607, true))
        .await
        .unwrap();
    let c = claims(&tr);
    let iat = c["iat"].as_i64().unwrap();
    assert_eq!(c["exp"].as_i64().unwrap() - iat, 365 * 24 * 3600, "{c}");
    assert_eq!(
        c["kubernetes.io"]["warnafter"].as_i64().unwrap(),
        iat + 3607,
        "{c}"
    );
    // The answer gives the asked expiry: when the kubelet refreshes the token.
    let exp = tr
        .status
        .as_ref()
        .unwrap()
        .expiration_timestamp
        .0
        .as_second();
    assert!((exp - (iat + 3607)).abs() <= 2, "{exp} vs {iat}");
    assert_eq!(tr.spec.expiration_seconds, Some(3607));
    // Other lifetimes, and tokens not bound to a pod, are not extended.
    for (secs, bound) in [(3600, true), (3607, false)] {
        let c = claims(
            &sas.create_token_request("default", &PostParams::default(), &request(secs, bound))
                .await
                .unwrap(),
        );
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            secs,
            "{c}"
        );
        assert!(c["kubernetes.io"]["warnafter"].is_null(), "{c}");
    }
}

/// A request (made by openssl) with three organizations and an extension no signer knows,
/// marked critical: signed with every organization (the user's groups) and without the
/// extension, as upstream's signer copies only the subject and SANs.
#[test]
fn every_requested_organization_becomes_a_group_and_unknown_extensions_are_dropped() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("carol.key");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    let pem = run(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/O=team-a/O=team-b/O=team-c/CN=carol",
        "-addext",
        "1.3.6.1.4.1.99999.1=critical,DER:05:00",
    ]);
    s.k_in(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &csr_object(
            "carol",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            None,
        ),
    );
    s.k(KUBECTL_NEW, &["certificate", "approve", "carol"]);
    let cert = wait_issued(&s, "carol");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let orgs: Vec<&str> = x
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    assert_eq!(orgs, ["team-a", "team-b", "team-c"]);
    assert!(
        x.extensions()
            .iter()
            .all(|e| e.oid.to_id_string() != "1.3.6.1.4.1.99999.1"),
        "{cert}"
    );
    std::fs::write(dir.path().join("carol.crt"), &cert).unwrap();
    let carol = kubeconfig(
        &s,
        &dir.path().join("carol"),
        json!({"client-certificate": dir.path().join("carol.crt"), "client-key": key}),
    );
    let (name, groups) = whoami(&s, &carol);
    assert_eq!(name, "carol");
    for g in ["team-a", "team-b", "team-c", "system:authenticated"] {
        assert!(groups.contains(&g.to_string()), "{groups:?}");
    }
}
