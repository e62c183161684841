//! Admission webhooks called over HTTPS: a real webhook server in the test (TLS with its own
//! CA, AdmissionReview v1), reached by URL and through a Service's EndpointSlice; mutation by
//! JSONPatch, denial, failurePolicy, namespace selectors.
use crate::common::{KUBECTL_NEW, Server};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook server on 127.0.0.1: `/mutate` labels objects `mutated=yes` (JSONPatch),
/// `/validate` denies objects labelled `deny=true` and deleting those labelled `protect=true`. Counts the reviews it answers.
struct Webhook {
    port: u16,
    ca_pem: String,
    calls: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

fn answer(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let labels = req["object"]["metadata"]["labels"].clone();
    let response = match path {
        "/mutate" => {
            let patch = if labels.is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                   "patch": B64.encode(patch.to_string()), "warnings": ["labelled by the test webhook"]})
        }
        _ if labels["deny"] == "true"
            || (req["operation"] == "DELETE"
                && req["oldObject"]["metadata"]["labels"]["protect"] == "true") =>
        {
            json!({"uid": uid, "allowed": false,
            "status": {"code": 403, "message": format!("{} {} is not welcome", req["operation"].as_str().unwrap_or(""), req["name"].as_str().unwrap_or(""))}})
        }
        _ => json!({"uid": uid, "allowed": true}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

impl Webhook {
    fn start() -> Webhook {
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "hooks.default.svc".to_string(),
        ])
        .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // One HTTP/1.1 request: headers, then Content-Length bytes of body.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, len) = loop {
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let review: Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = answer(&path, &review).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Webhook {
            port,
            ca_pem: ca_cert.pem(),
            calls,
            _rt: rt,
        }
    }
}

fn configmap(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})
        .to_string()
}

#[test]
fn webhooks_mutate_and_deny_and_honour_their_failure_policy() {
    let s = Server::start();
    let hook = Webhook::start();
    let ca = B64.encode(&hook.ca_pem);
    let rule = json!([{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]);
    let ns_selector = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]});
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "labeller"},
            "webhooks": [{"name": "label.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", hook.port), "caBundle": ca},
                "rules": rule, "namespaceSelector": ns_selector}]})
        .to_string(),
    );
    // The validating webhook is reached through a Service without selector whose
    // EndpointSlice points at the test's server, verified as hooks.default.svc.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hooks"},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.port}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "hooks-1", "labels": {"kubernetes.io/service-name": "hooks"}},
             "addressType": "IPv4", "ports": [{"name": "https", "port": hook.port, "protocol": "TCP"}],
             "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
             "metadata": {"name": "gate"},
             "webhooks": [{"name": "deny.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"service": {"namespace": "default", "name": "hooks", "path": "/validate"}, "caBundle": ca},
                "rules": rule}]}]})
        .to_string(),
    );
    // The configurations reach the API server through its watch: wait until both act.
    let mut n = 0;
    let active = crate::common::eventually(std::time::Duration::from_secs(10), || {
        n += 1;
        let out = s.kubectl_stdin(
            KUBECTL_NEW,
            &["create", "-f", "-", "-o", "json"],
            &configmap(&format!("warmup-{n}"), json!({"deny": "true"})),
        );
        let e = String::from_utf8_lossy(&out.stderr).to_string();
        e.contains("denied the request").then_some(())
    });
    assert!(active.is_some(), "the validating webhook never acted");
    // Mutated on create, with the webhook's warning passed on.
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["create", "-f", "-", "-o", "json"],
        &configmap("one", json!({"app": "x"})),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["metadata"]["labels"]["mutated"], "yes", "{cm}");
    assert_eq!(cm["metadata"]["labels"]["app"], "x");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("labelled by the test webhook"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Denied with the webhook's message, on create and on delete.
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["create", "-f", "-"],
        &configmap("two", json!({"deny": "true"})),
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(
            "admission webhook \"deny.example.com\" denied the request: CREATE two is not welcome"
        ),
        "{e}"
    );
    let e = s.k_err(KUBECTL_NEW, &["label", "configmap", "one", "deny=true"]);
    assert!(e.contains("UPDATE one is not welcome"), "{e}");
    s.k(KUBECTL_NEW, &["label", "configmap", "one", "protect=true"]);
    let e = s.k_err(KUBECTL_NEW, &["delete", "configmap", "one"]);
    assert!(e.contains("DELETE one is not welcome"), "{e}");
    // Outside the namespace selector, nothing is mutated.
    let sys = s.k_in(
        KUBECTL_NEW,
        &["create", "-n", "kube-system", "-f", "-", "-o", "json"],
        &configmap("three", json!({})),
    );
    let sys: Value = serde_json::from_str(&sys).unwrap();
    assert!(sys["metadata"]["labels"]["mutated"].is_null(), "{sys}");
    assert!(hook.calls.load(Ordering::SeqCst) >= 5);

    // An unreachable webhook: Ignore lets requests through, Fail (the default) refuses them.
    let dead = |policy: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "dead"},
            "webhooks": [{"name": "dead.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": policy, "timeoutSeconds": 2,
                "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", crate::common::free_port()), "caBundle": ca},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"]}]}]})
        .to_string()
    };
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &dead("Ignore"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.k(
        KUBECTL_NEW,
        &["create", "secret", "generic", "first", "--from-literal=a=b"],
    );
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &dead("Fail"));
    let mut n = 0;
    let e = crate::common::eventually(std::time::Duration::from_secs(20), || {
        n += 1;
        let out = s.kubectl(
            KUBECTL_NEW,
            &[
                "create",
                "secret",
                "generic",
                &format!("s{n}"),
                "--from-literal=a=b",
            ],
        );
        let e = String::from_utf8_lossy(&out.stderr).to_string();
        e.contains("failed calling webhook").then_some(e)
    })
    .expect("the failing webhook refuses");
    assert!(
        e.contains("failed calling webhook \"dead.example.com\""),
        "{e}"
    );
    s.k(
        KUBECTL_NEW,
        &["delete", "validatingwebhookconfiguration", "dead"],
    );
}
