//! The node's Service proxy and host ports with real pods: load-balancer addresses (ServiceLB)
//! and externalIPs, traffic policies, ClientIP session affinity, UDP, hairpin, hostPort, and
//! stale rules at agent start. A "client" network namespace of the test's own, joined to the
//! node's by a veth pair, plays a machine of the LAN (192.0.2.2 → the node's 192.0.2.1).
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::node::{http_get, json, node_ready};

const NODE_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.2";
/// The node's address on the pod bridge: masqueraded traffic comes from it.
const BRIDGE_IP: &str = "10.42.0.1";
const IMAGE: &str = "docker.io/library/busybox:proxy";

/// A CGI script answering "<pod name> <client address>".
pub(crate) const WHO_CGI: &[u8] =
    b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$(hostname) $REMOTE_ADDR\"\n";

/// `udpecho` (tests/blackbox/udpecho.c), built static once per test run.
fn udpecho() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("udpecho");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/blackbox/udpecho.c");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let built = Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(
            built.success(),
            "building udpecho (needs gcc and libc6-dev)"
        );
        std::fs::rename(&tmp, &out).expect("udpecho in place");
        out
    })
    .clone()
}

/// A network namespace of the test's own playing a LAN machine, wired to a node.
struct Client {
    ns: String,
}

impl Client {
    /// Joins a new namespace to `s`'s by a veth pair: the node gets `NODE_IP`, the client
    /// `CLIENT_IP` and a route to 198.51.100.0/24 (external IPs) through the node.
    fn attach(s: &Server) -> Client {
        let node_ns = s.netns.clone().expect("a node");
        let c = Client {
            ns: format!("{node_ns}-c"),
        };
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().expect("run ip");
            assert!(ok.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &c.ns]);
        ip(&[
            "link", "add", "kbx-lan0", "netns", &node_ns, "type", "veth", "peer", "name", "eth0",
            "netns", &c.ns,
        ]);
        ip(&[
            "-n",
            &node_ns,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "kbx-lan0",
        ]);
        ip(&["-n", &node_ns, "link", "set", "kbx-lan0", "up"]);
        ip(&[
            "-n",
            &c.ns,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &c.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &c.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &c.ns,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            NODE_IP,
        ]);
        c
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// GET `url` from the client (5 s timeout): the body, or None.
    fn http_get(&self, url: &str) -> Option<String> {
        stdout_if_ok(
            self.command("timeout")
                .args(["5", "/bin/busybox", "wget", "-qO-", url]),
        )
    }

    /// One UDP datagram to `addr:port` from the client: the answer, or None.
    fn udp(&self, addr: &str, port: u16) -> Option<String> {
        stdout_if_ok(
            self.command(udpecho())
                .args(["send", addr, &port.to_string()]),
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn stdout_if_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One UDP datagram to `addr:port` from the node: the answer, or None.
fn udp_from_node(s: &Server, addr: &str, port: u16) -> Option<String> {
    stdout_if_ok(s.command(udpecho()).args(["send", addr, &port.to_string()]))
}

/// A Ready node at `NODE_IP` with the test image (busybox, the `who` CGI script, udpecho),
/// and a client on its LAN.
fn proxy_node() -> (Server, Client) {
    let udpecho = std::fs::read(udpecho()).expect("udpecho");
    let s = Server::start_node(&["--node-ip", NODE_IP], |data| {
        let images = data.join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        crate::images::write_busybox_image_with(
            &images.join("busybox-proxy.tar"),
            "proxy",
            &[
                ("www/cgi-bin/", b"", 0o755),
                ("www/cgi-bin/who", WHO_CGI, 0o755),
                ("bin/udpecho", &udpecho, 0o755),
            ],
        );
    });
    let client = Client::attach(&s);
    let ready = eventually(Duration::from_secs(120), || node_ready(&s).then_some(()));
    assert!(ready.is_some(), "node not ready:\n{}", s.log());
    (s, client)
}

/// Runs `who` pods (httpd with the CGI script on 8080, udpecho on 5353/UDP) and waits for them.
fn deploy_who(s: &Server, replicas: u32) -> Vec<(String, String)> {
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: who}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: who}}}}
  template:
    metadata: {{labels: {{app: who}}}}
    spec:
      containers:
      - name: web
        image: {IMAGE}
        command: [sh, -c, "udpecho serve 5353 & exec httpd -f -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}, {{containerPort: 5353, protocol: UDP}}]
"#
        ),
    );
    let out = s.kubectl(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/who", "--timeout=120s"],
    );
    assert!(
        out.status.success(),
        "rollout: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "yaml"])
    );
    let pods = json(&s.k(KUBECTL_NEW, &["get", "pods", "-l", "app=who", "-o", "json"]));
    let pods: Vec<(String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["status"]["podIP"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(pods.len(), replicas as usize);
    pods
}

fn service_json(s: &Server, name: &str) -> serde_json::Value {
    json(&s.k(KUBECTL_NEW, &["get", "service", name, "-o", "json"]))
}

fn cluster_ip(s: &Server, name: &str) -> String {
    service_json(s, name)["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string()
}

fn node_port(s: &Server, name: &str) -> u16 {
    service_json(s, name)["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("{name} has no nodePort"))
}

/// `(pod name, client address)` as the `who` CGI (or udpecho) answered; httpd's IPv4-mapped
/// form (`[::ffff:a.b.c.d]`) becomes `a.b.c.d`.
pub(crate) fn who(body: &str) -> (String, String) {
    let mut w = body.split_whitespace();
    let pod = w.next().unwrap_or_default().to_string();
    let from = w.next().unwrap_or_default();
    let from = from
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:");
    (pod, from.to_string())
}

/// `nft list table ip <table>` inside the node.
fn nft_list(s: &Server, table: &str) -> String {
    let out = s
        .command("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn nft(s: &Server, script: &str) {
    use std::io::Write;
    let mut child = s
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f: {script}");
}

#[test]
fn load_balancers_external_ips_and_traffic_policies() {
    let (s, client) = proxy_node();
    let pods = deploy_who(&s, 2);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Service
metadata: {name: who-lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: who}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: who-ext}
spec:
  type: NodePort
  externalIPs: [198.51.100.10]
  selector: {app: who}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: classed}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/elsewhere
  allocateLoadBalancerNodePorts: false
  selector: {app: who}
  ports: [{name: http, port: 81, targetPort: 8080}]
"#,
    );
    // ServiceLB: the node's address is the ingress; kubectl no longer shows <pending>.
    let ingress = eventually(Duration::from_secs(30), || {
        let svc = service_json(&s, "who-lb");
        svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(ingress.as_deref(), Some(NODE_IP));
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let table = s.k(v, &["get", "service", "who-lb", "classed"]);
        let lb_row = table.lines().find(|l| l.starts_with("who-lb")).unwrap();
        assert!(
            lb_row.contains(NODE_IP) && !lb_row.contains("<pending>"),
            "{table}"
        );
        let classed_row = table.lines().find(|l| l.starts_with("classed")).unwrap();
        assert!(classed_row.contains("<pending>"), "another class: {table}");
    }
    let classed = service_json(&s, "classed");
    assert!(
        classed["spec"]["ports"][0].get("nodePort").is_none(),
        "allocateLoadBalancerNodePorts: false: {classed}"
    );

    let names: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    // Local: the LAN client's address reaches the pod, at the load-balancer IP and the NodePort.
    let lb_port = node_port(&s, "who-lb");
    for url in [
        format!("http://{NODE_IP}:80/cgi-bin/who"),
        format!("http://{NODE_IP}:{lb_port}/cgi-bin/who"),
    ] {
        let body = eventually(Duration::from_secs(30), || client.http_get(&url))
            .unwrap_or_else(|| panic!("{url} from the LAN\n{}", nft_list(&s, "kubox-proxy")));
        let (pod, from) = who(&body);
        assert!(names.contains(&pod), "{body}");
        assert_eq!(from, CLIENT_IP, "Local keeps the source address: {url}");
    }
    // Cluster: the externalIP and the NodePort are masqueraded.
    let ext_port = node_port(&s, "who-ext");
    for url in [
        "http://198.51.100.10:80/cgi-bin/who".to_string(),
        format!("http://{NODE_IP}:{ext_port}/cgi-bin/who"),
    ] {
        let body = eventually(Duration::from_secs(30), || client.http_get(&url))
            .unwrap_or_else(|| panic!("{url} from the LAN\n{}", nft_list(&s, "kubox-proxy")));
        let (pod, from) = who(&body);
        assert!(names.contains(&pod), "{body}");
        assert_eq!(from, BRIDGE_IP, "Cluster masquerades: {url}");
    }

    // Local policies follow the endpoint's nodeName: an endpoint "on another node" serves
    // neither ClusterIP (internalTrafficPolicy: Local) nor NodePort (externalTrafficPolicy:
    // Local) traffic of this node; moved to this node, it serves both.
    let far_slice = |node: &str| {
        format!(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: far-1
  labels: {{kubernetes.io/service-name: far, endpointslice.kubernetes.io/managed-by: test}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{ip}"]
  nodeName: {node}
  conditions: {{ready: true}}
"#,
            ip = pods[0].1
        )
    };
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: far}}
spec:
  type: NodePort
  internalTrafficPolicy: Local
  externalTrafficPolicy: Local
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---{}"#,
            far_slice("node-2")
        ),
    );
    let far_ip = cluster_ip(&s, "far");
    let far_port = node_port(&s, "far");
    // Give the proxy time to see the slice, then both must fail.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        http_get(&s, &format!("http://{far_ip}/cgi-bin/who")),
        None,
        "internalTrafficPolicy: Local without a local endpoint"
    );
    assert_eq!(
        client.http_get(&format!("http://{NODE_IP}:{far_port}/cgi-bin/who")),
        None,
        "externalTrafficPolicy: Local without a local endpoint"
    );
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &far_slice("node-1"));
    let body = eventually(Duration::from_secs(30), || {
        http_get(&s, &format!("http://{far_ip}/cgi-bin/who"))
    });
    assert_eq!(who(body.as_deref().unwrap_or_default()).0, pods[0].0);
    let body = eventually(Duration::from_secs(30), || {
        client.http_get(&format!("http://{NODE_IP}:{far_port}/cgi-bin/who"))
    });
    assert_eq!(
        who(body.as_deref().unwrap_or_default()),
        (pods[0].0.clone(), CLIENT_IP.to_string())
    );
}

#[test]
fn client_ip_affinity_udp_and_hairpin() {
    let (s, client) = proxy_node();
    deploy_who(&s, 3);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: who}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: spread}
spec:
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: who-udp}
spec:
  type: NodePort
  selector: {app: who}
  ports: [{port: 53, targetPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: self}
spec:
  selector: {app: self}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    // Without affinity, requests spread over the pods; with it, a client keeps its pod.
    let pods_answering = |svc: &str| -> BTreeSet<String> {
        let ip = cluster_ip(&s, svc);
        let first = eventually(Duration::from_secs(30), || {
            http_get(&s, &format!("http://{ip}/cgi-bin/who"))
        });
        assert!(first.is_some(), "{svc}\n{}", nft_list(&s, "kubox-proxy"));
        (0..15)
            .filter_map(|_| http_get(&s, &format!("http://{ip}/cgi-bin/who")))
            .map(|b| who(&b).0)
            .collect()
    };
    let spread = pods_answering("spread");
    assert!(spread.len() > 1, "random choice over 3 pods: {spread:?}");
    let sticky = pods_answering("sticky");
    assert_eq!(sticky.len(), 1, "ClientIP affinity: {sticky:?}");
    let listed = nft_list(&s, "kubox-proxy");
    assert!(
        listed.contains("timeout 10m") && listed.contains(&format!("elements = {{ {BRIDGE_IP}")),
        "the client is remembered in an affinity set: {listed}"
    );
    // Affinity survives an unrelated update of the proxy rules.
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "service",
            "clusterip",
            "unrelated",
            "--tcp=80:8080",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pods_answering("sticky"), sticky);

    // UDP through the ClusterIP and the NodePort, from the node and the LAN.
    let udp_ip = cluster_ip(&s, "who-udp");
    let udp_port = node_port(&s, "who-udp");
    let answer = eventually(Duration::from_secs(30), || udp_from_node(&s, &udp_ip, 53));
    assert!(
        answer.as_deref().is_some_and(|a| a.starts_with("who-")),
        "UDP ClusterIP: {answer:?}\n{}",
        nft_list(&s, "kubox-proxy")
    );
    let answer = eventually(Duration::from_secs(30), || client.udp(NODE_IP, udp_port));
    assert!(
        answer.as_deref().is_some_and(|a| a.starts_with("who-")),
        "UDP NodePort: {answer:?}"
    );

    // A pod reaching itself through its own Service (hairpin), and UDP from a pod.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: self, labels: {{app: self}}}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command:
    - sh
    - -c
    - |
      httpd -p 8080 -h /www
      for i in $(seq 60); do
        if out=$(wget -qO- http://$SELF_SERVICE_HOST/cgi-bin/who); then echo "$out" > /www/hairpin; break; fi
        sleep 1
      done
      for i in $(seq 60); do
        if out=$(udpecho send $WHO_UDP_SERVICE_HOST 53); then echo "$out" > /www/udp; break; fi
        sleep 1
      done
      exec sleep 3600
"#
        ),
    );
    let pod_ip = eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "self", "-o", "json"]));
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    })
    .expect("pod self running");
    let hairpin = eventually(Duration::from_secs(90), || {
        http_get(&s, &format!("http://{pod_ip}:8080/hairpin"))
    });
    assert_eq!(
        hairpin.as_deref().map(who),
        Some(("self".to_string(), BRIDGE_IP.to_string())),
        "hairpin traffic reaches the pod, masqueraded"
    );
    let udp = eventually(Duration::from_secs(90), || {
        http_get(&s, &format!("http://{pod_ip}:8080/udp"))
    });
    let (answerer, from) = who(udp.as_deref().unwrap_or_default());
    assert!(answerer.starts_with("who-"), "UDP from a pod: {udp:?}");
    assert_eq!(from, pod_ip, "pod-to-service traffic keeps its source");
}

#[test]
fn host_ports_follow_pods_and_agent_start_replaces_stale_rules() {
    let (mut s, client) = proxy_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hp}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: [sh, -c, "udpecho serve 5353 & exec httpd -f -p 8080 -h /www"]
    ports:
    - {{containerPort: 8080, hostPort: 18080}}
    - {{containerPort: 5353, hostPort: 15353, protocol: UDP}}
    - {{containerPort: 8080, hostPort: 18081, hostIP: "{NODE_IP}"}}
"#
        ),
    );
    let url = format!("http://{NODE_IP}:18080/cgi-bin/who");
    let body = eventually(Duration::from_secs(90), || client.http_get(&url))
        .unwrap_or_else(|| panic!("{url}\n{}", nft_list(&s, "kubox-hostports")));
    assert_eq!(who(&body), ("hp".to_string(), CLIENT_IP.to_string()));
    let answer = eventually(Duration::from_secs(30), || client.udp(NODE_IP, 15353));
    assert_eq!(
        answer.as_deref().map(who),
        Some(("hp".to_string(), CLIENT_IP.to_string())),
        "UDP host port"
    );
    // hostIP: only that address.
    assert!(
        client
            .http_get(&format!("http://{NODE_IP}:18081/"))
            .is_some()
    );
    assert!(http_get(&s, &format!("http://{BRIDGE_IP}:18080/")).is_some());
    assert_eq!(
        http_get(&s, &format!("http://{BRIDGE_IP}:18081/")),
        None,
        "hostIP {NODE_IP} only"
    );

    // Rules left by an earlier run go when the agent starts; other tables stay.
    nft(
        &s,
        "add chain ip kubox-proxy stale-chain\nadd chain ip kubox-hostports stale-chain\nadd table ip not-kubox\n",
    );
    s.restart_node_process("KILL");
    let clean = eventually(Duration::from_secs(60), || {
        let (proxy, hostports) = (nft_list(&s, "kubox-proxy"), nft_list(&s, "kubox-hostports"));
        (!proxy.is_empty()
            && !proxy.contains("stale-chain")
            && !hostports.contains("stale-chain")
            && hostports.contains("18080"))
        .then_some(())
    });
    assert!(
        clean.is_some(),
        "{}\n{}",
        nft_list(&s, "kubox-proxy"),
        nft_list(&s, "kubox-hostports")
    );
    assert!(
        nft_list(&s, "not-kubox").contains("table ip not-kubox"),
        "only kubox's own tables are touched"
    );
    assert!(
        eventually(Duration::from_secs(30), || client.http_get(&url)).is_some(),
        "the host port after the restart"
    );

    // A deleted pod's host ports go.
    s.k(KUBECTL_NEW, &["delete", "pod", "hp", "--timeout=60s"]);
    let gone = eventually(Duration::from_secs(30), || {
        (!nft_list(&s, "kubox-hostports").contains("18080")).then_some(())
    });
    assert!(gone.is_some(), "{}", nft_list(&s, "kubox-hostports"));
    assert_eq!(client.http_get(&url), None);
}
