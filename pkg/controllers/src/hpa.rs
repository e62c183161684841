//! The HorizontalPodAutoscaler controller (autoscaling/v2), as upstream's podautoscaler.
//!
//! Every sync period (`--horizontal-pod-autoscaler-sync-period`, 15 s), and at once when an
//! autoscaler's spec changes, each HPA is reconciled: the target's `scale` subresource gives
//! the current replicas and the pod selector (Deployments, ReplicaSets, StatefulSets,
//! ReplicationControllers and custom resources with a scale subresource, found through
//! discovery); `Resource` and `ContainerResource` metrics (cpu, memory) with `Utilization` or
//! `AverageValue` targets are read from `metrics.k8s.io` PodMetrics through the API, as
//! upstream's REST metrics client does. The replica calculation is upstream's: pods being
//! deleted or failed are ignored; pending pods, and for cpu pods not yet ready or still in
//! their first 5 minutes without a sample taken after turning ready, count as unready; pods
//! without a sample are missing; within the tolerance (0.1) nothing changes; missing pods
//! count as at the target (scale down: max(100 %, target)) or 0 (scale up), unready ones as 0
//! when scaling up, and a change of direction caused by them cancels the change. The largest
//! proposal of all metrics wins. Then the recommendation is stabilized (highest over the
//! downscale window, 5 min by `--horizontal-pod-autoscaler-downscale-stabilization`; with a
//! `behavior`, its scale-up/down windows and rate policies over past scale events) and kept
//! within min/maxReplicas (without a behavior also at most max(2×current, 4)). A change is
//! written to the scale subresource with a `SuccessfulRescale` event; status carries
//! currentReplicas/desiredReplicas/currentMetrics/lastScaleTime and the AbleToScale,
//! ScalingActive and ScalingLimited conditions with upstream's reasons.
//!
//! Pods, Object and External metrics fail as upstream's do when the custom or external
//! metrics API is missing (kubox serves neither): `FailedGetPodsMetric`/`FailedGetObjectMetric`/
//! `FailedGetExternalMetric` with upstream's messages; the other metrics still decide unless
//! they would scale down ([`deciding_metric`]).
//!
//! Simplified: recommendations and scale events live in memory, so a
//! restarted server starts its stabilization windows afresh (as upstream's controller
//! manager does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::events::Recorder;

/// Upstream's `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`.
const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// The controller's periods (upstream's kube-controller-manager flags).
#[derive(Debug, Clone)]
pub struct HpaConfig {
    /// `--horizontal-pod-autoscaler-sync-period` (15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 min), for HPAs without a
    /// `behavior`.
    pub downscale_stabilization: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The replica calculation (pure).

/// What the calculation needs of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: whether True, and when it last changed.
    pub ready: Option<(bool, Timestamp)>,
    pub start_time: Option<Timestamp>,
    /// The summed request of the resource (milli-units), or the first container without one.
    pub request: Result<i64, String>,
}

/// One pod's usage sample (milli-units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Average per pod, milli-units.
    AverageValue(i64),
}

/// The outcome for one metric: proposed replicas, the current utilization (percent, for
/// Utilization targets) and the current average value (milli-units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub utilization: Option<i32>,
    pub average_milli: i64,
}

/// Upstream's `groupPods`: (ready count, unready, missing, ignored).
fn group_pods(
    pods: &[PodInfo],
    metrics: &HashMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
) -> (usize, Vec<String>, Vec<String>, Vec<String>) {
    let (mut ready, mut unready, mut missing, mut ignored) =
        (0, Vec::new(), Vec::new(), Vec::new());
    for p in pods {
        if p.deleting || p.phase == "Failed" {
            ignored.push(p.name.clone());
            continue;
        }
        if p.phase == "Pending" {
            unready.push(p.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&p.name) else {
            missing.push(p.name.clone());
            continue;
        };
        if cpu {
            let is_unready = match (p.ready, p.start_time) {
                (Some((status, changed)), Some(start)) => {
                    if start + CPU_INITIALIZATION_PERIOD > now {
                        // Still initializing: a sample must cover a window after readiness.
                        !status || metric.timestamp < changed + metric.window
                    } else {
                        // Unready and never ready since starting.
                        !status && start + INITIAL_READINESS_DELAY > changed
                    }
                }
                _ => true,
            };
            if is_unready {
                unready.push(p.name.clone());
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// (usage ratio, utilization percent, average value) of `metrics` against the target.
fn usage_ratio(
    metrics: &HashMap<String, i64>,
    requests: &HashMap<String, i64>,
    target: Target,
) -> Result<(f64, Option<i32>, i64), String> {
    match target {
        Target::Utilization(t) => {
            let (mut total, mut requested, mut n) = (0i64, 0i64, 0i64);
            for (pod, v) in metrics {
                if let Some(r) = requests.get(pod) {
                    total += v;
                    requested += r;
                    n += 1;
                }
            }
            if requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let utilization = (total * 100 / requested) as i32;
            Ok((
                f64::from(utilization) / f64::from(t.max(1)),
                Some(utilization),
                total / n.max(1),
            ))
        }
        Target::AverageValue(t) => {
            let total: i64 = metrics.values().sum();
            let avg = total / (metrics.len().max(1) as i64);
            Ok((
                total as f64 / metrics.len().max(1) as f64 / t.max(1) as f64,
                None,
                avg,
            ))
        }
    }
}

/// Upstream's `GetResourceReplicas` / `GetRawResourceReplicas` for one resource metric.
pub fn replicas_for_resource(
    current: i32,
    target: Target,
    pods: &[PodInfo],
    samples: &HashMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let (ready, unready, missing, ignored) = group_pods(pods, samples, cpu, now);
    let mut metrics: HashMap<String, i64> = samples
        .iter()
        .filter(|(p, _)| !ignored.contains(*p) && !unready.contains(*p))
        .filter(|(p, _)| pods.iter().any(|x| &x.name == *p))
        .map(|(p, m)| (p.clone(), m.value))
        .collect();
    let mut requests = HashMap::new();
    if let Target::Utilization(_) = target {
        for p in pods {
            match &p.request {
                Ok(r) => {
                    requests.insert(p.name.clone(), *r);
                }
                Err(container) => {
                    return Err(format!(
                        "missing request for {} in container {container} of Pod {}",
                        if cpu { "cpu" } else { "memory" },
                        p.name
                    ));
                }
            }
        }
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (ratio, utilization, average) = usage_ratio(&metrics, &requests, target)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average_milli: average,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * ready as f64).ceil() as i32));
    }
    if !missing.is_empty() {
        for p in &missing {
            let v = if ratio < 1.0 {
                match target {
                    Target::Utilization(t) => {
                        requests.get(p).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
                    }
                    Target::AverageValue(t) => t,
                }
            } else {
                0
            };
            metrics.insert(p.clone(), v);
        }
    }
    if scale_up_with_unready {
        for p in &unready {
            metrics.insert(p.clone(), 0);
        }
    }
    let (new_ratio, _, _) = usage_ratio(&metrics, &requests, target)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `Pods` (false) or `Percent` (true).
    pub percent: bool,
    pub value: i32,
    pub period_seconds: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub window_seconds: i64,
    pub select: Select,
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

/// A scale event: when, and by how many replicas.
pub type ScaleEvent = (Timestamp, i32);

/// What the controller remembers of one HPA between syncs.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub recommendations: Vec<(Timestamp, i32)>,
    pub scale_up: Vec<ScaleEvent>,
    pub scale_down: Vec<ScaleEvent>,
}

fn since(events: &[ScaleEvent], now: Timestamp, period_seconds: i32) -> i32 {
    let cutoff = now - SignedDuration::from_secs(i64::from(period_seconds));
    events
        .iter()
        .filter(|(t, _)| *t > cutoff)
        .map(|(_, n)| n)
        .sum()
}

fn scale_up_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let mut result = if rules.select == Select::Max {
        i32::MIN
    } else {
        i32::MAX
    };
    for p in &rules.policies {
        let start = current - since(&h.scale_up, now, p.period_seconds)
            + since(&h.scale_down, now, p.period_seconds);
        let proposed = if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        };
        result = if rules.select == Select::Max {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

fn scale_down_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let mut result = if rules.select == Select::Max {
        i32::MAX
    } else {
        i32::MIN
    };
    for p in &rules.policies {
        let start = current - since(&h.scale_up, now, p.period_seconds)
            + since(&h.scale_down, now, p.period_seconds);
        let proposed = if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        } else {
            start - p.value
        };
        result = if rules.select == Select::Max {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    result
}

/// A limit on the recommendation: (replicas, ScalingLimited reason, message).
pub type Limited = (i32, &'static str, &'static str);

const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// Upstream's `convertDesiredReplicasWithRules` (no behavior): within min/max and at most
/// max(2×current, 4).
pub fn limit_without_behavior(current: i32, desired: i32, min: i32, max: i32) -> Limited {
    let up = (current * 2).max(4);
    let (maximum, reason) = if max > up {
        (up, UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    if desired < min {
        (min, TOO_FEW.0, TOO_FEW.1)
    } else if desired > maximum {
        (maximum, reason.0, reason.1)
    } else {
        (desired, WITHIN.0, WITHIN.1)
    }
}

/// Upstream's `convertDesiredReplicasWithBehaviorRate`.
pub fn limit_with_behavior(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    behavior: &Behavior,
    h: &History,
    now: Timestamp,
) -> Limited {
    if desired > current {
        let up = scale_up_limit(current, h, &behavior.up, now).max(current);
        let (maximum, reason) = if max > up {
            (up, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if desired > maximum {
            return (maximum, reason.0, reason.1);
        }
    } else if desired < current {
        let down = scale_down_limit(current, h, &behavior.down, now).min(current);
        let (minimum, reason) = if min < down {
            (down, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if desired < minimum {
            return (minimum, reason.0, reason.1);
        }
    }
    (desired, WITHIN.0, WITHIN.1)
}

/// Stabilizes a recommendation: without a behavior the highest recommendation of the
/// downscale window; with one, scale-ups limited to the lowest recommendation of the up
/// window and scale-downs to the highest of the down window. Returns the recommendation and
/// the AbleToScale reason/message; records the new recommendation.
pub fn stabilize(
    h: &mut History,
    current: i32,
    recommendation: i32,
    behavior: Option<&Behavior>,
    downscale_window: SignedDuration,
    now: Timestamp,
) -> (i32, &'static str, &'static str) {
    let (up_window, down_window) = match behavior {
        Some(b) => (
            SignedDuration::from_secs(b.up.window_seconds),
            SignedDuration::from_secs(b.down.window_seconds),
        ),
        None => (SignedDuration::ZERO, downscale_window),
    };
    let (mut up_rec, mut down_rec) = (recommendation, recommendation);
    for (t, r) in &h.recommendations {
        if *t > now - up_window {
            up_rec = up_rec.min(*r);
        }
        if *t > now - down_window {
            down_rec = down_rec.max(*r);
        }
    }
    let longest = up_window.max(down_window);
    h.recommendations.retain(|(t, _)| *t > now - longest);
    h.recommendations.push((now, recommendation));
    let stabilized = match behavior {
        None => down_rec,
        Some(_) => current.max(up_rec).min(down_rec),
    };
    if stabilized == recommendation {
        (
            stabilized,
            "ReadyForNewScale",
            "recommended size matches current size",
        )
    } else if stabilized < recommendation {
        (
            stabilized,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )
    } else {
        (
            stabilized,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    }
}

/// Records a rescale in the history the rate policies look at (behavior only).
pub fn record_scale(h: &mut History, behavior: &Behavior, from: i32, to: i32, now: Timestamp) {
    let longest = |r: &Rules| {
        r.policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0)
    };
    let keep = |events: &mut Vec<ScaleEvent>, secs: i32| {
        events.retain(|(t, _)| *t > now - SignedDuration::from_secs(i64::from(secs)));
    };
    if to > from {
        keep(&mut h.scale_up, longest(&behavior.up));
        h.scale_up.push((now, to - from));
    } else if to < from {
        keep(&mut h.scale_down, longest(&behavior.down));
        h.scale_down.push((now, from - to));
    }
}

/// The behavior of a v2 spec with upstream's defaults for what it leaves out; a scale-down
/// window left out is the controller's `--horizontal-pod-autoscaler-downscale-stabilization`
/// (`down_window` seconds), as upstream's controller fills it in.
pub fn behavior_of(spec: &Value, down_window: i64) -> Option<Behavior> {
    let b = spec.get("behavior")?;
    let rules = |v: Option<&Value>, up: bool| {
        let policies: Vec<Policy> = v
            .and_then(|r| r.get("policies"))
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| Policy {
                        percent: p["type"] == "Percent",
                        value: p["value"].as_i64().unwrap_or(0) as i32,
                        period_seconds: p["periodSeconds"].as_i64().unwrap_or(15) as i32,
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                let mut p = vec![Policy {
                    percent: true,
                    value: 100,
                    period_seconds: 15,
                }];
                if up {
                    p.push(Policy {
                        percent: false,
                        value: 4,
                        period_seconds: 15,
                    });
                }
                p
            });
        Rules {
            window_seconds: v
                .and_then(|r| r.get("stabilizationWindowSeconds"))
                .and_then(Value::as_i64)
                .unwrap_or(if up { 0 } else { down_window }),
            select: match v.and_then(|r| r["selectPolicy"].as_str()) {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                _ => Select::Max,
            },
            policies,
        }
    };
    Some(Behavior {
        up: rules(b.get("scaleUp"), true),
        down: rules(b.get("scaleDown"), false),
    })
}

// ---------------------------------------------------------------------------------------
// The controller.

struct State {
    client: Client,
    recorder: Recorder,
    cfg: HpaConfig,
    history: Mutex<HashMap<String, History>>,
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
}

pub async fn run(client: Client, cfg: HpaConfig) {
    let state = Arc::new(State {
        recorder: Recorder::new(client.clone(), "horizontal-pod-autoscaler"),
        client: client.clone(),
        cfg,
        history: Mutex::default(),
        kinds: Mutex::default(),
    });
    let api: Api<HorizontalPodAutoscaler> = Api::all(client);
    // Spec changes (generation) are synced at once; everything else every sync period.
    let changes = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let mut changes = std::pin::pin!(changes);
    let mut tick = tokio::time::interval(state.cfg.sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        let keys: Vec<String> = list.items.iter().map(key).collect();
                        if let Ok(mut h) = state.history.lock() {
                            h.retain(|k, _| keys.contains(k));
                        }
                        for hpa in list.items {
                            sync(&state, &hpa).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "listing HorizontalPodAutoscalers failed"),
                }
            }
            Some(changed) = changes.next() => {
                if let Ok(hpa) = changed {
                    sync(&state, &hpa).await;
                }
            }
        }
    }
}

/// `--horizontal-pod-autoscaler-downscale-stabilization` in seconds.
fn down_window(state: &State) -> i64 {
    i64::try_from(state.cfg.downscale_stabilization.as_secs()).unwrap_or(300)
}

fn key(hpa: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any())
}

async fn sync(state: &State, hpa: &HorizontalPodAutoscaler) {
    if hpa.metadata.deletion_timestamp.is_some() {
        return;
    }
    if let Err(e) = reconcile(state, hpa).await {
        tracing::debug!(hpa = %key(hpa), error = %e, "syncing a HorizontalPodAutoscaler failed");
    }
}

/// Conditions being built for the status: type -> (status, reason, message).
#[derive(Default)]
struct Conditions(Vec<(&'static str, bool, String, String)>);

impl Conditions {
    fn set(&mut self, type_: &'static str, status: bool, reason: &str, message: impl Into<String>) {
        self.0.retain(|c| c.0 != type_);
        self.0
            .push((type_, status, reason.to_string(), message.into()));
    }

    /// The conditions as JSON, keeping the lastTransitionTime of unchanged statuses.
    fn render(&self, old: &Value, now: &str) -> Value {
        let order = ["AbleToScale", "ScalingActive", "ScalingLimited"];
        let mut list: Vec<&(&str, bool, String, String)> = self.0.iter().collect();
        list.sort_by_key(|c| order.iter().position(|o| *o == c.0));
        list.iter()
            .map(|(t, status, reason, message)| {
                let status = if *status { "True" } else { "False" };
                let previous = old
                    .as_array()
                    .and_then(|l| l.iter().find(|c| c["type"] == *t));
                let since = previous
                    .filter(|c| c["status"] == status)
                    .and_then(|c| c["lastTransitionTime"].as_str())
                    .unwrap_or(now);
                json!({"type": t, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
            })
            .collect()
    }
}

/// The target's resource, found through discovery (cached).
async fn target_resource(
    state: &State,
    api_version: &str,
    kind: &str,
) -> Result<ApiResource, Error> {
    let k = (api_version.to_string(), kind.to_string());
    if let Some(ar) = state.kinds.lock().ok().and_then(|m| m.get(&k).cloned()) {
        return Ok(ar);
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let (ar, _) =
        kube::discovery::pinned_kind(&state.client, &GroupVersionKind::gvk(group, version, kind))
            .await?;
    if let Ok(mut m) = state.kinds.lock() {
        m.insert(k, ar.clone());
    }
    Ok(ar)
}

/// One metric of the spec, evaluated.
struct Evaluated {
    proposal: Proposal,
    status: Value,
    /// "cpu resource utilization (percentage of request)" and the like.
    description: String,
}

async fn reconcile(state: &State, hpa: &HorizontalPodAutoscaler) -> Result<(), Error> {
    let ns = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let obj = serde_json::to_value(hpa)?;
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let old_status = obj.get("status").cloned().unwrap_or(Value::Null);
    let now = Timestamp::now();
    let now_str = kubox_core::meta::format_time(now);
    let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
    let max = spec["maxReplicas"].as_i64().unwrap_or(1) as i32;
    let target_ref = &spec["scaleTargetRef"];
    let (t_api, t_kind, t_name) = (
        target_ref["apiVersion"].as_str().unwrap_or(""),
        target_ref["kind"].as_str().unwrap_or(""),
        target_ref["name"].as_str().unwrap_or(""),
    );
    let mut conds = Conditions::default();
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(state.client.clone(), &ns);
    let write_status = |status: Value| {
        let hpa_api = hpa_api.clone();
        let name = name.clone();
        async move {
            hpa_api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
                .map(|_| ())
        }
    };
    let generation = hpa.metadata.generation;
    // The target's scale.
    let scale = match target_resource(state, t_api, t_kind).await {
        Ok(ar) => Api::<DynamicObject>::namespaced_with(state.client.clone(), &ns, &ar)
            .get_scale(t_name)
            .await
            .map(|s| (ar, s))
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    let (ar, scale) = match scale {
        Ok(s) => s,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            state
                .recorder
                .event(hpa, "Warning", "FailedGetScale", e.to_string())
                .await;
            conds.set("AbleToScale", false, "FailedGetScale", msg);
            let mut status = old_status.clone();
            if !status.is_object() {
                status = json!({"currentReplicas": 0, "desiredReplicas": 0});
            }
            status["conditions"] = conds.render(&old_status["conditions"], &now_str);
            status["observedGeneration"] = json!(generation);
            write_status(status).await?;
            return Ok(());
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let mut current_metrics = Vec::new();
    let mut rescale_reason = String::new();
    let desired;
    if current == 0 && min != 0 {
        // Scaling is off while the target is scaled to zero.
        conds.set(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        desired = 0;
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let results = evaluate_metrics(state, hpa, &ns, &spec, current, &selector, now).await;
        // Failed metrics keep their place with an empty status, as upstream's.
        current_metrics = results
            .iter()
            .map(|r| match r {
                Ok(e) => e.status.clone(),
                Err(_) => json!({"type": ""}),
            })
            .collect();
        let failures: Vec<&Failure> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let usable = deciding_metric(&results, current);
        if let Some(first) = failures.first()
            && usable.is_none()
        {
            let message = format!(
                "failed to compute desired number of replicas based on listed metrics for {t_kind}/{ns}/{t_name}: invalid metrics ({} invalid out of {}), first error is: {}",
                failures.len(),
                results.len(),
                first.wrapped
            );
            state
                .recorder
                .event(hpa, "Warning", "FailedComputeMetricsReplicas", message)
                .await;
        }
        match usable {
            Some(best) => {
                let proposed = best.proposal.replicas;
                conds.set(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!(
                        "the HPA was able to successfully calculate a replica count from {}",
                        best.description
                    ),
                );
                rescale_reason = if proposed > current {
                    format!("{} above target", best.description)
                } else {
                    "All metrics below target".into()
                };
                let behavior = behavior_of(&spec, down_window(state));
                let mut histories = state.history.lock().unwrap_or_else(|e| e.into_inner());
                let h = histories.entry(key(hpa)).or_default();
                let window = SignedDuration::try_from(state.cfg.downscale_stabilization)
                    .unwrap_or(SignedDuration::from_secs(300));
                let (stabilized, reason, message) =
                    stabilize(h, current, proposed, behavior.as_ref(), window, now);
                conds.set("AbleToScale", true, reason, message);
                let (limited, reason, message) = match &behavior {
                    Some(b) => limit_with_behavior(current, stabilized, min, max, b, h, now),
                    None => limit_without_behavior(current, stabilized, min, max),
                };
                conds.set("ScalingLimited", limited != stabilized, reason, message);
                desired = limited;
            }
            None => {
                let (reason, msg) = failures
                    .first()
                    .map(|f| (f.reason, f.error.as_str()))
                    .unwrap_or(("FailedGetResourceMetric", "invalid metrics"));
                conds.set(
                    "ScalingActive",
                    false,
                    reason,
                    format!("the HPA was unable to compute the replica count: {msg}"),
                );
                let mut status = json!({
                    "currentReplicas": current,
                    "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(i64::from(current)),
                    "currentMetrics": current_metrics,
                    "observedGeneration": generation,
                });
                if let Some(t) = old_status.get("lastScaleTime") {
                    status["lastScaleTime"] = t.clone();
                }
                conds.set(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale",
                );
                status["conditions"] = conds.render(&old_status["conditions"], &now_str);
                write_status(status).await?;
                return Ok(());
            }
        }
    }
    let mut last_scale = old_status.get("lastScaleTime").cloned();
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        let api = Api::<DynamicObject>::namespaced_with(state.client.clone(), &ns, &ar);
        match api
            .patch_scale(t_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                state
                    .recorder
                    .event(
                        hpa,
                        "Normal",
                        "SuccessfulRescale",
                        format!("New size: {desired}; reason: {rescale_reason}"),
                    )
                    .await;
                conds.set(
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                );
                if let Some(b) = behavior_of(&spec, down_window(state))
                    && let Ok(mut histories) = state.history.lock()
                {
                    record_scale(
                        histories.entry(key(hpa)).or_default(),
                        &b,
                        current,
                        desired,
                        now,
                    );
                }
                last_scale = Some(json!(now_str));
            }
            Err(e) => {
                state
                    .recorder
                    .event(
                        hpa,
                        "Warning",
                        "FailedRescale",
                        format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                    )
                    .await;
                conds.set(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
            }
        }
    } else if !conds.0.iter().any(|c| c.0 == "AbleToScale") {
        conds.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
    }
    let mut status = json!({
        "currentReplicas": current,
        "desiredReplicas": desired,
        "currentMetrics": current_metrics,
        "observedGeneration": generation,
        "conditions": conds.render(&old_status["conditions"], &now_str),
    });
    if let Some(t) = last_scale {
        status["lastScaleTime"] = t;
    }
    write_status(status).await?;
    Ok(())
}

/// The metric that decides (upstream's `computeReplicasForMetrics`): the largest proposal,
/// the first metric giving it on a tie; when some metrics failed, only if it does not scale
/// down.
fn deciding_metric(results: &[Result<Evaluated, Failure>], current: i32) -> Option<&Evaluated> {
    let failed = results.iter().any(Result::is_err);
    results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .fold(None::<&Evaluated>, |best, e| match best {
            Some(b) if b.proposal.replicas >= e.proposal.replicas => Some(b),
            _ => Some(e),
        })
        .filter(|b| !failed || b.proposal.replicas >= current)
}

/// Why one metric gave no proposal.
struct Failure {
    /// The ScalingActive=False reason (and the event's, when there is one).
    reason: &'static str,
    /// The error (the condition's message after "the HPA was unable to compute the replica
    /// count: ").
    error: String,
    /// The error as upstream's `computeReplicasForMetric` wraps it (for
    /// `FailedComputeMetricsReplicas`).
    wrapped: String,
}

/// Evaluates every metric of the spec, in order.
async fn evaluate_metrics(
    state: &State,
    hpa: &HorizontalPodAutoscaler,
    ns: &str,
    spec: &Value,
    current: i32,
    selector: &str,
    now: Timestamp,
) -> Vec<Result<Evaluated, Failure>> {
    // No metrics (an autoscaling/v1 HPA without a target): cpu at 80 %, upstream's default.
    let metrics = spec["metrics"]
        .as_array()
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}})]
        });
    // Pods and their samples are read once for all metrics.
    let mut inputs: Option<Result<Inputs, String>> = None;
    let mut out = Vec::new();
    for m in &metrics {
        let result = match m["type"].as_str().unwrap_or("") {
            "Resource" => {
                resource_metric(
                    state,
                    ns,
                    &m["resource"],
                    None,
                    current,
                    selector,
                    now,
                    &mut inputs,
                )
                .await
            }
            "ContainerResource" => {
                let source = &m["containerResource"];
                let container = source["container"].as_str().unwrap_or_default();
                resource_metric(
                    state,
                    ns,
                    source,
                    Some(container),
                    current,
                    selector,
                    now,
                    &mut inputs,
                )
                .await
            }
            other => Err(custom_metric_failure(other, m, ns)),
        };
        if let Err(f) = &result
            && f.reason != "InvalidMetricSourceType"
        {
            state
                .recorder
                .event(hpa, "Warning", f.reason, f.error.clone())
                .await;
        }
        out.push(result);
    }
    out
}

/// Pods, Object and External metrics: kubox serves no custom or external metrics API, so they
/// fail as upstream's do when that API is not there.
fn custom_metric_failure(type_: &str, m: &Value, ns: &str) -> Failure {
    const NO_CUSTOM: &str = "unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered";
    let has_target = |target: &Value| match target["type"].as_str() {
        Some("Value") => !target["value"].is_null(),
        Some("AverageValue") => !target["averageValue"].is_null(),
        _ => false,
    };
    match type_ {
        "Pods" => {
            let name = m["pods"]["metric"]["name"].as_str().unwrap_or_default();
            let error = format!("unable to get metric {name}: {NO_CUSTOM}");
            Failure {
                reason: "FailedGetPodsMetric",
                wrapped: format!("failed to get pods metric value: {error}"),
                error,
            }
        }
        "Object" => {
            let source = &m["object"];
            let error = if has_target(&source["target"]) {
                let object = &source["describedObject"];
                format!(
                    "unable to get metric {}: {} on {ns} {}/{NO_CUSTOM}",
                    source["metric"]["name"].as_str().unwrap_or_default(),
                    object["kind"].as_str().unwrap_or_default(),
                    object["name"].as_str().unwrap_or_default(),
                )
            } else {
                "invalid object metric source: neither a value target nor an average value target was set".into()
            };
            Failure {
                reason: "FailedGetObjectMetric",
                wrapped: format!("failed to get object metric value: {error}"),
                error,
            }
        }
        "External" => {
            let source = &m["external"];
            let name = source["metric"]["name"].as_str().unwrap_or_default();
            let error = if has_target(&source["target"]) {
                format!(
                    "unable to get external metric {ns}/{name}/{}: unable to fetch metrics from external metrics API: the server could not find the requested resource (get {name}.external.metrics.k8s.io)",
                    go_label_selector(&source["metric"]["selector"])
                )
            } else {
                "invalid external metric source: neither a value target nor an average value target was set".into()
            };
            Failure {
                reason: "FailedGetExternalMetric",
                wrapped: format!("failed to get {name} external metric value: {error}"),
                error,
            }
        }
        other => {
            let error = format!("unknown metric source type {other:?}");
            Failure {
                reason: "InvalidMetricSourceType",
                wrapped: error.clone(),
                error,
            }
        }
    }
}

/// A label selector as Go prints a `*metav1.LabelSelector` with `%+v` (its generated
/// `String()`), as upstream's external metric errors show it.
fn go_label_selector(v: &Value) -> String {
    if v.is_null() {
        return "nil".into();
    }
    let mut labels: Vec<(&String, &Value)> = v["matchLabels"]
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    labels.sort_by_key(|(k, _)| *k);
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("{k}: {},", v.as_str().unwrap_or_default()))
        .collect();
    let expressions: String = v["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e["key"].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default(),
                values.join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

/// A `Resource` metric (`container` None) or a `ContainerResource` one, from metrics.k8s.io.
#[allow(clippy::too_many_arguments)]
async fn resource_metric(
    state: &State,
    ns: &str,
    source: &Value,
    container: Option<&str>,
    current: i32,
    selector: &str,
    now: Timestamp,
    inputs: &mut Option<Result<Inputs, String>>,
) -> Result<Evaluated, Failure> {
    let resource = source["name"].as_str().unwrap_or("cpu");
    let (reason, wrap) = match container {
        None => (
            "FailedGetResourceMetric",
            format!("failed to get {resource} resource metric value"),
        ),
        Some(c) => (
            "FailedGetContainerResourceMetric",
            format!("failed to get {c} container metric value"),
        ),
    };
    let fail = |error: String| Failure {
        reason,
        wrapped: format!("{wrap}: {error}"),
        error,
    };
    let target = &source["target"];
    let target_v = match (
        target["type"].as_str(),
        target["averageUtilization"].as_i64(),
        target["averageValue"].as_str(),
    ) {
        (Some("Utilization"), Some(u), _) => Target::Utilization(u as i32),
        (Some("AverageValue"), _, Some(v)) => match kubox_core::quantity::parse_milli(v) {
            Some(v) => Target::AverageValue(v as i64),
            None => return Err(fail(format!("invalid averageValue {v:?}"))),
        },
        _ => {
            return Err(fail(
                "invalid resource metric source: neither a utilization target nor a value target was set".into(),
            ));
        }
    };
    if inputs.is_none() {
        *inputs = Some(read_inputs(state, ns, selector).await);
    }
    // Upstream's wrapping of every failure of this metric.
    let failed = match target_v {
        Target::Utilization(_) => format!("failed to get {resource} utilization"),
        Target::AverageValue(_) => format!("failed to get {resource} usage"),
    };
    let (pods, samples) = match inputs.as_ref() {
        Some(Ok(i)) => (&i.0, &i.1),
        Some(Err(e)) => {
            return Err(fail(format!(
                "{failed}: unable to get metrics for resource {resource}: {e}"
            )));
        }
        None => return Err(fail(format!("{failed}: no pods"))),
    };
    let infos: Vec<PodInfo> = pods
        .iter()
        .map(|p| pod_info(p, resource, container))
        .collect();
    let sample_map = samples_for(samples, resource, container);
    if sample_map.is_empty() {
        return Err(fail(format!(
            "{failed}: unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        )));
    }
    let p = replicas_for_resource(
        current,
        target_v,
        &infos,
        &sample_map,
        resource == "cpu",
        now,
    )
    .map_err(|e| fail(format!("{failed}: {e}")))?;
    let mut current_v = json!({"averageValue": milli_quantity(p.average_milli, resource)});
    if let Some(u) = p.utilization {
        current_v["averageUtilization"] = json!(u);
    }
    let status = match container {
        Some(c) => {
            json!({"type": "ContainerResource", "containerResource": {"name": resource, "container": c, "current": current_v}})
        }
        None => json!({"type": "Resource", "resource": {"name": resource, "current": current_v}}),
    };
    let description = match target_v {
        Target::Utilization(_) => {
            format!("{resource} resource utilization (percentage of request)")
        }
        Target::AverageValue(_) => format!("{resource} resource"),
    };
    Ok(Evaluated {
        proposal: p,
        status,
        description,
    })
}

/// The selected pods and their PodMetrics objects.
type Inputs = (Vec<Pod>, Vec<Value>);

async fn read_inputs(state: &State, ns: &str, selector: &str) -> Result<Inputs, String> {
    let params = ListParams::default().labels(selector);
    let pods = Api::<Pod>::namespaced(state.client.clone(), ns)
        .list(&params)
        .await
        .map_err(|e| e.to_string())?
        .items;
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let samples = Api::<DynamicObject>::namespaced_with(state.client.clone(), ns, &ar)
        .list(&params)
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    Ok((pods, samples))
}

fn pod_info(pod: &Pod, resource: &str, container: Option<&str>) -> PodInfo {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            )
        });
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut request = Ok(0i64);
    for c in containers
        .iter()
        .filter(|c| container.is_none_or(|n| n == c.name))
    {
        let r = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .and_then(|q| kubox_core::quantity::parse_milli(&q.0));
        request = match (request, r) {
            (Ok(a), Some(b)) => Ok(a + b as i64),
            (Ok(_), None) => Err(c.name.clone()),
            (err, _) => err,
        };
    }
    PodInfo {
        name: pod.name_any(),
        phase: status.phase.unwrap_or_default(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.map(|t| t.0),
        request,
    }
}

/// Each pod's usage of `resource` (milli-units) from PodMetrics objects.
fn samples_for(
    samples: &[Value],
    resource: &str,
    container: Option<&str>,
) -> HashMap<String, PodMetric> {
    let mut out = HashMap::new();
    for m in samples {
        let Some(name) = kubox_core::meta::name(m) else {
            continue;
        };
        let timestamp = m["timestamp"]
            .as_str()
            .and_then(kubox_core::meta::parse_time)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let window = m["window"]
            .as_str()
            .and_then(kubox_core::validation::parse_go_duration)
            .and_then(|d| SignedDuration::try_from(d).ok())
            .unwrap_or(SignedDuration::from_secs(15));
        let mut total = 0i64;
        let mut found = false;
        for c in m["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|n| c["name"] != n) {
                continue;
            }
            if let Some(v) = c["usage"][resource]
                .as_str()
                .and_then(kubox_core::quantity::parse_milli)
            {
                total += v as i64;
                found = true;
            }
        }
        if found {
            out.insert(
                name.to_string(),
                PodMetric {
                    value: total,
                    timestamp,
                    window,
                },
            );
        }
    }
    out
}

/// A milli-unit value as a quantity (`250m` of cpu, bytes of memory).
fn milli_quantity(milli: i64, resource: &str) -> String {
    if resource == "cpu" || milli % 1000 != 0 {
        format!("{milli}m")
    } else {
        (milli / 1000).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
