//! NetworkPolicy enforcement: watches NetworkPolicies, Pods and Namespaces cluster-wide and
//! keeps kubox's network-policy table (`kubox_network::netpol`) in step for the pods on this
//! node (ingress to them, egress from them), as upstream's networking.k8s.io/v1 semantics say:
//! a pod is isolated in a direction only if a policy of its namespace selects it with that
//! policy type; what is allowed is the union of the rules of every policy selecting it. Peers
//! are pods chosen by pod and/or namespace selectors (any node) and ipBlocks with exceptions;
//! named ports are resolved against the destination pod's container ports. Replaced whole at
//! start and after every change, debounced.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kubox_core::net::Ipv4Cidr;
use kubox_core::selectors::LabelSelector as Selector;
use kubox_network::netpol::{self, Policy, Ports, Range, Rule};
use tokio::sync::Notify;

/// A pod that takes part in policies: it has an IPv4 pod address of its own (not host
/// network) and has not finished.
struct PodView<'a> {
    pod: &'a Pod,
    ns: &'a str,
    ip: Ipv4Addr,
    labels: BTreeMap<String, String>,
}

fn pod_views(pods: &[Arc<Pod>]) -> Vec<PodView<'_>> {
    pods.iter()
        .filter_map(|pod| {
            let spec = pod.spec.as_ref()?;
            let status = pod.status.as_ref()?;
            if spec.host_network == Some(true)
                || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
            {
                return None;
            }
            let ip = status.pod_ip.as_deref()?.parse().ok()?;
            Some(PodView {
                pod,
                ns: pod.metadata.namespace.as_deref().unwrap_or_default(),
                ip,
                labels: pod.metadata.labels.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// A metav1.LabelSelector as kubox-core's selector; one that does not parse selects nothing.
fn selector(sel: &LabelSelector) -> Option<Selector> {
    serde_json::to_value(sel)
        .ok()
        .and_then(|v| Selector::from_object(&v).ok())
}

fn matches(sel: Option<&Selector>, labels: &BTreeMap<String, String>) -> bool {
    sel.is_some_and(|s| s.matches(labels))
}

/// The port `name` (with `protocol`) of a pod's containers.
fn named_port(pod: &Pod, name: &str, protocol: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(protocol)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// The ports of a rule; `dests` are the pods whose named ports count (the policy's own pods
/// for ingress, every pod for egress: the peer set limits them further). None: all ports.
fn ports(list: Option<&Vec<NetworkPolicyPort>>, dests: &[&PodView]) -> Option<Ports> {
    let list = list.filter(|l| !l.is_empty())?;
    let mut out = Ports::default();
    for p in list {
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
        match &p.port {
            None => out.any_dest.push((proto, 0, u16::MAX)),
            Some(IntOrString::Int(n)) => {
                let Ok(first) = u16::try_from(*n) else {
                    continue;
                };
                let last = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= first)
                    .unwrap_or(first);
                out.any_dest.push((proto, first, last));
            }
            Some(IntOrString::String(name)) => {
                for d in dests {
                    if let Some(port) = named_port(d.pod, name, &proto) {
                        out.per_dest.push((d.ip, proto.clone(), port));
                    }
                }
            }
        }
    }
    Some(out)
}

/// The addresses of a rule's peers in namespace `ns`. None: every address.
fn peers(
    list: Option<&Vec<NetworkPolicyPeer>>,
    ns: &str,
    pods: &[PodView],
    ns_labels: &BTreeMap<&str, BTreeMap<String, String>>,
) -> Option<Vec<Range>> {
    let list = list.filter(|l| !l.is_empty())?;
    let mut out = Vec::new();
    for peer in list {
        if let Some(block) = &peer.ip_block {
            let Ok(cidr) = Ipv4Cidr::parse(&block.cidr) else {
                continue; // an IPv6 block does not concern IPv4 traffic
            };
            let except: Vec<(Ipv4Addr, u8)> = block
                .except
                .iter()
                .flatten()
                .filter_map(|e| Ipv4Cidr::parse(e).ok())
                .map(|c| (c.addr, c.prefix))
                .collect();
            out.extend(netpol::block_ranges((cidr.addr, cidr.prefix), &except));
            continue;
        }
        let pod_sel = peer.pod_selector.as_ref().map(selector);
        let ns_sel = peer.namespace_selector.as_ref().map(selector);
        for p in pods {
            let ns_ok = match &ns_sel {
                None => p.ns == ns,
                Some(sel) => ns_labels
                    .get(p.ns)
                    .is_some_and(|l| matches(sel.as_ref(), l)),
            };
            let pod_ok = match &pod_sel {
                None => true,
                Some(sel) => matches(sel.as_ref(), &p.labels),
            };
            if ns_ok && pod_ok {
                out.push((p.ip, p.ip));
            }
        }
    }
    Some(out)
}

/// The policy types of a spec, defaulted as upstream when absent: Ingress, and Egress when
/// there are egress rules.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match &spec.policy_types {
        Some(t) if !t.is_empty() => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// The policies as they concern the pods on `node`.
pub fn model(
    policies: &[Arc<NetworkPolicy>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
    node: &str,
) -> Vec<Policy> {
    let pods = pod_views(pods);
    let ns_labels: BTreeMap<&str, BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let mut labels = n.metadata.labels.clone().unwrap_or_default();
            // Set by the API server on every namespace; kept here for older objects.
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.to_string());
            Some((name, labels))
        })
        .collect();
    let all: Vec<&PodView> = pods.iter().collect();
    let mut out = Vec::new();
    for np in policies {
        let Some(spec) = np.spec.as_ref() else {
            continue;
        };
        let ns = np.metadata.namespace.as_deref().unwrap_or_default();
        // An absent podSelector is the empty one: every pod of the namespace.
        let own_sel = spec
            .pod_selector
            .as_ref()
            .map_or(Some(Selector::default()), selector);
        let own: Vec<&PodView> = pods
            .iter()
            .filter(|p| {
                p.ns == ns
                    && p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                    && matches(own_sel.as_ref(), &p.labels)
            })
            .collect();
        if own.is_empty() {
            continue;
        }
        let (ingress, egress) = policy_types(spec);
        out.push(Policy {
            id: format!("{ns}/{}", np.metadata.name.as_deref().unwrap_or_default()),
            pods: own.iter().map(|p| p.ip).collect(),
            ingress: ingress.then(|| {
                spec.ingress
                    .iter()
                    .flatten()
                    .map(|r| Rule {
                        peers: peers(r.from.as_ref(), ns, &pods, &ns_labels),
                        ports: ports(r.ports.as_ref(), &own),
                    })
                    .collect()
            }),
            egress: egress.then(|| {
                spec.egress
                    .iter()
                    .flatten()
                    .map(|r| Rule {
                        peers: peers(r.to.as_ref(), ns, &pods, &ns_labels),
                        ports: ports(r.ports.as_ref(), &all),
                    })
                    .collect()
            }),
        });
    }
    out
}

/// Runs until the task is dropped; `node` is this node's name.
pub async fn run(client: Client, node: String) {
    let kick = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let policies = crate::proxy::watched::<NetworkPolicy>(&client, cfg(), &kick);
    let pods = crate::proxy::watched::<Pod>(&client, cfg(), &kick);
    let namespaces = crate::proxy::watched::<Namespace>(&client, cfg(), &kick);
    let _ = policies.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = namespaces.wait_until_ready().await;
    sync_loop(policies, pods, namespaces, kick, &node).await;
}

async fn sync_loop(
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    kick: Arc<Notify>,
    node: &str,
) {
    let mut applied: Option<String> = None;
    loop {
        let script = netpol::render(&model(
            &policies.state(),
            &pods.state(),
            &namespaces.state(),
            node,
        ));
        if applied.as_ref() != Some(&script) {
            match kubox_network::proxy::apply(&script) {
                Ok(()) => {
                    tracing::debug!("network policy rules updated");
                    applied = Some(script);
                }
                Err(e) => tracing::warn!(error = %e, "programming network policies failed"),
            }
        }
        tokio::select! {
            _ = kick.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            // Retry a failed apply.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
    }

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Arc<Pod> {
        obj(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
    }

    fn namespace(name: &str, labels: Value) -> Arc<Namespace> {
        obj(json!({"metadata": {"name": name, "labels": labels}}))
    }

    fn policy(ns: &str, spec: Value) -> Arc<NetworkPolicy> {
        obj(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn one(ip_: &str) -> Range {
        (ip(ip_), ip(ip_))
    }

    fn world() -> (Vec<Arc<Pod>>, Vec<Arc<Namespace>>) {
        (
            vec![
                pod("a", "web", "node-1", "10.42.0.5", json!({"app": "web"})),
                pod(
                    "a",
                    "client",
                    "node-1",
                    "10.42.0.6",
                    json!({"app": "client"}),
                ),
                pod(
                    "b",
                    "client",
                    "node-2",
                    "10.42.1.6",
                    json!({"app": "client"}),
                ),
                pod("b", "web", "node-2", "10.42.1.5", json!({"app": "web"})),
                obj(json!({
                    "metadata": {"namespace": "a", "name": "host", "labels": {"app": "web"}},
                    "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": []},
                    "status": {"phase": "Running", "podIP": "192.0.2.1"},
                })),
            ],
            vec![
                namespace("a", json!({"team": "x"})),
                namespace("b", json!({"team": "y"})),
            ],
        )
    }

    #[test]
    fn a_policy_selects_local_pods_of_its_namespace_and_defaults_its_types() {
        let (pods, nss) = world();
        let m = model(
            &[policy("a", json!({"podSelector": {}}))],
            &pods,
            &nss,
            "node-1",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, "a/p");
        assert_eq!(
            m[0].pods,
            vec![ip("10.42.0.5"), ip("10.42.0.6")],
            "no host network pod"
        );
        assert_eq!(m[0].ingress, Some(vec![]), "deny all ingress");
        assert_eq!(m[0].egress, None, "egress not isolated");
        // Pods of namespace b are not on node-1: nothing to render there.
        let m = model(
            &[policy("b", json!({"podSelector": {}}))],
            &pods,
            &nss,
            "node-1",
        );
        assert!(m.is_empty(), "{m:?}");
        let m = model(
            &[policy(
                "a",
                json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}),
            )],
            &pods,
            &nss,
            "node-1",
        );
        assert_eq!(m[0].pods, vec![ip("10.42.0.5")]);
        assert_eq!(m[0].ingress, Some(vec![]));
        assert_eq!(m[0].egress, Some(vec![Rule::default()]), "{{}}: allow all");
        let m = model(
            &[policy(
                "a",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            &pods,
            &nss,
            "node-1",
        );
        assert_eq!(
            (m[0].ingress.clone(), m[0].egress.clone()),
            (None, Some(vec![]))
        );
    }

    #[test]
    fn peers_by_pod_namespace_or_both_and_ip_blocks() {
        let (pods, nss) = world();
        let from = |peers: Value| {
            let m = model(
                &[policy(
                    "a",
                    json!({"podSelector": {"matchLabels": {"app": "web"}},
                           "ingress": [{"from": peers}]}),
                )],
                &pods,
                &nss,
                "node-1",
            );
            let rules = m[0].ingress.clone().unwrap_or_default();
            let mut p = rules[0].peers.clone().unwrap_or_default();
            p.sort();
            p
        };
        assert_eq!(
            from(json!([{"podSelector": {"matchLabels": {"app": "client"}}}])),
            vec![one("10.42.0.6")],
            "same namespace only"
        );
        assert_eq!(
            from(json!([{"namespaceSelector": {"matchLabels": {"team": "y"}}}])),
            vec![one("10.42.1.5"), one("10.42.1.6")]
        );
        assert_eq!(
            from(
                json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}])
            ),
            vec![one("10.42.0.6"), one("10.42.1.6")]
        );
        assert_eq!(
            from(
                json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}},
                         "podSelector": {"matchLabels": {"app": "web"}}}])
            ),
            vec![one("10.42.1.5")]
        );
        assert_eq!(
            from(
                json!([{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.0/25"]}},
                         {"ipBlock": {"cidr": "2001:db8::/32"}}])
            ),
            vec![(ip("192.0.2.128"), ip("192.0.2.255"))]
        );
        assert_eq!(
            from(json!([{"podSelector": {"matchLabels": {"app": "nobody"}}}])),
            vec![],
            "selects nobody: nothing allowed"
        );
    }

    #[test]
    fn numeric_ranges_and_named_ports_resolved_against_the_destination() {
        let (pods, nss) = world();
        let m = model(
            &[policy(
                "a",
                json!({"podSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [{"ports": [
                           {"port": "http"}, {"port": "dns", "protocol": "UDP"},
                           {"port": "dns"}, {"port": 80, "endPort": 90}, {"protocol": "SCTP"}]}],
                       "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}),
            )],
            &pods,
            &nss,
            "node-1",
        );
        let ingress = &m[0].ingress.clone().unwrap_or_default()[0];
        assert_eq!(ingress.peers, None, "no from: every source");
        let ports = ingress.ports.clone().unwrap_or_default();
        assert_eq!(
            ports.any_dest,
            vec![("tcp".into(), 80, 90), ("sctp".into(), 0, 65535)]
        );
        assert_eq!(
            ports.per_dest,
            vec![
                (ip("10.42.0.5"), "tcp".into(), 8080),
                (ip("10.42.0.5"), "udp".into(), 5353)
            ],
            "a TCP \"dns\" port does not exist"
        );
        let egress = &m[0].egress.clone().unwrap_or_default()[0];
        let named = egress.ports.clone().unwrap_or_default().per_dest;
        assert_eq!(named.len(), 4, "every pod's http port: {named:?}");
        assert!(named.contains(&(ip("10.42.1.5"), "tcp".into(), 8080)));
    }
}
