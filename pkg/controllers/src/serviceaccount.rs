//! Per-namespace defaults: the `default` ServiceAccount (upstream's serviceaccount controller)
//! and the `kube-root-ca.crt` ConfigMap holding the server CA (upstream's root-ca-cert
//! publisher). Both are recreated when deleted and skipped in terminating namespaces.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;

pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: Client,
    root_ca_pem: String,
}

pub async fn run(client: Client, root_ca_pem: String) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        root_ca_pem,
    });
    let in_ns = |ns: Option<String>| ns.map(|n| ObjectRef::<Namespace>::new(&n));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
        move |sa: ServiceAccount| in_ns(sa.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
        move |cm: ConfigMap| in_ns(cm.namespace()),
    )
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

fn ignore_conflict<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        // Created meanwhile, or the namespace started terminating (403 Forbidden).
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let sa_api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if sa_api.get_opt("default").await?.is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        ignore_conflict(sa_api.create(&PostParams::default(), &sa).await)?;
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    match cm_api.get_opt(ROOT_CA_CONFIGMAP).await? {
        None => {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description": DESCRIPTION}},
                "data": {"ca.crt": ctx.root_ca_pem},
            }))?;
            ignore_conflict(cm_api.create(&PostParams::default(), &cm).await)?;
        }
        Some(cm) => {
            let current = cm.data.as_ref().and_then(|d| d.get("ca.crt"));
            if current != Some(&ctx.root_ca_pem) {
                let patch = json!({"data": {"ca.crt": ctx.root_ca_pem}});
                cm_api
                    .patch(
                        ROOT_CA_CONFIGMAP,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
        }
    }
    Ok(Action::await_change())
}
