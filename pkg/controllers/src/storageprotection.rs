//! Storage object in-use protection, upstream's pvc-protection and pv-protection controllers.
//!
//! The API server's admission gives every new claim the `kubernetes.io/pvc-protection`
//! finalizer and every new volume `kubernetes.io/pv-protection`. A deleted claim keeps its
//! finalizer while a scheduled pod that is not shut down (Succeeded/Failed, or deleted with a
//! zero grace period) uses it, through `persistentVolumeClaim.claimName` or as the ephemeral
//! claim `<pod>-<volume>`; a deleted volume keeps its finalizer while it is Bound.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;

pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

pub async fn run(client: Client) {
    tokio::join!(run_claims(client.clone()), run_volumes(client));
}

async fn run_claims(client: Client) {
    Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            claims_of(&pod)
                .into_iter()
                .map(|c| ObjectRef::<PersistentVolumeClaim>::new(&c).within(&ns))
                .collect::<Vec<_>>()
        },
    )
    .run(reconcile_claim, crate::retry_soon, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

async fn run_volumes(client: Client) {
    Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_volume, crate::retry_soon, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

/// The claims a pod's volumes name (ephemeral volumes' claims are `<pod>-<volume>`).
fn claims_of(pod: &Pod) -> Vec<String> {
    let name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral.as_ref().map(|_| format!("{name}-{}", v.name))
            }
        })
        .collect()
}

/// upstream's podIsShutDown.
fn shut_down(pod: &Pod) -> bool {
    let m = &pod.metadata;
    if m.deletion_timestamp.is_some() && m.deletion_grace_period_seconds == Some(0) {
        return true;
    }
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn uses(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()))
        && !shut_down(pod)
        && claims_of(pod).iter().any(|c| c == claim)
}

/// Removes `finalizer` with a merge patch conditioned on the object's resourceVersion.
async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let rest: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let patch =
        json!({"metadata": {"resourceVersion": obj.resource_version(), "finalizers": rest}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

fn protected_and_deleting<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta().deletion_timestamp.is_some() && obj.finalizers().iter().any(|f| f == finalizer)
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    client: Arc<Client>,
) -> Result<Action, Error> {
    if !protected_and_deleting(pvc.as_ref(), PVC_PROTECTION) {
        return Ok(Action::await_change());
    }
    let ns = pvc.namespace().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.as_ref().clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let name = pvc.name_any();
    if let Some(user) = pods.items.iter().find(|p| uses(p, &name)) {
        tracing::debug!(claim = %name, pod = %user.name_any(), "claim in use, kept");
        return Ok(Action::await_change());
    }
    let api = Api::<PersistentVolumeClaim>::namespaced(client.as_ref().clone(), &ns);
    remove_finalizer(&api, pvc.as_ref(), PVC_PROTECTION).await?;
    Ok(Action::await_change())
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, client: Arc<Client>) -> Result<Action, Error> {
    if !protected_and_deleting(pv.as_ref(), PV_PROTECTION) {
        return Ok(Action::await_change());
    }
    let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if bound {
        return Ok(Action::await_change());
    }
    let api = Api::<PersistentVolume>::all(client.as_ref().clone());
    remove_finalizer(&api, pv.as_ref(), PV_PROTECTION).await?;
    Ok(Action::await_change())
}
