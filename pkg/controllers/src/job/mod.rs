//! Job controller, to upstream's semantics: runs pods to `completions` successes with at most
//! `parallelism` at once (a work queue when `completions` is unset), Indexed completion mode
//! (`JOB_COMPLETION_INDEX`, `completedIndexes`, `backoffLimitPerIndex`, `maxFailedIndexes`,
//! `failedIndexes`), `backoffLimit`, `podFailurePolicy` (`policy`), `podReplacementPolicy`,
//! `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished`.
//!
//! Pods are tracked with the `batch.kubernetes.io/job-tracking` finalizer, crash-safe as
//! upstream: a finished pod's uid is first written to `status.uncountedTerminatedPods`, then
//! its finalizer is removed, then it moves into the cumulative `succeeded`/`failed` counters;
//! a pass always reads the Job afresh, so a restart resumes where the last one stopped.
//! Failure and success first set `FailureTarget`/`SuccessCriteriaMet` and delete the active
//! pods; `Failed`/`Complete` follow once no pod is terminating. Replacements of failed pods
//! wait an exponential back-off (`JobConfig`). Pods whose Job is gone or that no Job controls
//! any more lose the finalizer (`release_orphans`).

mod policy;
mod tracking;

use tracking::{index_of, phase, terminal, terminating, tracked, uid};

pub use policy::{Action, backoff_delay, compress, match_policy, parse_indexes, success_rule};

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::pods;

/// The finalizer on every pod a Job creates, until the pod is counted in the Job's status.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub(crate) const INDEX: &str = "batch.kubernetes.io/job-completion-index";
const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// The controller's waiting periods.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The first delay before a failed pod is replaced (upstream: 10 s), doubled per failure
    /// since the last success.
    pub pod_failure_backoff: Duration,
    /// The longest such delay (upstream's documented cap: 6 min).
    pub pod_failure_max_backoff: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            pod_failure_backoff: Duration::from_secs(10),
            pod_failure_max_backoff: Duration::from_secs(360),
        }
    }
}

/// Failures since the last success of a Job (upstream's in-memory backoff record).
#[derive(Debug, Clone, Copy)]
struct BackoffRecord {
    failures: u32,
    last_failure: jiff::Timestamp,
}

struct JobCtx {
    ctx: Arc<crate::Ctx>,
    cfg: JobConfig,
    backoffs: Mutex<HashMap<String, BackoffRecord>>,
}

pub async fn run(client: Client, cfg: JobConfig) {
    let ctx = Arc::new(JobCtx {
        ctx: crate::Ctx::new(&client, "job-controller"),
        cfg,
        backoffs: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let reconciling = controller
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {});
    tokio::join!(reconciling, release_orphans(client, jobs));
}

/// When the pod's last container finished (upstream's getFinishedTime), else now.
fn finished_at(p: &Pod, now: jiff::Timestamp) -> jiff::Timestamp {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .unwrap_or(now)
}

/// Removes the tracking finalizer (conditioned on the pod's resourceVersion, so a concurrent
/// finalizer change is never overwritten); true once the pod no longer holds it.
async fn release(client: &Client, pod: &Pod) -> bool {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let rest: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": if rest.is_empty() { Value::Null } else { json!(rest) },
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => true,
        Err(e) => {
            tracing::debug!(pod = %pod.name_any(), error = %e, "removing the job tracking finalizer failed");
            false
        }
    }
}

/// Takes the tracking finalizer off pods that no Job controls any more, or whose Job is gone,
/// so deleting a Job (any propagation) or its namespace never hangs on them.
async fn release_orphans(client: Client, jobs: Store<Job>) {
    let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        if tracked(&pod) && orphaned(&client, &jobs, &pod).await {
            release(&client, &pod).await;
        }
    }
}

async fn orphaned(client: &Client, jobs: &Store<Job>, pod: &Pod) -> bool {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Job")
    else {
        return true;
    };
    let ns = pod.namespace().unwrap_or_default();
    // A deleted pod may be the garbage collector's work for a Job just gone: ask the API.
    let cached = jobs
        .get(&ObjectRef::new(&owner.name).within(&ns))
        .filter(|_| pod.metadata.deletion_timestamp.is_none());
    if cached.is_some_and(|j| j.metadata.uid.as_deref() == Some(owner.uid.as_str())) {
        return false;
    }
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    match api.get_opt(&owner.name).await {
        Ok(Some(j)) => j.metadata.uid.as_deref() != Some(owner.uid.as_str()),
        Ok(None) => true,
        Err(_) => false,
    }
}

fn condition<'a>(conds: &'a [Value], t: &str) -> Option<&'a Value> {
    conds.iter().find(|c| c["type"] == t)
}

fn condition_true(conds: &[Value], t: &str) -> bool {
    condition(conds, t).is_some_and(|c| c["status"] == "True")
}

/// Sets condition `t`; its transition time changes only when its status does.
fn set_condition(conds: &mut Vec<Value>, t: &str, status: &str, reason: &str, message: &str) {
    let now = kubox_core::meta::now_rfc3339();
    let since = condition(conds, t)
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
        .unwrap_or_else(|| now.clone());
    let c = json!({"type": t, "status": status, "reason": reason, "message": message,
                   "lastProbeTime": now, "lastTransitionTime": since});
    match conds.iter_mut().find(|c| c["type"] == t) {
        Some(old) => *old = c,
        None => conds.push(c),
    }
}

/// A verdict on the Job (failure or success) as condition reason and message.
type Reason = Option<(String, String)>;

async fn reconcile(cached: Arc<Job>, jctx: Arc<JobCtx>) -> Result<Requeue, Error> {
    let ctx = &jctx.ctx;
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // The status the last pass wrote must be seen: read the Job, not the cache.
    let Some(job) = api
        .get_opt(&cached.name_any())
        .await?
        .filter(|j| j.metadata.uid == cached.metadata.uid)
    else {
        return Ok(Requeue::await_change());
    };
    let Some(spec) = job.spec.clone() else {
        return Ok(Requeue::await_change());
    };
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let owned = crate::replicaset::claim_pods(&ctx.client, &job, &selector).await?;
    let status = job.status.clone().unwrap_or_default();
    let mut conds: Vec<Value> = status
        .conditions
        .iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let finished = condition_true(&conds, "Complete") || condition_true(&conds, "Failed");
    if finished || job.metadata.deletion_timestamp.is_some() {
        for p in owned.iter().filter(|p| tracked(p)) {
            release(&ctx.client, p).await;
        }
        if job.metadata.deletion_timestamp.is_some() {
            jctx.backoffs.lock().map(|mut b| b.remove(&job_uid)).ok();
            return Ok(Requeue::await_change());
        }
        return ttl(&api, &job, jiff::Timestamp::now()).await;
    }

    let now = jiff::Timestamp::now();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let n = spec.completions.unwrap_or(0);
    let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let suspended = spec.suspend == Some(true);
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let valid_index = |p: &Pod| index_of(p).filter(|i| (0..n).contains(i));
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_s: BTreeSet<String> = uncounted.succeeded.into_iter().flatten().collect();
    let mut unc_f: BTreeSet<String> = uncounted.failed.into_iter().flatten().collect();
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""), n);
    let mut failed_idx = parse_indexes(status.failed_indexes.as_deref().unwrap_or(""), n);

    // 1. Pods that finished since the last pass, and what the podFailurePolicy says of them.
    let action_of = |p: &Pod| {
        spec.pod_failure_policy
            .as_ref()
            .filter(|_| phase(p) == "Failed")
            .and_then(|pol| match_policy(pol, p))
    };
    let found = tracking::classify(
        &owned,
        &unc_s,
        &unc_f,
        &tracking::Rules {
            policy: spec.pod_failure_policy.as_ref(),
            only_failed,
            suspended,
        },
    );
    let (new_s, mut new_f, ignored) = (found.succeeded, found.failed, found.ignored);
    let fail_job: Reason = found.fail_job.map(|m| ("PodFailurePolicy".into(), m));
    failed_idx.extend(found.fail_index.iter().filter_map(|p| valid_index(p)));
    for p in &new_s {
        if let Some(i) = valid_index(p).filter(|_| indexed) {
            completed.insert(i);
        }
    }
    // Failures per index (backoffLimitPerIndex): failed pods that count.
    let mut index_failures: HashMap<i32, i32> = HashMap::new();
    if per_index.is_some() {
        for p in owned.iter().filter(|p| phase(p) == "Failed") {
            if let Some(i) = valid_index(p)
                && action_of(p).is_none_or(|m| m.action != Action::Ignore)
            {
                *index_failures.entry(i).or_default() += 1;
            }
        }
        for (i, count) in &index_failures {
            if per_index.is_some_and(|limit| *count > limit) {
                failed_idx.insert(*i);
            }
        }
    }

    // 2. Whether the Job has failed or succeeded.
    let active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let failed_total = status.failed.unwrap_or(0) + (unc_f.len() + new_f.len()) as i32;
    let succeeded_total = if indexed {
        completed.len() as i32
    } else {
        status.succeeded.unwrap_or(0) + (unc_s.len() + new_s.len()) as i32
    };
    let start_time = match status.start_time.as_ref().map(|t| t.0) {
        _ if suspended => None,
        Some(_) if condition_true(&conds, "Suspended") => Some(now),
        Some(t) => Some(t),
        None => Some(now),
    };
    let restarts: i32 = if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure")
    {
        active
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut failure: Reason = condition(&conds, "FailureTarget")
        .filter(|c| c["status"] == "True")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("message"))
        });
    let all_indexes_done = indexed && (completed.len() + failed_idx.len()) as i32 >= n;
    if failure.is_none() && !condition_true(&conds, "SuccessCriteriaMet") {
        failure = fail_job
            .or_else(|| {
                let on_failure_past = if backoff_limit == 0 {
                    restarts > 0
                } else {
                    restarts >= backoff_limit
                };
                (failed_total > backoff_limit || on_failure_past).then(|| {
                    (
                        "BackoffLimitExceeded".into(),
                        "Job has reached the specified backoff limit".into(),
                    )
                })
            })
            .or_else(|| {
                spec.max_failed_indexes
                    .filter(|m| per_index.is_some() && failed_idx.len() as i32 > *m)
                    .map(|_| {
                        (
                            "MaxFailedIndexesExceeded".into(),
                            "Job has exceeded the specified maximal number of failed indexes"
                                .into(),
                        )
                    })
            })
            .or_else(|| {
                (per_index.is_some() && all_indexes_done && !failed_idx.is_empty())
                    .then(|| ("FailedIndexes".into(), "Job has failed indexes".into()))
            })
            .or_else(|| {
                let deadline = spec.active_deadline_seconds?;
                let start = start_time?;
                (now.as_second() - start.as_second() >= deadline).then(|| {
                    (
                        "DeadlineExceeded".into(),
                        "Job was active longer than specified deadline".into(),
                    )
                })
            });
    }
    let completions_reached = || {
        (
            "CompletionsReached".to_string(),
            "Reached expected number of succeeded pods".to_string(),
        )
    };
    let success: Reason = if failure.is_some() {
        None
    } else if let Some(c) =
        condition(&conds, "SuccessCriteriaMet").filter(|c| c["status"] == "True")
    {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        Some((s("reason"), s("message")))
    } else if let Some(i) = spec
        .success_policy
        .as_ref()
        .filter(|_| indexed)
        .and_then(|p| success_rule(p, &completed, n))
    {
        Some((
            "SuccessPolicy".into(),
            format!("Matched rules at index {i}"),
        ))
    } else {
        match spec.completions {
            Some(c) if indexed => completed.len() as i32 >= c,
            Some(c) => succeeded_total >= c,
            None => succeeded_total > 0 && active.is_empty(),
        }
        .then(completions_reached)
    };

    // 3. Record what finished (and, on failure, every pod that is still running) before any
    //    finalizer goes.
    if failure.is_some() {
        for p in owned.iter().filter(|p| tracked(p) && !terminal(p)) {
            let id = uid(p);
            if !unc_f.contains(&id) && !new_f.iter().any(|q| uid(q) == id) {
                new_f.push(p);
            }
        }
    }
    if !new_s.is_empty() || !new_f.is_empty() {
        let mut backoffs = jctx.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        let rec = backoffs.entry(job_uid.clone()).or_insert(BackoffRecord {
            failures: 0,
            last_failure: jiff::Timestamp::UNIX_EPOCH,
        });
        let last_success = new_s.iter().map(|p| finished_at(p, now)).max();
        let counted: Vec<&&Pod> = new_f.iter().filter(|p| terminal(p)).collect();
        let last_failure = counted.iter().map(|p| finished_at(p, now)).max();
        if last_success.is_some_and(|s| last_failure.is_none_or(|f| s >= f)) {
            rec.failures = 0;
        } else if let Some(f) = last_failure {
            rec.failures += counted.len() as u32;
            rec.last_failure = rec.last_failure.max(f);
        }
    }
    unc_s.extend(new_s.iter().map(|p| uid(p)));
    unc_f.extend(new_f.iter().map(|p| uid(p)));
    let uncounted_json = |s: &BTreeSet<String>, f: &BTreeSet<String>| {
        let list = |x: &BTreeSet<String>| if x.is_empty() { Value::Null } else { json!(x) };
        json!({"succeeded": list(s), "failed": list(f)})
    };
    let index_str = |set: &BTreeSet<i32>| {
        if set.is_empty() {
            Value::Null
        } else {
            json!(compress(set))
        }
    };
    let target_new = match &failure {
        Some((reason, message)) if !condition_true(&conds, "FailureTarget") => {
            set_condition(&mut conds, "FailureTarget", "True", reason, message);
            true
        }
        None => match &success {
            Some((reason, message)) if !condition_true(&conds, "SuccessCriteriaMet") => {
                set_condition(&mut conds, "SuccessCriteriaMet", "True", reason, message);
                true
            }
            _ => false,
        },
        _ => false,
    };
    let mut rv = job.metadata.resource_version.clone();
    if !new_s.is_empty() || !new_f.is_empty() || target_new {
        let mut st = json!({
            "uncountedTerminatedPods": uncounted_json(&unc_s, &unc_f),
            "conditions": conds,
        });
        if indexed {
            st["completedIndexes"] = index_str(&completed);
        }
        if per_index.is_some() {
            st["failedIndexes"] = json!(compress(&failed_idx));
        }
        let written = api
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"resourceVersion": rv}, "status": st})),
            )
            .await?;
        rv = written.metadata.resource_version;
    }

    // 4. Finalizers off what is recorded (and what does not count), then into the counters.
    let mut moved_s = 0;
    let mut moved_f = 0;
    for p in owned.iter().filter(|p| tracked(p)) {
        let id = uid(p);
        let recorded = unc_s.contains(&id) || unc_f.contains(&id);
        let ignore = ignored.iter().any(|q| uid(q) == id);
        if ignore {
            release(&ctx.client, p).await;
        }
        if !recorded || !release(&ctx.client, p).await {
            continue;
        }
        if unc_s.remove(&id) {
            moved_s += 1;
        } else if unc_f.remove(&id) {
            moved_f += 1;
        }
    }
    // Recorded pods that are gone or already released.
    let still_tracked: BTreeSet<String> = owned.iter().filter(|p| tracked(p)).map(uid).collect();
    moved_s += unc_s.iter().filter(|u| !still_tracked.contains(*u)).count();
    moved_f += unc_f.iter().filter(|u| !still_tracked.contains(*u)).count();
    unc_s.retain(|u| still_tracked.contains(u));
    unc_f.retain(|u| still_tracked.contains(u));

    // 5. Pods: the finished Job's active pods go; otherwise create what is missing.
    let mut requeue: Option<Duration> = None;
    let mut deleted = 0;
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    let waiting: usize = if only_failed {
        owned.iter().filter(|p| terminating(p)).count()
    } else {
        0
    };
    if failure.is_some() || success.is_some() || suspended {
        crate::replicaset::manage_replicas(&ctx.client, &ctx.recorder, &job, &template, &active, 0)
            .await?;
        deleted = active.len();
    } else {
        let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
        let want = match spec.completions {
            _ if indexed => {
                parallelism.min((n as usize).saturating_sub(completed.len() + failed_idx.len()))
            }
            Some(c) => parallelism.min(c.saturating_sub(succeeded_total).max(0) as usize),
            None if succeeded_total > 0 => active.len().min(parallelism),
            None => parallelism,
        };
        let wait_after = |failures: u32, last: jiff::Timestamp| {
            let d = backoff_delay(
                failures,
                jctx.cfg.pod_failure_backoff,
                jctx.cfg.pod_failure_max_backoff,
            );
            let until = last.as_millisecond() + d.as_millis() as i64;
            Duration::from_millis((until - now.as_millisecond()).max(0) as u64)
        };
        // With backoffLimitPerIndex each index waits after its own failures (below).
        let delay = match per_index {
            Some(_) => Duration::ZERO,
            None => {
                let backoffs = jctx.backoffs.lock().unwrap_or_else(|e| e.into_inner());
                backoffs
                    .get(&job_uid)
                    .map_or(Duration::ZERO, |r| wait_after(r.failures, r.last_failure))
            }
        };
        if active.len() > want {
            crate::replicaset::manage_replicas(
                &ctx.client,
                &ctx.recorder,
                &job,
                &template,
                &active,
                want,
            )
            .await?;
            deleted = active.len() - want;
        } else if active.len() + waiting < want && !delay.is_zero() {
            requeue = Some(delay);
        } else if active.len() + waiting < want && !indexed {
            crate::replicaset::manage_replicas(
                &ctx.client,
                &ctx.recorder,
                &job,
                &template,
                &active,
                want - waiting,
            )
            .await?;
        } else if active.len() + waiting < want {
            let busy: BTreeSet<i32> = owned
                .iter()
                .filter(|p| pods::is_active(p) || (only_failed && terminating(p)))
                .filter_map(index_of)
                .collect();
            let mut missing: Vec<i32> = (0..n)
                .filter(|i| !completed.contains(i) && !failed_idx.contains(i) && !busy.contains(i))
                .collect();
            if per_index.is_some() {
                missing.retain(|i| {
                    let failures = index_failures.get(i).copied().unwrap_or(0);
                    let last = owned
                        .iter()
                        .filter(|p| phase(p) == "Failed" && valid_index(p) == Some(*i))
                        .map(|p| finished_at(p, now))
                        .max();
                    let wait = last.map_or(Duration::ZERO, |l| wait_after(failures as u32, l));
                    if !wait.is_zero() {
                        requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
                    }
                    wait.is_zero()
                });
            }
            for i in missing.into_iter().take(want - active.len() - waiting) {
                let pod = indexed_pod(&job, &template, &ns, i, index_failures.get(&i).copied());
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        ctx.recorder
                            .event(
                                &job,
                                "Normal",
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.name_any()),
                            )
                            .await
                    }
                    Err(e) => {
                        ctx.recorder
                            .event(
                                &job,
                                "Warning",
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            )
                            .await;
                        return Err(e.into());
                    }
                }
            }
        }
    }

    // 6. The status.
    let terminating_now = owned.iter().filter(|p| terminating(p)).count() + deleted;
    let active_now = active.len().saturating_sub(deleted);
    let flushed = unc_s.is_empty() && unc_f.is_empty();
    let mut finished_now = false;
    if flushed && terminating_now == 0 {
        if let Some((reason, message)) = &failure {
            set_condition(&mut conds, "Failed", "True", reason, message);
            ctx.recorder
                .event(&job, "Warning", reason, message.clone())
                .await;
            finished_now = true;
        } else if let Some((reason, message)) = &success {
            set_condition(&mut conds, "Complete", "True", reason, message);
            ctx.recorder
                .event(&job, "Normal", "Completed", "Job completed".into())
                .await;
            finished_now = true;
        }
    }
    if failure.is_none() && success.is_none() {
        if suspended && !condition_true(&conds, "Suspended") {
            set_condition(
                &mut conds,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            );
            ctx.recorder
                .event(&job, "Normal", "Suspended", "Job suspended".into())
                .await;
        } else if !suspended && condition_true(&conds, "Suspended") {
            set_condition(
                &mut conds,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            );
            ctx.recorder
                .event(&job, "Normal", "Resumed", "Job resumed".into())
                .await;
        }
    }
    let ready = active
        .iter()
        .filter(|p| pods::is_ready(p))
        .count()
        .min(active_now);
    let count = |c: i32| if c == 0 { Value::Null } else { json!(c) };
    let mut new_status = json!({
        "active": count(active_now as i32),
        "ready": ready,
        "terminating": terminating_now,
        "succeeded": count(if indexed { completed.len() as i32 } else { status.succeeded.unwrap_or(0) + moved_s as i32 }),
        "failed": count(status.failed.unwrap_or(0) + moved_f as i32),
        "uncountedTerminatedPods": uncounted_json(&unc_s, &unc_f),
        "startTime": start_time.map(kubox_core::meta::format_time),
        "conditions": conds,
    });
    if indexed {
        new_status["completedIndexes"] = index_str(&completed);
    }
    if per_index.is_some() {
        new_status["failedIndexes"] = json!(compress(&failed_idx));
    }
    if finished_now && success.is_some() {
        new_status["completionTime"] = json!(kubox_core::meta::now_rfc3339());
    }
    let old = serde_json::to_value(&status)?;
    let norm = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| !x.is_null());
        }
        (!v.is_null() && v != json!({})).then_some(v)
    };
    let changed = new_status
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "startTime")
        .any(|(k, v)| norm(old.get(k)) != norm(Some(v)))
        || status.start_time.as_ref().map(|t| t.0) != start_time;
    if changed {
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"resourceVersion": rv}, "status": new_status})),
        )
        .await?;
    }
    if finished_now {
        jctx.backoffs.lock().map(|mut b| b.remove(&job_uid)).ok();
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let deadline_left = match (spec.active_deadline_seconds, start_time) {
        (Some(d), Some(start)) if failure.is_none() && success.is_none() => {
            let left = start.as_second() + d - now.as_second();
            Some(Duration::from_secs(left.max(1) as u64))
        }
        _ => None,
    };
    Ok(match requeue.into_iter().chain(deadline_left).min() {
        Some(d) => Requeue::requeue(d.max(Duration::from_millis(100))),
        None => Requeue::await_change(),
    })
}

/// The pod of index `i` of an Indexed Job (`<job>-<i>-<random>`, hostname `<job>-<i>`).
fn indexed_pod(
    job: &Job,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ns: &str,
    i: i32,
    failures: Option<i32>,
) -> Pod {
    let name = job.name_any();
    let mut pod = pods::pod_from_template(
        template,
        &format!("{name}-{i}"),
        ns,
        pods::controller_ref(job),
    );
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(INDEX.into(), i.to_string());
    if let Some(f) = failures {
        annotations.insert(INDEX_FAILURE_COUNT.into(), f.to_string());
    }
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(INDEX.into(), i.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
        for c in &mut spec.containers {
            c.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: Some(i.to_string()),
                value_from: None,
            });
        }
    }
    pod
}

/// Deletes a finished Job once `ttlSecondsAfterFinished` has passed (its pods follow in the
/// background, through the garbage collector).
async fn ttl(api: &Api<Job>, job: &Job, now: jiff::Timestamp) -> Result<Requeue, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Requeue::await_change());
    };
    let finished_at = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .filter(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
                .filter_map(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .max()
        })
        .unwrap_or(now);
    let left = finished_at.as_second() + i64::from(ttl) - now.as_second();
    if left > 0 {
        return Ok(Requeue::requeue(Duration::from_secs(left as u64)));
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
    Ok(Requeue::await_change())
}
