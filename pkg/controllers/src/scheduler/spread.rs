//! PodTopologySpread, as upstream's plugin. `whenUnsatisfiable: DoNotSchedule` constraints
//! filter: a node is refused when placing the pod in its domain would make that domain's count
//! of matching pods exceed the smallest domain's by more than `maxSkew` (the smallest is 0 while
//! fewer than `minDomains` domains exist). `ScheduleAnyway` constraints score: fewer matching
//! pods in the node's domain is better. Domains and counts come from nodes that pass
//! `nodeAffinityPolicy` (Honor by default: the pod's nodeSelector and required node affinity)
//! and `nodeTaintsPolicy` (Ignore by default) and carry the topology key; terminating pods do
//! not count. `matchLabelKeys` adds `key in (pod's value)` to the selector.
//!
//! A pod without constraints of its own gets upstream's system defaults:
//! `kubernetes.io/hostname` maxSkew 3 and `topology.kubernetes.io/zone` maxSkew 5, both
//! ScheduleAnyway, counting the pods upstream's `DefaultSelector` selects — the requirements of
//! every Service in the pod's namespace that selects it, and of its controlling
//! ReplicationController, ReplicaSet or StatefulSet, all together ([`Selecting`]); no such
//! selector, no default constraints. Nodes without a zone label skip the zone constraint.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service};
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
    /// No pod (a constraint without a selector).
    Nothing,
}

impl Matcher {
    fn matches(&self, pod: &Pod) -> bool {
        let empty = Default::default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        match self {
            Matcher::Selector(s) => s.matches(labels),
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

fn constraints_of(pod: &Pod, selecting: &Selecting) -> (Vec<Constraint>, bool) {
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
    let selector = selecting.default_selector(pod);
    if selector.selects_all() {
        return (out, true);
    }
    let matcher = Matcher::Selector(selector);
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

pub fn prepare(pod: &Pod, snap: &Snapshot, selecting: &Selecting) -> State {
    let (mut constraints, defaulted) = constraints_of(pod, selecting);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    // The default constraints share one selector: count each node's pods once for both.
    let shared: Option<Vec<i64>> = match constraints.first() {
        Some(c) if defaulted => Some(snap.nodes.iter().map(|n| c.matcher.count(n, ns)).collect()),
        _ => None,
    };
    for c in &mut constraints {
        c.self_match = i64::from(c.matcher.matches(pod));
        for (i, node) in snap.nodes.iter().enumerate() {
            if !c.eligible(pod, node) {
                continue;
            }
            let Some(value) = node.labels().get(&c.key) else {
                continue;
            };
            let n = match &shared {
                Some(counts) => counts[i],
                None => c.matcher.count(node, ns),
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

/// What upstream's `DefaultSelector` is built from, gathered once per scheduling pass: the
/// selectors of Services (by namespace) and of ReplicationControllers, ReplicaSets and
/// StatefulSets (by kind, namespace and name, as a pod's controller reference names them).
#[derive(Debug, Default)]
pub struct Selecting {
    services: HashMap<String, Vec<Selector>>,
    controllers: HashMap<(&'static str, String, String), Selector>,
}

const RC: (&str, &str) = ("v1", "ReplicationController");
const RS: (&str, &str) = ("apps/v1", "ReplicaSet");
const STS: (&str, &str) = ("apps/v1", "StatefulSet");

impl Selecting {
    pub fn new(
        services: &[Arc<Service>],
        rcs: &[Arc<ReplicationController>],
        rss: &[Arc<ReplicaSet>],
        sets: &[Arc<StatefulSet>],
    ) -> Selecting {
        let mut out = Selecting::default();
        for s in services {
            // Upstream skips Services without a selector; an empty one selects nothing here.
            if let Some(sel) = s.spec.as_ref().and_then(|s| s.selector.clone())
                && !sel.is_empty()
            {
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                out.services
                    .entry(ns)
                    .or_default()
                    .push(sel.into_iter().collect());
            }
        }
        let mut add = |kind: &'static str, meta: &ObjectMeta, sel: Option<Selector>| {
            if let Some(sel) = sel {
                let key = (
                    kind,
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                out.controllers.insert(key, sel);
            }
        };
        for rc in rcs {
            let sel = rc.spec.as_ref().and_then(|s| s.selector.clone());
            add(RC.1, &rc.metadata, sel.map(|m| m.into_iter().collect()));
        }
        for rs in rss {
            let sel = rs.spec.as_ref().map(|s| s.selector.clone());
            add(RS.1, &rs.metadata, sel.and_then(|s| s.try_into().ok()));
        }
        for set in sets {
            let sel = set.spec.as_ref().map(|s| s.selector.clone());
            add(STS.1, &set.metadata, sel.and_then(|s| s.try_into().ok()));
        }
        out
    }

    /// Every requirement of the Services that select `pod` and of its controller (upstream's
    /// `helper.DefaultSelector`); selects all when there is none.
    pub fn default_selector(&self, pod: &Pod) -> Selector {
        let empty = Default::default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = Selector::default();
        for s in self.services.get(&ns).into_iter().flatten() {
            if s.matches(labels) {
                out.extend(s.clone());
            }
        }
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if let Some(o) = owner
            && let Some(&(_, kind)) = [RC, RS, STS]
                .iter()
                .find(|(v, k)| *v == o.api_version && *k == o.kind)
            && let Some(sel) = self.controllers.get(&(kind, ns, o.name.clone()))
        {
            out.extend(sel.clone());
        }
        out
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
