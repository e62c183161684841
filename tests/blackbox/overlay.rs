//! The multi-node pod network (flannel's VXLAN backend): two "machines" — network namespaces
//! joined by a veth pair (192.168.230.1 and .2) — run `kubox server` and a joined
//! `kubox agent`. Pods on the two nodes reach each other by pod IP without SNAT, a Service
//! whose only endpoint is on the other node works by ClusterIP and NodePort, and a Node that
//! goes takes its routes, neighbour and FDB entries with it.
use std::process::Command;
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::join::{Agent, agent_dir, join_command, join_token, spawn_agent};
use crate::node::json;
use crate::service_proxy::{WHO_CGI, who};

const NODE1_IP: &str = "192.168.230.1";
const NODE2_IP: &str = "192.168.230.2";
const IMAGE: &str = "docker.io/library/busybox:overlay";

/// A network namespace of the test's own (machine 2), deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().expect("run ip");
    assert!(ok.success(), "ip {args:?}");
}

/// `program args…` run inside network namespace `ns`: its stdout if it succeeded.
fn run_in(ns: &str, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn write_image(data: &std::path::Path) {
    let images = data.join("agent").join("images");
    std::fs::create_dir_all(&images).unwrap();
    crate::images::write_busybox_image_with(
        &images.join("busybox-overlay.tar"),
        "overlay",
        &[
            ("www/cgi-bin/", b"", 0o755),
            ("www/cgi-bin/who", WHO_CGI, 0o755),
        ],
    );
}

/// A web pod (httpd with the `who` CGI on 8080) bound to `node`.
fn web_pod(name: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"{name}"}}}},"spec":{{
            "nodeName":"{node}","terminationGracePeriodSeconds":0,
            "containers":[{{"name":"web","image":"{IMAGE}","command":["httpd","-f","-p","8080","-h","/www"]}}]}}}}"#
    )
}

/// GET `url` from inside pod `pod`: the body, or None.
fn get_from_pod(s: &Server, pod: &str, url: &str) -> Option<String> {
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "exec", pod, "--", "busybox", "timeout", "5", "wget", "-qO-", url,
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn node_json(s: &Server, name: &str) -> Option<serde_json::Value> {
    let out = s.kubectl(KUBECTL_NEW, &["get", "node", name, "-o", "json"]);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

/// The node once it is Ready with a podCIDR and flannel's annotations.
fn overlay_ready(s: &Server, name: &str) -> Option<serde_json::Value> {
    let n = node_json(s, name)?;
    let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let annotated =
        n["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"].is_string();
    (ready && n["spec"]["podCIDR"].is_string() && annotated).then_some(n)
}

fn logs(agent: &Agent, s: &Server) -> String {
    format!("agent:\n{}\nserver:\n{}", agent.log(), s.log())
}

fn pod_ip(s: &Server, pod: &str) -> Option<String> {
    let p = json(&s.k(KUBECTL_NEW, &["get", "pod", pod, "-o", "json"]));
    (p["status"]["phase"] == "Running")
        .then(|| p["status"]["podIP"].as_str().map(str::to_string))
        .flatten()
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_vxlan_overlay() {
    // Machine 2 exists first; machine 1 (the server's namespace) is wired to it before kubox
    // starts there.
    let m2 = Netns(format!(
        "kubox-test-{}-{}-m2",
        std::process::id(),
        crate::common::free_port()
    ));
    ip(&["netns", "add", &m2.0]);
    ip(&["-n", &m2.0, "link", "set", "lo", "up"]);
    let mut s = Server::start_node_in(
        &["--node-ip", NODE1_IP, "--bind-address", "0.0.0.0"],
        |ns1, data| {
            ip(&[
                "link", "add", "eth1", "netns", ns1, "type", "veth", "peer", "name", "eth1",
                "netns", &m2.0,
            ]);
            for (ns, addr) in [(ns1, NODE1_IP), (m2.0.as_str(), NODE2_IP)] {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth1",
                ]);
                ip(&["-n", ns, "link", "set", "eth1", "up"]);
            }
            write_image(data);
        },
    );
    let ns1 = s.netns.clone().unwrap();
    let dir = agent_dir();
    write_image(&dir.path().join("data"));
    let cmd = join_command(
        &m2.0,
        &format!("https://{NODE1_IP}:{}", s.port),
        dir.path(),
        &join_token(&s),
        "node-2",
        NODE2_IP,
    );
    let agent: Agent = spawn_agent(cmd, dir);

    // Both nodes Ready, with their own podCIDRs and flannel's annotations.
    let n1 = eventually(Duration::from_secs(60), || overlay_ready(&s, "node-1"))
        .unwrap_or_else(|| panic!("node-1 not ready with the overlay\n{}", logs(&agent, &s)));
    let n2 = eventually(Duration::from_secs(60), || overlay_ready(&s, "node-2"))
        .unwrap_or_else(|| panic!("node-2 not ready with the overlay\n{}", logs(&agent, &s)));
    let cidr1 = n1["spec"]["podCIDR"].as_str().unwrap().to_string();
    let cidr2 = n2["spec"]["podCIDR"].as_str().unwrap().to_string();
    assert_ne!(cidr1, cidr2);
    let a2 = &n2["metadata"]["annotations"];
    assert_eq!(a2["flannel.alpha.coreos.com/backend-type"], "vxlan");
    assert_eq!(a2["flannel.alpha.coreos.com/public-ip"], NODE2_IP);
    assert_eq!(a2["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
    let data2 = json(
        a2["flannel.alpha.coreos.com/backend-data"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(data2["VNI"], 1);
    let mac2 = data2["VtepMAC"].as_str().unwrap().to_string();
    let net2 = cidr2.split('/').next().unwrap().to_string();
    let net1 = cidr1.split('/').next().unwrap().to_string();
    assert_eq!(
        n1["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"],
        NODE1_IP
    );

    // flannel.1 on machine 1 as flannel makes it, with machine 2's entries.
    let link = run_in(&ns1, "ip", &["-d", "link", "show", "flannel.1"]).unwrap_or_default();
    for want in [
        "mtu 1450",
        "vxlan id 1",
        &format!("local {NODE1_IP}"),
        "dstport 8472",
        "nolearning",
    ] {
        assert!(link.contains(want), "{want:?} missing from {link}");
    }
    let mac1 = json(
        n1["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"]
            .as_str()
            .unwrap(),
    )["VtepMAC"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(link.contains(&format!("link/ether {mac1}")), "{link}");
    let entries = |ns: &str| {
        (
            run_in(ns, "ip", &["route", "show", "dev", "flannel.1"]).unwrap_or_default(),
            run_in(ns, "ip", &["neigh", "show", "dev", "flannel.1"]).unwrap_or_default(),
            run_in(ns, "bridge", &["fdb", "show", "dev", "flannel.1"]).unwrap_or_default(),
        )
    };
    let route2 = format!("{cidr2} via {net2} onlink");
    let neigh2 = format!("{net2} lladdr {mac2} PERMANENT");
    let fdb2 = format!("{mac2} dst {NODE2_IP} self permanent");
    let present = eventually(Duration::from_secs(20), || {
        let (r, n, f) = entries(&ns1);
        (r.contains(&route2) && n.contains(&neigh2) && f.contains(&fdb2)).then_some(())
    });
    assert!(
        present.is_some(),
        "machine 1 lacks machine 2's entries: {:?}\n{}",
        entries(&ns1),
        logs(&agent, &s)
    );
    let addr = run_in(&ns1, "ip", &["-4", "addr", "show", "dev", "flannel.1"]).unwrap_or_default();
    assert!(addr.contains(&format!("inet {net1}/32")), "{addr}");

    // A pod on each node.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            "{}\n{}",
            web_pod("web-1", "node-1"),
            web_pod("web-2", "node-2")
        ),
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web-2"},"spec":{
            "type":"NodePort","selector":{"app":"web-2"},"ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    let ip1 = eventually(Duration::from_secs(60), || pod_ip(&s, "web-1"))
        .unwrap_or_else(|| panic!("web-1 did not run\n{}", logs(&agent, &s)));
    let ip2 = eventually(Duration::from_secs(60), || pod_ip(&s, "web-2"))
        .unwrap_or_else(|| panic!("web-2 did not run\n{}", logs(&agent, &s)));

    // Pod to pod across the overlay, both ways: the server sees the client pod's own address.
    let url2 = format!("http://{ip2}:8080/cgi-bin/who");
    let body = eventually(Duration::from_secs(20), || get_from_pod(&s, "web-1", &url2))
        .unwrap_or_else(|| panic!("web-1 cannot reach web-2 at {ip2}\n{}", logs(&agent, &s)));
    assert_eq!(who(&body), ("web-2".to_string(), ip1.clone()), "{body}");
    let url1 = format!("http://{ip1}:8080/cgi-bin/who");
    let body = eventually(Duration::from_secs(20), || get_from_pod(&s, "web-2", &url1))
        .unwrap_or_else(|| panic!("web-2 cannot reach web-1 at {ip1}\n{}", logs(&agent, &s)));
    assert_eq!(who(&body), ("web-1".to_string(), ip2.clone()), "{body}");

    // The Service's only endpoint is on node 2: its ClusterIP from node 1's pod (no SNAT
    // either), its NodePort on node 1 from machine 2 (forwarded across, masqueraded to node
    // 1's overlay address).
    let svc = json(&s.k(KUBECTL_NEW, &["get", "service", "web-2", "-o", "json"]));
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let url = format!("http://{cluster_ip}/cgi-bin/who");
    let body = eventually(Duration::from_secs(20), || get_from_pod(&s, "web-1", &url))
        .unwrap_or_else(|| {
            panic!(
                "web-1 cannot reach the ClusterIP {cluster_ip}\n{}",
                logs(&agent, &s)
            )
        });
    assert_eq!(who(&body), ("web-2".to_string(), ip1.clone()), "{body}");
    let url = format!("http://{NODE1_IP}:{node_port}/cgi-bin/who");
    let body = eventually(Duration::from_secs(20), || {
        run_in(
            &m2.0,
            "timeout",
            &["5", "/bin/busybox", "wget", "-qO-", &url],
        )
    })
    .unwrap_or_else(|| {
        panic!(
            "no answer from node 1's NodePort {node_port}\n{}",
            logs(&agent, &s)
        )
    });
    assert_eq!(who(&body), ("web-2".to_string(), net1.clone()), "{body}");

    // Node 1's kubox restarts with a stale peer's entries on flannel.1 (an earlier run's): the
    // device stays (same interface index), the stale entries go, node 2's stay.
    let index = |ns: &str| {
        run_in(ns, "ip", &["-o", "link", "show", "flannel.1"])
            .and_then(|l| l.split(':').next().map(str::to_string))
    };
    let before = index(&ns1).expect("flannel.1 on machine 1");
    let stale_mac = "0e:6b:c0:a8:e6:63";
    for cmd in [
        vec![
            "ip",
            "route",
            "add",
            "10.42.99.0/24",
            "via",
            "10.42.99.0",
            "dev",
            "flannel.1",
            "onlink",
        ],
        vec![
            "ip",
            "neigh",
            "add",
            "10.42.99.0",
            "lladdr",
            stale_mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ],
        vec![
            "bridge",
            "fdb",
            "append",
            stale_mac,
            "dst",
            "192.168.230.99",
            "dev",
            "flannel.1",
            "self",
            "permanent",
        ],
    ] {
        assert!(run_in(&ns1, cmd[0], &cmd[1..]).is_some(), "{cmd:?}");
    }
    s.restart_node_process("TERM");
    let reconciled = eventually(Duration::from_secs(30), || {
        let (r, n, f) = entries(&ns1);
        let stale = r.contains("10.42.99.0") || n.contains("10.42.99.0") || f.contains(stale_mac);
        let kept = r.contains(&route2) && n.contains(&neigh2) && f.contains(&fdb2);
        (!stale && kept).then_some(())
    });
    assert!(
        reconciled.is_some(),
        "after a restart: {:?}\n{}",
        entries(&ns1),
        logs(&agent, &s)
    );
    assert_eq!(index(&ns1), Some(before), "flannel.1 was recreated");
    let body = eventually(Duration::from_secs(20), || get_from_pod(&s, "web-1", &url2))
        .unwrap_or_else(|| {
            panic!(
                "web-1 cannot reach web-2 after a restart\n{}",
                logs(&agent, &s)
            )
        });
    assert_eq!(who(&body), ("web-2".to_string(), ip1.clone()), "{body}");

    // Node 2's Node goes: machine 1 drops its route, neighbour and FDB entries.
    s.k(KUBECTL_NEW, &["delete", "node", "node-2", "--wait=false"]);
    let gone = eventually(Duration::from_secs(20), || {
        let (r, n, f) = entries(&ns1);
        (!r.contains(&cidr2) && !n.contains(&net2) && !f.contains(&mac2)).then_some(())
    });
    assert!(
        gone.is_some(),
        "machine 1 kept machine 2's entries: {:?}\n{}",
        entries(&ns1),
        logs(&agent, &s)
    );
    drop(agent);
}
