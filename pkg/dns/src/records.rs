//! The record store: DNS records derived from Services and EndpointSlices, with no IO. The
//! watches ([`crate::watch`]) feed it objects; the server ([`crate::server`]) asks it
//! [`Records::lookup`]. Names are kept lower-case, without the trailing dot.
//!
//! What a name resolves to (CoreDNS's `kubernetes` plugin with `pods insecure`):
//! - `svc.ns.svc.<domain>`: A/AAAA of the ClusterIPs; of a headless Service, of its ready
//!   endpoints (every endpoint with `publishNotReadyAddresses`); CNAME to `externalName`.
//! - `host.svc.ns.svc.<domain>`: an endpoint of a headless Service, by its `hostname` or, for
//!   endpoints without one, its address with dashes (`10-42-0-5`).
//! - `_port._proto.svc.ns.svc.<domain>` (and `svc.ns.svc.<domain>` itself): SRV per named
//!   port, targeting the Service name, or each endpoint of a headless Service.
//! - `d.c.b.a.in-addr.arpa` / nibbles `.ip6.arpa`: PTR of ClusterIPs and headless endpoints.
//! - `a-b-c-d.ns.pod.<domain>`: A of that address, unchecked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How deep CNAMEs inside the cluster domain are followed.
const MAX_CHASE: usize = 8;

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Ptr(String),
}

/// The record types [`Records::lookup`] distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qtype {
    A,
    Aaaa,
    Cname,
    Srv,
    Ptr,
    /// Every record of the name.
    Any,
    /// Any other type: never held here.
    Other,
}

impl Rdata {
    fn matches(&self, q: Qtype) -> bool {
        matches!(
            (self, q),
            (_, Qtype::Any)
                | (Rdata::A(_), Qtype::A)
                | (Rdata::Aaaa(_), Qtype::Aaaa)
                | (Rdata::Cname(_), Qtype::Cname)
                | (Rdata::Srv { .. }, Qtype::Srv)
                | (Rdata::Ptr(_), Qtype::Ptr)
        )
    }
}

/// The answer to a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Records (owner name, data), the question's own first, then those of followed CNAMEs.
    /// `external` is the target of a final CNAME that leaves the cluster domain.
    Found {
        records: Vec<(String, Rdata)>,
        external: Option<String>,
    },
    /// The name exists with no record of the asked type.
    NoData,
    /// The name does not exist in the cluster domain.
    NxDomain,
    /// Not a name this store answers for: forward it.
    NotOurs,
}

/// What the store keeps of a Service.
#[derive(Debug, Clone, PartialEq)]
struct Svc {
    kind: SvcKind,
    /// Named ports: (name, lower-case protocol, port).
    ports: Vec<(String, String, u16)>,
    publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum SvcKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(String),
}

/// What the store keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
struct Slice {
    service: String,
    endpoints: Vec<Endpoint>,
    /// Named ports: (name, lower-case protocol, port).
    ports: Vec<(String, String, u16)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    addresses: Vec<IpAddr>,
    hostname: Option<String>,
    ready: bool,
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    services: HashMap<Key, Svc>,
    /// (namespace, slice name) → slice.
    slices: HashMap<Key, Slice>,
    /// (namespace, service name) → names of its slices.
    slices_of: HashMap<Key, BTreeSet<String>>,
    /// The names each Service's records use (to remove them on change).
    owned: HashMap<Key, Vec<String>>,
    /// name → (owning Service, record).
    names: HashMap<String, Vec<(Key, Rdata)>>,
    /// Names under the cluster domain that exist because a name below them does (empty
    /// non-terminals such as `ns.svc.<domain>`), with a reference count.
    parents: HashMap<String, usize>,
}

/// Cluster DNS records, safe to share between the watches and the server.
#[derive(Debug)]
pub struct Records {
    domain: String,
    inner: RwLock<Inner>,
}

/// `name` lower-cased, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The reverse-lookup name of `ip` (`in-addr.arpa` / `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(hex_digit(b & 0xf));
                s.push('.');
                s.push(hex_digit(b >> 4));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// The name CoreDNS gives an endpoint without a hostname: its address with dashes.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address in a dashed pod label (`10-42-0-5`, `fd00--5`).
fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains(':') || label.contains('.') {
        return None;
    }
    label
        .replace('-', ".")
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .ok()
        .or_else(|| {
            label
                .replace('-', ":")
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

fn ns_name<K: kube::Resource>(obj: &K) -> Option<Key> {
    let m = obj.meta();
    Some((m.namespace.clone()?, m.name.clone()?))
}

fn svc_of(s: &Service) -> Svc {
    let spec = s.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        SvcKind::External(normalize(spec.external_name.as_deref().unwrap_or_default()))
    } else if spec.cluster_ip.as_deref() == Some("None") {
        SvcKind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .clone()
            .filter(|v| !v.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.dedup();
        SvcKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            Some((name, proto, u16::try_from(p.port).ok()?))
        })
        .collect();
    Svc {
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
    }
}

fn slice_of(s: &EndpointSlice) -> Option<Slice> {
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))?
        .clone();
    if s.address_type != "IPv4" && s.address_type != "IPv6" {
        return None;
    }
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| Endpoint {
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.clone().filter(|h| !h.is_empty()),
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty())?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            Some((name, proto, u16::try_from(p.port?).ok()?))
        })
        .collect();
    Some(Slice {
        service,
        endpoints,
        ports,
    })
}

impl Records {
    /// An empty store for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        Records {
            domain: normalize(domain),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The cluster domain, normalized.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or updates a Service.
    pub fn apply_service(&self, s: &Service) {
        let Some(key) = ns_name(s) else { return };
        let svc = svc_of(s);
        let mut inner = self.write();
        if inner.services.get(&key) == Some(&svc) {
            return;
        }
        inner.services.insert(key.clone(), svc);
        self.rebuild(&mut inner, &key);
    }

    /// Removes a Service.
    pub fn delete_service(&self, s: &Service) {
        let Some(key) = ns_name(s) else { return };
        let mut inner = self.write();
        if inner.services.remove(&key).is_some() {
            self.rebuild(&mut inner, &key);
        }
    }

    /// Replaces every Service (after a watch (re)listed them all).
    pub fn replace_services(&self, all: &[Service]) {
        let mut inner = self.write();
        let new: HashMap<Key, Svc> = all
            .iter()
            .filter_map(|s| Some((ns_name(s)?, svc_of(s))))
            .collect();
        let mut touched: BTreeSet<Key> = inner.services.keys().cloned().collect();
        touched.extend(new.keys().cloned());
        let old = std::mem::replace(&mut inner.services, new);
        for key in touched {
            if old.get(&key) != inner.services.get(&key) {
                self.rebuild(&mut inner, &key);
            }
        }
    }

    /// Adds or updates an EndpointSlice.
    pub fn apply_slice(&self, s: &EndpointSlice) {
        let Some(key) = ns_name(s) else { return };
        let slice = slice_of(s);
        let mut inner = self.write();
        let affected = Self::set_slice(&mut inner, key, slice);
        for k in affected {
            self.rebuild(&mut inner, &k);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&self, s: &EndpointSlice) {
        let Some(key) = ns_name(s) else { return };
        let mut inner = self.write();
        let affected = Self::set_slice(&mut inner, key, None);
        for k in affected {
            self.rebuild(&mut inner, &k);
        }
    }

    /// Replaces every EndpointSlice (after a watch (re)listed them all).
    pub fn replace_slices(&self, all: &[EndpointSlice]) {
        let mut inner = self.write();
        let new: HashMap<Key, Slice> = all
            .iter()
            .filter_map(|s| Some((ns_name(s)?, slice_of(s)?)))
            .collect();
        let mut affected = BTreeSet::new();
        let gone: Vec<Key> = inner
            .slices
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            affected.extend(Self::set_slice(&mut inner, key, None));
        }
        for (key, slice) in new {
            affected.extend(Self::set_slice(&mut inner, key, Some(slice)));
        }
        for k in affected {
            self.rebuild(&mut inner, &k);
        }
    }

    /// Stores (or with `None` removes) a slice; returns the Services whose records change.
    fn set_slice(inner: &mut Inner, key: Key, slice: Option<Slice>) -> Vec<Key> {
        if inner.slices.get(&key) == slice.as_ref() {
            return Vec::new();
        }
        let mut affected = Vec::new();
        if let Some(old) = inner.slices.remove(&key) {
            let svc = (key.0.clone(), old.service);
            if let Some(set) = inner.slices_of.get_mut(&svc) {
                set.remove(&key.1);
                if set.is_empty() {
                    inner.slices_of.remove(&svc);
                }
            }
            affected.push(svc);
        }
        if let Some(new) = slice {
            let svc = (key.0.clone(), new.service.clone());
            inner
                .slices_of
                .entry(svc.clone())
                .or_default()
                .insert(key.1.clone());
            inner.slices.insert(key, new);
            if !affected.contains(&svc) {
                affected.push(svc);
            }
        }
        affected
    }

    /// Recomputes the records of one Service.
    fn rebuild(&self, inner: &mut Inner, key: &Key) {
        let fqdn = format!("{}.{}.svc.{}", key.1, key.0, self.domain);
        if let Some(names) = inner.owned.remove(key) {
            for name in &names {
                if let Some(v) = inner.names.get_mut(name) {
                    v.retain(|(k, _)| k != key);
                    if v.is_empty() {
                        inner.names.remove(name);
                    }
                }
            }
            // The Service name exists (NODATA, not NXDOMAIN) even with no record of its own,
            // like a headless Service without ready endpoints.
            for name in names.iter().chain([&fqdn]) {
                self.for_ancestors(name, name == &fqdn, |p| {
                    if let Some(n) = inner.parents.get_mut(p) {
                        *n -= 1;
                        if *n == 0 {
                            inner.parents.remove(p);
                        }
                    }
                });
            }
        }
        let Some(svc) = inner.services.get(key) else {
            return;
        };
        let records = self.records_of(inner, key, svc);
        let mut owned: Vec<String> = Vec::new();
        for (name, rdata) in records {
            if !owned.contains(&name) {
                owned.push(name.clone());
            }
            inner
                .names
                .entry(name)
                .or_default()
                .push((key.clone(), rdata));
        }
        for name in owned.iter().chain([&fqdn]) {
            self.for_ancestors(name, name == &fqdn, |p| {
                *inner.parents.entry(p.to_string()).or_default() += 1;
            });
        }
        inner.owned.insert(key.clone(), owned);
    }

    /// Calls `f` with every proper ancestor of `name` below the cluster domain (and with
    /// `name` itself when `with_self`).
    fn for_ancestors(&self, name: &str, with_self: bool, mut f: impl FnMut(&str)) {
        let Some(rest) = name.strip_suffix(&self.domain) else {
            return;
        };
        let rest = rest.trim_end_matches('.');
        if with_self {
            f(name);
        }
        let mut cur = rest;
        while let Some((_, parent)) = cur.split_once('.') {
            f(&name[rest.len() - parent.len()..]);
            cur = parent;
        }
    }

    /// The records of one Service, its endpoints included.
    fn records_of(&self, inner: &Inner, key: &Key, svc: &Svc) -> Vec<(String, Rdata)> {
        let fqdn = format!("{}.{}.svc.{}", key.1, key.0, self.domain);
        let mut out: Vec<(String, Rdata)> = Vec::new();
        let addr = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => Rdata::A(v4),
            IpAddr::V6(v6) => Rdata::Aaaa(v6),
        };
        // SRV records: (port name, proto) → [(port, target)].
        let mut srv: BTreeMap<(String, String), BTreeSet<(u16, String)>> = BTreeMap::new();
        match &svc.kind {
            SvcKind::External(target) => {
                out.push((fqdn.clone(), Rdata::Cname(target.clone())));
            }
            SvcKind::ClusterIp(ips) => {
                for ip in ips {
                    out.push((fqdn.clone(), addr(*ip)));
                    out.push((reverse_name(*ip), Rdata::Ptr(fqdn.clone())));
                }
                for (name, proto, port) in &svc.ports {
                    srv.entry((name.clone(), proto.clone()))
                        .or_default()
                        .insert((*port, fqdn.clone()));
                }
            }
            SvcKind::Headless => {
                let slices = inner.slices_of.get(key).into_iter().flatten();
                let mut seen = BTreeSet::new();
                for slice in slices.filter_map(|n| inner.slices.get(&(key.0.clone(), n.clone()))) {
                    for ep in &slice.endpoints {
                        if !(ep.ready || svc.publish_not_ready) {
                            continue;
                        }
                        for ip in &ep.addresses {
                            if !seen.insert(*ip) {
                                continue;
                            }
                            let host = ep
                                .hostname
                                .as_deref()
                                .map(normalize)
                                .unwrap_or_else(|| dashed(*ip));
                            let host_fqdn = format!("{host}.{fqdn}");
                            out.push((fqdn.clone(), addr(*ip)));
                            out.push((host_fqdn.clone(), addr(*ip)));
                            out.push((reverse_name(*ip), Rdata::Ptr(host_fqdn.clone())));
                            for (name, proto, port) in &slice.ports {
                                srv.entry((name.clone(), proto.clone()))
                                    .or_default()
                                    .insert((*port, host_fqdn.clone()));
                            }
                        }
                    }
                }
            }
        }
        // As CoreDNS: every SRV of a Service shares priority 0 and splits weight 100.
        let total: usize = srv.values().map(BTreeSet::len).sum();
        let weight = u16::try_from(100 / total.max(1)).unwrap_or(1).max(1);
        for ((name, proto), targets) in srv {
            let owner = format!("_{}._{proto}.{fqdn}", normalize(&name));
            for (port, target) in targets {
                let rdata = Rdata::Srv {
                    priority: 0,
                    weight,
                    port,
                    target,
                };
                out.push((owner.clone(), rdata.clone()));
                out.push((fqdn.clone(), rdata));
            }
        }
        out
    }

    /// Answers `name` (any case, trailing dot optional) for type `q`.
    pub fn lookup(&self, name: &str, q: Qtype) -> Lookup {
        let name = normalize(name);
        let inner = self.read();
        if !self.in_domain(&name) {
            if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
                return match inner.names.get(&name) {
                    Some(v) => Self::found(&name, v, q),
                    None => Lookup::NotOurs,
                };
            }
            return Lookup::NotOurs;
        }
        let mut records = Vec::new();
        let mut cur = name;
        for _ in 0..MAX_CHASE {
            match self.lookup_one(&inner, &cur, q) {
                Lookup::Found {
                    records: mut r,
                    external: None,
                } => {
                    let cname = match r.last() {
                        Some((_, Rdata::Cname(t))) if q != Qtype::Cname && q != Qtype::Any => {
                            Some(t.clone())
                        }
                        _ => None,
                    };
                    records.append(&mut r);
                    match cname {
                        Some(t) if self.in_domain(&t) => cur = t,
                        Some(t) => {
                            return Lookup::Found {
                                records,
                                external: Some(t),
                            };
                        }
                        None => {
                            return Lookup::Found {
                                records,
                                external: None,
                            };
                        }
                    }
                }
                // The CNAME chain ends in the cluster domain without an answer: the records so
                // far are the answer (RFC 1034 4.3.2).
                other if records.is_empty() => return other,
                _ => {
                    return Lookup::Found {
                        records,
                        external: None,
                    };
                }
            }
        }
        Lookup::Found {
            records,
            external: None,
        }
    }

    fn in_domain(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(&self.domain)
                .is_some_and(|r| r.ends_with('.'))
    }

    /// One step of [`Self::lookup`]: `name` is in the cluster domain.
    fn lookup_one(&self, inner: &Inner, name: &str, q: Qtype) -> Lookup {
        if let Some(v) = inner.names.get(name) {
            return Self::found(name, v, q);
        }
        let rest = name
            .strip_suffix(&self.domain)
            .unwrap_or_default()
            .trim_end_matches('.');
        if let Some(pod) = rest.strip_suffix(".pod") {
            // `a-b-c-d.ns.pod`: the address, unchecked (`pods insecure`).
            return match pod.split('.').collect::<Vec<_>>()[..] {
                [_ns] => Lookup::NoData,
                [ip, _ns] => match undashed(ip) {
                    Some(ip) => {
                        let r = match ip {
                            IpAddr::V4(v4) => Rdata::A(v4),
                            IpAddr::V6(v6) => Rdata::Aaaa(v6),
                        };
                        Self::found(name, &[(Key::default(), r)], q)
                    }
                    None => Lookup::NxDomain,
                },
                _ => Lookup::NxDomain,
            };
        }
        if matches!(rest, "" | "svc" | "pod") || inner.parents.contains_key(name) {
            return Lookup::NoData;
        }
        Lookup::NxDomain
    }

    fn found(name: &str, v: &[(Key, Rdata)], q: Qtype) -> Lookup {
        let mut records: Vec<(String, Rdata)> = Vec::new();
        // A CNAME answers every type (the chase happens in `lookup`).
        let cname = v.iter().find(|(_, r)| matches!(r, Rdata::Cname(_)));
        match cname {
            Some((_, r)) => records.push((name.to_string(), r.clone())),
            None => {
                for (_, r) in v {
                    if r.matches(q)
                        && !matches!(r, Rdata::Cname(_))
                        && !records.iter().any(|(_, x)| x == r)
                    {
                        records.push((name.to_string(), r.clone()));
                    }
                }
            }
        }
        if records.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Found {
                records,
                external: None,
            }
        }
    }

    /// The A/AAAA records of `name` in the store (for the additional section).
    pub fn addresses(&self, name: &str) -> Vec<Rdata> {
        let inner = self.read();
        inner
            .names
            .get(&normalize(name))
            .into_iter()
            .flatten()
            .filter(|(_, r)| matches!(r, Rdata::A(_) | Rdata::Aaaa(_)))
            .map(|(_, r)| r.clone())
            .fold(Vec::new(), |mut acc, r| {
                if !acc.contains(&r) {
                    acc.push(r);
                }
                acc
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap_or_default()
    }

    pub fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad slice: {e}"))
    }

    pub fn web() -> Service {
        service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}))
    }

    /// A headless Service `db` with endpoints: `n` ready ones 10.42.0.(10+i) and one not ready.
    pub fn headless(n: u8) -> (Service, EndpointSlice) {
        let svc = service(json!({"metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}));
        let mut eps: Vec<serde_json::Value> = (0..n)
            .map(|i| json!({"addresses": [format!("10.42.0.{}", 10 + u32::from(i))], "conditions": {"ready": true}}))
            .collect();
        eps.push(json!({"addresses": ["10.42.0.99"], "conditions": {"ready": false}}));
        if n > 0 {
            eps[0]["hostname"] = json!("db-0");
        }
        let sl = slice(json!({"metadata": {"name": "db-abc", "namespace": "data",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "endpoints": eps,
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}));
        (svc, sl)
    }

    fn a(ip: &str) -> Rdata {
        Rdata::A(ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED))
    }

    fn answers(l: Lookup) -> Vec<Rdata> {
        match l {
            Lookup::Found { records, .. } => records.into_iter().map(|(_, r)| r).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_have_a_srv_and_ptr_records() {
        let r = Records::new("cluster.local.");
        r.apply_service(&web());
        assert_eq!(
            answers(r.lookup("Web.Default.svc.cluster.local.", Qtype::A)),
            vec![a("10.43.0.20")]
        );
        assert_eq!(
            r.lookup("web.default.svc.cluster.local", Qtype::Aaaa),
            Lookup::NoData
        );
        let srv = Rdata::Srv {
            priority: 0,
            weight: 100,
            port: 80,
            target: "web.default.svc.cluster.local".into(),
        };
        assert_eq!(
            answers(r.lookup("_http._tcp.web.default.svc.cluster.local", Qtype::Srv)),
            vec![srv.clone()]
        );
        assert_eq!(
            answers(r.lookup("web.default.svc.cluster.local", Qtype::Srv)),
            vec![srv]
        );
        assert_eq!(
            answers(r.lookup("20.0.43.10.in-addr.arpa", Qtype::Ptr)),
            vec![Rdata::Ptr("web.default.svc.cluster.local".into())]
        );
        // Empty non-terminals exist; unknown names do not.
        for name in [
            "_tcp.web.default.svc.cluster.local",
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            assert_eq!(r.lookup(name, Qtype::A), Lookup::NoData, "{name}");
        }
        for name in [
            "nope.default.svc.cluster.local",
            "web.other.svc.cluster.local",
            "_udp.web.default.svc.cluster.local",
            "x.cluster.local",
        ] {
            assert_eq!(r.lookup(name, Qtype::A), Lookup::NxDomain, "{name}");
        }
        assert_eq!(r.lookup("example.com", Qtype::A), Lookup::NotOurs);
        assert_eq!(
            r.lookup("1.0.0.127.in-addr.arpa", Qtype::Ptr),
            Lookup::NotOurs
        );
        r.delete_service(&web());
        assert_eq!(
            r.lookup("web.default.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup("default.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        assert_eq!(
            r.lookup("20.0.43.10.in-addr.arpa", Qtype::Ptr),
            Lookup::NotOurs
        );
    }

    #[test]
    fn headless_services_resolve_to_ready_endpoints_by_name_and_address() {
        let r = Records::new("cluster.local");
        let (svc, sl) = headless(2);
        r.apply_slice(&sl);
        r.apply_service(&svc);
        assert_eq!(
            answers(r.lookup("db.data.svc.cluster.local", Qtype::A)),
            vec![a("10.42.0.10"), a("10.42.0.11")]
        );
        assert_eq!(
            answers(r.lookup("db-0.db.data.svc.cluster.local", Qtype::A)),
            vec![a("10.42.0.10")]
        );
        assert_eq!(
            answers(r.lookup("10-42-0-11.db.data.svc.cluster.local", Qtype::A)),
            vec![a("10.42.0.11")]
        );
        assert_eq!(
            answers(r.lookup("_pg._tcp.db.data.svc.cluster.local", Qtype::Srv)),
            vec![
                Rdata::Srv {
                    priority: 0,
                    weight: 50,
                    port: 5432,
                    target: "10-42-0-11.db.data.svc.cluster.local".into()
                },
                Rdata::Srv {
                    priority: 0,
                    weight: 50,
                    port: 5432,
                    target: "db-0.db.data.svc.cluster.local".into()
                },
            ]
        );
        assert_eq!(
            answers(r.lookup("10.0.42.10.in-addr.arpa", Qtype::Ptr)),
            vec![Rdata::Ptr("db-0.db.data.svc.cluster.local".into())]
        );
        assert_eq!(
            r.lookup("10-42-0-99.db.data.svc.cluster.local", Qtype::A),
            Lookup::NxDomain,
            "not ready"
        );
        // publishNotReadyAddresses: every endpoint.
        let mut publish = svc.clone();
        if let Some(spec) = publish.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        r.apply_service(&publish);
        assert_eq!(
            answers(r.lookup("db.data.svc.cluster.local", Qtype::A)).len(),
            3
        );
        // No endpoints left: the name stays (NODATA); the endpoint names go.
        r.apply_service(&svc);
        r.delete_slice(&sl);
        assert_eq!(
            r.lookup("db.data.svc.cluster.local", Qtype::A),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup("db-0.db.data.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
        // A relist brings the slice back and drops what is gone.
        r.replace_slices(std::slice::from_ref(&sl));
        assert_eq!(
            answers(r.lookup("db.data.svc.cluster.local", Qtype::A)).len(),
            2
        );
        r.replace_services(&[]);
        assert_eq!(
            r.lookup("db.data.svc.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn external_names_are_cnames_followed_inside_the_cluster() {
        let r = Records::new("cluster.local");
        r.apply_service(&web());
        r.apply_service(&service(
            json!({"metadata": {"name": "alias", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local."}}),
        ));
        r.apply_service(&service(
            json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "Example.COM"}}),
        ));
        assert_eq!(
            r.lookup("alias.default.svc.cluster.local", Qtype::A),
            Lookup::Found {
                records: vec![
                    (
                        "alias.default.svc.cluster.local".into(),
                        Rdata::Cname("web.default.svc.cluster.local".into())
                    ),
                    ("web.default.svc.cluster.local".into(), a("10.43.0.20")),
                ],
                external: None
            }
        );
        assert_eq!(
            r.lookup("ext.default.svc.cluster.local", Qtype::A),
            Lookup::Found {
                records: vec![(
                    "ext.default.svc.cluster.local".into(),
                    Rdata::Cname("example.com".into())
                )],
                external: Some("example.com".into())
            }
        );
        assert_eq!(
            answers(r.lookup("ext.default.svc.cluster.local", Qtype::Cname)),
            vec![Rdata::Cname("example.com".into())]
        );
    }

    #[test]
    fn pod_names_carry_their_address() {
        let r = Records::new("cluster.local");
        assert_eq!(
            answers(r.lookup("10-42-0-5.default.pod.cluster.local", Qtype::A)),
            vec![a("10.42.0.5")]
        );
        assert_eq!(
            answers(r.lookup("fd00--5.default.pod.cluster.local", Qtype::Aaaa)),
            vec![Rdata::Aaaa(
                "fd00::5".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)
            )]
        );
        assert_eq!(
            r.lookup("10-42-0-5.default.pod.cluster.local", Qtype::Aaaa),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup("default.pod.cluster.local", Qtype::A),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup("web.default.pod.cluster.local", Qtype::A),
            Lookup::NxDomain
        );
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name(
                "10.43.0.10"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            ),
            "10.0.43.10.in-addr.arpa"
        );
        let v6 = reverse_name(
            "2001:db8::1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        );
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
    }
}
