//! The rendered Service proxy table is accepted by the kernel: applied with `nft` inside a
//! network namespace of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Command;

use kubox_network::proxy::{ServicePort, render};

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

/// Applies `script` in `ns` (it must be accepted) and lists kubox's table.
fn apply_and_list(ns: &str, script: &str) -> String {
    let out = nft_in(ns, script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "ip",
            "kubox-proxy",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listed.stdout).to_string()
}

#[test]
fn the_rendered_table_is_accepted_and_replaces_the_previous_one() {
    let ns = Netns(format!("kubox-test-proxy-{}", std::process::id()));
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success()
    );
    let web = ServicePort {
        id: "default/web:http".into(),
        protocol: "tcp".into(),
        port: 80,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 20), Ipv4Addr::new(192, 0, 2, 10)],
        node_port: Some(30080),
        endpoints: vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 0, 6), 8080),
        ],
    };
    let dns = ServicePort {
        id: "kube-system/dns:dns".into(),
        protocol: "udp".into(),
        port: 53,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 10)],
        node_port: None,
        endpoints: vec![(Ipv4Addr::new(10, 42, 0, 7), 53)],
    };
    let empty = ServicePort {
        id: "default/nobody:".into(),
        protocol: "tcp".into(),
        port: 80,
        addresses: vec![Ipv4Addr::new(10, 43, 0, 30)],
        node_port: Some(30081),
        endpoints: vec![],
    };
    let listed = apply_and_list(&ns.0, &render(&[web.clone(), dns, empty]));
    assert!(listed.contains("10.43.0.20 . tcp . 80"), "{listed}");
    assert!(listed.contains("10.43.0.10 . udp . 53"), "{listed}");
    assert!(listed.contains("dnat to 10.42.0.6:8080"), "{listed}");
    assert!(listed.contains("10.43.0.30 . tcp . 80"), "{listed}");
    // Applying again (one service fewer) replaces the table atomically.
    let listed = apply_and_list(&ns.0, &render(&[web]));
    assert!(!listed.contains("10.43.0.10"), "{listed}");
}
