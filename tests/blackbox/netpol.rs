//! NetworkPolicy enforced in the kernel with real pods on one node: default-deny ingress, a
//! pod/namespace-selector policy allowing exactly the selected clients at a named port
//! (directly and through a Service, filtered after its DNAT), egress by ipBlock (with
//! `except`) and port, traffic from the node itself and a pod's to itself staying allowed,
//! and deleting policies restoring traffic.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::node::{http_get, json, ready_node};

const IMAGE: &str = "docker.io/library/busybox:test";

/// Which of `urls` pod `ns/pod` can fetch, in one kubectl exec (busybox wget, 2 s timeout
/// each; blocked connections to a pod address are reset at once, those through a Service
/// time out).
fn fetch(s: &Server, ns: &str, pod: &str, urls: &[&str]) -> Vec<bool> {
    let script =
        "for u; do busybox timeout 2 wget -qO- \"$u\" >/dev/null 2>&1 && echo y || echo n; done";
    let mut args = vec!["exec", "-n", ns, pod, "--", "sh", "-c", script, "sh"];
    args.extend_from_slice(urls);
    let out = s.kubectl(KUBECTL_NEW, &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l == "y")
        .collect()
}

/// Waits until `ns/pod` can fetch exactly the `urls` marked allowed; panics with the rules if
/// it does not.
fn expect(s: &Server, ns: &str, pod: &str, urls: &[(&str, bool)]) {
    let list: Vec<&str> = urls.iter().map(|u| u.0).collect();
    let want: Vec<bool> = urls.iter().map(|u| u.1).collect();
    let mut got = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        got = fetch(s, ns, pod, &list);
        (got == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{ns}/{pod} -> {urls:?}: allowed {got:?}\n{}",
        nft_list(s)
    );
}

fn nft_list(s: &Server) -> String {
    let out = s
        .command("nft")
        .args(["list", "table", "ip", "kubox-netpol"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn apply(s: &Server, yaml: &str) {
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], yaml);
}

/// A pod serving HTTP on 8080 (port `http`) and 8081.
fn server_pod(ns: &str, name: &str, labels: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{namespace: {ns}, name: {name}, labels: {labels}}}
spec:
  containers:
  - name: web
    image: {IMAGE}
    command: [sh, -c, "httpd -p 8081 -h /www; exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}, {{name: alt, containerPort: 8081}}]
"#
    )
}

fn pod_ip(s: &Server, ns: &str, name: &str) -> String {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "-n", ns, name, "-o", "json"]));
    p["status"]["podIP"].as_str().unwrap().to_string()
}

#[test]
fn network_policies_block_and_allow_ingress_and_egress() {
    let s = ready_node();
    for ns in ["np", "np2"] {
        s.k(KUBECTL_NEW, &["create", "namespace", ns]);
        assert!(s.default_service_account_within(ns, Duration::from_secs(30)));
    }
    apply(
        &s,
        &[
            server_pod("np", "web", "{app: web}"),
            server_pod("np", "client", "{role: client}"),
            server_pod("np", "other", "{role: other}"),
            server_pod("np2", "outside", "{role: client}"),
        ]
        .join("---"),
    );
    apply(
        &s,
        r#"
apiVersion: v1
kind: Service
metadata: {namespace: np, name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "wait",
            "--for=condition=Ready",
            "pod",
            "--all",
            "-A",
            "--timeout=120s",
        ],
    );
    assert!(out.status.success(), "pods not ready:\n{}", s.log());
    let web = pod_ip(&s, "np", "web");
    let outside = pod_ip(&s, "np2", "outside");
    let svc = json(&s.k(
        KUBECTL_NEW,
        &["get", "service", "-n", "np", "web", "-o", "json"],
    ));
    let svc = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let web_http = &format!("http://{web}:8080/");
    let web_alt = &format!("http://{web}:8081/");
    let web_svc = &format!("http://{svc}/");
    let outside_http = &format!("http://{outside}:8080/");

    // The agent may read what it needs cluster-wide, and change none of it.
    let as_node = |args: &[&str]| {
        let mut a = vec!["--as", "system:node:node-1", "--as-group", "system:nodes"];
        a.extend_from_slice(args);
        s.kubectl(KUBECTL_NEW, &a)
    };
    for what in ["networkpolicies", "namespaces", "pods"] {
        let out = as_node(&["get", what, "-A"]);
        assert!(out.status.success(), "{what}: {out:?}");
    }
    let out = as_node(&["auth", "can-i", "delete", "networkpolicies", "-n", "np"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no",
        "a node deletes no policy"
    );

    // No policy: everything reaches everything.
    expect(&s, "np", "other", &[(web_http, true), (web_svc, true)]);
    expect(&s, "np2", "outside", &[(web_http, true)]);

    // Default deny of ingress in np: nobody reaches web, neither directly nor through the
    // Service; pods of np still reach pods elsewhere (egress is not isolated); the node itself
    // (kubelet probes, host network) still reaches its pods.
    apply(
        &s,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: np, name: default-deny}
spec:
  podSelector: {}
"#,
    );
    expect(
        &s,
        "np",
        "client",
        &[(web_http, false), (web_svc, false), (outside_http, true)],
    );
    expect(&s, "np", "other", &[(web_http, false)]);
    expect(&s, "np2", "outside", &[(web_http, false)]);
    // A pod always reaches itself, here through its Service.
    expect(&s, "np", "web", &[(web_svc, true)]);
    assert!(
        http_get(&s, web_http).is_some(),
        "the node reaches its pods\n{}",
        nft_list(&s)
    );

    // Allow role=client of np at the named port `http` only: exactly that pod gets in, at
    // 8080 and through the Service, not at 8081; the role=client pod of np2 does not.
    apply(
        &s,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: np, name: web-from-clients}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: http}]
"#,
    );
    expect(
        &s,
        "np",
        "client",
        &[(web_http, true), (web_svc, true), (web_alt, false)],
    );
    expect(&s, "np", "other", &[(web_http, false), (web_svc, false)]);
    expect(&s, "np2", "outside", &[(web_http, false)]);

    // A second policy adds role=client pods of np2 (namespace and pod selector together):
    // allowed traffic is the union of both policies.
    apply(
        &s,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: np, name: web-from-np2}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: np2}}
      podSelector: {matchLabels: {role: client}}
"#,
    );
    expect(&s, "np2", "outside", &[(web_alt, true)]);
    expect(&s, "np", "client", &[(web_http, true), (web_alt, false)]);
    expect(&s, "np", "other", &[(web_http, false)]);

    // Deleting the policies restores traffic.
    s.k(
        KUBECTL_NEW,
        &["delete", "networkpolicy", "-n", "np", "--all"],
    );
    expect(&s, "np", "other", &[(web_alt, true)]);

    // Egress of role=other: only to web's address (ipBlock) at port 8080.
    let egress = |block: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{namespace: np, name: other-egress}}
spec:
  podSelector: {{matchLabels: {{role: other}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {block}}}]
    ports: [{{protocol: TCP, port: 8080}}]
"#
        )
    };
    apply(&s, &egress(&format!("{{cidr: {web}/32}}")));
    expect(
        &s,
        "np",
        "other",
        &[(web_alt, false), (web_http, true), (outside_http, false)],
    );
    expect(&s, "np", "client", &[(outside_http, true)]);
    // The pod network except web: now outside is reachable and web is not.
    apply(
        &s,
        &egress(&format!("{{cidr: 10.42.0.0/16, except: [{web}/32]}}")),
    );
    expect(
        &s,
        "np",
        "other",
        &[(outside_http, true), (web_http, false)],
    );
    s.k(
        KUBECTL_NEW,
        &["delete", "networkpolicy", "-n", "np", "other-egress"],
    );
    expect(&s, "np", "other", &[(web_alt, true)]);
    let table = nft_list(&s);
    assert!(
        !table.contains(&web) && table.contains("set ingress-isolated"),
        "no policy left, no address in the table:\n{table}"
    );
}
