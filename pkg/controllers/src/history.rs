//! ControllerRevisions (apps/v1) of DaemonSets and StatefulSets, as upstream's
//! `pkg/controller/history`: one revision per distinct pod template, named
//! `<owner>-<template hash>`, labelled with the template's labels and `controller-revision-hash`,
//! holding the strategic merge patch that restores the template (what `kubectl rollout
//! history --revision` shows and `kubectl rollout undo` applies). Going back to an older
//! template renumbers its revision to the top instead of copying it; revisions that no pod
//! and neither the current nor the update revision use are deleted, oldest first, beyond
//! `revisionHistoryLimit`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::{Error, pods};

/// The label with a revision's hash (on DaemonSet pods too; StatefulSet pods carry the
/// revision's name in it).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// A revision's data: `{"spec": {"template": {..., "$patch": "replace"}}}`.
pub fn patch_data(template: &PodTemplateSpec) -> Result<Value, Error> {
    let mut t = serde_json::to_value(template)?;
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": t}}))
}

/// The pod template a revision holds (what [`patch_data`] stored).
pub fn template_of(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = data_of(r)?.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

fn data_of(r: &ControllerRevision) -> Option<&Value> {
    r.data.as_ref().map(|d| &d.0)
}

/// The revisions `owner` controls, oldest revision number first.
pub async fn owned<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    selector: &LabelSelector,
) -> Result<Vec<ControllerRevision>, Error> {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let sel = pods::selector_string(selector)?;
    let mut all: Vec<ControllerRevision> =
        Api::<ControllerRevision>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&sel))
            .await?
            .items
            .into_iter()
            .filter(|r| pods::controller_uid(&r.metadata) == Some(uid.as_str()))
            .collect();
    sort(&mut all);
    Ok(all)
}

fn sort(revisions: &mut [ControllerRevision]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// What to do for the current template given the sorted revisions.
#[derive(Debug, PartialEq)]
enum Step {
    /// The newest revision already holds it.
    Keep(usize),
    /// An older revision holds it: a rollback, renumbered to this.
    Renumber(usize, i64),
    /// None holds it: a new revision with this number.
    Create(i64),
}

fn step(revisions: &[ControllerRevision], data: &Value) -> Step {
    let next = revisions.last().map(|r| r.revision).unwrap_or(0) + 1;
    match revisions.iter().rposition(|r| data_of(r) == Some(data)) {
        Some(i) if i + 1 == revisions.len() => Step::Keep(i),
        Some(i) => Step::Renumber(i, next),
        None => Step::Create(next),
    }
}

/// `owner`'s revisions (sorted) and the one of its current `template`, found, renumbered or
/// created: what a DaemonSet's or StatefulSet's sync starts with.
pub async fn current<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) -> Result<(Vec<ControllerRevision>, ControllerRevision), Error> {
    let mut revisions = owned(client, owner, selector).await?;
    let current = update_revision(
        client,
        owner,
        &mut revisions,
        &crate::deployment::template_hash(template, None),
        patch_data(template)?,
        template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
    )
    .await?;
    Ok((revisions, current))
}

/// The revision of `owner`'s current template (`data`), found, renumbered or created under
/// `<owner>-<hash>`; `revisions` is kept sorted and up to date.
pub async fn update_revision<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    revisions: &mut Vec<ControllerRevision>,
    hash: &str,
    data: Value,
    template_labels: Option<&BTreeMap<String, String>>,
) -> Result<ControllerRevision, Error> {
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let at = match step(revisions, &data) {
        Step::Keep(i) => i,
        Step::Renumber(i, next) => {
            revisions[i] = api
                .patch(
                    &revisions[i].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"revision": next})),
                )
                .await?;
            let name = revisions[i].name_any();
            sort(revisions);
            revisions
                .iter()
                .position(|r| r.name_any() == name)
                .unwrap_or(i)
        }
        Step::Create(next) => {
            let name = format!("{}-{hash}", owner.meta().name.clone().unwrap_or_default());
            let mut labels = template_labels.cloned().unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.into());
            let want = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: owner.meta().annotations.clone(),
                    owner_references: Some(vec![pods::controller_ref(owner)]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: next,
            };
            let made = match api.create(&PostParams::default(), &want).await {
                Ok(r) => r,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = api.get(&name).await?;
                    let ours =
                        pods::controller_uid(&existing.metadata) == owner.meta().uid.as_deref();
                    if !ours || data_of(&existing) != Some(&data) {
                        return Err(Error::invalid(
                            "ControllerRevision",
                            format!("{name} exists with other content (hash collision)"),
                        ));
                    }
                    existing
                }
                Err(e) => return Err(e.into()),
            };
            revisions.push(made);
            revisions.len() - 1
        }
    };
    Ok(revisions[at].clone())
}

/// The revisions to delete: the oldest not in `live`, beyond `limit` of them.
fn surplus<'a>(
    revisions: &'a [ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    let excess = old
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    old.into_iter().take(excess).collect()
}

/// Deletes the revisions beyond `limit` that nothing in `live` (revision names) uses.
pub async fn truncate(
    client: &Client,
    revisions: &[ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
) -> Result<(), Error> {
    for r in surplus(revisions, live, limit) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rev(name: &str, n: i64, image: &str) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(data(image))),
            revision: n,
        }
    }

    fn data(image: &str) -> Value {
        let t: PodTemplateSpec = serde_json::from_value(
            json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
        )
        .unwrap();
        patch_data(&t).unwrap()
    }

    #[test]
    fn the_data_replaces_the_whole_template() {
        assert_eq!(
            data("a"),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a"}]}, "$patch": "replace"}}})
        );
    }

    #[test]
    fn a_revision_gives_its_template_back() {
        let r = rev("x-1", 1, "a");
        let t = template_of(&r).unwrap();
        assert_eq!(t.spec.unwrap().containers[0].image.as_deref(), Some("a"));
    }

    #[test]
    fn templates_keep_create_or_renumber_revisions() {
        let revs = vec![rev("x-1", 1, "a"), rev("x-2", 2, "b")];
        assert_eq!(step(&[], &data("a")), Step::Create(1));
        assert_eq!(step(&revs, &data("b")), Step::Keep(1));
        assert_eq!(step(&revs, &data("c")), Step::Create(3));
        // Back to the first template: a rollback renumbers it.
        assert_eq!(step(&revs, &data("a")), Step::Renumber(0, 3));
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_first_unless_live() {
        let revs: Vec<ControllerRevision> = (1..=5)
            .map(|i| rev(&format!("x-{i}"), i, &i.to_string()))
            .collect();
        let live: BTreeSet<String> = ["x-1".to_string(), "x-5".to_string()].into();
        let names = |v: Vec<&ControllerRevision>| -> Vec<String> {
            v.iter().map(|r| r.name_any()).collect()
        };
        assert_eq!(names(surplus(&revs, &live, 1)), ["x-2", "x-3"]);
        assert_eq!(names(surplus(&revs, &live, 0)), ["x-2", "x-3", "x-4"]);
        assert!(surplus(&revs, &live, 10).is_empty());
    }
}
