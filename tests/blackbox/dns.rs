//! Cluster DNS: the `kube-dns` Service, and pods on a real node resolving Services, headless
//! Services and StatefulSet pods through the node-local kubox-dns behind the cluster DNS
//! address, with busybox's `nslookup` and `wget` (glibc's resolver with the pod's search path).
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::node::{json, ready_node};

#[test]
fn the_kube_dns_service_holds_the_cluster_dns_address() {
    let s = Server::start();
    let svc = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "service",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "json",
        ],
    ));
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    assert_eq!(svc["metadata"]["labels"]["kubernetes.io/name"], "CoreDNS");
    let ports: Vec<(String, String, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["protocol"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".to_string(), "UDP".to_string(), 53),
            ("dns-tcp".into(), "TCP".into(), 53),
            ("metrics".into(), "TCP".into(), 9153),
        ]
    );
}

/// What a container printed (its CRI log under the node's data dir, without the CRI prefix).
pub(crate) fn container_log(s: &Server, pod: &str, container: &str) -> String {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
    let path = s
        .data_dir()
        .join("agent/pods")
        .join(uid)
        .join("logs")
        .join(container)
        .join("0.log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for `pod` to finish; its phase.
fn finished(s: &Server, pod: &str) -> Option<String> {
    eventually(Duration::from_secs(120), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
        let phase = p["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
}

fn pod_ips(s: &Server, selector: &str) -> Vec<String> {
    let pods = json(&s.k(KUBECTL_NEW, &["get", "pods", "-l", selector, "-o", "json"]));
    let mut ips: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

#[test]
fn pods_resolve_services_headless_services_and_statefulset_pods_by_name() {
    let s = ready_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: docker.io/library/busybox:test, command: [httpd, -f, -p, "8080", -h, /www]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: docker.io/library/busybox:test, command: [httpd, -f, -p, "8080", -h, /www]}
"#,
    );
    for w in ["deployment/web", "statefulset/db"] {
        let out = s.kubectl(KUBECTL_NEW, &["rollout", "status", w, "--timeout=120s"]);
        assert!(
            out.status.success(),
            "{w}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.k(KUBECTL_NEW, &["get", "pods", "-o", "yaml"])
        );
    }
    let web_ip =
        json(&s.k(KUBECTL_NEW, &["get", "service", "web", "-o", "json"]))["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string();
    let web_pods = pod_ips(&s, "app=web");
    let db_pod = pod_ips(&s, "app=db");
    assert_eq!((web_pods.len(), db_pod.len()), (2, 1));

    // Every line prints what it resolved; the script fails on the first failure.
    let script = r#"
set -x
cat /etc/resolv.conf
for n in web web.default web.default.svc.cluster.local; do
  wget -qO- http://$n/ || exit 1
done
nslookup web.default.svc.cluster.local || exit 2
nslookup web-headless.default.svc.cluster.local || exit 3
nslookup db-0.db.default.svc.cluster.local || exit 4
nslookup WEB_IP || exit 5
if nslookup nope.default.svc.cluster.local; then exit 6; fi
echo dns-ok
"#
    .replace("WEB_IP", &web_ip);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "client"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "client", "image": "docker.io/library/busybox:test",
                "command": ["sh", "-c", script]}]}
        })
        .to_string(),
    );
    let phase = finished(&s, "client");
    let log = container_log(&s, "client", "client");
    assert_eq!(
        phase.as_deref(),
        Some("Succeeded"),
        "client log:\n{log}\n{}",
        s.log()
    );
    assert!(log.contains("dns-ok"), "{log}");
    assert!(log.contains("hello from kubox"), "{log}");
    assert!(
        log.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{log}"
    );
    assert!(log.contains("nameserver 10.43.0.10"), "{log}");
    assert!(log.contains("options ndots:5"), "{log}");
    assert!(log.contains(&format!("Address: {web_ip}")), "{log}");
    for ip in web_pods.iter().chain(&db_pod) {
        assert!(log.contains(&format!("Address: {ip}")), "{ip}: {log}");
    }
    assert!(
        log.contains("web.default.svc.cluster.local"),
        "PTR of the ClusterIP: {log}"
    );

    // From the node itself, through the cluster DNS address (the proxy's output path).
    let out = s
        .command("timeout")
        .args([
            "10",
            "/bin/busybox",
            "nslookup",
            "db-0.db.default.svc.cluster.local",
            "10.43.0.10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("Address: {}", db_pod[0])),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Scaling the headless Service's pods changes its answer.
    s.k(KUBECTL_NEW, &["scale", "deployment", "web", "--replicas=1"]);
    let one = eventually(Duration::from_secs(60), || {
        let out = s
            .command("timeout")
            .args([
                "10",
                "/bin/busybox",
                "nslookup",
                "web-headless.default.svc.cluster.local",
                "10.43.0.10",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let n = web_pods
            .iter()
            .filter(|ip| text.contains(&format!("Address: {ip}")))
            .count();
        (n == 1).then_some(text)
    });
    assert!(one.is_some(), "headless answer follows the endpoints");
}
