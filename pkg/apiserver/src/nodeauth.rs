//! The Node authorizer and NodeRestriction: a node (`system:node:<name>` in `system:nodes`)
//! reads only the Secrets, ConfigMaps, PersistentVolumeClaims and service-account tokens of pods
//! bound to it, and writes only its own Node, Lease, CSINode and pods. The pod graph is kept in
//! memory (a [`crate::mirror`] of the stored pods and PersistentVolumes), as upstream keeps its
//! node graph from informers.
//! PersistentVolumes join it by their `claimRef` (pv → pvc, as upstream's graph): a node gets
//! the PVs bound to claims its pods use. Unlike upstream, a node may also list and watch PVs
//! and update or patch those whose node affinity pins them to it: the agent removes a
//! local-path volume's directory and then the PV's cleanup finalizer.

use crate::rbac::Attributes;
use crate::state::ApiState;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::RwLock;

const PODS: &str = "/registry/core/pods/";
const PVS: &str = "/registry/core/persistentvolumes/";

/// What one pod makes readable by its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodRefs {
    node: String,
    /// (resource plural, name) in the pod's namespace.
    refs: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct Graph {
    pods: HashMap<(String, String), PodRefs>,
    /// (node, resource, namespace, name) -> number of pods referencing it.
    edges: HashMap<(String, &'static str, String, String), usize>,
    /// PV name -> its claim (namespace, name) and the one node its affinity pins it to.
    pvs: HashMap<String, PvRefs>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PvRefs {
    claim: Option<(String, String)>,
    node: Option<String>,
}

fn pv_refs(pv: &Value) -> PvRefs {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    let claim = pv
        .pointer("/spec/claimRef")
        .and_then(|c| Some((s(c.get("namespace"))?, s(c.get("name"))?)));
    // One term whose one requirement is `kubernetes.io/hostname In [node]` (local-path PVs).
    let terms = pv
        .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
        .and_then(Value::as_array);
    let node = match terms.map(Vec::as_slice) {
        Some([t]) => match t
            .get("matchExpressions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([r])
                if r["key"] == "kubernetes.io/hostname"
                    && r["operator"] == "In"
                    && r["values"].as_array().is_some_and(|v| v.len() == 1) =>
            {
                s(r.pointer("/values/0"))
            }
            _ => None,
        },
        _ => None,
    };
    PvRefs { claim, node }
}

/// The node → pod → referenced-object graph.
#[derive(Default)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
}

fn pod_refs(pod: &Value) -> Option<PodRefs> {
    let spec = pod.get("spec")?;
    let node = spec.get("nodeName").and_then(Value::as_str)?.to_string();
    if node.is_empty() {
        return None;
    }
    let name_of = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(String::from);
    let mut refs: Vec<(&'static str, String)> = Vec::new();
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    refs.push(("serviceaccounts", sa.to_string()));
    for s in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        refs.extend(name_of(s, "name").map(|n| ("secrets", n)));
    }
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = v.get("secret") {
            refs.extend(name_of(s, "secretName").map(|n| ("secrets", n)));
        }
        if let Some(c) = v.get("configMap") {
            refs.extend(name_of(c, "name").map(|n| ("configmaps", n)));
        }
        if let Some(p) = v.get("persistentVolumeClaim") {
            refs.extend(name_of(p, "claimName").map(|n| ("persistentvolumeclaims", n)));
        }
        if v.get("ephemeral").is_some()
            && let Some(vn) = v.get("name").and_then(Value::as_str)
        {
            refs.push(("persistentvolumeclaims", format!("{pod_name}-{vn}")));
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = src.get("secret") {
                refs.extend(name_of(s, "name").map(|n| ("secrets", n)));
            }
            if let Some(c) = src.get("configMap") {
                refs.extend(name_of(c, "name").map(|n| ("configmaps", n)));
            }
        }
        // Other volume sources with secret references (CSI, RBD, CephFS, ...).
        for (_, src) in v.as_object().into_iter().flatten() {
            if let Some(r) = src
                .get("secretRef")
                .or_else(|| src.get("nodePublishSecretRef"))
            {
                refs.extend(name_of(r, "name").map(|n| ("secrets", n)));
            }
        }
    }
    for group in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec
            .get(group)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                    refs.extend(name_of(r, "name").map(|n| ("secrets", n)));
                }
                if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                    refs.extend(name_of(r, "name").map(|n| ("configmaps", n)));
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = e.get("secretRef") {
                    refs.extend(name_of(r, "name").map(|n| ("secrets", n)));
                }
                if let Some(r) = e.get("configMapRef") {
                    refs.extend(name_of(r, "name").map(|n| ("configmaps", n)));
                }
            }
        }
    }
    refs.sort();
    refs.dedup();
    Some(PodRefs { node, refs })
}

impl NodeGraph {
    fn set(&self, ns: &str, name: &str, pod: Option<&Value>) {
        let Ok(mut g) = self.graph.write() else {
            return;
        };
        let key = (ns.to_string(), name.to_string());
        if let Some(old) = g.pods.remove(&key) {
            for (res, n) in old.refs {
                let e = (old.node.clone(), res, ns.to_string(), n);
                if let Some(c) = g.edges.get_mut(&e) {
                    *c -= 1;
                    if *c == 0 {
                        g.edges.remove(&e);
                    }
                }
            }
        }
        if let Some(refs) = pod.and_then(pod_refs) {
            for (res, n) in &refs.refs {
                *g.edges
                    .entry((refs.node.clone(), res, ns.to_string(), n.clone()))
                    .or_default() += 1;
            }
            g.pods.insert(key, refs);
        }
    }

    /// Whether a pod bound to `node` references `resource` `ns/name`.
    pub fn references(&self, node: &str, resource: &str, ns: &str, name: &str) -> bool {
        let Ok(g) = self.graph.read() else {
            return false;
        };
        let Some(res) = [
            "secrets",
            "configmaps",
            "persistentvolumeclaims",
            "serviceaccounts",
        ]
        .into_iter()
        .find(|r| *r == resource) else {
            return false;
        };
        g.edges
            .contains_key(&(node.to_string(), res, ns.to_string(), name.to_string()))
    }

    fn set_pv(&self, name: &str, pv: Option<&Value>) {
        if let Ok(mut g) = self.graph.write() {
            match pv {
                Some(pv) => g.pvs.insert(name.to_string(), pv_refs(pv)),
                None => g.pvs.remove(name),
            };
        }
    }

    /// Whether PV `name` is bound to a claim a pod on `node` uses.
    pub fn pv_used_by(&self, node: &str, name: &str) -> bool {
        let claim = match self.graph.read() {
            Ok(g) => g.pvs.get(name).and_then(|p| p.claim.clone()),
            Err(_) => None,
        };
        claim.is_some_and(|(ns, c)| self.references(node, "persistentvolumeclaims", &ns, &c))
    }

    /// Whether PV `name`'s node affinity pins it to `node` alone.
    pub fn pv_local_to(&self, node: &str, name: &str) -> bool {
        self.graph
            .read()
            .ok()
            .and_then(|g| g.pvs.get(name).and_then(|p| p.node.clone()))
            .is_some_and(|n| n == node)
    }

    /// The node a pod is bound to.
    pub fn pod_node(&self, ns: &str, name: &str) -> Option<String> {
        let g = self.graph.read().ok()?;
        g.pods
            .get(&(ns.to_string(), name.to_string()))
            .map(|p| p.node.clone())
    }
}

impl crate::mirror::Mirror for NodeGraph {
    const PREFIXES: &'static [&'static str] = &[PODS, PVS];
    const WHAT: &'static str = "node graph";
    fn apply(&self, key: &str, obj: Option<&Value>) {
        if let Some(name) = key.strip_prefix(PVS) {
            self.set_pv(name, obj);
        } else if let Some((ns, name)) = key.strip_prefix(PODS).and_then(|k| k.split_once('/')) {
            self.set(ns, name, obj);
        }
    }
    fn clear(&self) {
        if let Ok(mut g) = self.graph.write() {
            *g = Graph::default();
        }
    }
}

/// The Node authorizer's decision for node `node`: Some(true) allow, Some(false) deny
/// (NodeRestriction), None no opinion (RBAC decides).
pub fn decide(state: &ApiState, node: &str, a: &Attributes) -> Option<bool> {
    if !a.resource_request {
        return None;
    }
    let read = matches!(a.verb.as_str(), "get" | "list" | "watch");
    let own = a.name == node;
    let g = &state.node_graph;
    match (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => Some(
            read && !a.name.is_empty() && g.references(node, &a.resource, &a.namespace, &a.name),
        ),
        ("", "persistentvolumes", "") => Some(match a.verb.as_str() {
            "get" => g.pv_used_by(node, &a.name),
            "list" | "watch" => true,
            "update" | "patch" => g.pv_local_to(node, &a.name),
            _ => false,
        }),
        ("", "serviceaccounts", "token") => {
            Some(a.verb == "create" && g.references(node, "serviceaccounts", &a.namespace, &a.name))
        }
        ("", "nodes", _) => Some(read || own || a.verb == "create"),
        ("", "pods", "") => match a.verb.as_str() {
            "get" | "list" | "watch" => Some(true),
            // Only mirror pods of its static pods (NodeRestriction checks at admission).
            "create" => Some(true),
            _ => Some(g.pod_node(&a.namespace, &a.name).as_deref() == Some(node)),
        },
        ("", "pods", "status" | "eviction") => {
            Some(g.pod_node(&a.namespace, &a.name).as_deref() == Some(node))
        }
        ("coordination.k8s.io", "leases", "") => {
            // The name of a created Lease is checked by NodeRestriction at admission.
            Some(a.namespace == "kube-node-lease" && (own || a.verb == "create"))
        }
        ("storage.k8s.io", "csinodes", "") => Some(read || own || a.verb == "create"),
        ("", "events", "") | ("events.k8s.io", "events", "") => {
            Some(matches!(a.verb.as_str(), "create" | "update" | "patch") || read)
        }
        ("", "services" | "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") => {
            read.then_some(true)
        }
        ("storage.k8s.io", "csidrivers" | "storageclasses", "")
        | ("node.k8s.io", "runtimeclasses", "") => read.then_some(true),
        ("certificates.k8s.io", "certificatesigningrequests", "") => {
            matches!(a.verb.as_str(), "create" | "get" | "list" | "watch").then_some(true)
        }
        ("authentication.k8s.io", "tokenreviews", "")
        | ("authorization.k8s.io", "subjectaccessreviews", "") => {
            (a.verb == "create").then_some(true)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_reference_what_they_mount_and_read() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "dev"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "tls"}},
                    {"name": "b", "configMap": {"name": "conf"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                ],
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                    "envFrom": [{"configMapRef": {"name": "env"}}]}],
            }
        });
        let g = NodeGraph::default();
        g.set("dev", "web-1", Some(&pod));
        for (res, name) in [
            ("secrets", "tls"),
            ("secrets", "regcred"),
            ("secrets", "db"),
            ("configmaps", "conf"),
            ("configmaps", "env"),
            ("configmaps", "kube-root-ca.crt"),
            ("persistentvolumeclaims", "data"),
            ("serviceaccounts", "builder"),
        ] {
            assert!(g.references("n1", res, "dev", name), "{res}/{name}");
            assert!(!g.references("n2", res, "dev", name), "{res}/{name}");
            assert!(!g.references("n1", res, "prod", name), "{res}/{name}");
        }
        assert!(!g.references("n1", "secrets", "dev", "other"));
        assert_eq!(g.pod_node("dev", "web-1").as_deref(), Some("n1"));
        let pv = json!({"spec": {"claimRef": {"namespace": "dev", "name": "data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}});
        g.set_pv("pv1", Some(&pv));
        assert!(g.pv_used_by("n1", "pv1"));
        assert!(!g.pv_used_by("n2", "pv1"));
        assert!(g.pv_local_to("n1", "pv1"));
        assert!(!g.pv_local_to("n2", "pv1"));
        g.set("dev", "web-1", None);
        assert!(
            !g.pv_used_by("n1", "pv1"),
            "no pod on n1 uses the claim any more"
        );
        assert!(g.pv_local_to("n1", "pv1"));
        g.set_pv("pv1", None);
        assert!(!g.pv_local_to("n1", "pv1"));
        assert!(!g.references("n1", "secrets", "dev", "tls"));
        assert_eq!(g.pod_node("dev", "web-1"), None);
    }
}
