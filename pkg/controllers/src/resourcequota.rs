//! The resource quota controller: keeps each ResourceQuota's `status.hard` and `status.used`
//! equal to what its namespace holds (the quota admission in the API server charges new
//! objects as they come; this recomputation releases what deletions freed and corrects a
//! charge whose object was never stored). Rechecked every 5 s and on every quota change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubox_core::quota::{format_milli, usage};
use serde_json::json;

use crate::Error;

pub async fn run(client: Client) {
    Controller::new(
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, crate::retry_soon, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

/// The (group, plural) whose objects a quota name counts.
pub(crate) fn counted_kind(name: &str) -> Option<(String, String)> {
    let core = |p: &str| Some((String::new(), p.to_string()));
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => {
            if n == "requests.storage" {
                core("persistentvolumeclaims")
            } else {
                core("pods")
            }
        }
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "secrets"
        | "configmaps"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core(name),
        n => {
            let what = n.strip_prefix("count/")?;
            match what.split_once('.') {
                Some((plural, group)) => Some((group.to_string(), plural.to_string())),
                None => core(what),
            }
        }
    }
}

async fn reconcile(q: Arc<ResourceQuota>, client: Arc<Client>) -> Result<Action, Error> {
    let ns = q.namespace().unwrap_or_default();
    let hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut kinds: Vec<(String, String)> = hard.keys().filter_map(|k| counted_kind(k)).collect();
    kinds.sort();
    kinds.dedup();
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    for (group, plural) in kinds {
        let version = if group.is_empty() {
            "v1".to_string()
        } else {
            match kube::discovery::group(&client, &group).await {
                Ok(g) => g.preferred_version_or_latest().to_string(),
                // A group that is not served has no objects to count.
                Err(_) => continue,
            }
        };
        let ar = ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version: if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            },
            kind: String::new(),
            plural: plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with((*client).clone(), &ns, &ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in list.items {
            let v = serde_json::to_value(&obj)?;
            for (k, m) in usage(&group, &plural, &v) {
                *totals.entry(k).or_insert(0) += m;
            }
        }
    }
    let used: BTreeMap<String, String> = hard
        .keys()
        .map(|k| (k.clone(), format_milli(totals.get(k).copied().unwrap_or(0))))
        .collect();
    let status = q.status.clone().unwrap_or_default();
    let same_used = status.used.as_ref().is_some_and(|u| {
        u.len() == used.len()
            && used.iter().all(|(k, v)| {
                u.get(k)
                    .and_then(|q| kubox_core::quantity::parse_milli(&q.0))
                    == kubox_core::quantity::parse_milli(v)
            })
    });
    if !same_used || status.hard.as_ref() != Some(&hard) {
        let api: Api<ResourceQuota> = Api::namespaced((*client).clone(), &ns);
        api.patch_status(
            &q.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"hard": hard, "used": used}})),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_kinds_they_count() {
        let k = |n: &str| counted_kind(n).map(|(g, p)| format!("{g}/{p}"));
        assert_eq!(k("pods").as_deref(), Some("/pods"));
        assert_eq!(k("requests.cpu").as_deref(), Some("/pods"));
        assert_eq!(
            k("requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(k("services.nodeports").as_deref(), Some("/services"));
        assert_eq!(
            k("count/deployments.apps").as_deref(),
            Some("apps/deployments")
        );
        assert_eq!(
            k("count/widgets.example.com").as_deref(),
            Some("example.com/widgets")
        );
        assert_eq!(k("count/configmaps").as_deref(), Some("/configmaps"));
        assert_eq!(k("bogus"), None);
    }
}
