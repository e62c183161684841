//! The scheduler's view of the cluster for one pass: every node with the pods placed on it
//! (bound, or assumed by this scheduler while the binding is in flight), namespaces' labels
//! (for pod affinity's `namespaceSelector`), and the few inputs the plugins need across nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::fit::{self, NodeUsage};

/// One node and what runs on it.
#[derive(Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    /// The node's allocatable resources, parsed once.
    pub allocatable: fit::Resources,
    pub usage: NodeUsage,
    /// Pods placed here (not Succeeded/Failed), terminating ones included.
    pub pods: Vec<Arc<Pod>>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: fit::allocatable(&node),
            node,
            usage: NodeUsage::default(),
            pods: Vec::new(),
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        fit::node_labels(&self.node)
    }

    fn clone_empty(&self) -> NodeInfo {
        NodeInfo {
            node: self.node.clone(),
            name: self.name.clone(),
            allocatable: self.allocatable.clone(),
            usage: NodeUsage::default(),
            pods: Vec::new(),
        }
    }

    pub fn add(&mut self, pod: Arc<Pod>) {
        self.usage.add_pod(&pod);
        self.pods.push(pod);
    }

    /// This node without the pods whose uids are in `gone` (usage recounted).
    pub fn without(&self, gone: &[&str]) -> NodeInfo {
        let mut n = self.clone_empty();
        for p in &self.pods {
            if !gone.contains(&p.metadata.uid.as_deref().unwrap_or_default()) {
                n.add(p.clone());
            }
        }
        n
    }
}

/// Every node, plus indexes the plugins use.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub by_name: HashMap<String, usize>,
    /// Namespace name -> its labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    /// (node index, pod) of placed pods with pod affinity or anti-affinity of any kind: the
    /// only existing pods whose own terms matter to an incoming pod (symmetry).
    pub with_affinity: Vec<(usize, Arc<Pod>)>,
}

pub fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

impl Snapshot {
    pub fn new(nodes: impl IntoIterator<Item = Arc<Node>>) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            let info = NodeInfo::new(n);
            s.by_name.insert(info.name.clone(), s.nodes.len());
            s.nodes.push(info);
        }
        s
    }

    /// Places `pod` on node `name` (ignored when the node is unknown).
    pub fn place(&mut self, name: &str, pod: Arc<Pod>) {
        let Some(&i) = self.by_name.get(name) else {
            return;
        };
        if has_pod_affinity(&pod) {
            self.with_affinity.push((i, pod.clone()));
        }
        self.nodes[i].add(pod);
    }

    /// The same cluster with node `i` replaced (a preemption simulation).
    pub fn with_node(&self, i: usize, node: NodeInfo) -> Snapshot {
        let mut s = self.clone();
        let gone: Vec<&str> = self.nodes[i]
            .pods
            .iter()
            .filter(|p| !node.pods.iter().any(|q| Arc::ptr_eq(p, q)))
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        s.with_affinity.retain(|(n, p)| {
            *n != i || !gone.contains(&p.metadata.uid.as_deref().unwrap_or_default())
        });
        s.nodes[i] = node;
        s
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(ns)
    }
}
