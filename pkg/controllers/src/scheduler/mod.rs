//! The scheduler: binds pending pods (`spec.schedulerName` empty or `default-scheduler`) to the
//! best node that passes every filter, through the `pods/binding` subresource. Filters: node
//! name, selector/affinity, taints, resources and host ports ([`fit`]), volumes
//! ([`volumebinding`]), topology spread ([`spread`]), pod affinity and anti-affinity
//! ([`interpod`]). A pod no node takes may preempt lower-priority pods ([`preemption`]): it
//! is nominated to the node (`status.nominatedNodeName`, whose room other pods of lower
//! priority may not take) until it is bound (the binding clears it), an attempt fails without
//! waiting for victims, or a higher-priority preemptor displaces it; otherwise it gets `PodScheduled=False` with upstream's message and a `FailedScheduling`
//! event, and is retried whenever a node, a pod, a claim or a volume changes.
//!
//! Bindings run concurrently (up to [`BINDING_CONCURRENCY`] in flight, as upstream's binding
//! cycles do): a pod is assumed on its node at once, so later decisions of the same pass see
//! it, and forgotten again if its binding fails.

pub mod cluster;
pub mod fit;
pub mod interpod;
pub mod preemption;
pub mod spread;
pub mod volumebinding;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::events::Recorder;
use cluster::Snapshot;

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How many bindings may be in flight at once.
pub const BINDING_CONCURRENCY: usize = 64;

/// Upstream's plugin weights for the scores normalized to 0..=100.
const INTERPOD_WEIGHT: i64 = 2;
const SPREAD_WEIGHT: i64 = 2;

/// Runs until the task is dropped.
pub async fn run(client: Client) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let kick = Arc::new(Notify::new());
    let k = kick.clone();
    let node_watch = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(move |_| {
        k.notify_one();
        async {}
    });
    let k = kick.clone();
    let pod_watch = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(move |_| {
        k.notify_one();
        async {}
    });
    tokio::spawn(node_watch);
    tokio::spawn(pod_watch);
    let (pvcs, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        w,
        &kick,
    );
    let (pvs, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(
        Api::<PersistentVolume>::all(client.clone()),
        w,
        &kick,
    );
    let (classes, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(Api::<StorageClass>::all(client.clone()), w, &kick);
    let (namespaces, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(Api::<Namespace>::all(client.clone()), w, &kick);
    let (services, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(Api::<Service>::all(client.clone()), w, &kick);
    // Controllers only for their selectors (system default spreading): pod templates dropped.
    let (rcs, w) = reflector::store();
    spawn_selector_mirror(
        Api::<ReplicationController>::all(client.clone()),
        w,
        &kick,
        |rc| {
            if let Some(s) = rc.spec.as_mut() {
                s.template = None;
            }
        },
    );
    let (rss, w) = reflector::store();
    spawn_selector_mirror(Api::<ReplicaSet>::all(client.clone()), w, &kick, |rs| {
        if let Some(s) = rs.spec.as_mut() {
            s.template = None;
        }
    });
    let (sets, w) = reflector::store();
    spawn_selector_mirror(Api::<StatefulSet>::all(client.clone()), w, &kick, |set| {
        if let Some(s) = set.spec.as_mut() {
            s.template = Default::default();
            s.volume_claim_templates = None;
        }
    });
    let (pdbs, w) = reflector::store();
    crate::persistentvolume::spawn_reflector(
        Api::<PodDisruptionBudget>::all(client.clone()),
        w,
        &kick,
    );
    let _ = nodes.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = pvcs.wait_until_ready().await;
    let _ = pvs.wait_until_ready().await;
    let _ = classes.wait_until_ready().await;
    let _ = namespaces.wait_until_ready().await;
    let _ = services.wait_until_ready().await;
    let _ = rcs.wait_until_ready().await;
    let _ = rss.wait_until_ready().await;
    let _ = sets.wait_until_ready().await;
    let _ = pdbs.wait_until_ready().await;
    let (bound_tx, bound_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        client: client.clone(),
        recorder: Recorder::new(client, SCHEDULER_NAME),
        nodes,
        pods,
        pvcs,
        pvs,
        classes,
        namespaces,
        services,
        rcs,
        rss,
        sets,
        pdbs,
        assumed: HashMap::new(),
        reported: HashMap::new(),
        bindings: Arc::new(Semaphore::new(BINDING_CONCURRENCY)),
        bound_tx,
        bound_rx,
        kick: kick.clone(),
    };
    loop {
        s.schedule_pending().await;
        kick.notified().await;
        // Let a burst of watch events (a ReplicaSet creating pods) land before the next pass.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Mirrors `api` into `writer` with `strip` applied to every object (what the scheduler does not
/// look at dropped), kicking a pass on every change.
fn spawn_selector_mirror<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    kick: &Arc<Notify>,
    strip: fn(&mut K),
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let k = kick.clone();
    let stream = watcher(api, watcher::Config::default()).modify(move |o: &mut K| {
        o.meta_mut().managed_fields = None;
        o.meta_mut().annotations = None;
        strip(o);
    });
    tokio::spawn(
        reflector::reflector(writer, stream)
            .default_backoff()
            .touched_objects()
            .for_each(move |_| {
                k.notify_one();
                async {}
            }),
    );
}

struct Scheduler {
    client: Client,
    recorder: Recorder,
    nodes: Store<Node>,
    pods: Store<Pod>,
    pvcs: Store<PersistentVolumeClaim>,
    pvs: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    rcs: Store<ReplicationController>,
    rss: Store<ReplicaSet>,
    sets: Store<StatefulSet>,
    pdbs: Store<PodDisruptionBudget>,
    /// Pods bound by this scheduler that the pod store does not show as bound yet
    /// (uid → (node, pod)), so back-to-back decisions do not overcommit a node.
    assumed: HashMap<String, (String, Arc<Pod>)>,
    /// The last unschedulable message reported per pod uid (one event per distinct message).
    reported: HashMap<String, String>,
    /// Bindings in flight.
    bindings: Arc<Semaphore>,
    /// Finished bindings: (pod uid, bound).
    bound_tx: mpsc::UnboundedSender<(String, bool)>,
    bound_rx: mpsc::UnboundedReceiver<(String, bool)>,
    kick: Arc<Notify>,
}

fn is_pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn nominated_node(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Everything one scheduling attempt of one pod needs, computed once for all nodes.
struct Attempt<'a> {
    pod: &'a Pod,
    facts: fit::PodFacts,
    claims: Vec<Arc<PersistentVolumeClaim>>,
    volumes: &'a volumebinding::Volumes,
    selecting: &'a spread::Selecting,
    /// Pending pods nominated per node index (their room is kept for them).
    nominated: &'a HashMap<usize, Vec<Arc<Pod>>>,
}

impl Attempt<'_> {
    /// Every reason node `i` of `snap` refuses the pod (empty: it fits). `states` are the
    /// spread and affinity states computed over `snap`.
    fn reasons(
        &self,
        snap: &Snapshot,
        i: usize,
        spread: &spread::State,
        affinity: &interpod::State,
    ) -> Vec<fit::Reason> {
        let node = &snap.nodes[i];
        let prio = preemption::priority(self.pod);
        let me = self.pod.metadata.uid.as_deref();
        let others: Vec<&Arc<Pod>> = self
            .nominated
            .get(&i)
            .into_iter()
            .flatten()
            .filter(|p| p.metadata.uid.as_deref() != me && preemption::priority(p) >= prio)
            .collect();
        let filter = |usage: &fit::NodeUsage| {
            fit::filter_with(self.pod, &self.facts, &node.node, &node.allocatable, usage)
        };
        let mut r = if others.is_empty() {
            filter(&node.usage)
        } else {
            let mut usage = node.usage.clone();
            for p in others {
                usage.add_pod(p);
            }
            filter(&usage)
        };
        r.extend(self.volumes.filter(&self.claims, &node.node));
        if r.is_empty()
            && let Some(why) = spread::filter(spread, node)
        {
            r.push(why.to_string());
        }
        if r.is_empty()
            && let Some(why) = interpod::filter(affinity, node)
        {
            r.push(why.to_string());
        }
        r
    }

    /// Whether the pod fits node `i` of a simulated cluster (states computed afresh).
    fn fits(&self, snap: &Snapshot, i: usize) -> bool {
        let sp = spread::prepare(self.pod, snap, self.selecting);
        let ip = interpod::prepare(self.pod, snap);
        self.reasons(snap, i, &sp, &ip).is_empty()
    }
}

/// What a pass decided for one pod.
enum Decision {
    Bind(usize),
    Preempt(preemption::Candidate, String),
    /// The message, and whether a nomination the pod has is void (upstream keeps it only
    /// while the pod waits for its victims).
    Unschedulable(String, bool),
}

impl Scheduler {
    /// The cluster as placed pods and assumed bindings show it.
    fn snapshot(&mut self) -> Snapshot {
        while let Ok((u, ok)) = self.bound_rx.try_recv() {
            if !ok {
                self.assumed.remove(&u);
            }
        }
        let mut snap = Snapshot::new(self.nodes.state());
        snap.namespaces = self
            .namespaces
            .state()
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let all = self.pods.state();
        let mut bound_uids = HashSet::new();
        for p in &all {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            if let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
            {
                bound_uids.insert(uid(p));
                snap.place(node, p.clone());
            }
        }
        let live: HashSet<String> = all.iter().map(|p| uid(p)).collect();
        self.assumed
            .retain(|u, _| live.contains(u) && !bound_uids.contains(u));
        for (node, pod) in self.assumed.values() {
            snap.place(node, pod.clone());
        }
        self.reported.retain(|u, _| live.contains(u));
        snap
    }

    async fn schedule_pending(&mut self) {
        let mut pending: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| is_pending(p) && !self.assumed.contains_key(&uid(p)))
            .collect();
        if pending.is_empty() {
            return;
        }
        // Higher priority first, then oldest first (upstream's queue order).
        pending.sort_by(|a, b| {
            let pa = preemption::priority(a);
            let pb = preemption::priority(b);
            pb.cmp(&pa).then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
        });
        let mut snap = self.snapshot();
        let volumes = volumebinding::Volumes {
            pvcs: self.pvcs.state(),
            pvs: self.pvs.state(),
            classes: self.classes.state(),
        };
        let selecting = spread::Selecting::new(
            &self.services.state(),
            &self.rcs.state(),
            &self.rss.state(),
            &self.sets.state(),
        );
        let pdbs = self.pdbs.state();
        let mut nominated: HashMap<usize, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pending {
            if let Some(&i) = nominated_node(p).and_then(|n| snap.by_name.get(n)) {
                nominated.entry(i).or_default().push(p.clone());
            }
        }
        for pod in pending {
            let claims = match volumes.pod_claims(&pod) {
                Ok(c) => c,
                Err(message) => {
                    let n = snap.nodes.len();
                    let reasons = vec![vec![message]; n];
                    let message = fit::unschedulable_message(n, &reasons);
                    self.unschedulable(&pod, message, true).await;
                    continue;
                }
            };
            let attempt = Attempt {
                pod: &pod,
                facts: fit::PodFacts::of(&pod),
                claims,
                volumes: &volumes,
                selecting: &selecting,
                nominated: &nominated,
            };
            let decision = decide(&attempt, &snap, &pdbs);
            match decision {
                Decision::Bind(i) => {
                    let node = snap.nodes[i].node.clone();
                    let node_name = snap.nodes[i].name.clone();
                    let prebind = volumes.prebind(&attempt.claims, &node);
                    if self.prebind(&prebind, &node_name).await {
                        snap.place(&node_name, pod.clone());
                        if let Some(n) = nominated_node(&pod).and_then(|n| snap.by_name.get(n))
                            && let Some(list) = nominated.get_mut(n)
                        {
                            list.retain(|p| !Arc::ptr_eq(p, &pod));
                        }
                        self.bind(pod.clone(), node_name);
                    }
                }
                Decision::Preempt(c, message) => {
                    let node_name = snap.nodes[c.node].name.clone();
                    // Lower-priority pods nominated to the node may no longer fit there.
                    let prio = preemption::priority(&pod);
                    let list = nominated.entry(c.node).or_default();
                    let (displaced, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
                        .into_iter()
                        .partition(|p| preemption::priority(p) < prio);
                    *list = kept;
                    list.push(pod.clone());
                    self.preempt(&pod, &node_name, &c.victims).await;
                    for p in displaced {
                        self.clear_nomination(&p).await;
                    }
                    self.unschedulable(&pod, message, false).await;
                }
                Decision::Unschedulable(message, clear) => {
                    if clear
                        && let Some(n) = nominated_node(&pod).and_then(|n| snap.by_name.get(n))
                        && let Some(list) = nominated.get_mut(n)
                    {
                        list.retain(|p| !Arc::ptr_eq(p, &pod));
                    }
                    self.unschedulable(&pod, message, clear).await
                }
            }
        }
    }

    /// Writes what the volume binding decided for `node` (see [`volumebinding::PreBind`]).
    async fn prebind(&self, actions: &[volumebinding::PreBind], node: &str) -> bool {
        for a in actions {
            let result = match a {
                volumebinding::PreBind::SelectNode { namespace, claim } => {
                    let patch = json!({"metadata": {"annotations": {
                        crate::persistentvolume::ANN_SELECTED_NODE: node}}});
                    Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace)
                        .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                volumebinding::PreBind::BindVolume {
                    namespace,
                    claim,
                    uid,
                    volume,
                } => {
                    let patch = json!({
                        "metadata": {"annotations": {crate::persistentvolume::ANN_BOUND_BY_CONTROLLER: "yes"}},
                        "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "namespace": namespace, "name": claim, "uid": uid}},
                    });
                    Api::<PersistentVolume>::all(self.client.clone())
                        .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, action = ?a, "volume binding failed");
                return false;
            }
        }
        true
    }

    /// Assumes `pod` on `node` and binds it in the background.
    fn bind(&mut self, pod: Arc<Pod>, node: String) {
        let id = uid(&pod);
        self.assumed.insert(id.clone(), (node.clone(), pod.clone()));
        let (client, recorder) = (self.client.clone(), self.recorder.clone());
        let (permits, done, kick) = (
            self.bindings.clone(),
            self.bound_tx.clone(),
            self.kick.clone(),
        );
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let ok = bind(&client, &pod, &node).await;
            drop(permit);
            let _ = done.send((id, ok));
            if ok {
                let ns = pod.namespace().unwrap_or_default();
                let message = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
                recorder.event(&*pod, "Normal", "Scheduled", message).await;
            } else {
                kick.notify_one();
            }
        });
    }

    /// Nominates `node` for `pod`, then marks its victims with a `DisruptionTarget` condition,
    /// deletes them gracefully and records `Preempted` events on them.
    async fn preempt(&self, pod: &Pod, node: &str, victims: &[Arc<Pod>]) {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"nominatedNodeName": node}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(error = %e, pod = %pod.name_any(), "nominating a node failed");
            return;
        }
        let scheduler = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| SCHEDULER_NAME.into());
        for v in victims {
            let vns = v.namespace().unwrap_or_default();
            let vapi: Api<Pod> = Api::namespaced(self.client.clone(), &vns);
            let condition = crate::pods::disruption_target(
                "PreemptionByScheduler",
                &format!("{scheduler}: preempting to accommodate a higher priority pod"),
            );
            if let Err(e) = crate::pods::set_condition(&vapi, v, condition).await {
                tracing::debug!(error = %e, pod = %v.name_any(), "marking a victim failed");
            }
            match vapi.delete(&v.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::debug!(victim = %v.name_any(), preemptor = %pod.name_any(), node, "preempted");
                    let message = format!("Preempted by pod {} on node {node}", uid(pod));
                    self.recorder
                        .event(&**v, "Normal", "Preempted", message)
                        .await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, pod = %v.name_any(), "deleting a victim failed")
                }
            }
        }
    }

    /// Drops `pod`'s nomination (upstream's `ClearNominatedNodeName`).
    async fn clear_nomination(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"nominatedNodeName": null}});
        let params = PatchParams::default();
        if let Err(e) = api
            .patch_status(&pod.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, pod = %pod.name_any(), "clearing a nomination failed");
        }
    }

    /// Records that `pod` fits no node; `clear`: its nomination, if any, is dropped too.
    async fn unschedulable(&mut self, pod: &Pod, message: String, clear: bool) {
        let id = uid(pod);
        if clear && nominated_node(pod).is_some() {
            self.clear_nomination(pod).await;
        }
        if self.reported.get(&id) == Some(&message) {
            return;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let condition = json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": kubox_core::meta::now_rfc3339(),
        });
        if let Err(e) = crate::pods::set_condition(&api, pod, condition).await {
            tracing::debug!(error = %e, pod = %pod.name_any(), "recording PodScheduled=False failed");
            return;
        }
        self.recorder
            .event(pod, "Warning", "FailedScheduling", message.clone())
            .await;
        self.reported.insert(id, message);
    }
}

/// The pod's status conditions but those of type `kind`, as JSON for a merge patch.
/// Writes `condition` into `pod`'s status, replacing the one of its type.
async fn bind(client: &Client, pod: &Pod, node: &str) -> bool {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..ObjectReference::default()
        },
    };
    let result: Result<serde_json::Value, _> = api
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => {
            tracing::debug!(pod = %format!("{ns}/{}", pod.name_any()), node, "bound pod");
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, pod = %pod.name_any(), "binding failed");
            false
        }
    }
}

/// Filters every node, scores the feasible ones and picks the best; failing that, looks for
/// preemption victims.
fn decide(a: &Attempt<'_>, snap: &Snapshot, pdbs: &[Arc<PodDisruptionBudget>]) -> Decision {
    let sp = spread::prepare(a.pod, snap, a.selecting);
    let ip = interpod::prepare(a.pod, snap);
    let mut reasons = Vec::new();
    let mut feasible = Vec::new();
    for i in 0..snap.nodes.len() {
        let r = a.reasons(snap, i, &sp, &ip);
        if r.is_empty() {
            feasible.push(i);
        }
        reasons.push(r);
    }
    if feasible.is_empty() {
        let n = snap.nodes.len();
        let failed: Vec<Vec<fit::Reason>> = reasons.clone();
        let mut message = fit::unschedulable_message(n, &failed);
        if n == 0 {
            return Decision::Unschedulable(message, true);
        }
        if let Some(why) = preemption::ineligible(a.pod, snap) {
            message.push_str(&format!(" preemption: {why}"));
            return Decision::Unschedulable(message, false);
        }
        let helpful: Vec<bool> = reasons
            .iter()
            .map(|r| !r.iter().any(|r| fit::unresolvable(r)))
            .collect();
        if helpful.iter().any(|h| *h)
            && let Some(c) = preemption::find(a.pod, snap, &helpful, pdbs, |s, i| a.fits(s, i))
        {
            return Decision::Preempt(c, message);
        }
        message.push(' ');
        message.push_str(&fit::preemption_message(&helpful));
        return Decision::Unschedulable(message, true);
    }
    let base: Vec<i64> = feasible
        .iter()
        .map(|&i| {
            let n = &snap.nodes[i];
            fit::score_with(a.pod, &a.facts, &n.node, &n.allocatable, &n.usage)
        })
        .collect();
    let mut total = base;
    if interpod::scores(&ip) {
        let raw: Vec<i64> = feasible
            .iter()
            .map(|&i| interpod::score(&ip, &snap.nodes[i]))
            .collect();
        let (min, max) = (
            raw.iter().copied().min().unwrap_or(0),
            raw.iter().copied().max().unwrap_or(0),
        );
        if max > min {
            for (t, r) in total.iter_mut().zip(&raw) {
                *t += INTERPOD_WEIGHT * 100 * (r - min) / (max - min);
            }
        }
    }
    if spread::scores(&sp) {
        let raw: Vec<Option<f64>> = feasible
            .iter()
            .map(|&i| spread::score(&sp, &snap.nodes[i]))
            .collect();
        for (t, n) in total.iter_mut().zip(spread::normalize(&raw)) {
            *t += SPREAD_WEIGHT * n;
        }
    }
    let mut best: Option<(i64, usize)> = None;
    for (k, &i) in feasible.iter().enumerate() {
        let s = total[k];
        if best
            .is_none_or(|(bs, bi)| s > bs || (s == bs && snap.nodes[i].name < snap.nodes[bi].name))
        {
            best = Some((s, i));
        }
    }
    match best {
        Some((_, i)) => Decision::Bind(i),
        None => {
            Decision::Unschedulable(fit::unschedulable_message(snap.nodes.len(), &reasons), true)
        }
    }
}
