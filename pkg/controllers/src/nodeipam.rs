//! Node IPAM: gives every Node without one a /24 `podCIDR` (and `podCIDRs`) from the cluster
//! CIDR, the lowest free one. One node at a time, from a fresh list, so no two nodes share a
//! range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;

struct Ctx {
    client: Client,
    cluster: (Ipv4Addr, u8),
}

pub async fn run(client: Client, cluster: (Ipv4Addr, u8)) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cluster,
    });
    Controller::new(Api::<Node>::all(client), watcher::Config::default())
        .with_config(Config::default().concurrency(1))
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

/// The lowest /24 of `cluster` not in `taken` (`10.42.3.0/24`).
pub fn next_free(cluster: (Ipv4Addr, u8), taken: &BTreeSet<String>) -> Option<String> {
    let (base, prefix) = cluster;
    if prefix > 24 {
        return None;
    }
    let base = u32::from(base) & (u32::MAX << (32 - u32::from(prefix)));
    let count = 1u32 << (24 - u32::from(prefix));
    (0..count)
        .map(|i| format!("{}/24", Ipv4Addr::from(base + (i << 8))))
        .find(|c| !taken.contains(c))
}

fn has_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty())
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if has_cidr(&node) {
        return Ok(Action::await_change());
    }
    // The watch may lag behind our own last assignment: decide on a fresh list.
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let all = nodes.list(&ListParams::default()).await?.items;
    if all
        .iter()
        .any(|n| n.metadata.uid == node.metadata.uid && has_cidr(n))
    {
        return Ok(Action::await_change());
    }
    let taken: BTreeSet<String> = all
        .into_iter()
        .filter_map(|n| n.spec.and_then(|s| s.pod_cidr))
        .collect();
    let Some(cidr) = next_free(ctx.cluster, &taken) else {
        tracing::warn!(node = %node.name_any(), "the cluster CIDR has no free /24 left for a node");
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    tracing::info!(node = %node.name_any(), pod_cidr = %cidr, "assigned pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_slash_24_is_handed_out() {
        let cluster = (Ipv4Addr::new(10, 42, 0, 0), 16);
        let mut taken = BTreeSet::new();
        assert_eq!(next_free(cluster, &taken).as_deref(), Some("10.42.0.0/24"));
        taken.insert("10.42.0.0/24".to_string());
        taken.insert("10.42.2.0/24".to_string());
        assert_eq!(next_free(cluster, &taken).as_deref(), Some("10.42.1.0/24"));
        let tiny = (Ipv4Addr::new(10, 42, 7, 0), 24);
        assert_eq!(
            next_free(tiny, &BTreeSet::new()).as_deref(),
            Some("10.42.7.0/24")
        );
        assert_eq!(next_free(tiny, &["10.42.7.0/24".to_string()].into()), None);
    }
}
