//! Which of a Job's pods finished since the last pass and how they count (upstream's
//! trackJobStatusAndRemoveFinalizers classification), without IO.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::PodFailurePolicy;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::policy::{Action, match_policy};
use super::{INDEX, TRACKING_FINALIZER};

pub(super) fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub(super) fn terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub(super) fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && !terminal(p)
}

pub(super) fn index_of(p: &Pod) -> Option<i32> {
    p.annotations().get(INDEX).and_then(|i| i.parse().ok())
}

pub(super) fn tracked(p: &Pod) -> bool {
    p.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

pub(super) fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// What decides how a finished pod counts.
pub(super) struct Rules<'a> {
    pub policy: Option<&'a PodFailurePolicy>,
    /// `podReplacementPolicy: Failed`: a terminating pod counts only once it is Failed.
    pub only_failed: bool,
    pub suspended: bool,
}

/// Tracked pods not yet recorded in `uncountedTerminatedPods`, by how they count.
#[derive(Debug, Default)]
pub(super) struct Found<'a> {
    pub succeeded: Vec<&'a Pod>,
    pub failed: Vec<&'a Pod>,
    /// Released without being counted: `Ignore`d failures, pods a suspension stopped.
    pub ignored: Vec<&'a Pod>,
    /// The message of the first `FailJob` match.
    pub fail_job: Option<String>,
    /// Pods whose failure matched a `FailIndex` rule.
    pub fail_index: Vec<&'a Pod>,
}

/// Sorts the pods still holding the tracking finalizer whose uid is in neither uncounted
/// list: Succeeded ones; failed ones — Failed, or terminating unless `only_failed` — through
/// the podFailurePolicy; a suspended Job's stopped pods are not failures.
pub(super) fn classify<'a>(
    pods: &'a [Pod],
    uncounted_succeeded: &BTreeSet<String>,
    uncounted_failed: &BTreeSet<String>,
    rules: &Rules,
) -> Found<'a> {
    let mut found = Found::default();
    for p in pods.iter().filter(|p| tracked(p)) {
        let id = uid(p);
        if uncounted_succeeded.contains(&id) || uncounted_failed.contains(&id) {
            continue;
        }
        if phase(p) == "Succeeded" {
            found.succeeded.push(p);
            continue;
        }
        let failed = phase(p) == "Failed" || (terminating(p) && !rules.only_failed);
        if rules.suspended {
            if failed || terminating(p) {
                found.ignored.push(p);
            }
            continue;
        }
        if !failed {
            continue;
        }
        let matched = rules
            .policy
            .filter(|_| phase(p) == "Failed")
            .and_then(|pol| match_policy(pol, p));
        match matched {
            Some(m) if m.action == Action::Ignore => found.ignored.push(p),
            Some(m) => {
                if m.action == Action::FailJob && found.fail_job.is_none() {
                    found.fail_job = Some(m.message);
                }
                if m.action == Action::FailIndex {
                    found.fail_index.push(p);
                }
                found.failed.push(p);
            }
            None => found.failed.push(p),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(uid: &str, phase: &str, deleting: bool, code: i32, conditions: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid,
                         "finalizers": [TRACKING_FINALIZER]},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": [
                {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]},
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    fn rules(policy: Option<&PodFailurePolicy>, only_failed: bool, suspended: bool) -> Rules<'_> {
        Rules {
            policy,
            only_failed,
            suspended,
        }
    }

    #[test]
    fn recorded_and_released_pods_are_not_counted_again() {
        let mut released = pod("r", "Failed", false, 1, json!([]));
        released.metadata.finalizers = None;
        let pods = vec![
            pod("s", "Succeeded", false, 0, json!([])),
            pod("f", "Failed", false, 1, json!([])),
            pod("known", "Failed", false, 1, json!([])),
            pod("running", "Running", false, 0, json!([])),
            released,
        ];
        let known: BTreeSet<String> = ["known".to_string()].into();
        let found = classify(&pods, &BTreeSet::new(), &known, &rules(None, false, false));
        assert_eq!(names(&found.succeeded), ["s"]);
        assert_eq!(names(&found.failed), ["f"]);
        assert!(found.ignored.is_empty());
    }

    #[test]
    fn a_pod_deleted_while_running_fails_at_once_or_once_terminal() {
        let pods = vec![pod("gone", "Running", true, 0, json!([]))];
        let none = BTreeSet::new();
        let found = classify(&pods, &none, &none, &rules(None, false, false));
        assert_eq!(names(&found.failed), ["gone"], "TerminatingOrFailed");
        let found = classify(&pods, &none, &none, &rules(None, true, false));
        assert!(found.failed.is_empty(), "Failed waits for the phase");
        let found = classify(&pods, &none, &none, &rules(None, false, true));
        assert_eq!(names(&found.ignored), ["gone"], "stopped by a suspension");
    }

    #[test]
    fn the_failure_policy_ignores_fails_the_job_or_the_index() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [7]}},
        ]}))
        .unwrap();
        let disrupted = json!([{"type": "DisruptionTarget", "status": "True"}]);
        let pods = vec![
            pod("evicted", "Failed", false, 137, disrupted),
            pod("fatal", "Failed", false, 42, json!([])),
            pod("index", "Failed", false, 7, json!([])),
            pod("plain", "Failed", false, 1, json!([])),
        ];
        let none = BTreeSet::new();
        let found = classify(&pods, &none, &none, &rules(Some(&policy), true, false));
        assert_eq!(names(&found.ignored), ["evicted"]);
        assert_eq!(names(&found.failed), ["fatal", "index", "plain"]);
        assert_eq!(names(&found.fail_index), ["index"]);
        assert_eq!(
            found.fail_job.as_deref(),
            Some(
                "Container c for pod ns/fatal failed with exit code 42 matching FailJob rule at index 1"
            )
        );
    }
}
