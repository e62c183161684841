//! The rendered Service proxy table is accepted by the kernel: applied with `nft` inside a
//! network namespace of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Command;

use kubox_network::hostports::{self, HostPort};
use kubox_network::proxy::{Config, ServicePort, TABLE, render};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn nft_in(ns: &str, script: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Applies `script` in `ns` (it must be accepted) and lists `table`.
fn apply_and_list(ns: &str, script: &str, table: &str) -> String {
    let out = nft_in(ns, script);
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", table])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout).to_string()
}

fn netns(tag: &str) -> Netns {
    let ns = Netns(format!("kubox-test-{tag}-{}", std::process::id()));
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success()
    );
    ns
}

fn ports() -> Vec<ServicePort> {
    let web = ServicePort {
        id: "default/web:http".into(),
        protocol: "tcp".into(),
        port: 80,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 20)],
        external_addresses: vec![Ipv4Addr::new(192, 0, 2, 10)],
        node_port: Some(30080),
        endpoints: vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 1, 6), 8080),
        ],
        local_endpoints: vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)],
        external_local: true,
        affinity_timeout: Some(10800),
        ..Default::default()
    };
    let dns = ServicePort {
        id: "kube-system/dns:dns".into(),
        protocol: "udp".into(),
        port: 53,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 10)],
        endpoints: vec![(Ipv4Addr::new(10, 42, 0, 7), 53)],
        internal_local: true,
        ..Default::default()
    };
    let empty = ServicePort {
        id: "default/nobody:".into(),
        protocol: "tcp".into(),
        port: 80,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 30)],
        node_port: Some(30081),
        ..Default::default()
    };
    vec![web, dns, empty]
}

#[test]
fn the_rendered_table_is_accepted_and_replaces_the_previous_one() {
    let ns = netns("proxy");
    let cfg = Config {
        cluster_cidr: Some((Ipv4Addr::new(10, 42, 0, 0), 16)),
    };
    let first = render(&cfg, &ports());
    let listed = apply_and_list(&ns.0, &first.replace_script(), TABLE);
    assert!(listed.contains("10.43.0.20 . tcp . 80"), "{listed}");
    assert!(
        listed.contains("192.0.2.10 . tcp . 80 : goto ext-"),
        "{listed}"
    );
    assert!(listed.contains("10.43.0.10 . udp . 53 : drop"), "{listed}");
    assert!(listed.contains("dnat to 10.42.1.6:8080"), "{listed}");
    assert!(listed.contains("10.43.0.30 . tcp . 80"), "{listed}");
    assert!(listed.contains("flags dynamic,timeout"), "{listed}");
    // A client remembered by an affinity set survives an update that keeps its endpoint.
    let kept = first
        .affinity_sets()
        .map(str::to_string)
        .find(|set| {
            listed.contains(&format!("update @{set}")) && {
                let chain = listed
                    .split(&format!("update @{set}"))
                    .next()
                    .unwrap_or_default();
                chain
                    .rsplit("chain ")
                    .next()
                    .unwrap_or_default()
                    .contains("ip saddr 10.42.0.5")
            }
        })
        .expect("the affinity set of 10.42.0.5");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "nft",
            "add",
            "element",
            "ip",
            TABLE,
            &kept,
            "{ 198.51.100.7 }",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fewer = ports();
    fewer[0].endpoints.pop();
    fewer.remove(1);
    let second = render(&cfg, &fewer);
    let listed = apply_and_list(&ns.0, &second.update_script(&first), TABLE);
    assert!(!listed.contains("10.43.0.10"), "{listed}");
    assert!(!listed.contains("10.42.1.6"), "{listed}");
    assert!(
        listed.contains("198.51.100.7"),
        "the client is still remembered: {listed}"
    );
    assert_eq!(second.affinity_sets().count(), 1, "{listed}");
    // At start the whole table is replaced: the client is forgotten.
    let listed = apply_and_list(&ns.0, &second.replace_script(), TABLE);
    assert!(!listed.contains("198.51.100.7"), "{listed}");
    assert!(listed.contains("dnat to 10.42.0.5:8080"), "{listed}");
}

#[test]
fn the_host_port_table_is_accepted() {
    let ns = netns("hostports");
    let hp = |host_ip, protocol: &str| HostPort {
        pod: "default/web".into(),
        protocol: protocol.into(),
        host_ip,
        host_port: 8081,
        pod_ip: Ipv4Addr::new(10, 42, 0, 5),
        container_port: 8080,
    };
    let listed = apply_and_list(
        &ns.0,
        &hostports::render(&[
            hp(None, "tcp"),
            hp(None, "udp"),
            hp(Some(Ipv4Addr::new(192, 0, 2, 1)), "tcp"),
        ]),
        hostports::TABLE,
    );
    assert!(listed.contains("udp . 8081 : goto hp-"), "{listed}");
    assert!(
        listed.contains("192.0.2.1 . tcp . 8081 : goto hp-"),
        "{listed}"
    );
    assert!(listed.contains("dnat to 10.42.0.5:8080"), "{listed}");
    let listed = apply_and_list(&ns.0, &hostports::render(&[]), hostports::TABLE);
    assert!(!listed.contains("10.42.0.5"), "{listed}");
}

/// Prints how long rendering and applying a large table take (a measurement, not a check):
/// `cargo test -p kubox-network --test proxy -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_large_tables() {
    let ns = netns("proxy-measure");
    let cfg = Config::default();
    let services: Vec<ServicePort> = (0..2000u32)
        .map(|i| {
            let [_, _, hi, lo] = i.to_be_bytes();
            let ep = |n: u8| (Ipv4Addr::new(10, 42, hi.wrapping_add(n), lo), 8080);
            ServicePort {
                id: format!("default/svc-{i}:http"),
                protocol: "tcp".into(),
                port: 80,
                addresses: vec![Ipv4Addr::new(10, 43, hi, lo)],
                node_port: u16::try_from(30000 + i).ok(),
                endpoints: vec![ep(0), ep(8), ep(16)],
                local_endpoints: vec![ep(0)],
                affinity_timeout: (i % 2 == 0).then_some(600),
                ..Default::default()
            }
        })
        .collect();
    let t = std::time::Instant::now();
    let first = render(&cfg, &services);
    let render_time = t.elapsed();
    let script = first.replace_script();
    let t = std::time::Instant::now();
    apply_and_list(&ns.0, &script, "kubox-proxy-none");
    let replace_time = t.elapsed();
    let mut changed = services.clone();
    changed[7].endpoints.pop();
    let second = render(&cfg, &changed);
    let update = second.update_script(&first);
    let t = std::time::Instant::now();
    apply_and_list(&ns.0, &update, "kubox-proxy-none");
    let update_time = t.elapsed();
    println!(
        "2000 service ports x 3 endpoints: render {render_time:?}, script {} KiB, replace {replace_time:?}, update {update_time:?} ({} KiB)",
        script.len() / 1024,
        update.len() / 1024
    );
}

#[test]
fn the_network_policy_table_is_accepted() {
    use kubox_network::netpol::{self, Policy, Ports, Rule};
    let ns = netns("netpol");
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let policy = Policy {
        id: "default/web".into(),
        pods: vec![ip("10.42.0.5"), ip("10.42.0.6")],
        ingress: Some(vec![
            Rule {
                peers: Some(
                    [(ip("10.42.0.9"), ip("10.42.0.9"))]
                        .into_iter()
                        .chain(netpol::block_ranges(
                            (ip("192.0.2.0"), 24),
                            &[(ip("192.0.2.128"), 25)],
                        ))
                        .collect(),
                ),
                ports: Some(Ports {
                    any_dest: vec![("tcp".into(), 80, 80), ("sctp".into(), 0, 65535)],
                    per_dest: vec![(ip("10.42.0.5"), "tcp".into(), 8080)],
                }),
            },
            Rule::default(),
        ]),
        egress: Some(vec![Rule {
            peers: None,
            ports: Some(Ports {
                any_dest: vec![("udp".into(), 53, 53), ("tcp".into(), 1000, 2000)],
                per_dest: vec![],
            }),
        }]),
    };
    let listed = apply_and_list(&ns.0, &netpol::render(&[policy]), netpol::TABLE);
    assert!(
        listed.contains("elements = { 10.42.0.9, 192.0.2.0/25 }"),
        "{listed}"
    );
    assert!(listed.contains("tcp . 80"), "{listed}");
    assert!(listed.contains("10.42.0.5 . tcp . 8080"), "{listed}");
    assert!(listed.contains("tcp . 1000-2000"), "{listed}");
    assert!(listed.contains("hook forward priority filter"), "{listed}");
    assert!(listed.contains("10.42.0.6 . 10.42.0.6"), "{listed}");
    // An update replaces the table: no policy, nothing isolated.
    let listed = apply_and_list(&ns.0, &netpol::render(&[]), netpol::TABLE);
    assert!(!listed.contains("10.42.0.5"), "{listed}");
    assert!(listed.contains("set ingress-isolated"), "{listed}");
}
