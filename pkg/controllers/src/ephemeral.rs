//! The ephemeral volume controller (upstream's `ephemeral-volume`): every `ephemeral` volume of
//! a pod gets the claim `<pod>-<volume>` made from its `volumeClaimTemplate` (the template's
//! labels and annotations, its spec), owned by the pod (controller, blocking deletion), so the
//! garbage collector deletes it with the pod. The scheduler and the agent treat the volume as
//! that claim; a claim of that name the pod does not own is left alone (the pod cannot use it).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::{Ctx, Error};

pub async fn run(client: Client) {
    let ctx = Ctx::new(&client, "ephemeral-volume-controller");
    Controller::new(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<PersistentVolumeClaim>::all(client),
            watcher::Config::default(),
        )
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    for v in volumes {
        let Some(template) = v
            .ephemeral
            .as_ref()
            .and_then(|e| e.volume_claim_template.as_ref())
        else {
            continue;
        };
        let name = format!("{}-{}", pod.name_any(), v.name);
        if let Some(existing) = api.get_opt(&name).await? {
            let owned = existing
                .owner_references()
                .iter()
                .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref());
            if !owned {
                ctx.recorder
                    .event(
                        pod.as_ref(),
                        "Warning",
                        "FailedBinding",
                        format!(
                            "PVC {ns}/{name} was not created for pod {ns}/{} (pod is not owner)",
                            pod.name_any()
                        ),
                    )
                    .await;
            }
            continue;
        }
        let meta = template.metadata.clone().unwrap_or_default();
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: meta.labels,
                annotations: meta.annotations,
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod.name_any(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(template.spec.clone()),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            // Created meanwhile (a second pass): the next event checks its owner.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
