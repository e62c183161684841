//! The Job controller's pure rules: podFailurePolicy matching, the pod failure back-off,
//! index sets in upstream's compressed `1,3-5` form.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;

/// What a podFailurePolicy rule does with a failed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

/// The first rule matching a failed pod: its action and upstream's message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub action: Action,
    pub message: String,
}

fn action(s: &str) -> Option<Action> {
    Some(match s {
        "FailJob" => Action::FailJob,
        "FailIndex" => Action::FailIndex,
        "Ignore" => Action::Ignore,
        "Count" => Action::Count,
        _ => return None,
    })
}

/// The rules of `policy` in order against failed `pod` (upstream's matchPodFailurePolicy):
/// `onExitCodes` looks at terminated init containers then containers with a non-zero exit
/// code (of `containerName` if given), `onPodConditions` at the pod's conditions.
pub fn match_policy(policy: &PodFailurePolicy, pod: &Pod) -> Option<Matched> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        );
    let containers: Vec<_> = containers.collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(act) = action(&rule.action) else {
            continue;
        };
        if let Some(req) = &rule.on_exit_codes {
            let hit = containers.iter().find_map(|c| {
                let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                let name_ok = req.container_name.as_ref().is_none_or(|n| *n == c.name);
                let listed = req.values.contains(&code);
                let op_ok = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                (name_ok && code != 0 && op_ok).then(|| (c.name.clone(), code))
            });
            if let Some((container, code)) = hit {
                return Some(Matched {
                    action: act,
                    message: format!(
                        "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        rule.action
                    ),
                });
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let has = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == pattern.type_ && c.status == pattern.status);
            if has {
                return Some(Matched {
                    action: act,
                    message: format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                        pattern.type_, rule.action
                    ),
                });
            }
        }
    }
    None
}

/// The first `successPolicy` rule the succeeded indexes satisfy (Indexed Jobs): all of its
/// `succeededIndexes`, or `succeededCount` of them (of any index without a list).
pub fn success_rule(
    policy: &SuccessPolicy,
    completed: &BTreeSet<i32>,
    completions: i32,
) -> Option<usize> {
    policy.rules.iter().position(|r| {
        let within = r
            .succeeded_indexes
            .as_deref()
            .map(|s| parse_indexes(s, completions));
        let done = match &within {
            Some(w) => w.intersection(completed).count(),
            None => completed.len(),
        };
        match (r.succeeded_count, &within) {
            (Some(c), _) => done as i32 >= c,
            (None, Some(w)) => !w.is_empty() && done == w.len(),
            (None, None) => false,
        }
    })
}

/// The delay before a replacement after `failures` failures since the last success:
/// `base` doubled per further failure, at most `cap` (upstream: 10 s, capped at 6 min).
pub fn backoff_delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
}

/// `1,3-5,7` from a set of indexes (upstream's compressed format).
pub fn compress(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// The indexes of a compressed list below `limit`; malformed parts are skipped.
pub fn parse_indexes(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            out.extend((a.max(0)..=b.min(limit - 1)).filter(|i| *i >= 0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(statuses: serde_json::Value, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "containerStatuses": statuses, "conditions": conditions}
        }))
        .unwrap()
    }

    fn exited(name: &str, code: i32) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": code}}})
    }

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    #[test]
    fn exit_code_rules_match_in_order_with_upstreams_message() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
        ]));
        let m = match_policy(&p, &pod(json!([exited("c", 42)]), json!([]))).unwrap();
        assert_eq!(m.action, Action::FailJob);
        assert_eq!(
            m.message,
            "Container c for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
        );
        // Another container's 42 does not match the named rule; NotIn [1,2] matches it.
        let m = match_policy(&p, &pod(json!([exited("d", 42)]), json!([]))).unwrap();
        assert_eq!(m.action, Action::Count);
        // Exit code 0 never matches, nor does a listed code under NotIn.
        assert!(match_policy(&p, &pod(json!([exited("d", 0)]), json!([]))).is_none());
        assert!(match_policy(&p, &pod(json!([exited("d", 2)]), json!([]))).is_none());
    }

    #[test]
    fn condition_rules_match_type_and_status() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]));
        let m = match_policy(
            &p,
            &pod(
                json!([exited("c", 137)]),
                json!([{"type": "DisruptionTarget", "status": "True"}]),
            ),
        )
        .unwrap();
        assert_eq!(m.action, Action::Ignore);
        assert_eq!(
            m.message,
            "Pod ns/p has condition DisruptionTarget matching Ignore rule at index 0"
        );
        let not_true = pod(
            json!([exited("c", 137)]),
            json!([{"type": "DisruptionTarget", "status": "False"}]),
        );
        assert!(match_policy(&p, &not_true).is_none());
    }

    #[test]
    fn success_policies_need_their_indexes_or_count() {
        let p: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "0,2-3"},
            {"succeededIndexes": "4-9", "succeededCount": 2},
        ]}))
        .unwrap();
        assert_eq!(success_rule(&p, &[0, 2].into(), 10), None);
        assert_eq!(success_rule(&p, &[0, 2, 3].into(), 10), Some(0));
        assert_eq!(success_rule(&p, &[1, 5, 9].into(), 10), Some(1));
        let count: SuccessPolicy =
            serde_json::from_value(json!({"rules": [{"succeededCount": 1}]})).unwrap();
        assert_eq!(success_rule(&count, &[7].into(), 10), Some(0));
        assert_eq!(success_rule(&count, &[].into(), 10), None);
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let (base, cap) = (Duration::from_secs(10), Duration::from_secs(360));
        assert_eq!(backoff_delay(0, base, cap), Duration::ZERO);
        assert_eq!(backoff_delay(1, base, cap), Duration::from_secs(10));
        assert_eq!(backoff_delay(3, base, cap), Duration::from_secs(40));
        assert_eq!(backoff_delay(6, base, cap), Duration::from_secs(320));
        assert_eq!(backoff_delay(7, base, cap), cap);
        assert_eq!(backoff_delay(400, base, cap), cap);
    }

    #[test]
    fn index_sets_compress_and_parse_back() {
        assert_eq!(compress(&[0, 1, 2, 4, 6, 7].into()), "0-2,4,6-7");
        assert_eq!(compress(&[].into()), "");
        assert_eq!(compress(&[3].into()), "3");
        assert_eq!(parse_indexes("0-2,4,6-7", 100), [0, 1, 2, 4, 6, 7].into());
        assert_eq!(parse_indexes("1,5-9", 7), [1, 5, 6].into());
        assert!(parse_indexes("", 3).is_empty());
    }
}
