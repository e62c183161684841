//! The node lifecycle controller, as upstream's (`node-controller`), with its taint-based
//! eviction (upstream's taint eviction controller).
//!
//! * Health: a node is heard from when its Ready condition's `lastHeartbeatTime` changes or
//!   its Lease in `kube-node-lease` is renewed. Silent for `grace_period` (startup grace for a
//!   node that never posted Ready), its Ready/MemoryPressure/DiskPressure/PIDPressure
//!   conditions go `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node status.")
//!   with a `NodeNotReady` event. The agent posts Ready again when it is back.
//! * Taints from conditions: Ready=False → `node.kubernetes.io/not-ready`, Ready=Unknown →
//!   `node.kubernetes.io/unreachable` (both NoSchedule and NoExecute), pressure conditions →
//!   their NoSchedule taints, `spec.unschedulable` → `node.kubernetes.io/unschedulable`;
//!   removed when the condition clears. Other taints are left alone.
//! * Eviction: a pod on a node with a NoExecute taint it does not tolerate is deleted at
//!   once; one tolerating every such taint is deleted after the smallest `tolerationSeconds`
//!   of the tolerations used (never if none has one), counted from when this controller first
//!   saw it under the taint; `TaintManagerEviction` events mark both deletion and
//!   cancellation.
//!
//! Missing, as noted in ARCHITECTURE.md: zone-based eviction rate limits, and marking the pods
//! of an unreachable node not-ready.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::events::Recorder;
use crate::scheduler::fit::tolerates;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node lifecycle controller's waiting periods (upstream's flags and defaults).
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How often node health is checked (`--node-monitor-period`, 5 s).
    pub monitor_period: Duration,
    /// Silence after which a node is Unknown (`--node-monitor-grace-period`, 40 s).
    pub grace_period: Duration,
    /// Silence allowed to a node that never posted Ready (`--node-startup-grace-period`, 60 s).
    pub startup_grace_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
        }
    }
}

/// What the controller last heard from a node.
struct Health {
    /// When the controller last saw the node's heartbeat or lease change.
    probe: Instant,
    heartbeat: Option<Time>,
    renew: Option<String>,
}

struct NodeLifecycle {
    client: Client,
    recorder: Recorder,
    cfg: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HashMap<String, Health>,
    /// Pod uid → when it was first seen tolerating a NoExecute taint for a limited time.
    tolerating_since: HashMap<String, Instant>,
    /// Pods already deleted by the taint manager.
    evicted: HashSet<String>,
}

/// Runs until the task is dropped.
pub async fn run(client: Client, cfg: NodeLifecycleConfig) {
    let kick = Arc::new(Notify::new());
    let (nodes, w) = reflector::store::<Node>();
    tokio::spawn(watch(w, Api::<Node>::all(client.clone()), kick.clone()));
    let (leases, w) = reflector::store::<Lease>();
    let lease_api = Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE);
    tokio::spawn(watch(w, lease_api, kick.clone()));
    let (pods, w) = reflector::store::<Pod>();
    tokio::spawn(watch(w, Api::<Pod>::all(client.clone()), kick.clone()));
    let _ = nodes.wait_until_ready().await;
    let _ = leases.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let mut c = NodeLifecycle {
        recorder: Recorder::new(client.clone(), "node-controller"),
        client,
        cfg,
        nodes,
        leases,
        pods,
        health: HashMap::new(),
        tolerating_since: HashMap::new(),
        evicted: HashSet::new(),
    };
    loop {
        let next = c.pass().await;
        let wait = next.map_or(c.cfg.monitor_period, |n| n.min(c.cfg.monitor_period));
        let _ = tokio::time::timeout(wait, kick.notified()).await;
        // Let a burst of watch events land before the next pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn watch<K>(writer: reflector::store::Writer<K>, api: Api<K>, kick: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| {
            kick.notify_one();
            async {}
        })
        .await;
}

fn condition<'a>(
    node: &'a Node,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

impl NodeLifecycle {
    /// One pass: health, taints, evictions. Returns how soon a timed eviction is due.
    async fn pass(&mut self) -> Option<Duration> {
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.health.retain(|n, _| names.contains(n));
        for node in &nodes {
            if let Err(e) = self.check_health(node).await {
                tracing::debug!(node = %node.name_any(), error = %e, "node health update failed");
            }
        }
        // Taints follow the latest copies (the health check may have just changed them).
        for node in self.nodes.state() {
            if let Err(e) = self.sync_taints(&node).await {
                tracing::debug!(node = %node.name_any(), error = %e, "node taint update failed");
            }
        }
        self.evict().await
    }

    async fn check_health(&mut self, node: &Node) -> Result<(), kube::Error> {
        let name = node.name_any();
        let now = Instant::now();
        let ready = condition(node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.clone());
        let renew = self
            .leases
            .state()
            .into_iter()
            .find(|l| l.name_any() == name)
            .and_then(|l| {
                l.spec
                    .as_ref()?
                    .renew_time
                    .as_ref()
                    .map(|t| t.0.to_string())
            });
        let h = self.health.entry(name.clone()).or_insert_with(|| Health {
            probe: now,
            heartbeat: heartbeat.clone(),
            renew: renew.clone(),
        });
        if h.heartbeat != heartbeat || (renew.is_some() && h.renew != renew) {
            h.probe = now;
            h.heartbeat = heartbeat;
            h.renew = renew;
        }
        let grace = if ready.is_some() {
            self.cfg.grace_period
        } else {
            self.cfg.startup_grace_period
        };
        if now.duration_since(h.probe) <= grace {
            return Ok(());
        }
        let (reason, message) = if ready.is_some() {
            ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        } else {
            (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            )
        };
        let stamp = json!(kubox_core::meta::now_rfc3339());
        let mut conditions: Vec<Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut changed = false;
        for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            match conditions.iter_mut().find(|c| c["type"] == t) {
                Some(c) if c["status"] == "Unknown" => {}
                Some(c) => {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!(reason);
                    c["message"] = json!(message);
                    c["lastTransitionTime"] = stamp.clone();
                    changed = true;
                }
                None => {
                    conditions.push(json!({"type": t, "status": "Unknown", "reason": reason,
                        "message": message, "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}));
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(());
        }
        let was_ready = ready.is_some_and(|c| c.status == "True");
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(node = %name, "node stopped posting status: Ready is Unknown");
        if was_ready {
            self.recorder
                .event(
                    node,
                    "Normal",
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
        Ok(())
    }

    async fn sync_taints(&self, node: &Node) -> Result<(), kube::Error> {
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let want = desired_taints(node);
        let next = merge_taints(&current, &want, &Time(jiff::Timestamp::now()));
        if next == current {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": if next.is_empty() { Value::Null } else { serde_json::to_value(&next).unwrap_or(Value::Null) }},
        });
        api.patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Taint-based eviction; returns how soon the next timed eviction is due.
    async fn evict(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let taints: HashMap<String, Vec<Taint>> = self
            .nodes
            .state()
            .iter()
            .map(|n| {
                let t = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t.effect == "NoExecute")
                    .collect();
                (n.name_any(), t)
            })
            .collect();
        let mut next: Option<Duration> = None;
        let mut live = HashSet::new();
        for pod in self.pods.state() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            live.insert(uid.clone());
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let on_node = taints.get(&node).map(Vec::as_slice).unwrap_or_default();
            let verdict = if on_node.is_empty() {
                Verdict::Stay
            } else {
                verdict(&pod, on_node)
            };
            let due = match verdict {
                Verdict::Stay => {
                    if self.tolerating_since.remove(&uid).is_some() {
                        self.recorder
                            .event(
                                pod.as_ref(),
                                "Normal",
                                "TaintManagerEviction",
                                format!("Cancelling deletion of Pod {}", pod_ref(&pod)),
                            )
                            .await;
                    }
                    continue;
                }
                Verdict::Now => true,
                Verdict::After(wait) => {
                    let since = *self.tolerating_since.entry(uid.clone()).or_insert(now);
                    let elapsed = now.duration_since(since);
                    if elapsed < wait {
                        let left = wait - elapsed;
                        next = Some(next.map_or(left, |n| n.min(left)));
                    }
                    elapsed >= wait
                }
            };
            if !due {
                continue;
            }
            self.recorder
                .event(
                    pod.as_ref(),
                    "Normal",
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {}", pod_ref(&pod)),
                )
                .await;
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let condition = crate::pods::disruption_target(
                "DeletionByTaintManager",
                "Taint manager: deleting due to NoExecute taint",
            );
            if let Err(e) = crate::pods::set_condition(&api, &pod, condition).await {
                tracing::debug!(error = %e, pod = %pod_ref(&pod), "marking an evicted pod failed");
            }
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %pod_ref(&pod), node = %node, "taint manager evicted pod");
                    self.evicted.insert(uid.clone());
                    self.tolerating_since.remove(&uid);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::debug!(error = %e, "taint eviction failed"),
            }
        }
        self.evicted.retain(|u| live.contains(u));
        self.tolerating_since.retain(|u, _| live.contains(u));
        next
    }
}

fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Stay,
    Now,
    After(Duration),
}

/// What the NoExecute `taints` of its node mean for `pod`.
fn verdict(pod: &Pod, taints: &[Taint]) -> Verdict {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut min: Option<i64> = None;
    for taint in taints {
        let used: Vec<_> = tolerations
            .iter()
            .filter(|t| tolerates(std::slice::from_ref(t), taint))
            .collect();
        if used.is_empty() {
            return Verdict::Now;
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                min = Some(min.map_or(s, |m| m.min(s)));
            }
        }
    }
    match min {
        None => Verdict::Stay,
        Some(0) => Verdict::Now,
        Some(s) => Verdict::After(Duration::from_secs(s.unsigned_abs())),
    }
}

/// The (key, effect) taints this controller owns and whether the node should carry them.
fn desired_taints(node: &Node) -> BTreeMap<(&'static str, &'static str), bool> {
    let status = |t: &str| condition(node, t).map(|c| c.status.as_str());
    let ready = status("Ready");
    let pressure = |t: &str| status(t) == Some("True");
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let mut want = BTreeMap::new();
    for effect in ["NoSchedule", "NoExecute"] {
        want.insert((TAINT_NOT_READY, effect), ready == Some("False"));
        want.insert((TAINT_UNREACHABLE, effect), ready == Some("Unknown"));
    }
    want.insert(
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        pressure("MemoryPressure"),
    );
    want.insert(
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        pressure("DiskPressure"),
    );
    want.insert(
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        pressure("PIDPressure"),
    );
    want.insert((TAINT_UNSCHEDULABLE, "NoSchedule"), unschedulable);
    want
}

/// `current` with the owned taints added or removed as `want` says (NoExecute ones stamped
/// with `now`); everything else kept in order.
fn merge_taints(
    current: &[Taint],
    want: &BTreeMap<(&'static str, &'static str), bool>,
    now: &Time,
) -> Vec<Taint> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            want.get(&(t.key.as_str(), t.effect.as_str()))
                .is_none_or(|keep| *keep)
        })
        .cloned()
        .collect();
    for ((key, effect), on) in want {
        if *on && !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: (*effect == "NoExecute").then(|| now.clone()),
                value: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        }
    }

    #[test]
    fn tolerations_decide_when_a_pod_goes() {
        let unreachable = [taint(TAINT_UNREACHABLE)];
        assert_eq!(verdict(&pod(json!([])), &unreachable), Verdict::Now);
        let five = pod(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        assert_eq!(
            verdict(&five, &unreachable),
            Verdict::After(Duration::from_secs(5))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(verdict(&forever, &unreachable), Verdict::Stay);
        // Tolerating one taint but not the other is not enough.
        let both = [taint(TAINT_UNREACHABLE), taint("other")];
        assert_eq!(verdict(&five, &both), Verdict::Now);
    }

    #[test]
    fn owned_taints_follow_conditions_and_others_stay() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true, "taints": [
                {"key": "user", "effect": "NoSchedule"},
                {"key": TAINT_NOT_READY, "effect": "NoExecute"},
            ]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
        }))
        .unwrap();
        let current = node.spec.as_ref().unwrap().taints.clone().unwrap();
        let now = Time(jiff::Timestamp::now());
        let next = merge_taints(&current, &desired_taints(&node), &now);
        let keys: Vec<(String, String)> = next
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("user".into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoExecute".into()),
                (TAINT_UNREACHABLE.into(), "NoSchedule".into()),
                (TAINT_UNSCHEDULABLE.into(), "NoSchedule".into()),
            ]
        );
        assert!(next[1].time_added.is_some() && next[2].time_added.is_none());
    }
}
