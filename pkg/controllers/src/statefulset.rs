//! StatefulSet controller: stable pod names `<set>-<ordinal>` with hostname/subdomain, one
//! PersistentVolumeClaim per volumeClaimTemplate and ordinal (kept when pods go), OrderedReady
//! (one at a time, in order, each Running and Ready before the next; scale down from the top)
//! or Parallel pod management, RollingUpdate from the highest ordinal down to `partition` (or
//! OnDelete), and the status `kubectl rollout status sts` reads. Each template is a
//! ControllerRevision (`history`) whose name labels the pods and fills
//! `status.currentRevision`/`updateRevision`, for `kubectl rollout history/undo`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::history::{self, HASH_LABEL};
use crate::{Ctx, Error, pods};

const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub async fn run(client: Client) {
    let ctx = Ctx::new(&client, "statefulset-controller");
    Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

/// `web-3` → 3 for set `web`.
fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pods::is_ready(p)
}

fn running_and_available(p: &Pod, min_ready_seconds: i32) -> bool {
    running_and_ready(p) && pods::availability(p, min_ready_seconds, jiff::Timestamp::now()).0
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Upstream's isHealthy: running, ready and not being deleted.
fn healthy(p: &Pod) -> bool {
    running_and_ready(p) && !terminating(p)
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn created(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| !ph.is_empty())
}

/// What the controller decided for this pass, step by step as upstream's
/// `updateStatefulSet`: each living ordinal (finished pods replaced, missing ones created),
/// then the condemned ones above `replicas` from the highest down, then one rolling-update
/// deletion; monotonic (OrderedReady) mode stops at the first pod it has to wait for.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Ordinals to create, each with whether it gets the current (not the update) revision.
    create: Vec<(i32, bool)>,
    delete: Vec<String>,
}

struct View<'a> {
    start: i32,
    replicas: i32,
    monotonic: bool,
    min_ready_seconds: i32,
    /// Ordinals below this are created at the current revision (the partition).
    current_below: i32,
    /// The partition of a RollingUpdate, or None under OnDelete.
    rolling_partition: Option<i32>,
    update_revision: &'a str,
    pods: &'a BTreeMap<i32, &'a Pod>,
}

fn plan(v: &View<'_>) -> Plan {
    let mut plan = Plan::default();
    let end = v.start + v.replicas;
    let condemned: Vec<(&i32, &&Pod)> = v
        .pods
        .iter()
        .filter(|(i, _)| **i < v.start || **i >= end)
        .rev()
        .collect();
    let first_unhealthy = (v.start..end)
        .filter_map(|i| v.pods.get(&i))
        .chain(condemned.iter().map(|(_, p)| *p))
        .find(|p| !healthy(p))
        .map(|p| p.name_any());
    for i in v.start..end {
        match v.pods.get(&i) {
            Some(p) if finished(p) => {
                // Replaced once it is gone.
                if !terminating(p) {
                    plan.delete.push(p.name_any());
                }
                if v.monotonic {
                    return plan;
                }
            }
            None => {
                plan.create.push((i, i < v.current_below));
                if v.monotonic {
                    return plan;
                }
            }
            Some(p) if terminating(p) || !running_and_available(p, v.min_ready_seconds) => {
                if v.monotonic {
                    return plan;
                }
            }
            Some(_) => {}
        }
    }
    if !plan.create.is_empty() || !plan.delete.is_empty() {
        // Parallel: this pass's creations first; scale down and updates look again after.
        return plan;
    }
    for (_, p) in &condemned {
        if terminating(p) {
            if v.monotonic {
                return plan;
            }
            continue;
        }
        let first = first_unhealthy.as_deref() == Some(p.name_any().as_str());
        if v.monotonic && !first && !running_and_available(p, v.min_ready_seconds) {
            return plan;
        }
        plan.delete.push(p.name_any());
        if v.monotonic {
            return plan;
        }
    }
    if !plan.delete.is_empty() {
        return plan;
    }
    let Some(partition) = v.rolling_partition else {
        return plan;
    };
    for i in (v.start + partition.max(0)..end).rev() {
        let Some(p) = v.pods.get(&i) else {
            return plan;
        };
        if p.labels().get(HASH_LABEL).map(String::as_str) != Some(v.update_revision)
            && !terminating(p)
        {
            plan.delete.push(p.name_any());
            return plan;
        }
        if !healthy(p) {
            return plan;
        }
    }
    plan
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = sts.spec.clone() else {
        return Ok(Action::await_change());
    };
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let (revisions, update) =
        history::current(&ctx.client, sts.as_ref(), &spec.selector, &spec.template).await?;
    let update_revision = update.name_any();
    let status = sts.status.clone().unwrap_or_default();
    // The current revision is the one the status names while it exists, else the update one.
    let current = status
        .current_revision
        .as_ref()
        .and_then(|c| revisions.iter().find(|r| r.name_any() == *c))
        .unwrap_or(&update);
    let current_revision = current.name_any();
    let owned = crate::replicaset::claim_pods(&ctx.client, sts.as_ref(), &spec.selector).await?;
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &owned {
        if let Some(i) = ordinal(&name, &p.name_any()) {
            by_ordinal.insert(i, p);
        }
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready_seconds = spec.min_ready_seconds.unwrap_or(0);
    let plan = plan(&View {
        start,
        replicas,
        monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
        min_ready_seconds,
        current_below: if on_delete { start } else { start + partition },
        rolling_partition: (!on_delete).then_some(partition),
        update_revision: &update_revision,
        pods: &by_ordinal,
    });
    // Claims follow the retention policy before any pod goes.
    fix_claim_owners(&ctx, &sts, &spec, &by_ordinal, start + replicas).await?;
    for (i, at_current) in &plan.create {
        let older = match history::template_of(current) {
            Some(t) if *at_current && current_revision != update_revision => Some(t),
            _ => None,
        };
        let (template, revision) = match older {
            Some(t) => (t, current_revision.as_str()),
            None => (spec.template.clone(), update_revision.as_str()),
        };
        create_pod(&ctx, &sts, &spec, &template, *i, revision).await?;
    }
    for pod in &plan.delete {
        match pod_api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.recorder
                    .event(
                        sts.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        format!("delete Pod {pod} in StatefulSet {name} successful"),
                    )
                    .await
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Status, as upstream's computeReplicaStatus over the pods seen at the start of the pass.
    let now = jiff::Timestamp::now();
    let mut recheck = None;
    let (mut count, mut ready, mut available, mut at_current, mut at_update) = (0, 0, 0, 0, 0);
    for p in by_ordinal.values() {
        if created(p) {
            count += 1;
        }
        if running_and_ready(p) {
            ready += 1;
            let (ok, wait) = pods::availability(p, min_ready_seconds, now);
            if ok {
                available += 1;
            }
            if let Some(w) = wait {
                recheck = Some(recheck.map_or(w, |r: std::time::Duration| r.min(w)));
            }
        }
        if created(p) && !terminating(p) {
            let rev = p.labels().get(HASH_LABEL);
            if rev == Some(&current_revision) {
                at_current += 1;
            }
            if rev == Some(&update_revision) {
                at_update += 1;
            }
        }
    }
    let mut current_revision = current_revision;
    // A finished rolling update makes the update revision current (never under OnDelete).
    if !on_delete && at_update == replicas && ready == replicas && count == replicas {
        current_revision = update_revision.clone();
        at_current = at_update;
    }
    let mut keep: BTreeSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(HASH_LABEL).cloned())
        .collect();
    keep.extend([current_revision.clone(), update_revision.clone()]);
    history::truncate(
        &ctx.client,
        &revisions,
        &keep,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let new = json!({
        "replicas": count,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": at_current,
        "updatedReplicas": at_update,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "observedGeneration": sts.metadata.generation,
        "collisionCount": status.collision_count.unwrap_or(0),
    });
    let old = serde_json::to_value(&status)?;
    if new
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| old.get(k).unwrap_or(&json!(0)) != v))
    {
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": new})),
            )
            .await?;
    }
    Ok(match recheck {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// `persistentVolumeClaimRetentionPolicy`: claims of ordinals at or above `end` with
/// `whenScaled: Delete` are owned by their pod alone (going with it); other claims of a set
/// with `whenDeleted: Delete` are owned by it (the garbage collector takes them with it);
/// otherwise those references are removed, as upstream's claim owner-reference fixing.
async fn fix_claim_owners(
    ctx: &Ctx,
    sts: &StatefulSet,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    pods: &BTreeMap<i32, &Pod>,
    end: i32,
) -> Result<(), Error> {
    let templates = spec.volume_claim_templates.clone().unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let policy = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();
    let delete_with_set = policy.when_deleted.as_deref() == Some("Delete");
    let delete_when_scaled = policy.when_scaled.as_deref() == Some("Delete");
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let set_uid = sts.uid().unwrap_or_default();
    let claims: BTreeMap<String, PersistentVolumeClaim> = api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    for (i, pod) in pods {
        if terminating(pod) {
            continue;
        }
        let pod_uid = pod.uid().unwrap_or_default();
        for t in &templates {
            let claim = format!(
                "{}-{}",
                t.metadata.name.clone().unwrap_or_default(),
                pod.name_any()
            );
            let Some(pvc) = claims.get(&claim) else {
                continue;
            };
            let refs = pvc.metadata.owner_references.clone().unwrap_or_default();
            let mut want: Vec<_> = refs
                .iter()
                .filter(|r| r.uid != set_uid && r.uid != pod_uid)
                .cloned()
                .collect();
            // A condemned pod's claim is its pod's alone (the garbage collector would only
            // drop a dangling reference while the set's remained).
            if delete_when_scaled && *i >= end {
                want.push(owner_ref(pods::controller_ref(*pod)));
            } else if delete_with_set {
                want.push(owner_ref(pods::controller_ref(sts)));
            }
            let key = |v: &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>| {
                let mut u: Vec<String> = v.iter().map(|r| r.uid.clone()).collect();
                u.sort();
                u
            };
            if key(&want) != key(&refs) {
                let patch = json!({"metadata": {
                    "ownerReferences": want,
                    "resourceVersion": pvc.metadata.resource_version,
                }});
                api.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    Ok(())
}

/// A claim's owner reference: not its controller, and not blocking the owner's deletion.
fn owner_ref(
    mut r: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    r.controller = None;
    r.block_owner_deletion = None;
    r
}

async fn create_pod(
    ctx: &Ctx,
    sts: &StatefulSet,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    i: i32,
    revision: &str,
) -> Result<(), Error> {
    let ns = sts.namespace().unwrap_or_default();
    let set = sts.name_any();
    let pod_name = format!("{set}-{i}");
    // Claims first: they outlive the pods, so a replacement gets the same storage.
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut volumes: Vec<Volume> = Vec::new();
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        let claim = format!("{tname}-{pod_name}");
        if pvc_api.get_opt(&claim).await?.is_none() {
            let mut pvc = t.clone();
            pvc.metadata.name = Some(claim.clone());
            pvc.metadata.namespace = Some(ns.clone());
            let labels = pvc.metadata.labels.get_or_insert_with(Default::default);
            if let Some(sel) = spec.selector.match_labels.as_ref() {
                labels.extend(sel.clone());
            }
            pvc.status = None;
            let policy = spec
                .persistent_volume_claim_retention_policy
                .clone()
                .unwrap_or_default();
            if policy.when_deleted.as_deref() == Some("Delete") {
                pvc.metadata.owner_references = Some(vec![owner_ref(pods::controller_ref(sts))]);
            }
            match pvc_api.create(&PostParams::default(), &pvc).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        volumes.push(Volume {
            name: tname,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    let mut pod = pods::pod_from_template(template, &set, &ns, pods::controller_ref(sts));
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(pod_name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(HASH_LABEL.into(), revision.to_string());
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(pod_name.clone());
        if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
            ps.subdomain = spec.service_name.clone();
        }
        let existing = ps.volumes.get_or_insert_with(Vec::new);
        for v in volumes {
            if !existing.iter().any(|e| e.name == v.name) {
                existing.push(v);
            }
        }
    }
    match Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
    {
        Ok(_) => {
            ctx.recorder
                .event(
                    sts,
                    "Normal",
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {set} successful"),
                )
                .await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, revision: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {HASH_LABEL: revision}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn view<'a>(pods: &'a BTreeMap<i32, &'a Pod>, replicas: i32, monotonic: bool) -> View<'a> {
        View {
            start: 0,
            replicas,
            monotonic,
            min_ready_seconds: 0,
            current_below: 0,
            rolling_partition: Some(0),
            update_revision: "r2",
            pods,
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_and_parallel_all() {
        let p0 = pod("s-0", "r2", false);
        let pods: BTreeMap<i32, &Pod> = [(0, &p0)].into();
        // s-0 is not ready: OrderedReady waits, Parallel creates s-1 and s-2 at once.
        assert_eq!(plan(&view(&pods, 3, true)), Plan::default());
        assert_eq!(
            plan(&view(&pods, 3, false)).create,
            [(1, false), (2, false)]
        );
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal() {
        let ps: Vec<Pod> = (0..4).map(|i| pod(&format!("s-{i}"), "r2", true)).collect();
        let pods: BTreeMap<i32, &Pod> = ps.iter().enumerate().map(|(i, p)| (i as i32, p)).collect();
        assert_eq!(plan(&view(&pods, 1, true)).delete, ["s-3"]);
        assert_eq!(plan(&view(&pods, 1, false)).delete, ["s-3", "s-2", "s-1"]);
    }

    #[test]
    fn rolling_updates_stop_at_the_partition() {
        let ps: Vec<Pod> = (0..3).map(|i| pod(&format!("s-{i}"), "r1", true)).collect();
        let pods: BTreeMap<i32, &Pod> = ps.iter().enumerate().map(|(i, p)| (i as i32, p)).collect();
        let mut v = view(&pods, 3, true);
        assert_eq!(plan(&v).delete, ["s-2"]);
        v.rolling_partition = Some(3);
        assert_eq!(plan(&v), Plan::default());
        v.rolling_partition = None;
        assert_eq!(plan(&v), Plan::default());
    }

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
    }
}
