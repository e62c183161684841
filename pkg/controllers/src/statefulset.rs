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
    let (revisions, current) =
        history::current(&ctx.client, sts.as_ref(), &spec.selector, &spec.template).await?;
    let revision = current.name_any();
    let owned = crate::replicaset::claim_pods(&ctx.client, sts.as_ref(), &spec.selector).await?;
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &owned {
        if let Some(i) = ordinal(&name, &p.name_any()) {
            by_ordinal.insert(i, p);
        }
    }
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    // Create missing pods (in order, each waiting for the previous, unless Parallel).
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                if !parallel {
                    break;
                }
            }
            Some(p) => {
                if !parallel && !running_and_ready(p) {
                    break;
                }
            }
            None => {
                create_pod(&ctx, &sts, &spec, i, &revision).await?;
                if !parallel {
                    break;
                }
            }
        }
    }
    // Scale down from the highest ordinal (one at a time unless Parallel).
    for (i, p) in by_ordinal.iter().rev() {
        if *i < replicas {
            break;
        }
        if p.metadata.deletion_timestamp.is_none() {
            let _ = pod_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await;
        }
        if !parallel {
            break;
        }
    }
    // Rolling update: the highest outdated ordinal at or above the partition, once all are ready.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let all_ready = (0..replicas).all(|i| by_ordinal.get(&i).is_some_and(|p| running_and_ready(p)));
    if strategy.type_.as_deref() != Some("OnDelete")
        && all_ready
        && let Some(p) = (partition..replicas)
            .rev()
            .filter_map(|i| by_ordinal.get(&i))
            .find(|p| p.labels().get(HASH_LABEL) != Some(&revision))
    {
        let _ = pod_api
            .delete(&p.name_any(), &DeleteParams::default())
            .await;
    }
    let live: Vec<&&Pod> = by_ordinal
        .iter()
        .filter(|(i, p)| **i < replicas && p.metadata.deletion_timestamp.is_none())
        .map(|(_, p)| p)
        .collect();
    let ready = live.iter().filter(|p| pods::is_ready(p)).count() as i32;
    let updated = live
        .iter()
        .filter(|p| p.labels().get(HASH_LABEL) == Some(&revision))
        .count() as i32;
    let status = sts.status.clone().unwrap_or_default();
    let current_revision = match status.current_revision.clone() {
        Some(c) if updated != replicas && revisions.iter().any(|r| r.name_any() == c) => c,
        _ => revision.clone(),
    };
    let mut live: BTreeSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(HASH_LABEL).cloned())
        .collect();
    live.extend([current_revision.clone(), revision.clone()]);
    history::truncate(
        &ctx.client,
        &revisions,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let new = json!({
        "replicas": live.len() as i32,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": if current_revision == revision { updated } else { live.len() as i32 - updated },
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": revision,
        "observedGeneration": sts.metadata.generation,
        "collisionCount": 0,
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
    Ok(Action::await_change())
}

async fn create_pod(
    ctx: &Ctx,
    sts: &StatefulSet,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
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
    let mut pod = pods::pod_from_template(&spec.template, &set, &ns, pods::controller_ref(sts));
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
mod tests {
    use super::ordinal;

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
    }
}
