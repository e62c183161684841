//! The scheduler: binds pending pods (`spec.schedulerName` empty or `default-scheduler`) to the
//! best node that passes every filter, through the `pods/binding` subresource. A pod no node
//! takes gets `PodScheduled=False` with upstream's message and a `FailedScheduling` event, and
//! is retried whenever a node, a pod, a claim or a volume changes. Volumes: see
//! [`volumebinding`].

pub mod fit;
pub mod volumebinding;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::events::Recorder;

pub const SCHEDULER_NAME: &str = "default-scheduler";

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
    let _ = nodes.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = pvcs.wait_until_ready().await;
    let _ = pvs.wait_until_ready().await;
    let _ = classes.wait_until_ready().await;
    let mut s = Scheduler {
        client: client.clone(),
        recorder: Recorder::new(client, SCHEDULER_NAME),
        nodes,
        pods,
        pvcs,
        pvs,
        classes,
        assumed: HashMap::new(),
        reported: HashMap::new(),
    };
    loop {
        s.schedule_pending().await;
        kick.notified().await;
        // Let a burst of watch events (a ReplicaSet creating pods) land before the next pass.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

struct Scheduler {
    client: Client,
    recorder: Recorder,
    nodes: Store<Node>,
    pods: Store<Pod>,
    pvcs: Store<PersistentVolumeClaim>,
    pvs: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// Pods bound by this scheduler that the pod store does not show as bound yet
    /// (uid → (node, pod)), so back-to-back decisions do not overcommit a node.
    assumed: HashMap<String, (String, Arc<Pod>)>,
    /// The last unschedulable message reported per pod uid (one event per distinct message).
    reported: HashMap<String, String>,
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

impl Scheduler {
    /// Requests and ports already placed on each node.
    fn usage(&mut self) -> BTreeMap<String, fit::NodeUsage> {
        let mut usage: BTreeMap<String, fit::NodeUsage> = BTreeMap::new();
        let all = self.pods.state();
        let mut bound_uids = std::collections::HashSet::new();
        for p in &all {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            if let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            {
                bound_uids.insert(uid(p));
                usage.entry(node).or_default().add_pod(p);
            }
        }
        let live: std::collections::HashSet<String> = all.iter().map(|p| uid(p)).collect();
        self.assumed
            .retain(|u, _| live.contains(u) && !bound_uids.contains(u));
        for (node, pod) in self.assumed.values() {
            usage.entry(node.clone()).or_default().add_pod(pod);
        }
        self.reported.retain(|u, _| live.contains(u));
        usage
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
            let pa = a.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let pb = b.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            pb.cmp(&pa).then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
        });
        let mut usage = self.usage();
        let nodes = self.nodes.state();
        let volumes = volumebinding::Volumes {
            pvcs: self.pvcs.state(),
            pvs: self.pvs.state(),
            classes: self.classes.state(),
        };
        for pod in pending {
            let mut reasons = Vec::new();
            let mut best: Option<(i64, &Node)> = None;
            let claims = match volumes.pod_claims(&pod) {
                Ok(c) => c,
                Err(message) => {
                    let reasons = vec![vec![message]; nodes.len()];
                    let message = fit::unschedulable_message(nodes.len(), &reasons);
                    self.unschedulable(&pod, message).await;
                    continue;
                }
            };
            for node in &nodes {
                let name = node.name_any();
                let u = usage.get(&name).cloned().unwrap_or_default();
                let mut r = fit::filter(&pod, node, &u);
                r.extend(volumes.filter(&claims, node));
                if !r.is_empty() {
                    reasons.push(r);
                    continue;
                }
                let score = fit::score(&pod, node, &u);
                if best.is_none_or(|(s, n)| score > s || (score == s && name < n.name_any())) {
                    best = Some((score, node));
                }
            }
            match best {
                Some((_, node)) => {
                    let node_name = node.name_any();
                    let prebind = volumes.prebind(&claims, node);
                    if self.prebind(&prebind, &node_name).await && self.bind(&pod, &node_name).await
                    {
                        usage.entry(node_name.clone()).or_default().add_pod(&pod);
                        self.assumed.insert(uid(&pod), (node_name, pod.clone()));
                    }
                }
                None => {
                    let message = fit::unschedulable_message(nodes.len(), &reasons);
                    self.unschedulable(&pod, message).await;
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

    async fn bind(&self, pod: &Pod, node: &str) -> bool {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
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
                self.recorder
                    .event(
                        pod,
                        "Normal",
                        "Scheduled",
                        format!("Successfully assigned {ns}/{} to {node}", pod.name_any()),
                    )
                    .await;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, pod = %pod.name_any(), "binding failed");
                false
            }
        }
    }

    async fn unschedulable(&mut self, pod: &Pod, message: String) {
        let id = uid(pod);
        if self.reported.get(&id) == Some(&message) {
            return;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut conditions: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "PodScheduled")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": kubox_core::meta::now_rfc3339(),
        }));
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(error = %e, pod = %pod.name_any(), "recording PodScheduled=False failed");
            return;
        }
        self.recorder
            .event(pod, "Warning", "FailedScheduling", message.clone())
            .await;
        self.reported.insert(id, message);
    }
}
