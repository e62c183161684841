//! Deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`, the
//! hash also in the `pod-template-hash` label), rolled out with RollingUpdate (maxSurge /
//! maxUnavailable) or Recreate, revisions in `deployment.kubernetes.io/revision` (what
//! `kubectl rollout history/undo` read), pause/resume, progress deadline, and the status and
//! conditions `kubectl rollout status` waits on. Old ReplicaSets beyond
//! `revisionHistoryLimit` are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::pods;

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

pub async fn run(client: Client) {
    let ctx = crate::Ctx::new(&client, "deployment-controller");
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

/// Upstream's alphabet for hashes in names (no vowels, no look-alikes).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-1a over its JSON (and the collision count),
/// spelled in upstream's safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// The template without the `pod-template-hash` label, for comparing a ReplicaSet's template
/// with the Deployment's.
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = t.metadata.as_mut()
        {
            m.labels = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// maxSurge / maxUnavailable resolved against `replicas` (surge rounds up, unavailable down;
/// both zero means one unavailable).
pub fn surge_and_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let strategy = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.clone())
        .unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, replicas);
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    // Both default to 25%; validation refuses malformed values before they get here.
    let resolve = |v: Option<IntOrString>, up: bool| -> i32 {
        let v = v.unwrap_or(IntOrString::String("25%".into()));
        crate::pods::scaled_value(&v, replicas, up).unwrap_or(0)
    };
    let surge = resolve(ru.max_surge, true);
    let mut unavailable = resolve(ru.max_unavailable, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<crate::Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = d.spec.clone() else {
        return Ok(Action::await_change());
    };
    let ns = d.namespace().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let sel = pods::selector_string(&spec.selector)?;
    let mut all: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter(|rs| pods::controller_uid(&rs.metadata) == Some(uid.as_str()))
        .collect();
    all.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let want = without_hash(&spec.template);
    let new_idx = all.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| without_hash(t) == want)
    });
    let max_old_revision = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);
    let paused = spec.paused == Some(true);
    // Upstream's isScalingEvent: an active ReplicaSet was sized for another replica count.
    let scaling_event = all.iter().any(|rs| {
        spec_replicas(rs) > 0
            && rs
                .annotations()
                .get(DESIRED)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != replicas)
    });
    let (surge, max_unavailable) = surge_and_unavailable(&d, replicas);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut created_new = None;
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut old = d.status.clone().unwrap_or_default();
    // Upstream's checkPausedConditions: pausing and resuming are recorded on their own, before
    // any rollout step (a timed-out rollout keeps saying so).
    if let Some(conditions) = paused_conditions(&old, paused) {
        let patch = json!({"status": {"conditions": conditions}});
        d_api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        old.conditions = Some(conditions);
    }
    // Recreate: the old pods must all be gone (terminating ones included) before the new
    // ReplicaSet is created or scaled up.
    let old_pods_running =
        recreate && !paused && old_pods_running(&ctx.client, &ns, &sel, &all, new_idx).await?;

    // The new ReplicaSet: create it, or bring its revision to the top (a rollback).
    let new_idx = match new_idx {
        Some(i) => {
            if !paused && revision(&all[i]) <= max_old_revision {
                let rev = (max_old_revision + 1).to_string();
                let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
                all[i] = rs_api
                    .patch(
                        &all[i].name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            Some(i)
        }
        None if paused || old_pods_running || scaling_event => None,
        None => {
            let current: i32 = all
                .iter()
                .map(|rs| spec_replicas(rs).max(status_of(rs).0))
                .sum();
            let initial = if recreate {
                replicas
            } else {
                (replicas + surge - current).clamp(0, replicas)
            };
            let rs = new_replica_set(
                &d,
                &spec.template,
                &spec.selector,
                initial,
                max_old_revision + 1,
                surge,
                replicas,
            );
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(rs) => {
                    ctx.recorder
                        .event(
                            d.as_ref(),
                            "Normal",
                            "ScalingReplicaSet",
                            format!(
                                "Scaled up replica set {} from 0 to {initial}",
                                rs.name_any()
                            ),
                        )
                        .await;
                    created_new = Some(rs.name_any());
                    all.push(rs);
                    Some(all.len() - 1)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // A ReplicaSet of that name with another template: bump the collision count.
                    let count = d
                        .status
                        .as_ref()
                        .and_then(|s| s.collision_count)
                        .unwrap_or(0)
                        + 1;
                    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
                    let patch = json!({"status": {"collisionCount": count}});
                    api.patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };

    // Scale.
    let mut targets: Vec<i32> = all.iter().map(spec_replicas).collect();
    if paused || scaling_event {
        // Scaling only, never a rollout step (upstream's sync).
        let max_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        scale_targets(
            &all,
            new_idx,
            replicas,
            surge,
            !recreate,
            max_replicas,
            &mut targets,
        );
    } else if let Some(n) = new_idx {
        if recreate {
            for (i, t) in targets.iter_mut().enumerate() {
                if i != n {
                    *t = 0;
                }
            }
            if !old_pods_running {
                targets[n] = replicas;
            }
        } else {
            rolling_targets(&all, n, replicas, surge, max_unavailable, &mut targets);
        }
    } else if recreate {
        // Old pods still running: scale every old ReplicaSet down and wait.
        targets.iter_mut().for_each(|t| *t = 0);
    }
    for (i, rs) in all.iter_mut().enumerate() {
        let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let min_ready_differs = Some(i) == new_idx && min_ready != spec.min_ready_seconds;
        // Upstream keeps copying the Deployment's annotations to its current ReplicaSet.
        let copied: BTreeMap<String, String> = if Some(i) == new_idx {
            copied_annotations(&d)
                .into_iter()
                .filter(|(k, v)| rs.annotations().get(k) != Some(v))
                .collect()
        } else {
            BTreeMap::new()
        };
        if targets[i] != spec_replicas(rs)
            || rs.annotations().get(DESIRED) != Some(&replicas.to_string())
            || min_ready_differs
            || !copied.is_empty()
        {
            let from = spec_replicas(rs);
            let mut patch = json!({
                "metadata": {"annotations": {DESIRED: replicas.to_string(), MAX_REPLICAS: (replicas + surge).to_string()}},
                "spec": {"replicas": targets[i]},
            });
            for (k, v) in copied {
                patch["metadata"]["annotations"][k] = json!(v);
            }
            if min_ready_differs {
                patch["spec"]["minReadySeconds"] = json!(spec.min_ready_seconds);
            }
            *rs = rs_api
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            if from != targets[i] {
                let verb = if targets[i] > from { "up" } else { "down" };
                ctx.recorder
                    .event(
                        d.as_ref(),
                        "Normal",
                        "ScalingReplicaSet",
                        format!(
                            "Scaled {verb} replica set {} from {from} to {}",
                            rs.name_any(),
                            targets[i]
                        ),
                    )
                    .await;
            }
        }
    }

    // Status.
    let new_rs = new_idx.map(|i| &all[i]);
    let updated = new_rs.map(|rs| status_of(rs).0).unwrap_or(0);
    let status_replicas: i32 = all.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let total_spec: i32 = all.iter().map(spec_replicas).sum();
    let complete = new_rs.is_some_and(|rs| spec_replicas(rs) == replicas)
        && updated == replicas
        && status_replicas == replicas
        && available == replicas;
    let now = kubox_core::meta::now_rfc3339();
    let mut conditions: Vec<DeploymentCondition> = old.conditions.clone().unwrap_or_default();
    // Recreate tolerates no unavailable pod for the Available condition (upstream's
    // MaxUnavailable is 0 for it).
    let min_available = if recreate {
        replicas
    } else {
        replicas - max_unavailable
    };
    let available_ok = available >= min_available;
    set_condition(
        &mut conditions,
        "Available",
        if available_ok { "True" } else { "False" },
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &now,
        false,
    );
    // Upstream names the new ReplicaSet in these messages, or the Deployment while there is none.
    let subject = match new_rs {
        Some(rs) => format!("ReplicaSet \"{}\"", rs.name_any()),
        None => format!("Deployment \"{}\"", d.name_any()),
    };
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let reason = progressing.as_ref().and_then(|c| c.reason.clone());
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let mut requeue = None;
    // Upstream's syncRolloutStatus: a finished rollout is not re-estimated; a paused one keeps
    // its condition; a deadline of MaxInt32 means none.
    let was_complete =
        status_replicas == updated && reason.as_deref() == Some("NewReplicaSetAvailable");
    if paused || deadline == i32::MAX {
    } else if let Some(name) = &created_new {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{name}\""),
            &now,
            true,
        );
        requeue = Some(Duration::from_secs(deadline.max(1) as u64));
    } else if was_complete {
    } else if complete {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("{subject} has successfully progressed."),
            &now,
            false,
        );
    } else {
        // Progress is more updated, ready or available pods, or fewer old ones.
        let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
        let progressed = updated > old.updated_replicas.unwrap_or(0)
            || status_replicas - updated < old_old
            || ready > old.ready_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0)
            || progressing.is_none();
        if progressed {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("{subject} is progressing."),
                &now,
                true,
            );
            requeue = Some(Duration::from_secs(deadline.max(1) as u64));
        } else if let Some(c) =
            progressing.filter(|c| c.reason.as_deref() != Some("ProgressDeadlineExceeded"))
        {
            let since = c
                .last_update_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            let left = since + i64::from(deadline) - jiff::Timestamp::now().as_second();
            if left < 0 {
                let msg = format!("{subject} has timed out progressing.");
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &msg,
                    &now,
                    true,
                );
                ctx.recorder
                    .event(d.as_ref(), "Warning", "ProgressDeadlineExceeded", msg)
                    .await;
            } else {
                requeue = Some(Duration::from_secs(left as u64 + 1));
            }
        }
    }
    if old_pods_running {
        // Pod deletions do not reach this controller: look again soon.
        requeue = Some(requeue.map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))));
    }
    let new_status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": status_replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total_spec.max(replicas) - available).max(0),
        "conditions": conditions,
        "collisionCount": old.collision_count,
    });
    let old_status = serde_json::to_value(&old)?;
    let differs = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "conditions",
    ]
    .iter()
    .any(|k| old_status.get(k).unwrap_or(&json!(0)) != new_status.get(k).unwrap_or(&json!(0)));
    if differs {
        d_api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": new_status})),
            )
            .await?;
    }
    if let Some(rs) = new_rs {
        let rev = revision(rs).to_string();
        if d.annotations().get(REVISION) != Some(&rev) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            d_api
                .patch(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }
    if complete {
        cleanup_history(
            &rs_api,
            &all,
            new_idx,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// The conditions after upstream's checkPausedConditions, if they change: pausing sets
/// Progressing=Unknown `DeploymentPaused`, resuming `DeploymentResumed`; a rollout that
/// exceeded its deadline keeps saying so.
fn paused_conditions(
    status: &k8s_openapi::api::apps::v1::DeploymentStatus,
    paused: bool,
) -> Option<Vec<DeploymentCondition>> {
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let reason = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.reason.clone());
    let (reason, message) = match reason.as_deref() {
        Some("ProgressDeadlineExceeded") => return None,
        Some("DeploymentPaused") if !paused => ("DeploymentResumed", "Deployment is resumed"),
        Some("DeploymentPaused") => return None,
        _ if paused => ("DeploymentPaused", "Deployment is paused"),
        _ => return None,
    };
    let now = kubox_core::meta::now_rfc3339();
    set_condition(
        &mut conditions,
        "Progressing",
        "Unknown",
        reason,
        message,
        &now,
        true,
    );
    Some(conditions)
}

/// Whether pods of the Deployment's old ReplicaSets (all but `new`) still exist in a
/// non-terminal phase, terminating ones included (upstream's oldPodsRunning).
async fn old_pods_running(
    client: &Client,
    ns: &str,
    selector: &str,
    all: &[ReplicaSet],
    new: Option<usize>,
) -> Result<bool, Error> {
    let old: Vec<&str> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new)
        .filter_map(|(_, rs)| rs.metadata.uid.as_deref())
        .collect();
    if old.is_empty() {
        return Ok(false);
    }
    if all
        .iter()
        .enumerate()
        .any(|(i, rs)| Some(i) != new && status_of(rs).0 > 0)
    {
        return Ok(true);
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?;
    Ok(pods.items.iter().any(|p| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        pods::controller_uid(&p.metadata).is_some_and(|u| old.contains(&u))
            && !matches!(phase, Some("Succeeded" | "Failed"))
    }))
}

/// Upstream's `scale`: a Deployment whose replica count changed, or a paused one. The only
/// active ReplicaSet (or the newest, when none is) takes the whole count; a saturated new
/// ReplicaSet takes the old ones down to 0; otherwise, for a rolling update, the difference
/// to replicas + maxSurge is spread in proportion to each active ReplicaSet's size relative to
/// the `max-replicas` it was sized for (`status_replicas` when it has none), the leftover
/// going to the largest.
fn scale_targets(
    all: &[ReplicaSet],
    new: Option<usize>,
    replicas: i32,
    surge: i32,
    rolling: bool,
    status_replicas: i32,
    targets: &mut [i32],
) {
    let active: Vec<usize> = (0..all.len()).filter(|i| targets[*i] > 0).collect();
    match active.as_slice() {
        [] => {
            if let Some(i) = new.or(all.len().checked_sub(1)) {
                targets[i] = replicas;
            }
            return;
        }
        [only] => {
            targets[*only] = replicas;
            return;
        }
        _ => {}
    }
    if let Some(n) = new {
        let rs = &all[n];
        let saturated = targets[n] == replicas
            && rs.annotations().get(DESIRED) == Some(&replicas.to_string())
            && status_of(rs).2 >= replicas;
        if saturated {
            for i in active.into_iter().filter(|i| *i != n) {
                targets[i] = 0;
            }
            return;
        }
    }
    if !rolling {
        return;
    }
    let allowed = if replicas > 0 { replicas + surge } else { 0 };
    let total: i32 = active.iter().map(|i| targets[*i]).sum();
    let to_add = allowed - total;
    if to_add == 0 {
        return;
    }
    // Larger first; ties newer first when adding, older first when removing (`all` is oldest
    // first).
    let mut order = active;
    order.sort_by(|a, b| {
        targets[*b]
            .cmp(&targets[*a])
            .then_with(|| if to_add > 0 { b.cmp(a) } else { a.cmp(b) })
    });
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::new();
    for &i in &order {
        let current = targets[i];
        let proportion = if added == to_add {
            0
        } else {
            let fraction = if replicas == 0 {
                -current
            } else {
                let before = all[i]
                    .annotations()
                    .get(MAX_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .filter(|v| *v > 0)
                    .unwrap_or(status_replicas.max(1));
                let size = f64::from(current) * f64::from(replicas + surge) / f64::from(before);
                size.round() as i32 - current
            };
            let left = to_add - added;
            if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            }
        };
        added += proportion;
        sizes.push((i, current + proportion));
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    for (i, size) in sizes {
        targets[i] = size;
    }
}

/// One rolling-update step (upstream's `reconcileNewReplicaSet` + `reconcileOldReplicaSets`):
/// scale the new ReplicaSet up within maxSurge, then old ones down, unhealthy pods first,
/// keeping at least `replicas - maxUnavailable` available.
fn rolling_targets(
    all: &[ReplicaSet],
    new: usize,
    replicas: i32,
    surge: i32,
    max_unavailable: i32,
    targets: &mut [i32],
) {
    // A ReplicaSet counts for what it should have or still has: pods of a ReplicaSet just
    // scaled down are counted until its controller has deleted them, so the pods that exist
    // never exceed replicas + maxSurge (upstream counts only the specs).
    let current: i32 = all
        .iter()
        .zip(targets.iter())
        .map(|(rs, t)| (*t).max(status_of(rs).0))
        .sum();
    if targets[new] > replicas {
        targets[new] = replicas;
    } else if targets[new] < replicas {
        let room = (replicas + surge - current).max(0);
        targets[new] += room.min(replicas - targets[new]);
    }
    let old: Vec<usize> = (0..all.len()).filter(|i| *i != new).collect();
    if old.iter().all(|i| targets[*i] == 0) {
        return;
    }
    let all_pods: i32 = targets.iter().sum();
    let min_available = replicas - max_unavailable;
    // The new ReplicaSet's pods being added in this step are not available yet either.
    let new_unavailable = (targets[new] - status_of(&all[new]).2).max(0);
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    // Unhealthy old pods go first: removing them costs no availability.
    for &i in &old {
        if budget <= 0 {
            break;
        }
        let unhealthy = (targets[i] - status_of(&all[i]).2).max(0);
        let cut = unhealthy.min(budget);
        targets[i] -= cut;
        budget -= cut;
    }
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let mut scale_down = (available - min_available).max(0).min(budget.max(0));
    for &i in &old {
        if scale_down <= 0 {
            break;
        }
        let cut = targets[i].min(scale_down);
        targets[i] -= cut;
        scale_down -= cut;
    }
}

fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) {
    let time = || serde_json::from_value(json!(now)).ok();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = time();
            c.last_update_time = time();
        } else if touch || c.reason.as_deref() != Some(reason) {
            c.last_update_time = time();
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
    } else {
        conditions.push(DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: time(),
            last_update_time: time(),
        });
    }
}

/// The Deployment's annotations its new ReplicaSet carries (`kubernetes.io/change-cause`,
/// what `kubectl rollout history` lists): all but its own bookkeeping.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("deployment.kubernetes.io/")
                && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn new_replica_set(
    d: &Deployment,
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    replicas: i32,
    revision: i64,
    surge: i32,
    desired: i32,
) -> ReplicaSet {
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(template, collision);
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.clone());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![pods::controller_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Deletes the oldest scaled-down ReplicaSets beyond the history limit.
async fn cleanup_history(
    api: &Api<ReplicaSet>,
    all: &[ReplicaSet],
    new: Option<usize>,
    limit: i32,
) -> Result<(), Error> {
    let old: Vec<&ReplicaSet> = all
        .iter()
        .enumerate()
        .filter(|(i, rs)| {
            Some(*i) != new
                && spec_replicas(rs) == 0
                && status_of(rs).0 == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .map(|(_, rs)| rs)
        .collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    for rs in old.into_iter().take(excess) {
        match api.delete(&rs.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hashes_are_stable_safe_and_change_with_the_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:test"}]}
        }))
        .expect("template");
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert!(h.bytes().all(|b| SAFE.contains(&b)), "{h}");
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.spec.as_mut().expect("spec").containers[0].image = Some("busybox:other".into());
        assert_ne!(h, template_hash(&t2, None));
    }

    fn progressing(reason: &str) -> k8s_openapi::api::apps::v1::DeploymentStatus {
        serde_json::from_value(json!({"conditions": [
            {"type": "Progressing", "status": "True", "reason": reason}]}))
        .expect("status")
    }

    fn reason(c: Option<Vec<DeploymentCondition>>) -> Option<String> {
        c?.into_iter()
            .find(|c| c.type_ == "Progressing")
            .and_then(|c| c.reason)
    }

    #[test]
    fn pausing_and_resuming_are_recorded_unless_the_deadline_passed() {
        let paused = paused_conditions(&progressing("NewReplicaSetAvailable"), true);
        assert_eq!(reason(paused).as_deref(), Some("DeploymentPaused"));
        assert!(paused_conditions(&progressing("DeploymentPaused"), true).is_none());
        let resumed = paused_conditions(&progressing("DeploymentPaused"), false);
        assert_eq!(reason(resumed).as_deref(), Some("DeploymentResumed"));
        assert!(paused_conditions(&progressing("NewReplicaSetAvailable"), false).is_none());
        assert!(paused_conditions(&progressing("ProgressDeadlineExceeded"), true).is_none());
    }

    fn rs(replicas: i32, status: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": status, "availableReplicas": available}
        }))
        .expect("replica set")
    }

    #[test]
    fn rolling_steps_keep_within_surge_and_unavailability() {
        // 4 replicas, surge 1, unavailable 1: the new set gets one pod, an old one goes.
        let all = [rs(4, 4, 4), rs(0, 0, 0)];
        let mut targets = [4, 0];
        rolling_targets(&all, 1, 4, 1, 1, &mut targets);
        assert_eq!(targets, [3, 1]);
        // The old set still has the pod it was told to delete: no room to surge, and the new
        // set's unavailable pod forbids scaling further down.
        let all = [rs(3, 4, 4), rs(1, 1, 0)];
        let mut targets = [3, 1];
        rolling_targets(&all, 1, 4, 1, 1, &mut targets);
        assert_eq!(targets, [3, 1]);
        // Once the new pod is available, the next step.
        let all = [rs(3, 3, 3), rs(1, 1, 1)];
        let mut targets = [3, 1];
        rolling_targets(&all, 1, 4, 1, 1, &mut targets);
        assert_eq!(targets, [2, 2]);
    }

    fn sized(replicas: i32, max_replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"annotations": {MAX_REPLICAS: max_replicas.to_string(), DESIRED: "4"}},
            "spec": {"replicas": replicas, "selector": {}},
        }))
        .expect("replica set")
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 4 replicas with a surge of 1, mid-rollout at 4 old + 1 new, scaled to 8 (surge 2).
        let all = [sized(4, 5), sized(1, 5)];
        let mut targets = [4, 1];
        scale_targets(&all, Some(1), 8, 2, true, 5, &mut targets);
        assert_eq!(targets, [8, 2]);
        // Down to 2 (surge 1): 3 in all, the older first when removing.
        let mut targets = [4, 1];
        scale_targets(&all, Some(1), 2, 1, true, 5, &mut targets);
        assert_eq!(targets, [2, 1]);
        // One active ReplicaSet takes the whole count.
        let mut targets = [0, 3];
        scale_targets(&all, Some(1), 6, 2, true, 3, &mut targets);
        assert_eq!(targets, [0, 6]);
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {}, "template": {}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
        }))
        .expect("deployment");
        assert_eq!(surge_and_unavailable(&d, 3), (1, 0));
        assert_eq!(surge_and_unavailable(&d, 10), (3, 2));
        let zero: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {}, "template": {}, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}
        }))
        .expect("deployment");
        assert_eq!(surge_and_unavailable(&zero, 3), (0, 1));
    }
}
