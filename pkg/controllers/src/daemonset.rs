//! DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity,
//! taints the pod tolerates — with the tolerations upstream adds to daemon pods), bound to the
//! node directly; pods on ineligible nodes and extras are deleted; RollingUpdate replaces
//! pods of an older template `maxUnavailable` at a time (OnDelete waits for the user); status
//! counts `kubectl rollout status ds` reads; a ControllerRevision per template (`history`),
//! whose hash labels the pods, for `kubectl rollout history/undo`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::history::{self, HASH_LABEL};
use crate::scheduler::fit;
use crate::{Ctx, Error, pods};

pub async fn run(client: Client) {
    let ctx = Ctx::new(&client, "daemonset-controller");
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|r| async move { r.ok().map(|_| ()) });
    Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .reconcile_all_on(nodes)
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

/// Tolerations every daemon pod gets (upstream's DaemonSet controller adds them).
fn daemon_tolerations(pod: &Pod) -> Vec<Toleration> {
    let mut t = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        t.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Toleration::default()
        });
    }
    t
}

/// Whether a daemon pod from `template_pod` belongs on `node`.
pub fn eligible(template_pod: &Pod, node: &Node) -> bool {
    if !fit::selector_and_affinity_match(template_pod, node) {
        return false;
    }
    let tolerations = daemon_tolerations(template_pod);
    // Not-ready nodes still get daemon pods; other NoSchedule/NoExecute taints must be tolerated.
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| fit::tolerates(&tolerations, t))
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = ds.spec.clone() else {
        return Ok(Action::await_change());
    };
    let ns = ds.namespace().unwrap_or_default();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let (revisions, cur_revision) =
        history::current(&ctx.client, ds.as_ref(), &spec.selector, &spec.template).await?;
    // The hash of the revision found (a rollback keeps its old one).
    let hash = cur_revision
        .labels()
        .get(HASH_LABEL)
        .cloned()
        .unwrap_or_else(|| crate::deployment::template_hash(&spec.template, None));
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.clone());
    let probe_pod = Pod {
        metadata: Default::default(),
        spec: template.spec.clone(),
        status: None,
    };
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let owned = crate::replicaset::claim_pods(&ctx.client, ds.as_ref(), &spec.selector).await?;
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in owned.iter().filter(|p| pods::is_active(p)) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    let mut desired = 0;
    let mut misscheduled = 0;
    let delete = |p: &Pod| {
        let api = pod_api.clone();
        let name = p.name_any();
        async move {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => Ok::<(), Error>(()),
                Err(e) => Err(e.into()),
            }
        }
    };
    let mut outdated: Vec<&Pod> = Vec::new();
    let (mut current, mut ready, mut available, mut updated) = (0, 0, 0, 0);
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    for node in &nodes {
        let name = node.name_any();
        let here = by_node.remove(&name).unwrap_or_default();
        if !eligible(&probe_pod, node) {
            misscheduled += here.len() as i32;
            for p in here {
                delete(p).await?;
            }
            continue;
        }
        desired += 1;
        if here.is_empty() {
            let mut pod = pods::pod_from_template(
                &template,
                &ds.name_any(),
                &ns,
                pods::controller_ref(ds.as_ref()),
            );
            if let Some(s) = pod.spec.as_mut() {
                s.node_name = Some(name.clone());
                s.tolerations = Some(daemon_tolerations(&probe_pod));
            }
            pod_api.create(&PostParams::default(), &pod).await?;
            continue;
        }
        // Keep the newest; extras go.
        let mut here = here;
        here.sort_by_key(|p| {
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        for extra in &here[1..] {
            delete(extra).await?;
        }
        let p = here[0];
        current += 1;
        if pods::is_ready(p) {
            ready += 1;
        }
        if pods::availability(p, min_ready, now).0 {
            available += 1;
        }
        if p.labels().get(HASH_LABEL) == Some(&hash) {
            updated += 1;
        } else {
            outdated.push(p);
        }
    }
    // Pods on nodes that no longer exist.
    for p in by_node.values().flatten() {
        delete(p).await?;
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") && !outdated.is_empty() {
        let max_unavailable = strategy
            .rolling_update
            .and_then(|r| r.max_unavailable)
            .map_or(1, |v| {
                pods::scaled_value(&v, desired, false).unwrap_or(0).max(1)
            });
        let unavailable = desired - available;
        let budget = (max_unavailable - unavailable).max(0) as usize;
        // Unavailable outdated pods go first: replacing them costs nothing.
        outdated.sort_by_key(|p| pods::is_ready(p));
        for p in outdated
            .iter()
            .take(budget.max(outdated.iter().filter(|p| !pods::is_ready(p)).count()))
        {
            delete(p).await?;
        }
    }
    let pod_hashes: BTreeSet<&String> = owned
        .iter()
        .filter_map(|p| p.labels().get(HASH_LABEL))
        .collect();
    let live: BTreeSet<String> = revisions
        .iter()
        .filter(|r| {
            r.name_any() == cur_revision.name_any()
                || r.labels()
                    .get(HASH_LABEL)
                    .is_some_and(|h| pod_hashes.contains(h))
        })
        .map(|r| r.name_any())
        .collect();
    history::truncate(
        &ctx.client,
        &revisions,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let status = ds.status.clone().unwrap_or_default();
    let new = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "numberUnavailable": (desired - available).max(0),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation,
    });
    let old = serde_json::to_value(&status)?;
    if new
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| old.get(k).unwrap_or(&json!(0)) != v))
    {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": new})),
            )
            .await?;
    }
    Ok(Action::await_change())
}
