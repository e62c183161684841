//! ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, adopting
//! orphans that match, and reports replicas/fullyLabeled/ready/available in the status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::events::Recorder;
use crate::pods;

pub async fn run(client: Client) {
    let ctx = crate::Ctx::new(&client, "replicaset-controller");
    Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

/// The pods a controller owns (by uid) among those its selector matches, adopting matching
/// orphans: the shared step of the ReplicaSet controller and its relatives.
pub(crate) async fn claim_pods<K>(
    client: &Client,
    owner: &K,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<Vec<Pod>, Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sel = pods::selector_string(selector)?;
    let list = api.list(&ListParams::default().labels(&sel)).await?;
    let mut owned = Vec::new();
    for pod in list.items {
        match pods::controller_uid(&pod.metadata) {
            Some(u) if u == uid => owned.push(pod),
            Some(_) => {}
            None => {
                if owner.meta().deletion_timestamp.is_some()
                    || pod.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(pods::controller_ref(owner));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => {
                        tracing::debug!(error = %e, pod = %pod.name_any(), "adopting a pod failed")
                    }
                }
            }
        }
    }
    Ok(owned)
}

/// Creates or deletes pods so that `want` of `active` remain.
pub(crate) async fn manage_replicas<K>(
    client: &Client,
    recorder: &Recorder,
    owner: &K,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    active: &[&Pod],
    want: usize,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    scale_pods(client, recorder, owner, template, active, want)
        .await
        .map(|_| ())
}

/// [`manage_replicas`], returning the names of the pods it deleted.
async fn scale_pods<K>(
    client: &Client,
    recorder: &Recorder,
    owner: &K,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    active: &[&Pod],
    want: usize,
) -> Result<Vec<String>, Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let mut deleted = Vec::new();
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if active.len() < want {
        for _ in active.len()..want {
            let pod = pods::pod_from_template(template, &name, &ns, pods::controller_ref(owner));
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    recorder
                        .event(
                            owner,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        )
                        .await
                }
                Err(e) => {
                    recorder
                        .event(
                            owner,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        )
                        .await;
                    return Err(e.into());
                }
            }
        }
    } else if active.len() > want {
        let mut victims: Vec<&Pod> = active.to_vec();
        victims.sort_by(|a, b| pods::deletion_order(a, b));
        for pod in victims.into_iter().take(active.len() - want) {
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    deleted.push(pod.name_any());
                    recorder
                        .event(
                            owner,
                            "Normal",
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name_any()),
                        )
                        .await
                }
                Err(kube::Error::Api(s)) if s.code == 404 => deleted.push(pod.name_any()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(deleted)
}

/// Counts of a workload's active pods: (replicas, fully labeled, ready, available) and when to
/// look again for pods about to become available.
pub(crate) fn count_pods(
    active: &[&Pod],
    template_labels: &std::collections::BTreeMap<String, String>,
    min_ready_seconds: i32,
) -> ([i32; 4], Option<Duration>) {
    let now = jiff::Timestamp::now();
    let mut counts = [0i32; 4];
    let mut recheck: Option<Duration> = None;
    for pod in active {
        counts[0] += 1;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            counts[1] += 1;
        }
        if pods::is_ready(pod) {
            counts[2] += 1;
        }
        let (available, wait) = pods::availability(pod, min_ready_seconds, now);
        if available {
            counts[3] += 1;
        }
        if let Some(w) = wait {
            recheck = Some(recheck.map_or(w, |r| r.min(w)));
        }
    }
    (counts, recheck)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<crate::Ctx>) -> Result<Action, Error> {
    let Some(spec) = rs.spec.clone() else {
        return Ok(Action::await_change());
    };
    let status = rs.status.clone().unwrap_or_default();
    sync(
        &ctx,
        rs.as_ref(),
        Replicas {
            selector: spec.selector,
            template: spec.template.unwrap_or_default(),
            replicas: spec.replicas.unwrap_or(1).max(0),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            reported: [
                status.replicas,
                status.fully_labeled_replicas.unwrap_or(0),
                status.ready_replicas.unwrap_or(0),
                status.available_replicas.unwrap_or(0),
            ],
            reported_generation: status.observed_generation,
        },
    )
    .await
}

/// What a ReplicaSet or ReplicationController asks for, and what its status says now.
pub(crate) struct Replicas {
    pub selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    pub template: k8s_openapi::api::core::v1::PodTemplateSpec,
    pub replicas: i32,
    pub min_ready_seconds: i32,
    /// replicas, fullyLabeledReplicas, readyReplicas, availableReplicas.
    pub reported: [i32; 4],
    pub reported_generation: Option<i64>,
}

/// Keeps `want.replicas` active pods for `owner` and writes its status counts.
pub(crate) async fn sync<K>(ctx: &crate::Ctx, owner: &K, want: Replicas) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let owned = claim_pods(&ctx.client, owner, &want.selector).await?;
    let mut active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    if owner.meta().deletion_timestamp.is_none() {
        let deleted = scale_pods(
            &ctx.client,
            &ctx.recorder,
            owner,
            &want.template,
            &active,
            want.replicas as usize,
        )
        .await?;
        // Pods just deleted are no longer counted: a Deployment scaling this ReplicaSet down
        // must not take them for available a moment longer.
        active.retain(|p| !deleted.contains(&p.name_any()));
    }
    let labels = want
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let (counts, recheck) = count_pods(&active, &labels, want.min_ready_seconds);
    let generation = owner.meta().generation;
    if counts != want.reported || want.reported_generation != generation {
        let [replicas, fully_labeled, ready, available] = counts;
        let api: Api<K> = Api::namespaced(
            ctx.client.clone(),
            owner.meta().namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"status": {
            "replicas": replicas,
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": generation,
        }});
        api.patch_status(
            owner.meta().name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(match recheck {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}
