//! The Service proxy: watches Services and EndpointSlices and keeps kubox's nftables table in
//! step (see `kubox_network::proxy`). Rewritten at start (stale rules of a previous run go)
//! and after every change, debounced. One special case, [`LocalDns`]: the cluster DNS
//! address is answered by this node's own DNS server.

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
use kubox_network::proxy::{self, ServicePort};
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
    }
}

/// The service ports of `services`, with ready endpoints from `slices`.
pub fn model(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
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
        let mut addresses: Vec<Ipv4Addr> = spec
            .cluster_ips
            .clone()
            .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
            .unwrap_or_default()
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        addresses.extend(
            spec.external_ips
                .iter()
                .flatten()
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
        );
        for ing in svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(ip) = ing.ip.as_ref().and_then(|ip| ip.parse().ok()) {
                addresses.push(ip);
            }
        }
        addresses.sort();
        addresses.dedup();
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let pname = p.name.clone().unwrap_or_default();
            let protocol = p
                .protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase();
            let mut endpoints = BTreeSet::new();
            for slice in &slices {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|sp| sp.name.clone().unwrap_or_default() == pname)
                    .and_then(|sp| sp.port)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let (Ok(ip), Ok(port)) = (a.parse::<Ipv4Addr>(), u16::try_from(target)) {
                            endpoints.insert((ip, port));
                        }
                    }
                }
            }
            let node_port = matches!(type_.as_str(), "NodePort" | "LoadBalancer")
                .then_some(p.node_port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok());
            if addresses.is_empty() && node_port.is_none() {
                continue; // headless
            }
            out.push(ServicePort {
                id: format!("{ns}/{name}:{pname}"),
                protocol,
                port: u16::try_from(p.port).unwrap_or(0),
                addresses: addresses.clone(),
                node_port,
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    out
}

/// Runs until the task is dropped.
pub async fn run(client: Client, dns: LocalDns) {
    let kick = Arc::new(Notify::new());
    let services = watched::<Service>(&client, &kick);
    let slices = watched::<EndpointSlice>(&client, &kick);
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    sync_loop(services, slices, kick, dns).await;
}

/// A store of every `K`, kept by a watch that wakes `kick` on each change.
fn watched<K>(client: &Client, kick: &Arc<Notify>) -> Store<K>
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
        reflector::reflector(
            writer,
            watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
        )
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
    mut dns: LocalDns,
) {
    let mut applied = String::new();
    loop {
        let mut ports = model(&services.state(), &slices.state());
        if let (Some(ip), Some(target)) = (dns.cluster_dns, *dns.target.borrow_and_update()) {
            redirect_cluster_dns(&mut ports, ip, target);
        }
        let script = proxy::render(&ports);
        if script != applied {
            match proxy::apply(&script) {
                Ok(()) => {
                    tracing::debug!("service proxy rules updated");
                    applied = script;
                }
                Err(e) => tracing::warn!(error = %e, "programming the service proxy failed"),
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

    #[test]
    fn the_cluster_dns_address_goes_to_the_node_local_dns() {
        let kube_dns: Service = serde_json::from_value(json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "metrics", "port": 9153, "protocol": "TCP"}]}}))
        .unwrap_or_default();
        let mut ports = model(&[Arc::new(kube_dns)], &[]);
        assert!(ports.iter().all(|p| p.endpoints.is_empty()));
        let gw = Ipv4Addr::new(10, 42, 0, 1);
        redirect_cluster_dns(&mut ports, Ipv4Addr::new(10, 43, 0, 10), gw);
        let by_id = |id: &str| {
            ports
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.endpoints.clone())
        };
        assert_eq!(by_id("kube-system/kube-dns:dns"), Some(vec![(gw, 53)]));
        assert_eq!(by_id("kube-system/kube-dns:dns-tcp"), Some(vec![(gw, 53)]));
        assert_eq!(by_id("kube-system/kube-dns:metrics"), Some(vec![]));
    }
}
