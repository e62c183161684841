//! Garbage collector: keeps a graph of ownerReferences (from metadata-only watches of the
//! kinds that own or are owned) and
//! * deletes a dependent whose owners are all gone (background propagation), or drops the
//!   references to the missing owners when some remain;
//! * for an owner deleted with `propagationPolicy: Orphan` (finalizer `orphan`), removes its
//!   reference from every dependent, then the finalizer;
//! * for `Foreground` (finalizer `foregroundDeletion`), deletes the dependents (foreground too)
//!   and removes the finalizer once none is left.
//!
//! Owners of kinds not watched here (custom resources) are looked up through discovery.
//! Missing: dependents of kinds outside [`KINDS`] are not collected.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Error;

/// (group, version, kind, plural, namespaced) of the kinds the collector watches.
pub const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "Endpoints", "endpoints", true),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    (
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        true,
    ),
    ("", "v1", "PodTemplate", "podtemplates", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
    ),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "PersistentVolume", "persistentvolumes", false),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
];

/// One object of the graph.
#[derive(Debug, Clone)]
struct Item {
    kind: usize,
    meta: ObjectMeta,
}

impl Item {
    fn uid(&self) -> String {
        self.meta.uid.clone().unwrap_or_default()
    }
    fn has_finalizer(&self, f: &str) -> bool {
        self.meta.finalizers.iter().flatten().any(|x| x == f)
    }
}

fn resource(kind: usize) -> ApiResource {
    let (g, v, k, plural, _) = KINDS[kind];
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
}

struct Collector {
    client: Client,
    items: HashMap<String, Item>,
    /// owner uid → dependent uids.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Per kind: uids seen during the current (re)list, to find deletions missed meanwhile.
    relisting: HashMap<usize, BTreeSet<String>>,
    queue: VecDeque<String>,
    queued: BTreeSet<String>,
    retry: BTreeSet<String>,
    /// Resources of owner kinds found through discovery.
    discovered: HashMap<(String, String), Option<(ApiResource, bool)>>,
}

enum Change {
    Upsert(usize, ObjectMeta),
    Delete(ObjectMeta),
    Relist(usize),
    RelistDone(usize),
}

pub async fn run(client: Client) {
    let streams = (0..KINDS.len()).map(|kind| {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(client.clone(), &resource(kind));
        watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |ev| async move {
                match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        Some(Change::Upsert(kind, o.metadata))
                    }
                    Ok(watcher::Event::Delete(o)) => Some(Change::Delete(o.metadata)),
                    Ok(watcher::Event::Init) => Some(Change::Relist(kind)),
                    Ok(watcher::Event::InitDone) => Some(Change::RelistDone(kind)),
                    Err(e) => {
                        tracing::debug!(error = %e, kind = KINDS[kind].2, "garbage collector watch failed");
                        None
                    }
                }
            })
            .boxed()
    });
    let mut changes = stream::select_all(streams);
    let mut c = Collector {
        client,
        items: HashMap::new(),
        dependents: HashMap::new(),
        relisting: HashMap::new(),
        queue: VecDeque::new(),
        queued: BTreeSet::new(),
        retry: BTreeSet::new(),
        discovered: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(change) => c.apply(change),
                None => return,
            },
            _ = tick.tick() => {
                for uid in std::mem::take(&mut c.retry) {
                    c.enqueue(uid);
                }
            }
        }
        while let Some(uid) = c.queue.pop_front() {
            c.queued.remove(&uid);
            if let Err(e) = c.process(&uid).await {
                tracing::debug!(error = %e, uid, "garbage collection step failed; retrying");
                c.retry.insert(uid);
            }
        }
    }
}

impl Collector {
    fn enqueue(&mut self, uid: String) {
        if self.queued.insert(uid.clone()) {
            self.queue.push_back(uid);
        }
    }

    fn owner_uids(meta: &ObjectMeta) -> Vec<String> {
        meta.owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect()
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Upsert(kind, meta) => {
                let uid = meta.uid.clone().unwrap_or_default();
                if let Some(set) = self.relisting.get_mut(&kind) {
                    set.insert(uid.clone());
                }
                if let Some(old) = self.items.get(&uid) {
                    for o in Self::owner_uids(&old.meta) {
                        if let Some(d) = self.dependents.get_mut(&o) {
                            d.remove(&uid);
                        }
                    }
                }
                for o in Self::owner_uids(&meta) {
                    self.dependents.entry(o).or_default().insert(uid.clone());
                }
                let interesting = meta
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
                    || (meta.deletion_timestamp.is_some()
                        && meta
                            .finalizers
                            .iter()
                            .flatten()
                            .any(|f| f == "orphan" || f == "foregroundDeletion"));
                self.items.insert(uid.clone(), Item { kind, meta });
                if interesting {
                    self.enqueue(uid);
                }
            }
            Change::Delete(meta) => {
                let uid = meta.uid.clone().unwrap_or_default();
                self.forget(&uid);
            }
            Change::Relist(kind) => {
                self.relisting.insert(kind, BTreeSet::new());
            }
            Change::RelistDone(kind) => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                let gone: Vec<String> = self
                    .items
                    .iter()
                    .filter(|(uid, it)| it.kind == kind && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.forget(&uid);
                }
            }
        }
    }

    /// An object is gone: its dependents need a look, and its owners (one of which may wait in
    /// foreground deletion for it).
    fn forget(&mut self, uid: &str) {
        if let Some(item) = self.items.remove(uid) {
            for o in Self::owner_uids(&item.meta) {
                if let Some(d) = self.dependents.get_mut(&o) {
                    d.remove(uid);
                }
                if self.items.contains_key(&o) {
                    self.enqueue(o);
                }
            }
        }
        let deps: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        for d in deps {
            self.enqueue(d);
        }
    }

    fn api_for(&self, item: &Item) -> Api<DynamicObject> {
        let ar = resource(item.kind);
        match (&item.meta.namespace, KINDS[item.kind].4) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    async fn process(&mut self, uid: &str) -> Result<(), Error> {
        let Some(item) = self.items.get(uid).cloned() else {
            return Ok(());
        };
        if item.meta.deletion_timestamp.is_some() {
            if item.has_finalizer("orphan") {
                return self.orphan(&item).await;
            }
            if item.has_finalizer("foregroundDeletion") {
                return self.foreground(&item).await;
            }
        }
        self.check_owners(&item).await
    }

    fn dependents_of(&self, uid: &str) -> Vec<Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d).cloned())
            .collect()
    }

    async fn remove_owner_refs(&self, dep: &Item, gone: &[String]) -> Result<(), Error> {
        let refs: Vec<_> = dep
            .meta
            .owner_references
            .iter()
            .flatten()
            .filter(|r| !gone.contains(&r.uid))
            .cloned()
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": dep.meta.uid}});
        match self
            .api_for(dep)
            .patch(
                dep.meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(&self, item: &Item, finalizer: &str) -> Result<(), Error> {
        let rest: Vec<&String> = item
            .meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": item.meta.resource_version}});
        match self
            .api_for(item)
            .patch(
                item.meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, item: &Item, policy: PropagationPolicy) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: item.meta.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api_for(item)
            .delete(item.meta.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {
                tracing::debug!(kind = KINDS[item.kind].2, name = ?item.meta.name, "garbage collected");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn orphan(&mut self, owner: &Item) -> Result<(), Error> {
        let uid = owner.uid();
        for dep in self.dependents_of(&uid) {
            self.remove_owner_refs(&dep, std::slice::from_ref(&uid))
                .await?;
        }
        self.remove_finalizer(owner, "orphan").await
    }

    async fn foreground(&mut self, owner: &Item) -> Result<(), Error> {
        let deps = self.dependents_of(&owner.uid());
        if deps.is_empty() {
            return self.remove_finalizer(owner, "foregroundDeletion").await;
        }
        for dep in deps.iter().filter(|d| d.meta.deletion_timestamp.is_none()) {
            self.delete(dep, PropagationPolicy::Foreground).await?;
        }
        Ok(())
    }

    /// Whether the owner a reference names still exists (same uid).
    async fn owner_exists(
        &mut self,
        dep: &Item,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<bool, Error> {
        if self.items.contains_key(&r.uid) {
            return Ok(true);
        }
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), r.api_version.clone()),
        };
        let key = (r.api_version.clone(), r.kind.clone());
        if !self.discovered.contains_key(&key) {
            let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
            let found = match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok((ar, caps)) => Some((ar, caps.scope == kube::discovery::Scope::Namespaced)),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(kube::Error::Discovery(_)) => None,
                Err(e) => return Err(e.into()),
            };
            self.discovered.insert(key.clone(), found);
        }
        let Some(Some((ar, namespaced))) = self.discovered.get(&key).cloned() else {
            // A kind the server does not serve: the owner cannot exist.
            return Ok(false);
        };
        let api: Api<DynamicObject> = match (&dep.meta.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        Ok(api
            .get_opt(&r.name)
            .await?
            .is_some_and(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str())))
    }

    async fn check_owners(&mut self, dep: &Item) -> Result<(), Error> {
        if dep.meta.owner_references.as_ref().is_none_or(Vec::is_empty) {
            return Ok(());
        }
        // Judge the dependent as it is now, not as the watch last showed it: its owner
        // references may have been removed (orphaning) since.
        let Some(fresh) = self
            .api_for(dep)
            .get_opt(dep.meta.name.as_deref().unwrap_or_default())
            .await?
            .filter(|o| o.metadata.uid == dep.meta.uid)
        else {
            return Ok(());
        };
        let dep = &Item {
            kind: dep.kind,
            meta: fresh.metadata,
        };
        let refs = dep.meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(());
        }
        let mut gone = Vec::new();
        let mut foreground_owner = false;
        for r in &refs {
            if self.owner_exists(dep, r).await? {
                let deleting_foreground = self.items.get(&r.uid).is_some_and(|o| {
                    o.meta.deletion_timestamp.is_some() && o.has_finalizer("foregroundDeletion")
                });
                foreground_owner |= deleting_foreground;
            } else {
                gone.push(r.uid.clone());
            }
        }
        if gone.len() == refs.len() {
            if dep.meta.deletion_timestamp.is_none() {
                self.delete(dep, PropagationPolicy::Background).await?;
            }
        } else if !gone.is_empty() {
            self.remove_owner_refs(dep, &gone).await?;
        } else if foreground_owner && dep.meta.deletion_timestamp.is_none() {
            self.delete(dep, PropagationPolicy::Foreground).await?;
        }
        Ok(())
    }
}
