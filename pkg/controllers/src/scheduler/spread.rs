//! PodTopologySpread, as upstream's plugin. `whenUnsatisfiable: DoNotSchedule` constraints
//! filter: a node is refused when placing the pod in its domain would make that domain's count
//! of matching pods exceed the smallest domain's by more than `maxSkew` (the smallest is 0 while
//! fewer than `minDomains` domains exist). `ScheduleAnyway` constraints score: fewer matching
//! pods in the node's domain is better. Domains and counts come from nodes that pass
//! `nodeAffinityPolicy` (Honor by default: the pod's nodeSelector and required node affinity)
//! and `nodeTaintsPolicy` (Ignore by default) and carry the topology key; terminating pods do
//! not count. `matchLabelKeys` adds `key in (pod's value)` to the selector.
//!
//! A pod without constraints of its own gets upstream's system defaults when a Service,
//! ReplicationController, ReplicaSet or StatefulSet selects it: `kubernetes.io/hostname`
//! maxSkew 3 and `topology.kubernetes.io/zone` maxSkew 5, both ScheduleAnyway, counting the
//! pods of the same controller (its selector's pods) or, for pods only a Service selects, the
//! pods every such Service selects; nodes without a zone label skip the zone constraint.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::{Expression, Selector, SelectorExt};

use super::cluster::{NodeInfo, Snapshot};
use super::fit;

pub const SKEW: &str = "node(s) didn't match pod topology spread constraints";
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a constraint counts (all in the incoming pod's namespace).
#[derive(Debug, Clone)]
enum Matcher {
    Selector(Selector),
    /// Pods of the same controller (owner uid).
    Owner(String),
    /// Pods every one of these selectors matches.
    Services(Vec<Selector>),
    /// No pod (a constraint without a selector).
    Nothing,
}

impl Matcher {
    fn matches(&self, pod: &Pod) -> bool {
        let empty = Default::default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        match self {
            Matcher::Selector(s) => s.matches(labels),
            Matcher::Owner(uid) => fit::controller_uid(pod).as_deref() == Some(uid),
            Matcher::Services(ss) => ss.iter().all(|s| s.matches(labels)),
            Matcher::Nothing => false,
        }
    }

    /// Matching pods on `node` in namespace `ns`, terminating ones left out.
    fn count(&self, node: &NodeInfo, ns: &str) -> i64 {
        node.pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.namespace.as_deref() == Some(ns)
                    && self.matches(p)
            })
            .count() as i64
    }
}

#[derive(Debug)]
struct Constraint {
    max_skew: i64,
    key: String,
    hard: bool,
    matcher: Matcher,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
    /// The incoming pod is one of the pods it counts.
    self_match: i64,
    /// Pods per domain (every eligible domain present, possibly 0).
    counts: HashMap<String, i64>,
    min: i64,
}

impl Constraint {
    fn eligible(&self, pod: &Pod, node: &NodeInfo) -> bool {
        if !node.labels().contains_key(&self.key) {
            return false;
        }
        if self.honor_affinity && !fit::selector_and_affinity_match(pod, &node.node) {
            return false;
        }
        if self.honor_taints {
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref());
            if taints.unwrap_or_default().iter().any(|t| {
                (t.effect == "NoSchedule" || t.effect == "NoExecute")
                    && !fit::tolerates(tolerations, t)
            }) {
                return false;
            }
        }
        true
    }
}

/// The incoming pod's constraints with their counts, computed once per attempt.
#[derive(Debug, Default)]
pub struct State {
    constraints: Vec<Constraint>,
    /// The constraints are the system defaults (nodes lacking a key skip that constraint).
    defaulted: bool,
}

fn constraints_of(pod: &Pod, services: &[Arc<Service>]) -> (Vec<Constraint>, bool) {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    if !own.is_empty() {
        for c in own {
            // A constraint without a selector counts nothing (but still filters by key).
            let matcher = match c.label_selector.clone().map(Selector::try_from) {
                Some(Ok(mut sel)) => {
                    sel.extend(c.match_label_keys.iter().flatten().filter_map(|k| {
                        labels
                            .get(k)
                            .map(|v| Expression::In(k.clone(), BTreeSet::from([v.clone()])))
                    }));
                    Matcher::Selector(sel)
                }
                _ => Matcher::Nothing,
            };
            out.push(Constraint {
                max_skew: i64::from(c.max_skew.max(1)),
                key: c.topology_key.clone(),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                matcher,
                min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                self_match: 0,
                counts: HashMap::new(),
                min: 0,
            });
        }
        return (out, false);
    }
    let ns = pod.metadata.namespace.as_deref();
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| {
            matches!(
                o.kind.as_str(),
                "ReplicaSet" | "ReplicationController" | "StatefulSet"
            )
        });
    let matcher = match owner {
        Some(o) => Matcher::Owner(o.uid.clone()),
        None => {
            let selecting: Vec<Selector> = services
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == ns)
                .filter_map(|s| s.spec.as_ref()?.selector.clone())
                .filter(|sel| !sel.is_empty())
                .map(|sel| sel.into_iter().collect::<Selector>())
                .filter(|sel| sel.matches(&labels))
                .collect();
            if selecting.is_empty() {
                return (out, true);
            }
            Matcher::Services(selecting)
        }
    };
    for (key, skew) in [(HOSTNAME, 3), (ZONE, 5)] {
        out.push(Constraint {
            max_skew: skew,
            key: key.into(),
            hard: false,
            matcher: matcher.clone(),
            min_domains: 1,
            honor_affinity: true,
            honor_taints: false,
            self_match: 0,
            counts: HashMap::new(),
            min: 0,
        });
    }
    (out, true)
}

pub fn prepare(pod: &Pod, snap: &Snapshot, services: &[Arc<Service>]) -> State {
    let (mut constraints, defaulted) = constraints_of(pod, services);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    for c in &mut constraints {
        c.self_match = i64::from(c.matcher.matches(pod));
        for node in &snap.nodes {
            if !c.eligible(pod, node) {
                continue;
            }
            let Some(value) = node.labels().get(&c.key) else {
                continue;
            };
            let n = match &c.matcher {
                Matcher::Owner(uid) => i64::from(node.usage.owners.get(uid).copied().unwrap_or(0)),
                m => m.count(node, ns),
            };
            *c.counts.entry(value.clone()).or_default() += n;
        }
        c.min = if (c.counts.len() as i64) < c.min_domains {
            0
        } else {
            c.counts.values().copied().min().unwrap_or(0)
        };
    }
    State {
        constraints,
        defaulted,
    }
}

/// Why `node` is refused by a DoNotSchedule constraint, if it is.
pub fn filter(st: &State, node: &NodeInfo) -> Option<&'static str> {
    let labels = node.labels();
    let hard = st.constraints.iter().filter(|c| c.hard);
    for c in hard.clone() {
        if !labels.contains_key(&c.key) {
            return Some(MISSING_LABEL);
        }
    }
    for c in hard {
        let value = labels.get(&c.key).map(String::as_str).unwrap_or_default();
        let count = c.counts.get(value).copied().unwrap_or(0);
        if count + c.self_match - c.min > c.max_skew {
            return Some(SKEW);
        }
    }
    None
}

/// Whether any ScheduleAnyway constraint applies (so the caller can skip scoring).
pub fn scores(st: &State) -> bool {
    st.constraints.iter().any(|c| !c.hard)
}

/// The raw score of `node` (lower is better; None: the node lacks a key, upstream's ignored
/// node, which gets the lowest normalized score).
pub fn score(st: &State, node: &NodeInfo) -> Option<f64> {
    let labels = node.labels();
    let mut total = 0.0;
    for c in st.constraints.iter().filter(|c| !c.hard) {
        let Some(value) = labels.get(&c.key) else {
            if st.defaulted {
                continue;
            }
            return None;
        };
        let count = c.counts.get(value).copied().unwrap_or(0) as f64;
        let weight = ((c.counts.len() + 2) as f64).ln();
        total += count * weight + (c.max_skew - 1) as f64;
    }
    Some(total)
}

/// Upstream's normalization: the lowest raw score gets 100, `max` gets `100 * min / max`;
/// ignored nodes get 0.
pub fn normalize(raw: &[Option<f64>]) -> Vec<i64> {
    let present = raw.iter().flatten();
    let max = present.clone().copied().fold(f64::MIN, f64::max);
    let min = present.copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max <= 0.0 => 100,
            Some(s) => (100.0 * (max + min - s) / max) as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests;
