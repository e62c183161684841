//! ReplicationController controller: a ReplicaSet with an equality-based selector (the
//! selector defaults to the template's labels, as the API server sets it).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::replicaset::{Replicas, sync};
use crate::{Ctx, Error};

pub async fn run(client: Client) {
    let ctx = Ctx::new(&client, "replication-controller");
    Controller::new(
        Api::<ReplicationController>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(spec) = rc.spec.clone() else {
        return Ok(Action::await_change());
    };
    let template = spec.template.unwrap_or_default();
    let selector = spec
        .selector
        .filter(|s| !s.is_empty())
        .or_else(|| template.metadata.as_ref().and_then(|m| m.labels.clone()));
    let Some(selector) = selector else {
        return Ok(Action::await_change());
    };
    let status = rc.status.clone().unwrap_or_default();
    sync(
        &ctx,
        rc.as_ref(),
        Replicas {
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template,
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
