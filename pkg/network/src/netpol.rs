//! NetworkPolicy enforcement as an nftables table of kubox's own, `ip kubox-netpol`, rendered
//! from the node's view of the policies that select its pods (the agent resolves selectors,
//! namespaces and named ports; this module only renders).
//!
//! One base chain on the `forward` hook (bridged pod-to-pod traffic gets there through
//! br_netfilter; Service traffic is seen after its DNAT, so with pod addresses):
//! - replies and related traffic of allowed connections pass (`ct state established,related`),
//!   and so does a pod's traffic to itself (hairpin through a Service);
//! - a packet to a pod isolated for ingress (`@ingress-isolated`) goes through `ingress`, one
//!   from a pod isolated for egress (`@egress-isolated`) through `egress`; each rule of each
//!   policy is one nft rule over sets (the policy's pods, the rule's peer addresses as
//!   intervals, its ports as `protocol . port-range` intervals, its named ports resolved to
//!   `address . protocol . port`), returning when it allows the packet; what no rule allows
//!   is rejected (TCP reset, else ICMP administratively prohibited), so clients fail fast.
//!
//! Traffic the node itself sends (host network, probes) and traffic to the node (the node-local
//! DNS on the bridge gateway) never crosses the forward hook, so it is never filtered. The table
//! holds no dynamic state, so every change replaces it whole in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::proxy::{elements, short_hash};

/// The table kubox owns for network policies.
pub const TABLE: &str = "kubox-netpol";

/// An inclusive range of addresses.
pub type Range = (Ipv4Addr, Ipv4Addr);

/// The ports a rule allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    /// `(protocol, first, last)` at any destination (numeric ports, `endPort` ranges, and a
    /// protocol without a port as 0-65535). Protocols are `tcp`, `udp` or `sctp`.
    pub any_dest: Vec<(String, u16, u16)>,
    /// `(destination, protocol, port)`: named ports resolved against each destination pod.
    pub per_dest: Vec<(Ipv4Addr, String, u16)>,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// The peers (sources of ingress, destinations of egress) as address ranges, in any order
    /// and possibly overlapping; None: every address.
    pub peers: Option<Vec<Range>>,
    /// None: every port of every protocol.
    pub ports: Option<Ports>,
}

/// One NetworkPolicy, as far as it concerns this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name` (comments and stable set names).
    pub id: String,
    /// The addresses of the pods on this node it selects.
    pub pods: Vec<Ipv4Addr>,
    /// Some when the policy isolates its pods for ingress: the rules allowing traffic to them.
    pub ingress: Option<Vec<Rule>>,
    /// Some when the policy isolates its pods for egress: the rules allowing traffic from them.
    pub egress: Option<Vec<Rule>>,
}

/// The addresses of `cidr` without those of `except`, as ranges.
pub fn block_ranges(cidr: (Ipv4Addr, u8), except: &[(Ipv4Addr, u8)]) -> Vec<Range> {
    let span = |(a, p): (Ipv4Addr, u8)| -> (u32, u32) {
        let mask = if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p.min(32)))
        };
        let first = u32::from(a) & mask;
        (first, first | !mask)
    };
    let mut out = vec![span(cidr)];
    for e in except {
        let (lo, hi) = span(*e);
        out = out
            .into_iter()
            .flat_map(|(a, b)| {
                let mut keep = Vec::new();
                if hi < a || lo > b {
                    keep.push((a, b));
                } else {
                    if lo > a {
                        keep.push((a, lo - 1));
                    }
                    if hi < b {
                        keep.push((hi + 1, b));
                    }
                }
                keep
            })
            .collect();
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}

/// Sorted, overlapping and adjacent ranges merged (nft refuses overlapping interval elements).
fn merge<T: Ord + Copy>(mut v: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort();
    let mut out: Vec<(T, T)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| a <= n) => {
                if b > last.1 {
                    last.1 = b;
                }
            }
            _ => out.push((a, b)),
        }
    }
    out
}

fn range_elem<T: std::fmt::Display + PartialEq>(a: T, b: T) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// The script replacing the whole table (stale rules of an earlier run go with it).
pub fn render(policies: &[Policy]) -> String {
    let mut sorted: Vec<&Policy> = policies.iter().filter(|p| !p.pods.is_empty()).collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut isolated: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut sets = String::new();
    let mut chains: BTreeMap<&str, String> = BTreeMap::new();
    for p in &sorted {
        let id = short_hash(&p.id);
        let pods: BTreeSet<Ipv4Addr> = p.pods.iter().copied().collect();
        let pod_elems: Vec<String> = pods.iter().map(ToString::to_string).collect();
        let _ = write!(
            sets,
            "  set pods-{id} {{\n    type ipv4_addr\n{}  }}\n",
            elements(&pod_elems)
        );
        for (dir, rules) in [("ingress", &p.ingress), ("egress", &p.egress)] {
            let Some(rules) = rules else { continue };
            isolated
                .entry(dir)
                .or_default()
                .extend(pods.iter().copied());
            let chain = chains.entry(dir).or_default();
            // Ingress: the policy's pods are destinations and peers sources; egress: reverse.
            let (own, peer) = if dir == "ingress" {
                ("ip daddr", "ip saddr")
            } else {
                ("ip saddr", "ip daddr")
            };
            for (i, rule) in rules.iter().enumerate() {
                let name = format!("{}-{id}-{i}", &dir[..2]);
                let comment = format!("comment \"{} {dir} {i}\"", p.id);
                let mut m = format!("{own} @pods-{id}");
                if let Some(peers) = &rule.peers {
                    let ranges = merge(
                        peers
                            .iter()
                            .map(|(a, b)| (u32::from(*a), u32::from(*b)))
                            .collect(),
                        |x| x.checked_add(1),
                    );
                    if ranges.is_empty() {
                        continue; // selects nobody
                    }
                    let elems: Vec<String> = ranges
                        .iter()
                        .map(|(a, b)| range_elem(Ipv4Addr::from(*a), Ipv4Addr::from(*b)))
                        .collect();
                    let _ = write!(
                        sets,
                        "  set {name}-peers {{\n    type ipv4_addr\n    flags interval\n{}  }}\n",
                        elements(&elems)
                    );
                    let _ = write!(m, " {peer} @{name}-peers");
                }
                let Some(ports) = &rule.ports else {
                    let _ = writeln!(chain, "    {m} return {comment}");
                    continue;
                };
                let mut by_proto: BTreeMap<&str, Vec<(u16, u16)>> = BTreeMap::new();
                for (proto, a, b) in &ports.any_dest {
                    by_proto.entry(proto).or_default().push((*a, *b));
                }
                let elems: Vec<String> = by_proto
                    .into_iter()
                    .flat_map(|(proto, v)| {
                        merge(v, |x| x.checked_add(1))
                            .into_iter()
                            .map(move |(a, b)| format!("{proto} . {}", range_elem(a, b)))
                    })
                    .collect();
                if !elems.is_empty() {
                    let _ = write!(
                        sets,
                        "  set {name}-ports {{\n    type inet_proto . inet_service\n    flags interval\n{}  }}\n",
                        elements(&elems)
                    );
                    let _ = writeln!(
                        chain,
                        "    {m} meta l4proto . th dport @{name}-ports return {comment}"
                    );
                }
                let named: BTreeSet<String> = ports
                    .per_dest
                    .iter()
                    .map(|(ip, proto, port)| format!("{ip} . {proto} . {port}"))
                    .collect();
                if !named.is_empty() {
                    let _ = write!(
                        sets,
                        "  set {name}-named {{\n    type ipv4_addr . inet_proto . inet_service\n{}  }}\n",
                        elements(&named.into_iter().collect::<Vec<_>>())
                    );
                    let _ = writeln!(
                        chain,
                        "    {m} ip daddr . meta l4proto . th dport @{name}-named return {comment}"
                    );
                }
            }
        }
    }
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    for dir in ["ingress", "egress"] {
        let elems: Vec<String> = isolated
            .get(dir)
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        let _ = write!(
            s,
            "  set {dir}-isolated {{\n    type ipv4_addr\n{}  }}\n",
            elements(&elems)
        );
    }
    // A pod reaching itself (through a Service) is never blocked, as upstream says.
    let own: BTreeSet<&Ipv4Addr> = isolated.values().flatten().collect();
    let own: Vec<String> = own.iter().map(|ip| format!("{ip} . {ip}")).collect();
    let _ = write!(
        s,
        "  set self {{\n    type ipv4_addr . ipv4_addr\n{}  }}\n",
        elements(&own)
    );
    s.push_str(&sets);
    // After the Service proxy's filter chain (-10), which rejects services without endpoints.
    s.push_str(
        "  chain forward {\n    type filter hook forward priority 0; policy accept;\n    ct state established,related accept\n    ip saddr . ip daddr @self accept\n    ip daddr @ingress-isolated jump ingress\n    ip saddr @egress-isolated jump egress\n  }\n",
    );
    for dir in ["ingress", "egress"] {
        let _ = write!(
            s,
            "  chain {dir} {{\n{}    meta l4proto tcp reject with tcp reset\n    reject with icmp type admin-prohibited\n  }}\n",
            chains.get(dir).map(String::as_str).unwrap_or_default()
        );
    }
    s.push_str("}\n");
    s
}

/// Removes kubox's network-policy table (nothing else).
pub fn flush() -> Result<(), String> {
    crate::proxy::apply(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn policy(ingress: Option<Vec<Rule>>, egress: Option<Vec<Rule>>) -> Policy {
        Policy {
            id: "default/p".into(),
            pods: vec![ip("10.42.0.5"), ip("10.42.0.6")],
            ingress,
            egress,
        }
    }

    #[test]
    fn an_ip_block_without_its_exceptions_is_a_list_of_ranges() {
        assert_eq!(
            block_ranges((ip("10.0.0.0"), 8), &[(ip("10.1.0.0"), 16)]),
            vec![
                (ip("10.0.0.0"), ip("10.0.255.255")),
                (ip("10.2.0.0"), ip("10.255.255.255"))
            ]
        );
        assert_eq!(
            block_ranges((ip("0.0.0.0"), 0), &[(ip("0.0.0.0"), 1)]),
            vec![(ip("128.0.0.0"), ip("255.255.255.255"))]
        );
        assert_eq!(
            block_ranges((ip("192.0.2.7"), 32), &[]),
            vec![(ip("192.0.2.7"), ip("192.0.2.7"))]
        );
        assert!(block_ranges((ip("10.0.0.0"), 24), &[(ip("10.0.0.0"), 16)]).is_empty());
    }

    #[test]
    fn deny_all_isolates_the_pods_with_no_rule() {
        let s = render(&[policy(Some(vec![]), None)]);
        assert!(s.starts_with("table ip kubox-netpol {}\ndelete table ip kubox-netpol\n"));
        assert!(
            s.contains("set ingress-isolated {\n    type ipv4_addr\n    elements = { 10.42.0.5, 10.42.0.6 }"),
            "{s}"
        );
        assert!(
            s.contains("set egress-isolated {\n    type ipv4_addr\n  }"),
            "{s}"
        );
        let ingress = s.split("chain ingress {\n").nth(1).unwrap_or_default();
        assert!(
            ingress.starts_with("    meta l4proto tcp reject with tcp reset"),
            "{s}"
        );
        assert!(s.contains("ct state established,related accept"), "{s}");
        assert!(
            s.contains("elements = { 10.42.0.5 . 10.42.0.5, 10.42.0.6 . 10.42.0.6 }"),
            "a pod reaches itself: {s}"
        );
    }

    #[test]
    fn an_empty_rule_allows_everything_and_peers_are_merged_intervals() {
        let s = render(&[policy(
            Some(vec![
                Rule::default(),
                Rule {
                    peers: Some(vec![
                        (ip("10.42.0.9"), ip("10.42.0.9")),
                        (ip("10.42.0.8"), ip("10.42.0.8")),
                        (ip("192.0.2.0"), ip("192.0.2.127")),
                        (ip("192.0.2.100"), ip("192.0.2.200")),
                    ]),
                    ports: None,
                },
                // Selects nobody: no nft rule at all.
                Rule {
                    peers: Some(vec![]),
                    ports: None,
                },
            ]),
            None,
        )]);
        let id = short_hash("default/p");
        assert!(
            s.contains(&format!(
                "    ip daddr @pods-{id} return comment \"default/p ingress 0\""
            )),
            "{s}"
        );
        assert!(
            s.contains("elements = { 10.42.0.8-10.42.0.9, 192.0.2.0-192.0.2.200 }"),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "ip daddr @pods-{id} ip saddr @in-{id}-1-peers return"
            )),
            "{s}"
        );
        assert!(!s.contains(&format!("in-{id}-2")), "{s}");
    }

    #[test]
    fn ports_and_named_ports_are_sets_and_egress_matches_the_source() {
        let s = render(&[policy(
            None,
            Some(vec![Rule {
                peers: Some(vec![(ip("10.42.0.0"), ip("10.42.255.255"))]),
                ports: Some(Ports {
                    any_dest: vec![
                        ("tcp".into(), 80, 80),
                        ("tcp".into(), 81, 90),
                        ("udp".into(), 0, 65535),
                    ],
                    per_dest: vec![(ip("10.42.1.7"), "tcp".into(), 8080)],
                }),
            }]),
        )]);
        let id = short_hash("default/p");
        assert!(
            s.contains("elements = { tcp . 80-90, udp . 0-65535 }"),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "ip saddr @pods-{id} ip daddr @eg-{id}-0-peers meta l4proto . th dport @eg-{id}-0-ports return"
            )),
            "{s}"
        );
        assert!(s.contains("elements = { 10.42.1.7 . tcp . 8080 }"), "{s}");
        assert!(
            s.contains(&format!(
                "ip daddr . meta l4proto . th dport @eg-{id}-0-named return"
            )),
            "{s}"
        );
        assert!(
            s.contains(
                "set egress-isolated {\n    type ipv4_addr\n    elements = { 10.42.0.5, 10.42.0.6 }"
            ),
            "{s}"
        );
    }

    #[test]
    fn policies_without_local_pods_render_nothing_and_order_does_not_matter() {
        let mut other = policy(Some(vec![]), None);
        other.id = "default/q".into();
        other.pods = vec![ip("10.42.0.7")];
        let none = Policy {
            id: "default/elsewhere".into(),
            pods: vec![],
            ingress: Some(vec![]),
            egress: None,
        };
        let a = render(&[policy(Some(vec![]), None), other.clone(), none.clone()]);
        let b = render(&[other, none, policy(Some(vec![]), None)]);
        assert_eq!(a, b);
        assert!(!a.contains(&short_hash("default/elsewhere")), "{a}");
    }
}
