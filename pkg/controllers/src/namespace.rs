//! The namespace controller: empties a Namespace being deleted, then finalizes it.
//!
//! The API server only marks a deleted Namespace (`deletionTimestamp`, phase `Terminating`)
//! and keeps it while `spec.finalizers` holds `kubernetes`. Here, as upstream's
//! `namespaced_resources_deleter`: every namespaced resource the server serves (discovery,
//! CRDs included) that can be deleted is deleted in the namespace (`deletecollection` where
//! served, else one by one); the upstream status conditions say how far that got; once nothing
//! is left the `kubernetes` finalizer is removed through `PUT namespaces/{name}/finalize`,
//! and the API server deletes the Namespace when no finalizer remains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

/// What one pass over the namespace's content found.
#[derive(Default)]
struct Content {
    /// Group/resources discovery could not list, with the error.
    discovery_failures: Vec<String>,
    /// `resource.group` whose deletion failed, with the error.
    delete_failures: Vec<String>,
    /// `resource.group` -> objects still there.
    remaining: BTreeMap<String, usize>,
    /// finalizer -> objects still carrying it.
    finalizers: BTreeMap<String, usize>,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let has_finalizer = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if !has_finalizer {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let content = delete_content(&ctx.client, &name).await;
    let done = content.discovery_failures.is_empty()
        && content.delete_failures.is_empty()
        && content.remaining.is_empty();
    update_conditions(&ctx.client, &ns, &content).await?;
    if !done {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    finalize(&ctx.client, &ns).await?;
    tracing::info!(namespace = %name, "namespace content deleted, finalized");
    Ok(Action::await_change())
}

/// Deletes everything deletable in namespace `ns` and counts what is left.
async fn delete_content(client: &Client, ns: &str) -> Content {
    let mut out = Content::default();
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(e) => {
            out.discovery_failures.push(e.to_string());
            return out;
        }
    };
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !(caps.supports_operation(verbs::DELETE)
                    || caps.supports_operation(verbs::DELETE_COLLECTION))
            {
                continue;
            }
            let gr = format!("{}.{}", ar.plural, ar.group);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let deleted = if caps.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await
                    .map(|_| ())
            } else {
                delete_each(&api).await
            };
            if let Err(e) = deleted {
                out.delete_failures.push(format!("{gr}: {e}"));
                continue;
            }
            match api.list_metadata(&ListParams::default()).await {
                Ok(left) if !left.items.is_empty() => {
                    out.remaining.insert(gr, left.items.len());
                    for obj in &left.items {
                        for f in obj.finalizers() {
                            *out.finalizers.entry(f.clone()).or_default() += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => out.discovery_failures.push(format!("{gr}: {e}")),
            }
        }
    }
    out
}

async fn delete_each(api: &Api<DynamicObject>) -> Result<(), kube::Error> {
    for obj in api.list_metadata(&ListParams::default()).await?.items {
        match api.delete(&obj.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Upstream's deletion conditions: (type, true?, reason, message).
fn conditions(content: &Content) -> Vec<(&'static str, bool, &'static str, String)> {
    let join = |v: Vec<String>| v.join(", ");
    vec![
        if content.discovery_failures.is_empty() {
            (
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            )
        } else {
            (
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                format!(
                    "Discovery failed for some groups, {} failing: {}",
                    content.discovery_failures.len(),
                    join(content.discovery_failures.clone())
                ),
            )
        },
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if content.delete_failures.is_empty() {
            (
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            (
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    content.delete_failures.len(),
                    join(content.delete_failures.clone())
                ),
            )
        },
        if content.remaining.is_empty() {
            (
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    join(
                        content
                            .remaining
                            .iter()
                            .map(|(gr, n)| format!("{gr} has {n} resource instances"))
                            .collect()
                    )
                ),
            )
        },
        if content.finalizers.is_empty() {
            (
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            (
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    join(
                        content
                            .finalizers
                            .iter()
                            .map(|(f, n)| format!("{f} in {n} resource instances"))
                            .collect()
                    )
                ),
            )
        },
    ]
}

/// Writes the deletion conditions when they changed (transition times kept otherwise).
async fn update_conditions(
    client: &Client,
    ns: &Namespace,
    content: &Content,
) -> Result<(), Error> {
    let old: Vec<Value> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let now = kubox_core::meta::now_rfc3339();
    let mut changed = false;
    let mut new = Vec::new();
    for (type_, on, reason, message) in conditions(content) {
        let status = if on { "True" } else { "False" };
        let prev = old.iter().find(|c| c["type"] == type_);
        let same = prev.is_some_and(|c| {
            c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
        });
        if same {
            new.push(prev.cloned().unwrap_or_default());
            continue;
        }
        changed = true;
        let since = prev
            .filter(|c| c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        new.push(json!({"type": type_, "status": status, "reason": reason,
                        "message": message, "lastTransitionTime": since}));
    }
    if !changed {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch_status(
        &ns.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": new}})),
    )
    .await?;
    Ok(())
}

/// Removes the `kubernetes` finalizer through the `finalize` subresource.
async fn finalize(client: &Client, ns: &Namespace) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let name = ns.name_any();
    // The latest copy: the conditions were just written.
    let Some(mut latest) = api.get_opt(&name).await? else {
        return Ok(());
    };
    if let Some(f) = latest.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
        f.retain(|f| f != FINALIZER);
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &latest)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_remaining_content_and_finalizers() {
        let content = Content {
            remaining: [("widgets.example.com".to_string(), 2)].into(),
            finalizers: [("example.com/keep".to_string(), 1)].into(),
            ..Content::default()
        };
        let c = conditions(&content);
        let find = |t: &str| c.iter().find(|c| c.0 == t).cloned().unwrap();
        let remaining = find("NamespaceContentRemaining");
        assert!(remaining.1);
        assert_eq!(remaining.2, "SomeResourcesRemain");
        assert_eq!(
            remaining.3,
            "Some resources are remaining: widgets.example.com has 2 resource instances"
        );
        let fin = find("NamespaceFinalizersRemaining");
        assert_eq!(
            fin.3,
            "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
        );
        assert!(!find("NamespaceDeletionDiscoveryFailure").1);
    }
}
