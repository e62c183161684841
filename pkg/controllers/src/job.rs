//! Job controller: runs pods to `completions` successes with at most `parallelism` at once
//! (a work queue when `completions` is unset), Indexed completion mode
//! (`JOB_COMPLETION_INDEX`, `completedIndexes`), `backoffLimit`, `activeDeadlineSeconds`,
//! `suspend`, and `ttlSecondsAfterFinished`; status counts and the Complete/Failed
//! conditions `kubectl wait --for=condition=complete` waits on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::pods;

const INDEX: &str = "batch.kubernetes.io/job-completion-index";

pub async fn run(client: Client) {
    let ctx = crate::Ctx::new(&client, "job-controller");
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client), watcher::Config::default())
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations().get(INDEX).and_then(|i| i.parse().ok())
}

fn condition_true(job: &Job, t: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
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

async fn reconcile(job: Arc<Job>, ctx: Arc<crate::Ctx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    let finished = condition_true(&job, "Complete") || condition_true(&job, "Failed");
    if finished {
        return ttl(&api, &job, now).await;
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let selector = spec.selector.clone().unwrap_or_default();
    let owned = crate::replicaset::claim_pods(&ctx.client, job.as_ref(), &selector).await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let succeeded_pods: Vec<&Pod> = owned.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completed: BTreeSet<i32> = succeeded_pods.iter().filter_map(|p| index_of(p)).collect();
    let succeeded = if indexed {
        completed.len() as i32
    } else {
        succeeded_pods.len() as i32
    };
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let status = job.status.clone().unwrap_or_default();
    let start_time = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let mut conditions: Vec<Value> = Vec::new();
    let mut failure: Option<(&str, String)> = None;
    if failed > spec.backoff_limit.unwrap_or(6) {
        failure = Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ));
    }
    if let Some(deadline) = spec.active_deadline_seconds
        && now.as_second() - start_time.as_second() >= deadline
    {
        failure = Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".into(),
        ));
    }
    let complete = match spec.completions {
        Some(n) => succeeded >= n,
        None => succeeded > 0 && active.is_empty(),
    };
    let suspended = spec.suspend == Some(true);
    let stamp = kubox_core::meta::now_rfc3339();
    let cond = |t: &str, reason: &str, message: &str| {
        json!({"type": t, "status": "True", "reason": reason, "message": message,
               "lastProbeTime": stamp, "lastTransitionTime": stamp})
    };
    if let Some((reason, message)) = &failure {
        for p in &active {
            let _ = pod_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await;
        }
        conditions.push(cond("FailureTarget", reason, message));
        conditions.push(cond("Failed", reason, message));
        ctx.recorder
            .event(job.as_ref(), "Warning", reason, message.clone())
            .await;
    } else if complete {
        conditions.push(cond(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        conditions.push(cond(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        ctx.recorder
            .event(job.as_ref(), "Normal", "Completed", "Job completed".into())
            .await;
    } else if suspended {
        for p in &active {
            let _ = pod_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await;
        }
        conditions.push(cond("Suspended", "JobSuspended", "Job suspended"));
    } else {
        let want = match spec.completions {
            Some(n) => parallelism.min(n - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        } as usize;
        let template = spec.template.clone();
        if indexed {
            let n = spec.completions.unwrap_or(1);
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            let missing = (0..n).filter(|i| !completed.contains(i) && !running.contains(i));
            for i in missing.take(want.saturating_sub(active.len())) {
                let mut pod = pods::pod_from_template(
                    &template,
                    &format!("{}-{i}", job.name_any()),
                    &ns,
                    pods::controller_ref(job.as_ref()),
                );
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX.into(), i.to_string());
                pod.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(INDEX.into(), i.to_string());
                if let Some(spec) = pod.spec.as_mut() {
                    spec.hostname
                        .get_or_insert_with(|| format!("{}-{i}", job.name_any()));
                    for c in &mut spec.containers {
                        c.env.get_or_insert_with(Vec::new).push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(i.to_string()),
                            value_from: None,
                        });
                    }
                }
                pod_api.create(&PostParams::default(), &pod).await?;
            }
        } else {
            crate::replicaset::manage_replicas(
                &ctx.client,
                &ctx.recorder,
                job.as_ref(),
                &template,
                &active,
                want,
            )
            .await?;
        }
    }
    let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
    let mut new_status = json!({
        "active": if failure.is_some() || complete { 0 } else { active.len() as i32 },
        "succeeded": succeeded,
        "failed": failed,
        "ready": ready,
        "startTime": kubox_core::meta::format_time(start_time),
    });
    if indexed {
        new_status["completedIndexes"] = json!(compress(&completed));
    }
    if !conditions.is_empty() {
        new_status["conditions"] = json!(conditions);
    }
    if complete && failure.is_none() {
        new_status["completionTime"] = json!(stamp);
    }
    let old = serde_json::to_value(&status)?;
    let changed = [
        "active",
        "succeeded",
        "failed",
        "ready",
        "completedIndexes",
        "conditions",
    ]
    .iter()
    .any(|k| old.get(*k).unwrap_or(&json!(0)) != new_status.get(*k).unwrap_or(&json!(0)))
        || status.start_time.is_none();
    if changed {
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": new_status})),
        )
        .await?;
    }
    Ok(match spec.active_deadline_seconds {
        Some(d) if failure.is_none() && !complete => {
            let left = start_time.as_second() + d - now.as_second();
            Action::requeue(Duration::from_secs(left.max(1) as u64))
        }
        _ => Action::await_change(),
    })
}

/// Deletes a finished Job once `ttlSecondsAfterFinished` has passed.
async fn ttl(api: &Api<Job>, job: &Job, now: jiff::Timestamp) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let finished_at = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .filter(|c| c.status == "True")
                .filter_map(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .max()
        })
        .unwrap_or(now);
    let left = finished_at.as_second() + i64::from(ttl) - now.as_second();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::compress;

    #[test]
    fn completed_indexes_compress_into_ranges() {
        assert_eq!(compress(&[0, 1, 2, 4, 6, 7].into()), "0-2,4,6-7");
        assert_eq!(compress(&[].into()), "");
        assert_eq!(compress(&[3].into()), "3");
    }
}
