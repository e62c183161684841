//! The disruption controller: the status of every PodDisruptionBudget, as upstream's.
//!
//! `expectedPods` is the number of matching pods for an integer `minAvailable`, else the
//! scale of the pods' controllers (ReplicaSet — its Deployment's when it has one —,
//! StatefulSet, ReplicationController); `desiredHealthy` follows from minAvailable or
//! maxUnavailable (percentages round up); `currentHealthy` counts Ready pods not being
//! deleted and not recorded in `disruptedPods` (evictions the API server granted, dropped once
//! the pod is deleting or after 2 minutes); `disruptionsAllowed` is what is healthy beyond
//! the desired count, with the `DisruptionAllowed` condition. The eviction subresource of the
//! API server spends those disruptions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::{Ctx, Error, pods};

/// How long an eviction stays in `disruptedPods` waiting for its pod to be deleted.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(client: Client) {
    let ctx = Ctx::new(&client, "controllermanager");
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| {
                let ns = pod.namespace();
                budgets
                    .state()
                    .into_iter()
                    .filter(|b| b.namespace() == ns && selects(b, &pod))
                    .map(|b| ObjectRef::from_obj(b.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

/// policy/v1: an empty selector selects every pod of the namespace, a missing one none.
fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return false;
    };
    Selector::try_from(sel).is_ok_and(|s| s.matches(pod.labels()))
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = pdb.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Vec<Pod> = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) => {
            let params = ListParams::default().labels(&pods::selector_string(sel)?);
            api.list(&params).await?.items
        }
        None => Vec::new(),
    };
    if pods.is_empty() {
        ctx.recorder
            .event(
                pdb.as_ref(),
                "Normal",
                "NoPods",
                "No matching pods found".into(),
            )
            .await;
    }
    let now = jiff::Timestamp::now();
    let status = match expected(&ctx.client, &pdb, &pods).await {
        Ok((expected, desired)) => {
            let (disrupted, recheck) = disrupted_pods(&pdb, &pods, now);
            let healthy = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !disrupted.contains_key(&p.name_any())
                        && pods::is_ready(p)
                })
                .count() as i32;
            let allowed = if expected <= 0 {
                0
            } else {
                (healthy - desired).max(0)
            };
            let status = new_status(
                &pdb, expected, desired, healthy, allowed, disrupted, None, now,
            );
            write_status(&ctx, &pdb, status).await?;
            return Ok(recheck.map_or_else(Action::await_change, Action::requeue));
        }
        Err(e) => {
            ctx.recorder
                .event(
                    pdb.as_ref(),
                    "Warning",
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {e}"),
                )
                .await;
            // Fail safe: no disruption is allowed while the budget cannot be computed.
            let old = pdb.status.clone().unwrap_or_default();
            new_status(
                &pdb,
                old.expected_pods,
                old.desired_healthy,
                old.current_healthy,
                0,
                old.disrupted_pods.unwrap_or_default(),
                Some(e.to_string()),
                now,
            )
        }
    };
    write_status(&ctx, &pdb, status).await?;
    Ok(Action::requeue(Duration::from_secs(15)))
}

/// (expectedPods, desiredHealthy) of the budget, as upstream's `getExpectedPodCount`.
async fn expected(
    client: &Client,
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
) -> Result<(i32, i32), Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(client, pods).await?;
        let max = pods::scaled_value(max, expected, true)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
            Ok((pods.len() as i32, *n))
        }
        Some(pct) => {
            let expected = expected_scale(client, pods).await?;
            Ok((expected, pods::scaled_value(pct, expected, true)?))
        }
        None => Ok((pods.len() as i32, 0)),
    }
}

/// The summed scale of the pods' controllers; a pod without a scalable controller is an error.
async fn expected_scale(client: &Client, pods: &[Pod]) -> Result<i32, Error> {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .ok_or_else(|| {
                Error::invalid(
                    "pod",
                    format!("found no controllers for pod {:?}", pod.name_any()),
                )
            })?;
        let (uid, replicas) = match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
                    .get(&owner.name)
                    .await?;
                let deployment = rs
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .cloned();
                match deployment {
                    Some(d) => {
                        let d = Api::<Deployment>::namespaced(client.clone(), &ns)
                            .get(&d.name)
                            .await?;
                        let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        (d.uid(), r)
                    }
                    None => (
                        rs.uid(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    ),
                }
            }
            ("apps/v1", "StatefulSet") => {
                let s = Api::<StatefulSet>::namespaced(client.clone(), &ns)
                    .get(&owner.name)
                    .await?;
                let r = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (s.uid(), r)
            }
            ("v1", "ReplicationController") => {
                let rc = Api::<ReplicationController>::namespaced(client.clone(), &ns)
                    .get(&owner.name)
                    .await?;
                let r = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (rc.uid(), r)
            }
            (_, kind) => {
                return Err(Error::invalid(
                    "pod",
                    format!(
                        "found no controllers for pod {:?}: {kind} has no scale",
                        pod.name_any()
                    ),
                ));
            }
        };
        if seen.insert(uid) {
            total += replicas;
        }
    }
    Ok(total)
}

/// The `disruptedPods` still pending (pods neither deleting nor past the timeout), and when
/// the first of them times out.
fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: jiff::Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let old = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut keep = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for pod in pods {
        let name = pod.name_any();
        let Some(when) = old.get(&name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let age = now.duration_since(when.0);
        let timeout = jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
        if age >= timeout {
            tracing::info!(pod = %name, "pod was expected to be deleted but it was not");
            continue;
        }
        let left = Duration::try_from(timeout - age).unwrap_or(Duration::from_secs(1));
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        keep.insert(name, when.clone());
    }
    (keep, recheck)
}

#[allow(clippy::too_many_arguments)]
fn new_status(
    pdb: &PodDisruptionBudget,
    expected: i32,
    desired: i32,
    healthy: i32,
    allowed: i32,
    disrupted: BTreeMap<String, Time>,
    failure: Option<String>,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let generation = pdb.metadata.generation;
    let (status, reason, message) = match failure {
        Some(m) => ("False", "SyncFailed", m),
        None if allowed > 0 => ("True", "SufficientPods", String::new()),
        None => ("False", "InsufficientPods", String::new()),
    };
    let old = pdb.status.clone().unwrap_or_default();
    let previous = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed");
    let since = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }]),
    }
}

/// PUT status when it changed (a conflict retries the reconcile with the newer budget).
async fn write_status(
    ctx: &Ctx,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    if pdb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut new = pdb.clone();
    new.status = Some(status);
    new.metadata.managed_fields = None;
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
    api.replace_status(&pdb.name_any(), &PostParams::default(), &new)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, deleting: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        }
        p
    }

    #[test]
    fn disrupted_pods_drop_deleting_missing_and_expired_pods() {
        let now = jiff::Timestamp::now();
        let old = |secs: i64| Time(now - jiff::SignedDuration::from_secs(secs));
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b"},
            "status": {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0,
                       "disruptedPods": {"fresh": old(10), "deleting": old(10), "gone": old(10), "stale": old(500)}},
        }))
        .unwrap();
        let pods = [
            pod("fresh", false),
            pod("deleting", true),
            pod("stale", false),
        ];
        let (keep, recheck) = disrupted_pods(&pdb, &pods, now);
        assert_eq!(keep.keys().collect::<Vec<_>>(), vec!["fresh"]);
        let r = recheck.unwrap();
        assert!(
            r > Duration::from_secs(100) && r <= Duration::from_secs(110),
            "{r:?}"
        );
    }
}
