//! The Service proxy: watches Services and EndpointSlices and keeps kubox's nftables table in
//! step (see `kubox_network::proxy`). Replaced whole at start (stale rules of a previous run
//! go), then updated after every change, debounced (session-affinity state survives updates).
//! Endpoints are chosen as kube-proxy does: ready ones, else serving terminating ones; those
//! whose `nodeName` is this node serve the `Local` traffic policies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubox_network::proxy::{self, Ruleset, ServicePort};
use tokio::sync::{Notify, watch};

/// The node-local cluster DNS: traffic for `cluster_dns` port 53 (UDP and TCP; the ports of
/// the `kube-system/kube-dns` Service) goes to `target:53` (kubox-dns on the pod bridge's
/// gateway, once it runs) instead of to the Service's endpoints, which it has none of. Every
/// node answers its own pods, as NodeLocal DNSCache would.
pub struct LocalDns {
    pub cluster_dns: Option<Ipv4Addr>,
    pub target: watch::Receiver<Option<Ipv4Addr>>,
}

/// Points the cluster DNS address's port-53 service ports at the node-local DNS `target`.
pub fn redirect_cluster_dns(ports: &mut [ServicePort], cluster_dns: Ipv4Addr, target: Ipv4Addr) {
    for sp in ports.iter_mut().filter(|sp| {
        sp.port == 53
            && sp.addresses.contains(&cluster_dns)
            && matches!(sp.protocol.as_str(), "udp" | "tcp")
    }) {
        sp.endpoints = vec![(target, 53)];
        sp.local_endpoints = vec![(target, 53)];
    }
}

/// The service ports of `services`, with the usable endpoints of `slices` (those on
/// `node` apart).
pub fn model(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    node: &str,
) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        if s.address_type != "IPv4" {
            continue;
        }
        by_service
            .entry((
                s.metadata.namespace.clone().unwrap_or_default(),
                svc.clone(),
            ))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let spec = svc.spec.clone().unwrap_or_default();
        let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        if type_ == "ExternalName" {
            continue;
        }
        let addresses: Vec<Ipv4Addr> = ipv4s(
            spec.cluster_ips
                .clone()
                .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
                .iter()
                .flatten(),
        );
        let external_addresses = external_addresses(svc, &type_);
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(proxy::DEFAULT_AFFINITY_TIMEOUT)
        });
        for p in spec.ports.iter().flatten() {
            let pname = p.name.clone().unwrap_or_default();
            let protocol = p
                .protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase();
            let node_port = matches!(type_.as_str(), "NodePort" | "LoadBalancer")
                .then_some(p.node_port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok());
            if addresses.is_empty() && node_port.is_none() {
                continue; // headless
            }
            let (endpoints, local_endpoints) = usable_endpoints(&slices, &pname, node);
            out.push(ServicePort {
                id: format!("{ns}/{name}:{pname}"),
                protocol,
                port: u16::try_from(p.port).unwrap_or(0),
                addresses: addresses.clone(),
                external_addresses: external_addresses.clone(),
                node_port,
                endpoints,
                local_endpoints,
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                affinity_timeout,
            });
        }
    }
    out
}

/// An endpoint address and target port.
type Endpoint = (Ipv4Addr, u16);

fn ipv4s<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = ips.into_iter().filter_map(|ip| ip.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// The addresses of external traffic: `spec.externalIPs` and, of a LoadBalancer, the ingress
/// IPs in its status.
fn external_addresses(svc: &Service, type_: &str) -> Vec<Ipv4Addr> {
    let spec = svc.spec.as_ref();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .filter(|_| type_ == "LoadBalancer")
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_ref());
    ipv4s(
        spec.and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .chain(ingress),
    )
}

/// The endpoints of a service port that may receive traffic, cluster-wide and on `node`, as
/// kube-proxy picks them: the ready ones; when there is none, the serving ones that are
/// terminating (so connections drain to pods on their way out instead of failing).
fn usable_endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    node: &str,
) -> (Vec<Endpoint>, Vec<Endpoint>) {
    // (address, port, local, ready, serving and terminating)
    let mut all = BTreeSet::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|sp| sp.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|sp| sp.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node);
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<Ipv4Addr>() {
                    all.insert((ip, target, local, ready, serving && terminating));
                }
            }
        }
    }
    let pick = |only_local: bool| -> Vec<Endpoint> {
        let candidates = || all.iter().filter(|e| e.2 || !only_local);
        let mut chosen: Vec<_> = candidates().filter(|e| e.3).map(|e| (e.0, e.1)).collect();
        if chosen.is_empty() {
            chosen = candidates().filter(|e| e.4).map(|e| (e.0, e.1)).collect();
        }
        chosen.sort();
        chosen.dedup();
        chosen
    };
    (pick(false), pick(true))
}

/// Runs until the task is dropped; `node` is this node's name (endpoints on it are local).
pub async fn run(client: Client, node: String, cfg: proxy::Config, dns: LocalDns) {
    let kick = Arc::new(Notify::new());
    let services = watched::<Service>(&client, watcher::Config::default(), &kick);
    let slices = watched::<EndpointSlice>(&client, watcher::Config::default(), &kick);
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    sync_loop(services, slices, kick, &node, &cfg, dns).await;
}

/// A store of the `K` that `config` selects, kept by a watch that wakes `kick` on each change.
pub(crate) fn watched<K>(client: &Client, config: watcher::Config, kick: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let kick = kick.clone();
    tokio::spawn(
        reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), config))
            .default_backoff()
            .touched_objects()
            .for_each(move |_| {
                kick.notify_one();
                async {}
            }),
    );
    store
}

async fn sync_loop(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    kick: Arc<Notify>,
    node: &str,
    cfg: &proxy::Config,
    mut dns: LocalDns,
) {
    // The last ruleset applied; None at start and after a failure, when the whole table is
    // replaced (stale rules of an earlier run go) instead of updated.
    let mut applied: Option<Ruleset> = None;
    loop {
        let mut ports = model(&services.state(), &slices.state(), node);
        if let (Some(ip), Some(target)) = (dns.cluster_dns, *dns.target.borrow_and_update()) {
            redirect_cluster_dns(&mut ports, ip, target);
        }
        let rules = proxy::render(cfg, &ports);
        if applied.as_ref() != Some(&rules) {
            let script = match &applied {
                Some(prev) => rules.update_script(prev),
                None => rules.replace_script(),
            };
            match proxy::apply(&script) {
                Ok(()) => {
                    tracing::debug!("service proxy rules updated");
                    applied = Some(rules);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "programming the service proxy failed");
                    applied = None;
                }
            }
        }
        tokio::select! {
            _ = kick.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(()) = dns.target.changed() => {}
            // Retry a failed apply.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value, status: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "web"},
                "spec": spec,
                "status": status,
            }))
            .unwrap_or_default(),
        )
    }

    fn slice(endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": "web-abc",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn ep(
        ip: &str,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> serde_json::Value {
        json!({"addresses": [ip], "nodeName": node,
               "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn one(
        spec: serde_json::Value,
        status: serde_json::Value,
        eps: serde_json::Value,
    ) -> ServicePort {
        let m = model(&[service(spec, status)], &[slice(eps)], "node-1");
        assert_eq!(m.len(), 1, "{m:?}");
        m.into_iter().next().unwrap_or_default()
    }

    const PORTS: &str = r#"[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]"#;

    fn ports() -> serde_json::Value {
        serde_json::from_str(PORTS).unwrap_or_default()
    }

    #[test]
    fn ready_endpoints_serve_and_local_ones_are_those_on_this_node() {
        let sp = one(
            json!({"type": "NodePort", "clusterIP": "10.43.0.20", "ports": ports(),
                   "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local"}),
            json!({}),
            json!([
                ep("10.42.0.5", "node-1", true, true, false),
                ep("10.42.1.5", "node-2", true, true, false),
                ep("10.42.0.6", "node-1", false, false, false),
            ]),
        );
        let a = |s: &str| (s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED), 8080);
        assert_eq!(sp.endpoints, vec![a("10.42.0.5"), a("10.42.1.5")]);
        assert_eq!(sp.local_endpoints, vec![a("10.42.0.5")]);
        assert!(sp.internal_local && sp.external_local);
        assert_eq!(sp.node_port, Some(30080));
        assert_eq!(sp.affinity_timeout, None);
    }

    #[test]
    fn without_ready_endpoints_serving_terminating_ones_drain() {
        let sp = one(
            json!({"clusterIP": "10.43.0.20", "ports": ports()}),
            json!({}),
            json!([
                ep("10.42.0.5", "node-1", false, true, true),
                ep("10.42.0.6", "node-1", false, false, true),
                ep("10.42.0.7", "node-1", false, false, false),
            ]),
        );
        assert_eq!(sp.endpoints, vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)]);
        assert_eq!(sp.node_port, None, "a ClusterIP service has no node port");
        let sp = one(
            json!({"clusterIP": "10.43.0.20", "ports": ports()}),
            json!({}),
            json!([
                ep("10.42.0.5", "node-1", false, true, true),
                ep("10.42.0.8", "node-2", true, true, false),
            ]),
        );
        assert_eq!(sp.endpoints, vec![(Ipv4Addr::new(10, 42, 0, 8), 8080)]);
        assert_eq!(
            sp.local_endpoints,
            vec![(Ipv4Addr::new(10, 42, 0, 5), 8080)],
            "no ready local endpoint: the terminating local one"
        );
    }

    #[test]
    fn external_ips_and_load_balancer_ingress_are_external_addresses() {
        let sp = one(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.20", "ports": ports(),
                   "externalIPs": ["192.0.2.50"], "sessionAffinity": "ClientIP"}),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example"}]}}),
            json!([ep("10.42.0.5", "node-1", true, true, false)]),
        );
        assert_eq!(sp.addresses, vec![Ipv4Addr::new(10, 43, 0, 20)]);
        assert_eq!(
            sp.external_addresses,
            vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 50)]
        );
        assert_eq!(sp.affinity_timeout, Some(10800));
        // A stale ingress of a service that is no longer a LoadBalancer is not served.
        let sp = one(
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.20", "ports": ports(),
                   "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
            json!([]),
        );
        assert!(sp.external_addresses.is_empty(), "{sp:?}");
        assert_eq!(sp.affinity_timeout, Some(30));
    }

    #[test]
    fn the_cluster_dns_address_goes_to_the_node_local_dns() {
        let kube_dns = service(
            json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}]}),
            json!({}),
        );
        let mut ports = model(&[kube_dns], &[], "node-1");
        assert!(ports.iter().all(|p| p.endpoints.is_empty()));
        let gw = Ipv4Addr::new(10, 42, 0, 1);
        redirect_cluster_dns(&mut ports, Ipv4Addr::new(10, 43, 0, 10), gw);
        let by_port = |name: &str| {
            ports
                .iter()
                .find(|p| p.id.ends_with(name))
                .map(|p| p.endpoints.clone())
        };
        assert_eq!(by_port(":dns"), Some(vec![(gw, 53)]));
        assert_eq!(by_port(":dns-tcp"), Some(vec![(gw, 53)]));
        assert_eq!(by_port(":metrics"), Some(vec![]));
    }
}
