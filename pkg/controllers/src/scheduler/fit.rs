//! Filters and scores: which nodes a pod fits on, and how well. Pure functions over typed
//! objects, so they are tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use kubox_core::quantity::parse_milli;

/// Resources the scheduler accounts for, each in thousandths of its unit (`parse_milli`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
    pub pods: i128,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
    }
}

type Quantities = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn quantity(map: Option<&Quantities>, key: &str) -> i128 {
    map.and_then(|m| m.get(key))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

/// What a pod asks for: the larger of the sum of its containers' requests and its largest init
/// container's, plus its overhead; one pod slot.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources {
            pods: 1000,
            ..Resources::default()
        };
    };
    let req = |c: &k8s_openapi::api::core::v1::Container, key: &str| {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        // A limit without a request defaults the request to the limit.
        match requests.and_then(|m| m.get(key)) {
            Some(_) => quantity(requests, key),
            None => quantity(r.and_then(|r| r.limits.as_ref()), key),
        }
    };
    let mut total = Resources::default();
    for key in ["cpu", "memory", "ephemeral-storage"] {
        let sum: i128 = spec.containers.iter().map(|c| req(c, key)).sum();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| req(c, key))
            .max()
            .unwrap_or(0);
        let overhead = quantity(spec.overhead.as_ref(), key);
        let v = sum.max(init) + overhead;
        match key {
            "cpu" => total.cpu = v,
            "memory" => total.memory = v,
            _ => total.ephemeral_storage = v,
        }
    }
    total.pods = 1000;
    total
}

/// The node's allocatable resources (capacity when allocatable is absent).
pub fn allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    Resources {
        cpu: quantity(map, "cpu"),
        memory: quantity(map, "memory"),
        ephemeral_storage: quantity(map, "ephemeral-storage"),
        pods: quantity(map, "pods"),
    }
}

/// What is already placed on a node: requests and host ports of its pods.
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    pub requested: Resources,
    /// (protocol, hostIP, port) in use.
    pub host_ports: BTreeSet<(String, String, i32)>,
}

impl NodeUsage {
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(&pod_requests(pod));
        self.host_ports.extend(host_ports(pod));
    }
}

fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
                out.push((proto, ip, hp));
            }
        }
    }
    out
}

/// Why a node was filtered out, worded as upstream's scheduler words it.
pub type Reason = String;

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The node's taints plus those the node lifecycle controller would add (`not-ready`,
/// `unschedulable`), so a NotReady or cordoned node is refused exactly as upstream refuses it.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut add = |key: &str| {
        if !taints.iter().any(|t| t.key == key) {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            });
        }
    };
    if !node_ready(node) {
        add("node.kubernetes.io/not-ready");
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        add("node.kubernetes.io/unschedulable");
    }
    taints
}

pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

pub(crate) fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node_labels(node);
    let name = node.metadata.name.as_deref();
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = if r.key == "metadata.name" { name } else { None };
            requirement_matches(r, v)
        })
}

/// The node's labels (empty when it has none), borrowed.
pub fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

pub fn selector_and_affinity_match(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// What filtering and scoring need of a pod, computed once per attempt rather than per node.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub requests: Resources,
    pub host_ports: Vec<(String, String, i32)>,
}

impl PodFacts {
    pub fn of(pod: &Pod) -> PodFacts {
        PodFacts {
            requests: pod_requests(pod),
            host_ports: host_ports(pod),
        }
    }
}

/// Every reason `node` cannot take `pod` (empty: it fits).
pub fn filter(pod: &Pod, node: &Node, usage: &NodeUsage) -> Vec<Reason> {
    filter_with(pod, &PodFacts::of(pod), node, &allocatable(node), usage)
}

/// [`filter`] with the pod's facts and the node's allocatable resources already known.
pub fn filter_with(
    pod: &Pod,
    facts: &PodFacts,
    node: &Node,
    have: &Resources,
    usage: &NodeUsage,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return reasons;
    };
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty())
        && Some(name) != node.metadata.name.as_deref()
    {
        reasons.push("node(s) didn't match the requested node name".to_string());
    }
    if !selector_and_affinity_match(pod, node) {
        reasons.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    for t in effective_taints(node) {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(tolerations, &t) {
            let reason = if t.key == "node.kubernetes.io/unschedulable" {
                "node(s) were unschedulable".to_string()
            } else {
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                )
            };
            reasons.push(reason);
            break;
        }
    }
    let want = &facts.requests;
    let used = &usage.requested;
    if used.pods + want.pods > have.pods {
        reasons.push("Too many pods".to_string());
    }
    if want.cpu > 0 && used.cpu + want.cpu > have.cpu {
        reasons.push("Insufficient cpu".to_string());
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        reasons.push("Insufficient memory".to_string());
    }
    if want.ephemeral_storage > 0
        && used.ephemeral_storage + want.ephemeral_storage > have.ephemeral_storage
    {
        reasons.push("Insufficient ephemeral-storage".to_string());
    }
    let conflict = facts.host_ports.iter().any(|(proto, ip, port)| {
        usage.host_ports.iter().any(|(p2, ip2, port2)| {
            p2 == proto && port2 == port && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    });
    if conflict {
        reasons.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    reasons
}

/// Higher is better: least-allocated and balanced resources, preferred node affinity and fewer
/// PreferNoSchedule taints the pod does not tolerate. Pod affinity and spreading are scored
/// over every feasible node at once ([`super::interpod`], [`super::spread`]).
pub fn score(pod: &Pod, node: &Node, usage: &NodeUsage) -> i64 {
    score_with(pod, &PodFacts::of(pod), node, &allocatable(node), usage)
}

/// [`score`] with the pod's facts and the node's allocatable resources already known.
pub fn score_with(
    pod: &Pod,
    facts: &PodFacts,
    node: &Node,
    have: &Resources,
    usage: &NodeUsage,
) -> i64 {
    let want = &facts.requests;
    let free_fraction = |used: i128, want: i128, cap: i128| -> f64 {
        if cap <= 0 {
            return 0.0;
        }
        ((cap - used - want).max(0) as f64) / cap as f64
    };
    let cpu = free_fraction(usage.requested.cpu, want.cpu, have.cpu);
    let mem = free_fraction(usage.requested.memory, want.memory, have.memory);
    let least_allocated = (cpu + mem) / 2.0 * 100.0;
    let balanced = (1.0 - (cpu - mem).abs()) * 100.0;
    let mut score = (least_allocated + balanced) as i64;
    let Some(spec) = pod.spec.as_ref() else {
        return score;
    };
    if let Some(preferred) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        for p in preferred {
            if term_matches(&p.preference, node) {
                score += i64::from(p.weight);
            }
        }
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let soft = effective_taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerates(tolerations, t))
        .count() as i64;
    score - soft * 100
}

/// Upstream's message for a pod no node takes: `0/3 nodes are available: 1 Insufficient cpu,
/// 2 node(s) were unschedulable.` (reasons counted and sorted).
pub fn unschedulable_message(nodes: usize, reasons: &[Vec<Reason>]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons.iter().flatten() {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

/// Whether removing pods cannot help a node refused for `reason` (upstream's
/// `UnschedulableAndUnresolvable`): everything but resources, host ports, anti-affinity and
/// topology spread skew.
pub fn unresolvable(reason: &str) -> bool {
    !(reason == "Too many pods"
        || reason.starts_with("Insufficient ")
        || reason == "node(s) didn't have free ports for the requested pod ports"
        || reason == super::interpod::ANTI_AFFINITY
        || reason == super::interpod::EXISTING_ANTI_AFFINITY
        || reason == super::spread::SKEW)
}

/// Upstream's preemption message appended to an unschedulable pod's: `preemption: 0/3 nodes are
/// available: 1 No preemption victims found for incoming pod., 2 Preemption is not helpful
/// for scheduling.` (each node: whether removing lower-priority pods could have helped).
pub fn preemption_message(helpful: &[bool]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for h in helpful {
        let r = if *h {
            "No preemption victims found for incoming pod."
        } else {
            "Preemption is not helpful for scheduling"
        };
        *counts.entry(r).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!(
        "preemption: 0/{} nodes are available: {}.",
        helpful.len(),
        parts.join(", ")
    )
}

#[cfg(test)]
pub(crate) mod tests;
