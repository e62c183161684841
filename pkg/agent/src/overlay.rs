//! The multi-node pod network, as flannel's vxlan backend with its kube subnet manager runs
//! it: once the node has a podCIDR the agent makes `flannel.1` (kubox-network's
//! [`overlay`](kubox_network::overlay)) and publishes flannel's annotations on its own Node;
//! a watch of every Node keeps the device's routes, neighbour and FDB entries those of the
//! other nodes that published theirs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubox_network::overlay::{self, Mac, OverlayError, Peer};
use serde_json::json;

pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// What the overlay needs of one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeView {
    pod_cidr: Option<(Ipv4Addr, u8)>,
    annotations: BTreeMap<String, String>,
}

impl NodeView {
    fn of(node: &Node) -> NodeView {
        let pod_cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| kubox_core::net::Ipv4Cidr::parse(c).ok())
            .map(|c| (c.addr, c.prefix));
        let annotations = node
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("flannel.alpha.coreos.com/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        NodeView {
            pod_cidr,
            annotations,
        }
    }

    /// The node as a peer, if it has a podCIDR and published a usable vxlan VTEP.
    fn peer(&self) -> Option<Peer> {
        let subnet = self.pod_cidr?;
        if self.annotations.get(BACKEND_TYPE)? != "vxlan" {
            return None;
        }
        let data: serde_json::Value =
            serde_json::from_str(self.annotations.get(BACKEND_DATA)?).ok()?;
        if data.get("VNI").and_then(|v| v.as_u64()) != Some(u64::from(overlay::VNI)) {
            return None;
        }
        let vtep_mac = overlay::parse_mac(data.get("VtepMAC")?.as_str()?)?;
        let public_ip = self.annotations.get(PUBLIC_IP)?.parse().ok()?;
        Some(Peer {
            subnet,
            vtep_mac,
            public_ip,
        })
    }
}

/// flannel's annotations for this node's VTEP.
fn annotations(vtep_mac: &Mac, public_ip: Ipv4Addr) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (
            BACKEND_DATA.to_string(),
            json!({"VNI": overlay::VNI, "VtepMAC": overlay::format_mac(vtep_mac)}).to_string(),
        ),
        (PUBLIC_IP.to_string(), public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ])
}

/// The peers in `nodes`: every node but `me` that can be one, one per subnet (its own
/// subnet is never a peer's).
fn peers(nodes: &BTreeMap<String, NodeView>, me: &str) -> Vec<Peer> {
    let own = nodes.get(me).and_then(|n| n.pod_cidr);
    let mut by_subnet: BTreeMap<(Ipv4Addr, u8), Peer> = BTreeMap::new();
    for (name, n) in nodes {
        if name == me {
            continue;
        }
        if let Some(p) = n.peer().filter(|p| Some(p.subnet) != own) {
            by_subnet.entry(p.subnet).or_insert(p);
        }
    }
    by_subnet.into_values().collect()
}

/// How long a failed netlink or API step waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the overlay of node `node_name` (reached by peers at `node_ip`) until aborted. With
/// no VXLAN support in the kernel (or an IPv6 node IP) it logs one warning and returns: the
/// node's own pod network does not need it.
pub async fn run(client: Client, node_name: String, node_ip: IpAddr, mtu: u32) {
    let IpAddr::V4(public_ip) = node_ip else {
        tracing::warn!(%node_ip, "the VXLAN overlay needs an IPv4 node IP; pods reach only pods of this node");
        return;
    };
    let api: Api<Node> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, NodeView>> = None;
    let mut listed = false;
    // The subnet flannel.1 is set up for, and its MAC.
    let mut device: Option<((Ipv4Addr, u8), Mac)> = None;
    let mut synced: Option<Vec<Peer>> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async move {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name.clone()) {
                        l.insert(name, NodeView::of(&n));
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    nodes = listing.take().unwrap_or_default();
                    listed = true;
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    if let Some(name) = n.metadata.name.clone() {
                        nodes.insert(name, NodeView::of(&n));
                    }
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    if let Some(name) = n.metadata.name.as_deref() {
                        nodes.remove(name);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "node watch failed; retrying");
                    continue;
                }
                None => return,
            },
            _ = retry => retry_at = None,
        }
        if !listed || retry_at.is_some() {
            continue;
        }
        let own = nodes.get(&node_name).cloned().unwrap_or_default();
        let Some(subnet) = own.pod_cidr else {
            continue;
        };
        // The device, for this subnet.
        if device.map(|(s, _)| s) != Some(subnet) {
            let made =
                tokio::task::spawn_blocking(move || overlay::ensure_device(public_ip, subnet, mtu))
                    .await;
            match made {
                Ok(Ok(mac)) => {
                    tracing::info!(device = overlay::DEVICE, vtep_mac = %overlay::format_mac(&mac), subnet = %format_args!("{}/{}", subnet.0, subnet.1), "VXLAN overlay device ready");
                    device = Some((subnet, mac));
                    synced = None;
                }
                Ok(Err(OverlayError::Unsupported(e))) => {
                    tracing::warn!(error = %e, "no VXLAN overlay: pods reach only pods of this node");
                    return;
                }
                Ok(Err(OverlayError::Netlink(e))) => {
                    tracing::warn!(error = %e, "setting up the VXLAN overlay device failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "setting up the VXLAN overlay device failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                    continue;
                }
            }
        }
        let Some((_, mac)) = device else { continue };
        // This node's annotations, as flannel's kube subnet manager writes them.
        let want = annotations(&mac, public_ip);
        if want.iter().any(|(k, v)| own.annotations.get(k) != Some(v)) {
            let patch = json!({"metadata": {"annotations": want}});
            match api
                .patch(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(n) => {
                    nodes.insert(node_name.clone(), NodeView::of(&n));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing the node's VXLAN annotations failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                    continue;
                }
            }
        }
        // The other nodes' entries.
        let peers = peers(&nodes, &node_name);
        if synced.as_ref() == Some(&peers) {
            continue;
        }
        let to_sync = peers.clone();
        match tokio::task::spawn_blocking(move || overlay::sync_peers(&to_sync)).await {
            Ok(Ok(report)) => {
                if report.added + report.removed > 0 {
                    tracing::info!(
                        peers = peers.len(),
                        added = report.added,
                        removed = report.removed,
                        "VXLAN overlay entries updated"
                    );
                }
                synced = Some(peers);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "updating the VXLAN overlay entries failed; retrying");
                retry_at = Some(tokio::time::Instant::now() + RETRY);
                // The device is checked again too (someone may have deleted it).
                device = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the VXLAN overlay entries failed; retrying");
                retry_at = Some(tokio::time::Instant::now() + RETRY);
                device = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn view(cidr: Option<(Ipv4Addr, u8)>, mac: &Mac, ip: Ipv4Addr) -> NodeView {
        NodeView {
            pod_cidr: cidr,
            annotations: annotations(mac, ip),
        }
    }

    #[test]
    fn annotations_are_flannels() {
        let a = annotations(
            &[0x0e, 0x6b, 192, 168, 230, 1],
            Ipv4Addr::new(192, 168, 230, 1),
        );
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"0e:6b:c0:a8:e6:01"}"#
        );
        assert_eq!(a[PUBLIC_IP], "192.168.230.1");
        assert_eq!(a[KUBE_SUBNET_MANAGER], "true");
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_subnet_and_a_vtep() {
        let ip = |d| Ipv4Addr::new(192, 168, 230, d);
        let net = |c| Some((Ipv4Addr::new(10, 42, c, 0), 24));
        let mac = |d| [0x0e, 0x6b, 192, 168, 230, d];
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), view(net(0), &mac(1), ip(1)));
        nodes.insert("b".to_string(), view(net(1), &mac(2), ip(2)));
        // No podCIDR yet; no annotations; another backend; a bad MAC.
        nodes.insert("c".to_string(), view(None, &mac(3), ip(3)));
        nodes.insert(
            "d".to_string(),
            NodeView {
                pod_cidr: net(4),
                ..Default::default()
            },
        );
        let mut host_gw = view(net(5), &mac(5), ip(5));
        host_gw
            .annotations
            .insert(BACKEND_TYPE.into(), "host-gw".into());
        nodes.insert("e".to_string(), host_gw);
        let mut bad = view(net(6), &mac(6), ip(6));
        bad.annotations
            .insert(BACKEND_DATA.into(), r#"{"VNI":1,"VtepMAC":"zz"}"#.into());
        nodes.insert("f".to_string(), bad);
        let p = peers(&nodes, "a");
        assert_eq!(
            p,
            vec![Peer {
                subnet: (Ipv4Addr::new(10, 42, 1, 0), 24),
                vtep_mac: mac(2),
                public_ip: ip(2),
            }]
        );
        // A node claiming our own subnet is never a peer.
        nodes.insert("g".to_string(), view(net(0), &mac(7), ip(7)));
        assert_eq!(peers(&nodes, "a").len(), 1);
    }
}
