//! Host ports (the CNI `portmap` plugin's semantics) as an nftables table of kubox's own,
//! `ip kubox-hostports`: a pod's `containerPort` with a `hostPort` is DNATed from the node's
//! addresses (every local address but loopback, or only `hostIP` when set) at that port.
//! Hairpin traffic (a pod reaching its own host port) is masqueraded; other clients keep their
//! source address. The table holds no dynamic state, so every change replaces it whole in one
//! transaction.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::proxy::{MASQ_MARK, elements, short_hash};

/// The table kubox owns for host ports.
pub const TABLE: &str = "kubox-hostports";

/// One host port of one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `namespace/name` of the pod (for comments).
    pub pod: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `hostIP` (None: every local address).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// The script replacing the whole table (stale mappings of an earlier run go with it).
pub fn render(ports: &[HostPort]) -> String {
    let mut any_ip: BTreeMap<String, String> = BTreeMap::new();
    let mut by_ip: BTreeMap<String, String> = BTreeMap::new();
    let mut chains = String::new();
    let mut sorted = ports.to_vec();
    sorted.sort();
    for hp in &sorted {
        let proto = &hp.protocol;
        let key = match hp.host_ip {
            Some(ip) => format!("{ip} . {proto} . {}", hp.host_port),
            None => format!("{proto} . {}", hp.host_port),
        };
        let map = if hp.host_ip.is_some() {
            &mut by_ip
        } else {
            &mut any_ip
        };
        if map.contains_key(&key) {
            continue; // two pods on one host port: the first keeps it
        }
        let id = short_hash(&format!("{}/{key}", hp.pod));
        map.insert(key, format!("goto hp-{id}"));
        let _ = writeln!(
            chains,
            "  chain hp-{id} {{\n    comment \"{} {proto}/{}\"\n    ip saddr {ip} ct mark set ct mark | {MASQ_MARK:#x}\n    meta l4proto {proto} dnat to {ip}:{}\n  }}",
            hp.pod,
            hp.host_port,
            hp.container_port,
            ip = hp.pod_ip,
        );
    }
    let pairs = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter().map(|(k, v)| format!("{k} : {v}")).collect()
    };
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    let _ = write!(
        s,
        "  map hostip-ports {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&pairs(&by_ip))
    );
    let _ = write!(
        s,
        "  map hostports {{\n    type inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&pairs(&any_ip))
    );
    // Before the Service proxy's DNAT (priority -100): the first NAT binding wins.
    for hook in ["prerouting", "output"] {
        let _ = writeln!(
            s,
            "  chain nat-{hook} {{\n    type nat hook {hook} priority -101; policy accept;\n    ip daddr . meta l4proto . th dport vmap @hostip-ports\n    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @hostports\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ct mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n  }}"
    );
    s.push_str(&chains);
    s.push_str("}\n");
    s
}

/// Removes kubox's host-port table (nothing else).
pub fn flush() -> Result<(), String> {
    crate::proxy::apply(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(pod: &str, host_ip: Option<Ipv4Addr>, port: u16) -> HostPort {
        HostPort {
            pod: pod.into(),
            protocol: "tcp".into(),
            host_ip,
            host_port: port,
            pod_ip: Ipv4Addr::new(10, 42, 0, 7),
            container_port: 8080,
        }
    }

    #[test]
    fn host_ports_map_to_dnat_chains() {
        let s = render(&[
            hp("default/a", None, 8081),
            hp("default/b", Some(Ipv4Addr::new(192, 0, 2, 1)), 8082),
        ]);
        assert!(s.starts_with("table ip kubox-hostports {}\ndelete table ip kubox-hostports\n"));
        assert!(s.contains("elements = { tcp . 8081 : goto hp-"), "{s}");
        assert!(
            s.contains("elements = { 192.0.2.1 . tcp . 8082 : goto hp-"),
            "{s}"
        );
        assert!(s.contains("ip saddr 10.42.0.7 ct mark set"), "hairpin: {s}");
        assert!(s.contains("meta l4proto tcp dnat to 10.42.0.7:8080"), "{s}");
    }

    #[test]
    fn a_host_port_taken_twice_goes_to_the_first_pod() {
        let s = render(&[hp("default/b", None, 8081), hp("default/a", None, 8081)]);
        assert_eq!(s.matches("tcp . 8081 :").count(), 1, "{s}");
        assert!(s.contains("\"default/a tcp/8081\""), "{s}");
    }
}
