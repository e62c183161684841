//! The Service proxy's kernel side: one nftables table (`ip kubox-proxy`) rendered from the
//! node's view of Services and their ready endpoints, replaced atomically in one `nft -f`
//! transaction. Lookups go through verdict maps keyed by (address, protocol, port), so the
//! rule count does not grow per service: a service port is one map element plus one chain
//! that picks an endpoint at random, and one chain per endpoint.
//!
//! Covered: ClusterIP, ExternalIPs, NodePort (every local address), hairpin (a pod reaching
//! itself through its Service is masqueraded), NodePort traffic masqueraded, service ports
//! without ready endpoints rejected (TCP reset / ICMP port unreachable), TCP, UDP and SCTP.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// The table kubox owns; nothing else is ever touched.
pub const TABLE: &str = "kubox-proxy";
/// The conntrack mark of connections to masquerade.
const MASQ_MARK: u32 = 0x4000;

/// One port of one Service, with the endpoints that may receive its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (for comments and stable chain names).
    pub id: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
    /// ClusterIP and ExternalIPs.
    pub addresses: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// Ready endpoints (address, target port).
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// A short stable name for chains of a service port.
fn chain_id(sp: &ServicePort) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{}/{}/{}", sp.id, sp.protocol, sp.port).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The whole table as an nft script (delete and recreate, atomically).
pub fn render(ports: &[ServicePort]) -> String {
    let mut s = String::new();
    let mut service_elems = Vec::new();
    let mut nodeport_elems = Vec::new();
    let mut rejects = Vec::new();
    let mut nodeport_rejects = Vec::new();
    let mut chains = String::new();
    let mut sorted: Vec<&ServicePort> = ports.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id).then(a.port.cmp(&b.port)));
    for sp in sorted {
        let id = chain_id(sp);
        let proto = &sp.protocol;
        if sp.endpoints.is_empty() {
            for a in &sp.addresses {
                rejects.push(format!("{a} . {proto} . {}", sp.port));
            }
            if let Some(np) = sp.node_port {
                nodeport_rejects.push(format!("{proto} . {np}"));
            }
            continue;
        }
        for a in &sp.addresses {
            service_elems.push(format!("{a} . {proto} . {} : goto svc-{id}", sp.port));
        }
        if let Some(np) = sp.node_port {
            nodeport_elems.push(format!("{proto} . {np} : goto nodeport-{id}"));
            let _ = writeln!(
                chains,
                "  chain nodeport-{id} {{\n    comment \"{} nodePort\"\n    ct mark set ct mark | {MASQ_MARK:#x}\n    goto svc-{id}\n  }}",
                sp.id
            );
        }
        let n = sp.endpoints.len();
        let _ = writeln!(chains, "  chain svc-{id} {{\n    comment \"{}\"", sp.id);
        if n == 1 {
            let _ = writeln!(chains, "    goto ep-{id}-0");
        } else {
            let picks: Vec<String> = (0..n).map(|i| format!("{i} : goto ep-{id}-{i}")).collect();
            let _ = writeln!(
                chains,
                "    numgen random mod {n} vmap {{ {} }}",
                picks.join(", ")
            );
        }
        let _ = writeln!(chains, "  }}");
        for (i, (ip, port)) in sp.endpoints.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain ep-{id}-{i} {{\n    ip saddr {ip} ct mark set ct mark | {MASQ_MARK:#x}\n    meta l4proto {proto} dnat to {ip}:{port}\n  }}"
            );
        }
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("    elements = {{ {} }}\n", v.join(", "))
        }
    };
    let _ = writeln!(
        s,
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let _ = write!(
        s,
        "  map services {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&service_elems)
    );
    let _ = write!(
        s,
        "  map nodeports {{\n    type inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&nodeport_elems)
    );
    let _ = write!(
        s,
        "  set no-endpoints {{\n    type ipv4_addr . inet_proto . inet_service\n{}  }}\n",
        elements(&rejects)
    );
    let _ = write!(
        s,
        "  set no-endpoint-nodeports {{\n    type inet_proto . inet_service\n{}  }}\n",
        elements(&nodeport_rejects)
    );
    // Numeric priorities: the `dstnat` keyword is refused for the output hook.
    for (hook, prio) in [("prerouting", "-100"), ("output", "-100")] {
        let _ = writeln!(
            s,
            "  chain nat-{hook} {{\n    type nat hook {hook} priority {prio}; policy accept;\n    ip daddr . meta l4proto . th dport vmap @services\n    fib daddr type local meta l4proto . th dport vmap @nodeports\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ct mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n  }}"
    );
    for hook in ["input", "forward", "output"] {
        let _ = writeln!(
            s,
            "  chain filter-{hook} {{\n    type filter hook {hook} priority -10; policy accept;\n    ip daddr . meta l4proto . th dport @no-endpoints meta l4proto tcp reject with tcp reset\n    ip daddr . meta l4proto . th dport @no-endpoints reject\n    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports meta l4proto tcp reject with tcp reset\n    fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject\n  }}"
        );
    }
    s.push_str(&chains);
    s.push_str("}\n");
    s
}

/// Applies an nft script in one transaction (`nft -f -`).
pub fn apply(script: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Routes the service CIDR to the pod bridge (`dev <bridge>`), so the node itself reaches
/// ClusterIPs even without a default route (an airgapped board): the output hook's DNAT then
/// sends the packet on to the chosen endpoint. Idempotent.
pub fn ensure_service_route(service_cidr: (Ipv4Addr, u8), bridge: &str) -> Result<(), String> {
    use crate::cni::netlink;
    let bridge = bridge.to_string();
    netlink::run(None, move |h| async move {
        let link = netlink::require_link(&h, &bridge).await?;
        let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(service_cidr.0, service_cidr.1)
            .output_interface(link.header.index)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .build();
        match h.route().add(msg).execute().await {
            Err(e) if netlink::errno(&e) != Some(libc::EEXIST) => {
                Err(netlink::nl_err(format_args!(
                    "add route {}/{} dev {bridge}",
                    service_cidr.0, service_cidr.1
                ))(e))
            }
            _ => Ok(()),
        }
    })
    .map_err(|e| e.to_string())
}

/// Removes kubox's table (nothing else).
pub fn flush() -> Result<(), String> {
    apply(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(endpoints: Vec<(Ipv4Addr, u16)>) -> ServicePort {
        ServicePort {
            id: "default/web:http".into(),
            protocol: "tcp".into(),
            port: 80,
            addresses: vec![Ipv4Addr::new(10, 43, 0, 20)],
            node_port: Some(30080),
            endpoints,
        }
    }

    #[test]
    fn services_with_endpoints_become_map_elements_and_dnat_chains() {
        let s = render(&[sp(vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 0, 6), 8080),
        ])]);
        assert!(s.contains("10.43.0.20 . tcp . 80 : goto svc-"), "{s}");
        assert!(s.contains("tcp . 30080 : goto nodeport-"), "{s}");
        assert!(s.contains("numgen random mod 2 vmap"), "{s}");
        assert!(s.contains("dnat to 10.42.0.5:8080"), "{s}");
        assert!(s.contains("ip saddr 10.42.0.6 ct mark set"), "{s}");
        assert!(s.starts_with("table ip kubox-proxy {}\ndelete table ip kubox-proxy\n"));
    }

    #[test]
    fn services_without_endpoints_are_rejected() {
        let s = render(&[sp(vec![])]);
        assert!(!s.contains("goto svc-"), "{s}");
        assert!(s.contains("elements = { 10.43.0.20 . tcp . 80 }"), "{s}");
        assert!(s.contains("elements = { tcp . 30080 }"), "{s}");
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = sp(vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)]);
        let mut b = a.clone();
        b.id = "default/api:http".into();
        assert_eq!(render(&[a.clone(), b.clone()]), render(&[b, a]));
    }
}
