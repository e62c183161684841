//! Integration tests of the CNI plugin against real network namespaces (run as root).
//!
//! Every test makes its own "node" namespace (the plugin runs on a thread that entered it, so
//! the bridge and host veths live there, never on the host) and "pod" namespaces, all named
//! `kubox-test-<pid>-<test>-<role>` and deleted by Drop guards even when a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubox_network::cni;
use serde_json::{Value, json};

/// A network namespace made for one test, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new(test: &str, role: &str) -> Self {
        let name = format!("kubox-test-{}-{test}-{role}", std::process::id());
        // A leftover of a crashed earlier run with the same pid: replace it.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Self { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `ip -j <args>` inside the namespace and parses its JSON output.
    fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["-j", "-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Runs `ip <args>` inside the namespace; whether it succeeded.
    fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .status()
            .unwrap()
            .success()
    }

    /// Runs `f` on a thread that entered this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// The names of this namespace's links.
    fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One pod network (node namespace, IPAM dir, config) under test.
struct Net {
    node: Netns,
    data: tempfile::TempDir,
    /// The single-plugin config containerd hands the bridge plugin.
    conf: Value,
}

impl Net {
    fn new(test: &str, cidr: &str, version: &str) -> Self {
        let node = Netns::new(test, "node");
        let data = tempfile::tempdir().unwrap();
        let list: Value =
            serde_json::from_str(&cni::conflist(cidr, "cni0", 1400, data.path())).unwrap();
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = json!(version);
        conf["name"] = list["name"].clone();
        Self { node, data, conf }
    }

    /// Runs the plugin inside the node namespace.
    fn call(
        &self,
        plugin: &str,
        cmd: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> (i32, Value) {
        let env: HashMap<String, String> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let stdin = serde_json::to_vec(conf).unwrap();
        let mut out = Vec::new();
        let code = self.node.run(|| cni::main(plugin, &env, &stdin, &mut out));
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (code, v)
    }

    fn bridge(&self, cmd: &str, id: &str, pod: &Netns) -> (i32, Value) {
        self.call("bridge", cmd, id, &pod.path(), "eth0", &self.conf)
    }

    /// ADD that must succeed; returns the result and the pod's IP.
    fn add(&self, id: &str, pod: &Netns) -> (Value, Ipv4Addr) {
        let (code, res) = self.bridge("ADD", id, pod);
        assert_eq!(code, 0, "ADD {id}: {res}");
        let addr = res["ips"][0]["address"].as_str().unwrap();
        (
            res.clone(),
            addr.split('/').next().unwrap().parse().unwrap(),
        )
    }

    fn del(&self, id: &str, pod: &Netns) {
        let (code, res) = self.bridge("DEL", id, pod);
        assert_eq!(code, 0, "DEL {id}: {res}");
        assert_eq!(res, Value::Null);
    }

    /// The IP files of the network's IPAM dir.
    fn allocations(&self) -> Vec<String> {
        let dir: PathBuf = self.data.path().join("kubox");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect()
    }

    fn veths(&self) -> Vec<String> {
        self.node
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect()
    }

    /// The detailed `ip link` entry of `name` in the node namespace.
    fn node_link(&self, name: &str) -> Value {
        self.node.ip_json(&["-d", "link", "show", "dev", name])[0].clone()
    }
}

fn ipv4_addrs(ns: &Netns, dev: &str) -> Vec<String> {
    ns.ip_json(&["-4", "addr", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn is_up(ns: &Netns, dev: &str) -> bool {
    ns.ip_json(&["link", "show", "dev", dev])[0]["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "UP"))
}

/// Opens a TCP connection from `from` to `to_ip` (a listener inside `to`) and exchanges
/// a message each way.
fn tcp_roundtrip(from: &Netns, to: &Netns, to_ip: Ipv4Addr) {
    let listener = to.run(|| TcpListener::bind((to_ip, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            conn.write_all(b"pong").unwrap();
        });
        from.run(|| {
            let addr = SocketAddr::from((to_ip, port));
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"pong");
        });
        server.join().unwrap();
    });
}

fn ping_available() -> bool {
    Command::new("ping")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn host_ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

#[test]
fn two_pods_get_addresses_and_talk() {
    let host_forward = host_ip_forward();
    let net = Net::new("two", "10.244.1.0/24", "1.0.0");
    let (pod_a, pod_b) = (Netns::new("two", "a"), Netns::new("two", "b"));

    let (res_a, ip_a) = net.add("ctr-a", &pod_a);
    let (res_b, ip_b) = net.add("ctr-b", &pod_b);
    assert_ne!(ip_a, ip_b);
    let gw = Ipv4Addr::new(10, 244, 1, 1);
    for (res, ip, pod, id) in [
        (&res_a, ip_a, &pod_a, "ctr-a"),
        (&res_b, ip_b, &pod_b, "ctr-b"),
    ] {
        assert_eq!(res["cniVersion"], "1.0.0");
        let veth = cni::host_veth_name(id, "eth0");
        let ifaces = res["interfaces"].as_array().unwrap();
        assert_eq!(ifaces[0]["name"], "cni0");
        assert_eq!(ifaces[1]["name"], veth.as_str());
        assert_eq!(ifaces[2]["name"], "eth0");
        assert_eq!(ifaces[2]["sandbox"], pod.path().as_str());
        for i in ifaces {
            assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{i}");
        }
        assert_eq!(
            res["ips"],
            json!([{"address": format!("{ip}/24"), "gateway": gw.to_string(), "interface": 2}])
        );
        assert_eq!(
            res["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": gw.to_string()}])
        );
        assert!(Ipv4Addr::new(10, 244, 1, 2) <= ip && ip <= Ipv4Addr::new(10, 244, 1, 254));

        // Inside the pod: eth0 up with the address, MTU, default route via the gateway.
        assert!(is_up(pod, "eth0"));
        assert_eq!(ipv4_addrs(pod, "eth0"), [format!("{ip}/24")]);
        assert_eq!(
            pod.ip_json(&["link", "show", "dev", "eth0"])[0]["mtu"],
            1400
        );
        let routes = pod.ip_json(&["-4", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], gw.to_string().as_str(), "{routes}");
        assert_eq!(routes[0]["dev"], "eth0");
        assert_eq!(
            ifaces[2]["mac"],
            pod.ip_json(&["link", "show", "dev", "eth0"])[0]["address"]
        );

        // On the node: the host veth is an up port of cni0 in hairpin mode.
        let link = net.node_link(&veth);
        assert_eq!(link["master"], "cni0", "{link}");
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert_eq!(
            link["linkinfo"]["info_slave_data"]["hairpin"], true,
            "{link}"
        );
        assert_eq!(link["mtu"], 1400);
    }
    assert!(is_up(&net.node, "cni0"));
    assert_eq!(ipv4_addrs(&net.node, "cni0"), ["10.244.1.1/24"]);
    assert_eq!(net.node.run(host_ip_forward), "1\n");
    assert_eq!(host_ip_forward(), host_forward, "the host's sysctl changed");

    // loopback brings lo up.
    assert!(!is_up(&pod_a, "lo"));
    let lo_conf = json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"});
    let (code, res) = net.call("loopback", "ADD", "ctr-a", &pod_a.path(), "lo", &lo_conf);
    assert_eq!(code, 0, "{res}");
    assert_eq!(
        res,
        json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": pod_a.path()}],
               "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {}})
    );
    assert!(is_up(&pod_a, "lo"));
    let (code, res) = net.call("loopback", "CHECK", "ctr-a", &pod_a.path(), "lo", &lo_conf);
    assert_eq!((code, res), (0, Value::Null));
    let (code, _) = net.call("loopback", "CHECK", "ctr-b", &pod_b.path(), "lo", &lo_conf);
    assert_eq!(code, 1, "CHECK passes with lo down");
    let (code, _) = net.call("loopback", "DEL", "ctr-a", &pod_a.path(), "lo", &lo_conf);
    assert_eq!(code, 0);

    // Pod A reaches pod B across the bridge.
    tcp_roundtrip(&pod_a, &pod_b, ip_b);
    tcp_roundtrip(&pod_b, &pod_a, ip_a);
    if ping_available() {
        let ok = Command::new("ip")
            .args(["netns", "exec", &pod_a.name, "ping", "-c1", "-W2"])
            .arg(ip_b.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "ping {ip_b} from pod A failed");
    }

    // CHECK with the previous result passes.
    let mut conf = net.conf.clone();
    conf["prevResult"] = res_a.clone();
    let (code, res) = net.call("bridge", "CHECK", "ctr-a", &pod_a.path(), "eth0", &conf);
    assert_eq!((code, &res), (0, &Value::Null), "{res}");
    let (code, res) = net.bridge("CHECK", "ctr-b", &pod_b);
    assert_eq!((code, &res), (0, &Value::Null), "{res}");

    // DEL twice: the veth goes, the IP is freed.
    let veth_a = cni::host_veth_name("ctr-a", "eth0");
    net.del("ctr-a", &pod_a);
    net.del("ctr-a", &pod_a);
    assert!(!net.veths().contains(&veth_a));
    assert!(!pod_a.links().contains(&"eth0".to_string()));
    assert_eq!(net.allocations(), [ip_b.to_string()]);
    let (code, res) = net.bridge("CHECK", "ctr-a", &pod_a);
    assert_eq!((code, res["code"].as_u64()), (1, Some(3)), "{res}");
    net.del("ctr-b", &pod_b);
    assert!(net.allocations().is_empty());
    assert!(net.veths().is_empty());
}

#[test]
fn old_versions_get_old_results() {
    let net = Net::new("old", "10.244.2.0/24", "0.3.1");
    let pod = Netns::new("old", "a");
    let (res, ip) = net.add("ctr-old", &pod);
    assert_eq!(res["cniVersion"], "0.3.1");
    assert_eq!(
        res["ips"],
        json!([{"version": "4", "address": format!("{ip}/24"), "gateway": "10.244.2.1", "interface": 2}])
    );
    let (code, res) = net.bridge("CHECK", "ctr-old", &pod);
    assert_eq!((code, res["code"].as_u64()), (1, Some(1)), "{res}");
    assert_eq!(res["cniVersion"], "0.3.1");
    net.del("ctr-old", &pod);
    assert!(net.allocations().is_empty());
}

#[test]
fn add_del_cycles_reuse_addresses_and_leave_nothing() {
    // A /29 has 5 addresses to hand out (.1 is the gateway): 50 cycles wrap 10 times.
    let net = Net::new("cyc", "10.244.3.0/29", "1.0.0");
    let pod = Netns::new("cyc", "a");
    let mut seen = Vec::new();
    for i in 0..50 {
        let id = format!("cycle-{i}");
        let (_, ip) = net.add(&id, &pod);
        assert_eq!(net.veths().len(), 1);
        assert_eq!(net.allocations(), [ip.to_string()]);
        seen.push(ip.octets()[3]);
        net.del(&id, &pod);
        assert!(net.veths().is_empty());
        assert!(!pod.links().contains(&"eth0".to_string()));
    }
    let expected: Vec<u8> = (0..50).map(|i| 2 + (i % 5) as u8).collect();
    assert_eq!(seen, expected, "round-robin order");
    assert!(net.allocations().is_empty());
    let mut left: Vec<String> = std::fs::read_dir(net.data.path().join("kubox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["last_reserved_ip.0", "lock"]);
}

#[test]
fn concurrent_adds_never_share_an_address() {
    let net = Net::new("conc", "10.244.4.0/24", "1.0.0");
    let pods: Vec<Netns> = (0..6)
        .map(|i| Netns::new("conc", &format!("p{i}")))
        .collect();
    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let net = &net;
                s.spawn(move || net.add(&format!("conc-{i}"), pod).1)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: HashSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), pods.len(), "{ips:?}");
    assert_eq!(net.allocations().len(), pods.len());
    for i in 0..pods.len() {
        let link = net.node_link(&cni::host_veth_name(&format!("conc-{i}"), "eth0"));
        assert_eq!(link["master"], "cni0");
    }
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let net = &net;
            s.spawn(move || net.del(&format!("conc-{i}"), pod));
        }
    });
    assert!(net.allocations().is_empty());
    assert!(net.veths().is_empty());
}

#[test]
fn del_tolerates_missing_things() {
    let net = Net::new("del", "10.244.5.0/24", "1.0.0");
    // Never added, no netns at all.
    let (code, res) = net.call("bridge", "DEL", "ghost", "", "eth0", &net.conf);
    assert_eq!((code, res), (0, Value::Null));
    // The sandbox's namespace is already gone: DEL still frees the IP.
    let pod = Netns::new("del", "a");
    let path = pod.path();
    let (_, ip) = net.add("gone", &pod);
    assert_eq!(net.allocations(), [ip.to_string()]);
    drop(pod);
    assert!(!Path::new(&path).exists());
    let (code, res) = net.call("bridge", "DEL", "gone", &path, "eth0", &net.conf);
    assert_eq!((code, res), (0, Value::Null));
    assert!(net.allocations().is_empty());
    assert!(net.veths().is_empty());
    // ADD into a namespace that does not exist allocates nothing.
    let (code, res) = net.call("bridge", "ADD", "gone", &path, "eth0", &net.conf);
    assert_eq!((code, res["code"].as_u64()), (1, Some(4)), "{res}");
    assert!(net.allocations().is_empty());
}

#[test]
fn check_notices_damage() {
    let net = Net::new("chk", "10.244.6.0/24", "1.0.0");
    let pod = Netns::new("chk", "a");
    net.add("chk", &pod);
    assert_eq!(net.bridge("CHECK", "chk", &pod).0, 0);
    let veth = cni::host_veth_name("chk", "eth0");
    assert!(net.node.ip(&["link", "set", "dev", &veth, "nomaster"]));
    let (code, res) = net.bridge("CHECK", "chk", &pod);
    assert_eq!(code, 1);
    assert!(res["msg"].as_str().unwrap().contains("not a port"), "{res}");
    assert!(
        net.node
            .ip(&["link", "set", "dev", &veth, "master", "cni0"])
    );
    assert_eq!(net.bridge("CHECK", "chk", &pod).0, 0);
    assert!(pod.ip(&["addr", "flush", "dev", "eth0"]));
    let (code, res) = net.bridge("CHECK", "chk", &pod);
    assert_eq!(code, 1);
    assert!(res["msg"].as_str().unwrap().contains("address"), "{res}");
    let mut conf = net.conf.clone();
    conf["prevResult"] = json!({"ips": [{"address": "10.9.9.9/24"}]});
    let (code, _) = net.call("bridge", "CHECK", "chk", &pod.path(), "eth0", &conf);
    assert_eq!(code, 1);
    net.del("chk", &pod);
}

#[test]
fn failed_add_rolls_back() {
    let net = Net::new("rb", "10.244.7.0/24", "1.0.0");
    let pod = Netns::new("rb", "a");
    // Something already holds eth0 in the pod: the veth cannot be made.
    assert!(pod.ip(&["link", "add", "eth0", "type", "bridge"]));
    let (code, res) = net.bridge("ADD", "rb", &pod);
    assert_eq!(code, 1, "{res}");
    assert_eq!(res["code"], 999);
    assert!(net.allocations().is_empty(), "the IP was not released");
    assert!(net.veths().is_empty(), "the veth was left behind");
    // Once the obstacle is gone, ADD works (and is idempotent on retry).
    assert!(pod.ip(&["link", "del", "eth0"]));
    let (_, ip) = net.add("rb", &pod);
    let (_, again) = net.add("rb", &pod);
    assert_eq!(ip, again);
    assert_eq!(net.veths().len(), 1);
    net.del("rb", &pod);
    assert!(net.allocations().is_empty());
}
