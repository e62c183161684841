//! DefaultPreemption, as upstream's plugin: when a pod fits no node, find a node where
//! removing pods of lower priority makes it fit, then give back (reprieve) as many of them as
//! still leave it fitting — those whose eviction would violate a PodDisruptionBudget first,
//! most important first — and pick the node whose victims violate the fewest budgets, then
//! with the lowest highest victim priority, the lowest priority sum, the fewest victims. The
//! caller nominates the node, marks and deletes the victims, and binds once they are gone.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::{Selector, SelectorExt};

use super::cluster::Snapshot;

pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Why the pod may not preempt at all (upstream's `PodEligibleToPreemptOthers`), if so.
pub fn ineligible(pod: &Pod, snap: &Snapshot) -> Option<&'static str> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    // Victims chosen before are still terminating: wait for them instead of preempting more.
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let node = &snap.nodes[*snap.by_name.get(nominated)?];
    let p = priority(pod);
    node.pods
        .iter()
        .any(|v| v.metadata.deletion_timestamp.is_some() && priority(v) < p)
        .then_some("not eligible due to a terminating pod on the nominated node.")
}

/// A node and the pods to remove from it.
#[derive(Debug)]
pub struct Candidate {
    pub node: usize,
    pub victims: Vec<Arc<Pod>>,
    pub pdb_violations: usize,
}

fn start_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Splits `pods` (most important first) into those whose eviction would exceed a budget's
/// `disruptionsAllowed` and the rest, keeping the order (upstream's
/// `filterPodsWithPDBViolation`).
fn split_by_budgets(
    pods: Vec<Arc<Pod>>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut allowed: HashMap<usize, i32> = pdbs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let a = b.status.as_ref().map_or(0, |s| s.disruptions_allowed);
            (i, a)
        })
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let mut violates = false;
        for (i, b) in pdbs.iter().enumerate() {
            if b.metadata.namespace != p.metadata.namespace {
                continue;
            }
            let Some(sel) = b
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .and_then(|s| Selector::try_from(s).ok())
            else {
                continue;
            };
            if sel.selects_all() || !sel.matches(&labels) {
                continue;
            }
            let a = allowed.entry(i).or_default();
            *a -= 1;
            if *a < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

/// The best node to preempt on, if removing lower-priority pods helps anywhere. `helpful[i]`
/// says whether node `i`'s filter failures are ones removing pods can resolve; `fits` runs
/// every filter for the pod on a node of a (simulated) snapshot.
pub fn find(
    pod: &Pod,
    snap: &Snapshot,
    helpful: &[bool],
    pdbs: &[Arc<PodDisruptionBudget>],
    fits: impl Fn(&Snapshot, usize) -> bool,
) -> Option<Candidate> {
    let p = priority(pod);
    let mut best: Option<Candidate> = None;
    for (i, node) in snap.nodes.iter().enumerate() {
        if !helpful.get(i).copied().unwrap_or(false) {
            continue;
        }
        let mut lower: Vec<Arc<Pod>> = node
            .pods
            .iter()
            .filter(|v| v.metadata.deletion_timestamp.is_none() && priority(v) < p)
            .cloned()
            .collect();
        if lower.is_empty() {
            continue;
        }
        let uids: Vec<&str> = lower
            .iter()
            .filter_map(|v| v.metadata.uid.as_deref())
            .collect();
        let mut current = node.without(&uids);
        if !fits(&snap.with_node(i, current.clone()), i) {
            continue;
        }
        // Most important first: higher priority, then started earlier.
        lower.sort_by(|a, b| {
            priority(b)
                .cmp(&priority(a))
                .then_with(|| start_time(a).cmp(&start_time(b)))
        });
        let (violating, fine) = split_by_budgets(lower, pdbs);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (v, violates) in violating
            .into_iter()
            .map(|v| (v, true))
            .chain(fine.into_iter().map(|v| (v, false)))
        {
            let mut with = current.clone();
            with.add(v.clone());
            if fits(&snap.with_node(i, with.clone()), i) {
                current = with;
            } else {
                pdb_violations += usize::from(violates);
                victims.push(v);
            }
        }
        let c = Candidate {
            node: i,
            victims,
            pdb_violations,
        };
        if best.as_ref().is_none_or(|b| rank(&c) < rank(b)) {
            best = Some(c);
        }
    }
    best
}

/// Lower is better: PDB violations, highest victim priority, priority sum, victim count.
fn rank(c: &Candidate) -> (usize, i32, i64, usize) {
    let highest = c
        .victims
        .iter()
        .map(|v| priority(v))
        .max()
        .unwrap_or(i32::MIN);
    let sum = c.victims.iter().map(|v| i64::from(priority(v))).sum();
    (c.pdb_violations, highest, sum, c.victims.len())
}

#[cfg(test)]
mod tests;
