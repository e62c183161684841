//! InterPodAffinity, as upstream's plugin: required pod affinity and anti-affinity of the
//! incoming pod, the required anti-affinity of pods already placed (symmetry), and a score
//! from preferred terms of both sides plus existing pods' required affinity (weight 1, upstream's
//! `hardPodAffinityWeight`).
//!
//! A term selects pods by `labelSelector` (absent: none; `{}`: all) in `namespaces` plus those
//! `namespaceSelector` picks (`{}`: all); neither means the term owner's namespace.
//! `matchLabelKeys`/`mismatchLabelKeys` add `key in/notin (owner's value)` to the selector.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use kube::core::{Expression, Selector, SelectorExt};

use super::cluster::{NodeInfo, Snapshot};

pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Upstream's `hardPodAffinityWeight` default: how much an existing pod's required affinity
/// toward the incoming pod counts in the score.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// One parsed term.
#[derive(Debug)]
struct Term {
    /// None: matches no pod.
    selector: Option<Selector>,
    names: BTreeSet<String>,
    /// Namespaces picked by labels besides `names`.
    ns_selector: Option<Selector>,
    key: String,
    weight: i64,
}

impl Term {
    fn new(t: &PodAffinityTerm, owner: &Pod, weight: i64) -> Term {
        let owner_ns = owner.metadata.namespace.clone().unwrap_or_default();
        let mut names: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let ns_selector = t
            .namespace_selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok());
        if names.is_empty() && t.namespace_selector.is_none() {
            names.insert(owner_ns);
        }
        let labels = owner.metadata.labels.clone().unwrap_or_default();
        let selector = t.label_selector.clone().and_then(|s| {
            let mut sel = Selector::try_from(s).ok()?;
            let value = |k: &String| {
                labels
                    .get(k)
                    .map(|v| (k.clone(), BTreeSet::from([v.clone()])))
            };
            sel.extend(
                t.match_label_keys
                    .iter()
                    .flatten()
                    .filter_map(value)
                    .map(|(k, v)| Expression::In(k, v)),
            );
            sel.extend(
                t.mismatch_label_keys
                    .iter()
                    .flatten()
                    .filter_map(value)
                    .map(|(k, v)| Expression::NotIn(k, v)),
            );
            Some(sel)
        });
        Term {
            selector,
            names,
            ns_selector,
            key: t.topology_key.clone(),
            weight,
        }
    }

    fn matches(&self, pod: &Pod, snap: &Snapshot) -> bool {
        let Some(sel) = &self.selector else {
            return false;
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let ns_ok = self.names.contains(ns)
            || self.ns_selector.as_ref().is_some_and(|s| {
                s.selects_all() || snap.namespace_labels(ns).is_some_and(|l| s.matches(l))
            });
        if !ns_ok {
            return false;
        }
        match &pod.metadata.labels {
            Some(l) => sel.matches(l),
            None => sel.matches(&Default::default()),
        }
    }
}

/// A pod's four kinds of terms.
#[derive(Default)]
struct Terms {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    preferred: Vec<Term>,
    preferred_anti: Vec<Term>,
}

impl Terms {
    fn of(pod: &Pod) -> Terms {
        let mut t = Terms::default();
        let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return t;
        };
        if let Some(pa) = &a.pod_affinity {
            for r in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.affinity.push(Term::new(r, pod, HARD_POD_AFFINITY_WEIGHT));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let term = Term::new(&w.pod_affinity_term, pod, i64::from(w.weight));
                t.preferred.push(term);
            }
        }
        if let Some(pa) = &a.pod_anti_affinity {
            for r in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.anti.push(Term::new(r, pod, 0));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let term = Term::new(&w.pod_affinity_term, pod, i64::from(w.weight));
                t.preferred_anti.push(term);
            }
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.affinity.is_empty()
            && self.anti.is_empty()
            && self.preferred.is_empty()
            && self.preferred_anti.is_empty()
    }
}

type Pair = (String, String);

/// What the incoming pod's affinity needs to know about the cluster, computed once per attempt.
#[derive(Default)]
pub struct State {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    /// Pods matching every required affinity term, per topology pair.
    affinity_counts: HashMap<Pair, i64>,
    /// Pods matching some required anti-affinity term, per topology pair.
    anti_counts: HashMap<Pair, i64>,
    /// Topology pairs where an existing pod's required anti-affinity refuses the incoming pod.
    existing_anti: HashMap<Pair, i64>,
    /// The incoming pod matches all its own affinity terms (it may start a group).
    self_match: bool,
    /// Score per topology pair.
    scores: HashMap<Pair, i64>,
}

fn pair(key: &str, node: &NodeInfo) -> Option<Pair> {
    node.labels().get(key).map(|v| (key.to_string(), v.clone()))
}

fn bump(map: &mut HashMap<Pair, i64>, key: &str, node: &NodeInfo, by: i64) {
    if let Some(p) = pair(key, node) {
        *map.entry(p).or_default() += by;
    }
}

pub fn prepare(pod: &Pod, snap: &Snapshot) -> State {
    let terms = Terms::of(pod);
    let uid = pod.metadata.uid.as_deref();
    let mut st = State::default();
    if !terms.is_empty() {
        for node in &snap.nodes {
            for ep in &node.pods {
                if ep.metadata.uid.as_deref() == uid {
                    continue;
                }
                if !terms.affinity.is_empty() && terms.affinity.iter().all(|t| t.matches(ep, snap))
                {
                    for t in &terms.affinity {
                        bump(&mut st.affinity_counts, &t.key, node, 1);
                    }
                }
                for t in terms.anti.iter().filter(|t| t.matches(ep, snap)) {
                    bump(&mut st.anti_counts, &t.key, node, 1);
                }
                for t in terms.preferred.iter().filter(|t| t.matches(ep, snap)) {
                    bump(&mut st.scores, &t.key, node, t.weight);
                }
                for t in terms.preferred_anti.iter().filter(|t| t.matches(ep, snap)) {
                    bump(&mut st.scores, &t.key, node, -t.weight);
                }
            }
        }
    }
    for (i, ep) in &snap.with_affinity {
        if ep.metadata.uid.as_deref() == uid {
            continue;
        }
        let node = &snap.nodes[*i];
        let theirs = Terms::of(ep);
        for t in theirs.anti.iter().filter(|t| t.matches(pod, snap)) {
            bump(&mut st.existing_anti, &t.key, node, 1);
        }
        for t in theirs.affinity.iter().filter(|t| t.matches(pod, snap)) {
            bump(&mut st.scores, &t.key, node, HARD_POD_AFFINITY_WEIGHT);
        }
        for t in theirs.preferred.iter().filter(|t| t.matches(pod, snap)) {
            bump(&mut st.scores, &t.key, node, t.weight);
        }
        for t in theirs
            .preferred_anti
            .iter()
            .filter(|t| t.matches(pod, snap))
        {
            bump(&mut st.scores, &t.key, node, -t.weight);
        }
    }
    st.self_match = terms.affinity.iter().all(|t| t.matches(pod, snap));
    st.affinity = terms.affinity;
    st.anti = terms.anti;
    st
}

/// Why `node` is refused, if it is (upstream's order: affinity, anti-affinity, existing pods').
pub fn filter(st: &State, node: &NodeInfo) -> Option<&'static str> {
    if !st.affinity.is_empty() {
        let mut pods_exist = true;
        for t in &st.affinity {
            let Some(p) = pair(&t.key, node) else {
                return Some(AFFINITY);
            };
            if st.affinity_counts.get(&p).copied().unwrap_or(0) <= 0 {
                pods_exist = false;
            }
        }
        // No pod matches yet anywhere: the first pod of a group that selects itself may go.
        if !(pods_exist || st.affinity_counts.is_empty() && st.self_match) {
            return Some(AFFINITY);
        }
    }
    for t in &st.anti {
        if pair(&t.key, node).is_some_and(|p| st.anti_counts.get(&p).copied().unwrap_or(0) > 0) {
            return Some(ANTI_AFFINITY);
        }
    }
    let labels = node.labels();
    if st
        .existing_anti
        .iter()
        .any(|((k, v), n)| *n > 0 && labels.get(k) == Some(v))
    {
        return Some(EXISTING_ANTI_AFFINITY);
    }
    None
}

/// The raw score of `node` (normalized across feasible nodes by the caller).
pub fn score(st: &State, node: &NodeInfo) -> i64 {
    if st.scores.is_empty() {
        return 0;
    }
    let labels = node.labels();
    st.scores
        .iter()
        .filter(|((k, v), _)| labels.get(k) == Some(v))
        .map(|(_, s)| s)
        .sum()
}

/// Whether any score is non-zero (so the caller can skip normalizing).
pub fn scores(st: &State) -> bool {
    !st.scores.is_empty()
}

#[cfg(test)]
mod tests;
