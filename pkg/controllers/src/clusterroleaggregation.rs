//! The clusterrole aggregation controller: a ClusterRole with an `aggregationRule` gets the
//! rules of every ClusterRole its selectors match (upstream's; this is how `admin`, `edit` and
//! `view` collect `rbac.authorization.k8s.io/aggregate-to-*` roles, including CRD authors' own).

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kubox_core::selectors::LabelSelector;
use serde_json::json;

pub async fn run(client: Client) {
    let api: Api<ClusterRole> = Api::all(client);
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff();
    tokio::pin!(stream);
    let mut ready = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::InitDone) => ready = true,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) | Err(_) => continue,
            Ok(_) => {}
        }
        if ready {
            aggregate_all(&api, &reader).await;
        }
    }
}

/// The rules `role` should have: those of every other ClusterRole its selectors match, in
/// name order, without duplicates.
pub(crate) fn aggregated_rules(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?;
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for sel in selectors {
        let Ok(sel) = serde_json::to_value(sel)
            .map_err(|e| e.to_string())
            .and_then(|v| LabelSelector::from_object(&v).map_err(|e| e.to_string()))
        else {
            continue;
        };
        if sel.is_empty() {
            continue;
        }
        for other in &sorted {
            if other.name_any() == role.name_any() || !sel.matches(other.labels()) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Some(rules)
}

async fn aggregate_all(api: &Api<ClusterRole>, reader: &Store<ClusterRole>) {
    let all: Vec<ClusterRole> = reader.state().iter().map(|r| r.as_ref().clone()).collect();
    for role in &all {
        let Some(want) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.as_ref().unwrap_or(&Vec::new()) == &want {
            continue;
        }
        let patch = json!({"rules": want});
        match api
            .patch(
                &role.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(clusterrole = %role.name_any(), rules = want.len(), "aggregated rules")
            }
            Err(e) => {
                tracing::warn!(clusterrole = %role.name_any(), error = %e, "updating aggregated rules failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(v: serde_json::Value) -> ClusterRole {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn aggregation_collects_matching_roles_in_name_order_without_duplicates() {
        let view = role(
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}),
        );
        let b = role(json!({"metadata": {"name": "b", "labels": {"agg": "view"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}));
        let a = role(json!({"metadata": {"name": "a", "labels": {"agg": "view"}},
            "rules": [{"apiGroups": ["x.io"], "resources": ["widgets"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}));
        let other = role(
            json!({"metadata": {"name": "c"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
        );
        let all = vec![view.clone(), b, a, other];
        let rules = aggregated_rules(&view, &all).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].api_groups, Some(vec!["x.io".to_string()]));
        assert!(aggregated_rules(&all[1], &all).is_none());
    }
}
