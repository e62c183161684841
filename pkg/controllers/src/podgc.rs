//! Pod garbage collector (upstream's PodGC controller), every `check_period`:
//! - pods bound to a Node that no longer exists, once it has been missing for the quarantine
//!   (upstream: 40 s, so a node being re-registered is not mistaken for a gone one), are
//!   marked `Failed` with a `DisruptionTarget` condition (`DeletionByPodGC`) and deleted
//!   without grace — no kubelet is left to end them, and their controllers replace them;
//! - terminating pods never bound to a node are deleted without grace;
//! - terminated pods (Succeeded/Failed) beyond `--terminated-pod-gc-threshold` (12,500) are
//!   deleted, oldest first.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The collector's thresholds and periods.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// Terminated pods kept before the oldest are deleted (0: never delete terminated pods).
    pub terminated_threshold: usize,
    /// How long a node must be gone before its pods are (upstream: 40 s).
    pub orphan_quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_threshold: 12_500,
            orphan_quarantine: Duration::from_secs(40),
        }
    }
}

impl PodGcConfig {
    /// Upstream checks every 20 s; a shorter quarantine (tests) checks more often.
    fn check_period(&self) -> Duration {
        (self.orphan_quarantine / 2).clamp(Duration::from_millis(500), Duration::from_secs(20))
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminated(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub async fn run(client: Client, cfg: PodGcConfig) {
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(cfg.check_period()).await;
        if let Err(e) = check(&client, &cfg, &mut missing_since).await {
            tracing::debug!(error = %e, "pod garbage collection failed; retrying");
        }
    }
}

async fn force_delete(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod.uid().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn check(
    client: &Client,
    cfg: &PodGcConfig,
    missing_since: &mut HashMap<String, Instant>,
) -> Result<(), kube::Error> {
    let nodes: HashSet<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let now = Instant::now();
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    // Nodes pods are bound to that are gone, and since when.
    let gone: HashSet<String> = pods
        .iter()
        .filter_map(node_of)
        .filter(|n| !nodes.contains(n))
        .collect();
    missing_since.retain(|n, _| gone.contains(n));
    for n in &gone {
        missing_since.entry(n.clone()).or_insert(now);
    }
    for pod in &pods {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        match node_of(pod) {
            Some(node) => {
                let quarantined = missing_since
                    .get(&node)
                    .is_some_and(|t| now.duration_since(*t) >= cfg.orphan_quarantine);
                if !quarantined {
                    continue;
                }
                if !terminated(pod) {
                    let target = crate::pods::disruption_target(
                        "DeletionByPodGC",
                        "PodGC: node no longer exists",
                    );
                    let patch = Patch::Merge(json!({"status": {
                        "phase": "Failed",
                        "conditions": crate::pods::with_condition(pod, target),
                    }}));
                    if let Err(e) = api
                        .patch_status(&pod.name_any(), &PatchParams::default(), &patch)
                        .await
                    {
                        tracing::debug!(pod = %pod.name_any(), error = %e, "marking an orphaned pod failed");
                    }
                }
                tracing::info!(
                    pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                    node = %node,
                    "deleting a pod whose node no longer exists"
                );
                force_delete(&api, pod).await?;
            }
            None if pod.metadata.deletion_timestamp.is_some() => {
                force_delete(&api, pod).await?;
            }
            None => {}
        }
    }
    if cfg.terminated_threshold > 0 {
        let mut done: Vec<&Pod> = pods
            .iter()
            .filter(|p| terminated(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if done.len() > cfg.terminated_threshold {
            done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let excess = done.len() - cfg.terminated_threshold;
            for pod in done.into_iter().take(excess) {
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                force_delete(&api, pod).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PodGcConfig;
    use std::time::Duration;

    #[test]
    fn checks_every_twenty_seconds_or_twice_per_short_quarantine() {
        assert_eq!(
            PodGcConfig::default().check_period(),
            Duration::from_secs(20)
        );
        let short = PodGcConfig {
            orphan_quarantine: Duration::from_secs(2),
            ..PodGcConfig::default()
        };
        assert_eq!(short.check_period(), Duration::from_secs(1));
    }
}
