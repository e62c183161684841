//! The Service proxy's kernel side: one nftables table (`ip kubox-proxy`) rendered from the
//! node's view of Services and their usable endpoints. Lookups go through verdict maps keyed by
//! (address, protocol, port), so the rule count does not grow per service: a service port is a
//! map element per address plus a few chains (pickers choosing an endpoint at random, and one
//! chain per endpoint doing the DNAT).
//!
//! Chains of a service port `<id>`:
//! - `svc-<id>` picks among every usable endpoint (ClusterIP traffic under
//!   `internalTrafficPolicy: Cluster`, external traffic under `externalTrafficPolicy: Cluster`);
//! - `local-<id>` picks among the endpoints on this node (the `Local` policies);
//! - `ext-<id>` is where external traffic (externalIPs, load-balancer ingress IPs, NodePorts on
//!   every local address but loopback) enters: under `Cluster` it is marked for masquerade and
//!   goes to `svc-<id>`; under `Local` it keeps its source address and goes to `local-<id>`
//!   (dropped without local endpoints), except traffic from pods and from the node itself,
//!   which goes cluster-wide as kube-proxy sends it;
//! - `ep-<id>-<endpoint>` DNATs to one endpoint, marking hairpin traffic (a pod reaching
//!   itself) for masquerade.
//!
//! Session affinity (`ClientIP`) is a dynamic nft set per endpoint holding client addresses
//! with a timeout: an endpoint chain adds (refreshes) its client, a picker first sends a known
//! client back to its endpoint. Updates keep those sets: [`Ruleset::update_script`] flushes and
//! refills the chains and maps in one transaction and deletes only what is gone (or, with no
//! affinity to keep, replaces the table, which nft does faster);
//! [`Ruleset::replace_script`] (agent start) replaces the whole table, so rules of an earlier
//! run never survive. Service ports without any usable endpoint are rejected (TCP reset / ICMP
//! port unreachable). TCP, UDP and SCTP.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The table kubox owns; nothing else is ever touched.
pub const TABLE: &str = "kubox-proxy";
/// The conntrack mark of connections to masquerade.
pub const MASQ_MARK: u32 = 0x4000;
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// One port of one Service, with the endpoints that may receive its traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name` (for comments and stable chain names).
    pub id: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
    /// ClusterIPs: internal traffic.
    pub addresses: Vec<Ipv4Addr>,
    /// ExternalIPs and load-balancer ingress IPs: external traffic.
    pub external_addresses: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// Usable endpoints of the whole cluster (address, target port).
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// Usable endpoints on this node.
    pub local_endpoints: Vec<(Ipv4Addr, u16)>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP` with this timeout in seconds.
    pub affinity_timeout: Option<u32>,
}

/// What the proxy knows about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The cluster (pod) CIDR: pod traffic to external addresses of `Local` services goes to
    /// every endpoint, as kube-proxy's local-traffic detection does.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

/// A rendered table: its declarations and rules, and the names of its chains and sets (what
/// an update must flush or delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    body: String,
    chains: BTreeSet<String>,
    /// Sets and maps refilled by every update (name → `set`/`map`).
    static_sets: BTreeMap<String, &'static str>,
    /// Session-affinity sets, whose elements an update keeps.
    dynamic_sets: BTreeSet<String>,
}

impl Ruleset {
    /// The script replacing the whole table in one transaction (stale rules of an earlier run
    /// and every affinity go).
    pub fn replace_script(&self) -> String {
        format!(
            "table ip {TABLE} {{}}\ndelete table ip {TABLE}\n{}",
            self.body
        )
    }

    /// The script moving the table from `prev` (the last applied ruleset) to this one in one
    /// transaction, keeping the clients of affinity sets that stay. Without such sets it is
    /// the (faster) replacement.
    pub fn update_script(&self, prev: &Ruleset) -> String {
        if prev.dynamic_sets.is_disjoint(&self.dynamic_sets) {
            return self.replace_script();
        }
        // `flush table` empties every chain but keeps sets and maps.
        let mut s = format!("add table ip {TABLE}\nflush table ip {TABLE}\n");
        for (name, kind) in &prev.static_sets {
            let _ = writeln!(s, "flush {kind} ip {TABLE} {name}");
        }
        for c in prev.chains.difference(&self.chains) {
            let _ = writeln!(s, "delete chain ip {TABLE} {c}");
        }
        for name in prev.dynamic_sets.difference(&self.dynamic_sets) {
            let _ = writeln!(s, "delete set ip {TABLE} {name}");
        }
        s.push_str(&self.body);
        s
    }

    /// The names of the session-affinity sets.
    pub fn affinity_sets(&self) -> impl Iterator<Item = &str> {
        self.dynamic_sets.iter().map(String::as_str)
    }
}

/// A short stable hash (FNV-1a) for chain and set names.
pub(crate) fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// A short stable name for chains of a service port.
fn chain_id(sp: &ServicePort) -> String {
    short_hash(&format!("{}/{}/{}", sp.id, sp.protocol, sp.port))
}

/// `elements = { … }` of a set or map, or nothing.
pub(crate) fn elements(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!("    elements = {{ {} }}\n", v.join(", "))
    }
}

/// The chains and sets of one service port.
struct PortChains<'a> {
    sp: &'a ServicePort,
    id: String,
}

impl PortChains<'_> {
    fn ep(&self, ip: Ipv4Addr, port: u16) -> String {
        let t = self.sp.affinity_timeout.unwrap_or(0);
        format!("{}-{}", self.id, short_hash(&format!("{ip}:{port}/{t}")))
    }

    /// A picker chain choosing among `eps` (sticky to a known client under affinity).
    fn picker(&self, name: &str, eps: &[(Ipv4Addr, u16)], comment: &str, out: &mut String) {
        let _ = writeln!(
            out,
            "  chain {name} {{\n    comment \"{}{comment}\"",
            self.sp.id
        );
        if self.sp.affinity_timeout.is_some() {
            for (ip, port) in eps {
                let e = self.ep(*ip, *port);
                let _ = writeln!(out, "    ip saddr @aff-{e} goto ep-{e}");
            }
        }
        if let [(ip, port)] = eps {
            let _ = writeln!(out, "    goto ep-{}", self.ep(*ip, *port));
        } else {
            let picks: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| format!("{i} : goto ep-{}", self.ep(*ip, *port)))
                .collect();
            let _ = writeln!(
                out,
                "    numgen random mod {} vmap {{ {} }}",
                eps.len(),
                picks.join(", ")
            );
        }
        let _ = writeln!(out, "  }}");
    }
}

/// Renders the table.
pub fn render(cfg: &Config, ports: &[ServicePort]) -> Ruleset {
    let mut rs = Ruleset::default();
    let mut service_elems: BTreeMap<String, String> = BTreeMap::new();
    let mut nodeport_elems: BTreeMap<String, String> = BTreeMap::new();
    let mut rejects = BTreeSet::new();
    let mut nodeport_rejects = BTreeSet::new();
    let mut chains = String::new();
    let mut sets = String::new();
    let mut sorted: Vec<&ServicePort> = ports.iter().collect();
    sorted.sort_by(|a, b| (&a.id, &a.protocol, a.port).cmp(&(&b.id, &b.protocol, b.port)));
    let mut seen_ports = BTreeSet::new();
    for sp in sorted {
        let pc = PortChains {
            sp,
            id: chain_id(sp),
        };
        if !seen_ports.insert(pc.id.clone()) {
            continue; // the same service port twice
        }
        let id = &pc.id;
        let proto = &sp.protocol;
        // Two services claiming one address and port: the first (by id) keeps it, as a
        // duplicate map element would fail the whole transaction.
        let claim = |map: &mut BTreeMap<String, String>, key: String, verdict: String| {
            map.entry(key).or_insert(verdict);
        };
        if sp.endpoints.is_empty() && sp.local_endpoints.is_empty() {
            for a in sp.addresses.iter().chain(&sp.external_addresses) {
                rejects.insert(format!("{a} . {proto} . {}", sp.port));
            }
            if let Some(np) = sp.node_port {
                nodeport_rejects.insert(format!("{proto} . {np}"));
            }
            continue;
        }
        let has_cluster = !sp.endpoints.is_empty();
        let has_local = !sp.local_endpoints.is_empty();
        let cluster_verdict = if has_cluster {
            format!("goto svc-{id}")
        } else {
            "drop".to_string()
        };
        let local_verdict = if has_local {
            format!("goto local-{id}")
        } else {
            "drop".to_string()
        };
        let internal = if sp.internal_local {
            &local_verdict
        } else {
            &cluster_verdict
        };
        for a in &sp.addresses {
            claim(
                &mut service_elems,
                format!("{a} . {proto} . {}", sp.port),
                internal.clone(),
            );
        }
        let external = !sp.external_addresses.is_empty() || sp.node_port.is_some();
        for a in &sp.external_addresses {
            claim(
                &mut service_elems,
                format!("{a} . {proto} . {}", sp.port),
                format!("goto ext-{id}"),
            );
        }
        if let Some(np) = sp.node_port {
            claim(
                &mut nodeport_elems,
                format!("{proto} . {np}"),
                format!("goto ext-{id}"),
            );
        }
        let mut used: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
        if has_cluster {
            pc.picker(&format!("svc-{id}"), &sp.endpoints, "", &mut chains);
            rs.chains.insert(format!("svc-{id}"));
            used.extend(sp.endpoints.iter().copied());
        }
        let needs_local = sp.internal_local || (external && sp.external_local);
        if has_local && needs_local {
            pc.picker(
                &format!("local-{id}"),
                &sp.local_endpoints,
                " local endpoints",
                &mut chains,
            );
            rs.chains.insert(format!("local-{id}"));
            used.extend(sp.local_endpoints.iter().copied());
        }
        if external {
            let _ = writeln!(
                chains,
                "  chain ext-{id} {{\n    comment \"{} external\"",
                sp.id
            );
            let masq = format!("ct mark set ct mark | {MASQ_MARK:#x}");
            if sp.external_local {
                if let Some((net, len)) = cfg.cluster_cidr {
                    let _ = writeln!(chains, "    ip saddr {net}/{len} {cluster_verdict}");
                }
                let _ = writeln!(chains, "    fib saddr type local {masq} {cluster_verdict}");
                let _ = writeln!(chains, "    {local_verdict}");
            } else {
                let _ = writeln!(chains, "    {masq} {cluster_verdict}");
            }
            let _ = writeln!(chains, "  }}");
            rs.chains.insert(format!("ext-{id}"));
        }
        for (ip, port) in used {
            let e = pc.ep(ip, port);
            let _ = writeln!(
                chains,
                "  chain ep-{e} {{\n    ip saddr {ip} ct mark set ct mark | {MASQ_MARK:#x}"
            );
            if let Some(t) = sp.affinity_timeout {
                let _ = writeln!(
                    sets,
                    "  set aff-{e} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {t}s\n  }}"
                );
                rs.dynamic_sets.insert(format!("aff-{e}"));
                let _ = writeln!(chains, "    update @aff-{e} {{ ip saddr }}");
            }
            let _ = writeln!(chains, "    meta l4proto {proto} dnat to {ip}:{port}\n  }}");
            rs.chains.insert(format!("ep-{e}"));
        }
    }
    let pairs = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter().map(|(k, v)| format!("{k} : {v}")).collect()
    };
    let s = &mut rs.body;
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = write!(
        s,
        "  map services {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&pairs(&service_elems))
    );
    let _ = write!(
        s,
        "  map nodeports {{\n    type inet_proto . inet_service : verdict\n{}  }}\n",
        elements(&pairs(&nodeport_elems))
    );
    let _ = write!(
        s,
        "  set no-endpoints {{\n    type ipv4_addr . inet_proto . inet_service\n{}  }}\n",
        elements(&rejects.into_iter().collect::<Vec<_>>())
    );
    let _ = write!(
        s,
        "  set no-endpoint-nodeports {{\n    type inet_proto . inet_service\n{}  }}\n",
        elements(&nodeport_rejects.into_iter().collect::<Vec<_>>())
    );
    for (name, kind) in [
        ("services", "map"),
        ("nodeports", "map"),
        ("no-endpoints", "set"),
        ("no-endpoint-nodeports", "set"),
    ] {
        rs.static_sets.insert(name.to_string(), kind);
    }
    s.push_str(&sets);
    // NodePorts answer on every local address but loopback (as kube-proxy's nftables mode):
    // a DNAT from 127.0.0.1 would need route_localnet.
    let nodeport = "fib daddr type local ip daddr != 127.0.0.0/8";
    // Numeric priorities: the `dstnat` keyword is refused for the output hook.
    for (hook, prio) in [("prerouting", "-100"), ("output", "-100")] {
        let _ = writeln!(
            s,
            "  chain nat-{hook} {{\n    type nat hook {hook} priority {prio}; policy accept;\n    ip daddr . meta l4proto . th dport vmap @services\n    {nodeport} meta l4proto . th dport vmap @nodeports\n  }}"
        );
        rs.chains.insert(format!("nat-{hook}"));
    }
    let _ = writeln!(
        s,
        "  chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ct mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n  }}"
    );
    rs.chains.insert("nat-postrouting".into());
    for hook in ["input", "forward", "output"] {
        let _ = writeln!(
            s,
            "  chain filter-{hook} {{\n    type filter hook {hook} priority -10; policy accept;\n    ip daddr . meta l4proto . th dport @no-endpoints meta l4proto tcp reject with tcp reset\n    ip daddr . meta l4proto . th dport @no-endpoints reject\n    {nodeport} meta l4proto . th dport @no-endpoint-nodeports meta l4proto tcp reject with tcp reset\n    {nodeport} meta l4proto . th dport @no-endpoint-nodeports reject\n  }}"
        );
        rs.chains.insert(format!("filter-{hook}"));
    }
    s.push_str(&chains);
    s.push_str("}\n");
    rs
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
            local_endpoints: endpoints.clone(),
            endpoints,
            ..Default::default()
        }
    }

    fn body(ports: &[ServicePort]) -> String {
        render(&Config::default(), ports).replace_script()
    }

    #[test]
    fn services_with_endpoints_become_map_elements_and_dnat_chains() {
        let s = body(&[sp(vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 0, 6), 8080),
        ])]);
        assert!(s.contains("10.43.0.20 . tcp . 80 : goto svc-"), "{s}");
        assert!(s.contains("tcp . 30080 : goto ext-"), "{s}");
        assert!(s.contains("numgen random mod 2 vmap"), "{s}");
        assert!(s.contains("dnat to 10.42.0.5:8080"), "{s}");
        assert!(s.contains("ip saddr 10.42.0.6 ct mark set"), "{s}");
        assert!(!s.contains("local-"), "no Local policy: {s}");
        assert!(s.starts_with("table ip kubox-proxy {}\ndelete table ip kubox-proxy\n"));
    }

    #[test]
    fn services_without_endpoints_are_rejected() {
        let s = body(&[sp(vec![])]);
        assert!(!s.contains("goto svc-"), "{s}");
        assert!(s.contains("elements = { 10.43.0.20 . tcp . 80 }"), "{s}");
        assert!(s.contains("elements = { tcp . 30080 }"), "{s}");
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = sp(vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)]);
        let mut b = a.clone();
        b.id = "default/api:http".into();
        b.addresses = vec![Ipv4Addr::new(10, 43, 0, 21)];
        b.node_port = Some(30081);
        assert_eq!(body(&[a.clone(), b.clone()]), body(&[b, a]));
    }

    #[test]
    fn a_claimed_address_stays_with_the_first_service() {
        let a = sp(vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)]);
        let mut b = a.clone();
        b.id = "default/zzz:http".into();
        let s = body(&[a, b]);
        assert_eq!(s.matches("10.43.0.20 . tcp . 80 :").count(), 1, "{s}");
        assert_eq!(s.matches("tcp . 30080 :").count(), 1, "{s}");
    }

    #[test]
    fn external_traffic_is_masqueraded_under_cluster_and_kept_under_local() {
        let mut p = sp(vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 1, 5), 8080),
        ]);
        p.local_endpoints = vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)];
        p.external_addresses = vec![Ipv4Addr::new(192, 0, 2, 1)];
        let s = body(&[p.clone()]);
        assert!(s.contains("192.0.2.1 . tcp . 80 : goto ext-"), "{s}");
        assert!(
            s.contains("ct mark set ct mark | 0x4000 goto svc-"),
            "Cluster: masquerade, every endpoint: {s}"
        );
        p.external_local = true;
        let cfg = Config {
            cluster_cidr: Some((Ipv4Addr::new(10, 42, 0, 0), 16)),
        };
        let s = render(&cfg, &[p.clone()]).replace_script();
        let ext = s.split("chain ext-").nth(1).unwrap_or_default();
        assert!(ext.contains("ip saddr 10.42.0.0/16 goto svc-"), "{s}");
        assert!(
            ext.contains("fib saddr type local ct mark set ct mark | 0x4000 goto svc-"),
            "{s}"
        );
        assert!(ext.contains("    goto local-"), "{s}");
        let local = s.split("chain local-").nth(1).unwrap_or_default();
        assert!(local.contains("goto ep-"), "{s}");
        assert!(!local.contains("numgen"), "one local endpoint: {s}");
        // No local endpoint: external traffic is dropped, not sent to another node.
        p.local_endpoints.clear();
        let s = render(&cfg, &[p]).replace_script();
        let ext = s.split("chain ext-").nth(1).unwrap_or_default();
        assert!(ext.contains("    drop\n"), "{s}");
    }

    #[test]
    fn internal_traffic_policy_local_uses_local_endpoints_or_drops() {
        let mut p = sp(vec![(Ipv4Addr::new(10, 42, 1, 5), 8080)]);
        p.node_port = None;
        p.internal_local = true;
        p.local_endpoints = vec![];
        let s = body(&[p.clone()]);
        assert!(s.contains("10.43.0.20 . tcp . 80 : drop"), "{s}");
        p.local_endpoints = vec![(Ipv4Addr::new(10, 42, 0, 9), 8080)];
        let s = body(&[p]);
        assert!(s.contains("10.43.0.20 . tcp . 80 : goto local-"), "{s}");
        assert!(s.contains("dnat to 10.42.0.9:8080"), "{s}");
    }

    #[test]
    fn client_ip_affinity_uses_a_dynamic_set_per_endpoint() {
        let mut p = sp(vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 0, 6), 8080),
        ]);
        p.affinity_timeout = Some(60);
        let rs = render(&Config::default(), &[p]);
        let s = rs.replace_script();
        assert_eq!(rs.affinity_sets().count(), 2, "{s}");
        assert!(s.contains("flags dynamic,timeout\n    timeout 60s"), "{s}");
        assert!(s.contains("update @aff-"), "{s}");
        let svc = s.split("chain svc-").nth(1).unwrap_or_default();
        let sticky = svc.find("ip saddr @aff-").unwrap_or(usize::MAX);
        let random = svc.find("numgen").unwrap_or(0);
        assert!(sticky < random, "known clients first: {s}");
    }

    #[test]
    fn an_update_keeps_affinity_sets_and_deletes_what_is_gone() {
        let mut p = sp(vec![
            (Ipv4Addr::new(10, 42, 0, 5), 8080),
            (Ipv4Addr::new(10, 42, 0, 6), 8080),
        ]);
        p.affinity_timeout = Some(60);
        let before = render(&Config::default(), &[p.clone()]);
        p.endpoints.pop();
        p.local_endpoints.pop();
        let after = render(&Config::default(), &[p]);
        let s = after.update_script(&before);
        assert!(s.starts_with("add table ip kubox-proxy\n"), "{s}");
        assert!(!s.contains("delete table"), "{s}");
        assert!(s.contains("flush map ip kubox-proxy services"), "{s}");
        assert_eq!(
            s.matches("delete set ip kubox-proxy aff-").count(),
            1,
            "{s}"
        );
        assert_eq!(
            s.matches("delete chain ip kubox-proxy ep-").count(),
            1,
            "{s}"
        );
        let kept = after.affinity_sets().next().unwrap_or_default().to_string();
        assert!(
            !s.contains(&format!("delete set ip kubox-proxy {kept}")),
            "{s}"
        );
        // Nothing to keep: the table is replaced.
        let plain = render(
            &Config::default(),
            &[sp(vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)])],
        );
        assert_eq!(plain.update_script(&before), plain.replace_script());
    }
}
