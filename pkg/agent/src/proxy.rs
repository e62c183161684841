//! The Service proxy: watches Services and EndpointSlices and keeps kubox's nftables table in
//! step (see `kubox_network::proxy`). Rewritten at start (stale rules of a previous run go)
//! and after every change, debounced.

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
use tokio::sync::Notify;

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
pub async fn run(client: Client) {
    let kick = Arc::new(Notify::new());
    let services = watched::<Service>(&client, &kick);
    let slices = watched::<EndpointSlice>(&client, &kick);
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    sync_loop(services, slices, kick).await;
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

async fn sync_loop(services: Store<Service>, slices: Store<EndpointSlice>, kick: Arc<Notify>) {
    let mut applied = String::new();
    loop {
        let script = proxy::render(&model(&services.state(), &slices.state()));
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
            // Retry a failed apply.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
