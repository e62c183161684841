//! ServiceLB, as k3s's servicelb gives a LoadBalancer Service its addresses: the ingress of
//! every `type: LoadBalancer` Service without a `spec.loadBalancerClass` is the ExternalIPs of
//! the Ready nodes (their InternalIPs when no node has one), of the Service's IP family,
//! sorted. When any node carries `svccontroller.k3s.cattle.io/enablelb`, only nodes where it
//! is `true` take part. The node agents' Service proxy accepts the traffic to these addresses
//! (no pods in between, unlike k3s's svclb DaemonSets). A Service that stops being a
//! LoadBalancer has its ingress cleared.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;

/// The node label that limits ServiceLB to some nodes (as in k3s).
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    controller
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_: Node| {
                services
                    .state()
                    .into_iter()
                    .filter(|s| handled(s))
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

/// A LoadBalancer Service of no load-balancer class.
fn handled(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ingress addresses of `svc` given the cluster's `nodes` (see the module doc).
pub fn ingress_ips(svc: &Service, nodes: &[Node]) -> Vec<String> {
    let gated = nodes
        .iter()
        .any(|n| n.labels().contains_key(ENABLE_LB_LABEL));
    let mut external = BTreeSet::new();
    let mut internal = BTreeSet::new();
    for node in nodes.iter().filter(|n| node_ready(n)) {
        if gated && enable_lb_label(node) != Some("true") {
            continue;
        }
        for a in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            let Ok(ip) = a.address.parse::<IpAddr>() else {
                continue;
            };
            match a.type_.as_str() {
                "ExternalIP" => external.insert(ip),
                "InternalIP" => internal.insert(ip),
                _ => false,
            };
        }
    }
    let families: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_else(|| vec!["IPv4".into()]);
    let chosen = if external.is_empty() {
        internal
    } else {
        external
    };
    chosen
        .into_iter()
        .filter(|ip| families.iter().any(|f| (f == "IPv4") == ip.is_ipv4()))
        .map(|ip| ip.to_string())
        .collect()
}

fn enable_lb_label(node: &Node) -> Option<&str> {
    node.labels().get(ENABLE_LB_LABEL).map(String::as_str)
}

fn current_ingress(svc: &Service) -> Value {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .unwrap_or(Value::Null)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let has_class = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.load_balancer_class.is_some());
    if has_class {
        return Ok(Action::await_change()); // another load balancer's
    }
    let want = if handled(&svc) {
        let nodes = Api::<Node>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let ips = ingress_ips(&svc, &nodes);
        if ips.is_empty() {
            Value::Null
        } else {
            ips.iter()
                .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                .collect()
        }
    } else {
        Value::Null
    };
    if current_ingress(&svc) != want {
        let api: Api<Service> =
            Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
        let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
        api.patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        tracing::debug!(service = %svc.name_any(), ingress = %want, "load-balancer ingress updated");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, addrs: &[(&str, &str)], labels: Value) -> Node {
        let addresses: Vec<Value> = addrs
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addresses,
            },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn lb() -> Service {
        serde_json::from_value(json!({"spec": {"type": "LoadBalancer"}})).unwrap_or_default()
    }

    #[test]
    fn ready_nodes_internal_ips_or_their_external_ips() {
        let nodes = vec![
            node(
                "b",
                true,
                &[("InternalIP", "10.0.0.2"), ("Hostname", "b")],
                json!({}),
            ),
            node("a", true, &[("InternalIP", "10.0.0.1")], json!({})),
            node("c", false, &[("InternalIP", "10.0.0.3")], json!({})),
            node("d", true, &[("InternalIP", "fd00::4")], json!({})),
        ];
        assert_eq!(ingress_ips(&lb(), &nodes), vec!["10.0.0.1", "10.0.0.2"]);
        let mut nodes = nodes;
        nodes.push(node(
            "e",
            true,
            &[("InternalIP", "10.0.0.5"), ("ExternalIP", "203.0.113.5")],
            json!({}),
        ));
        assert_eq!(ingress_ips(&lb(), &nodes), vec!["203.0.113.5"]);
    }

    #[test]
    fn the_enablelb_label_limits_the_nodes() {
        let nodes = vec![
            node(
                "a",
                true,
                &[("InternalIP", "10.0.0.1")],
                json!({ENABLE_LB_LABEL: "true"}),
            ),
            node(
                "b",
                true,
                &[("InternalIP", "10.0.0.2")],
                json!({ENABLE_LB_LABEL: "false"}),
            ),
            node("c", true, &[("InternalIP", "10.0.0.3")], json!({})),
        ];
        assert_eq!(ingress_ips(&lb(), &nodes), vec!["10.0.0.1"]);
    }

    #[test]
    fn only_classless_load_balancers_are_handled() {
        assert!(handled(&lb()));
        let classed: Service = serde_json::from_value(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}}),
        )
        .unwrap_or_default();
        assert!(!handled(&classed));
        let plain: Service =
            serde_json::from_value(json!({"spec": {"type": "NodePort"}})).unwrap_or_default();
        assert!(!handled(&plain));
    }
}
