//! CronJob controller (upstream's controller v2): starts a Job from `spec.jobTemplate` at each
//! time of `spec.schedule` (five cron fields, `@hourly`-style descriptors, `@every`), in
//! `spec.timeZone` or the controller's local zone; names it `<cronjob>-<minutes since epoch>`
//! so a time is never started twice; honours `startingDeadlineSeconds`, `concurrencyPolicy`
//! (Allow/Forbid/Replace) and `suspend`; keeps `status.active`, `lastScheduleTime` and
//! `lastSuccessfulTime`; deletes finished Jobs beyond the history limits. It sleeps until the
//! next schedule time (plus upstream's 100 ms) rather than polling.
//!
//! Schedules are evaluated with croner over jiff time zones; robfig/cron's grammar (what
//! upstream accepts) is checked first by `kubox_core::validation::parse_schedule`, and the
//! few places where croner reads a pattern differently (`?` in any field, `*/1` as a
//! wildcard day field, `@midnight`, `@every`) are translated before croner sees them. Across
//! daylight-saving changes croner's rules apply (OCPS): a time in a skipped hour runs once at
//! the end of the gap, and a time in a repeated hour runs once, where robfig/cron skips the
//! former and may run the latter twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use futures::StreamExt;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubox_core::validation::{parse_go_duration, parse_schedule, split_tz_prefix};
use serde_json::{Value, json};

use crate::Error;
use crate::events::object_reference;
use crate::pods;

/// The annotation of a started Job: its scheduled time, RFC 3339 in the CronJob's zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Beyond this many missed times upstream warns (and stops counting).
const TOO_MANY_MISSED: usize = 100;
/// Upstream's padding on requeues, for clock skew.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

pub async fn run(client: Client) {
    let ctx = crate::Ctx::new(&client, "cronjob-controller");
    Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client), watcher::Config::default())
    .run(reconcile, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// `@every <duration>`, in whole seconds (at least one).
    Every(i64),
}

impl Schedule {
    /// Reads `spec` as robfig/cron's `ParseStandard` does, in `tz` unless the schedule starts
    /// with `TZ=<zone>` or `CRON_TZ=<zone>`. Errors use robfig/cron's wording.
    pub fn parse(spec: &str, tz: TimeZone) -> Result<Schedule, String> {
        parse_schedule(spec)?;
        let mut spec = spec.trim();
        let mut tz = tz;
        if let Some((zone, rest)) = split_tz_prefix(spec) {
            tz = TimeZone::get(zone)
                .map_err(|_| format!("provided bad location {zone}: unknown time zone {zone}"))?;
            spec = rest;
        }
        if let Some(d) = spec.strip_prefix("@every ") {
            let d = parse_go_duration(d.trim())
                .ok_or_else(|| format!("failed to parse duration {spec}"))?;
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
            return Ok(Schedule {
                kind: Kind::Every(secs),
                tz,
            });
        }
        let pattern = match spec {
            "@midnight" => "@daily".to_string(),
            s if s.starts_with('@') => s.to_string(),
            s => robfig_fields(s),
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .sloppy_ranges(true)
            .build()
            .parse(&pattern)
            .map_err(|e| e.to_string())?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(cron)),
            tz,
        })
    }

    /// The first time of the schedule after `t` (robfig's `Next`: from the next whole second).
    pub fn next(&self, t: Timestamp) -> Option<Timestamp> {
        let t = whole_second(t)?;
        match &self.kind {
            Kind::Every(secs) => t.checked_add(SignedDuration::from_secs(*secs)).ok(),
            Kind::Cron(c) => c
                .find_next_occurrence(&t.to_zoned(self.tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }

    /// The last time of the schedule at or before `t`, counting `@every` from `origin`.
    fn last_at_or_before(&self, t: Timestamp, origin: Timestamp) -> Option<Timestamp> {
        let t = whole_second(t)?;
        match &self.kind {
            Kind::Every(secs) => {
                let n = (t.as_second() - origin.as_second()).div_euclid(*secs);
                Timestamp::from_second(origin.as_second() + n * secs).ok()
            }
            Kind::Cron(c) => c
                .find_previous_occurrence(&t.to_zoned(self.tz.clone()), true)
                .ok()
                .map(|z| z.timestamp()),
        }
    }
}

fn whole_second(t: Timestamp) -> Option<Timestamp> {
    Timestamp::from_second(t.as_second() - i64::from(t.subsec_nanosecond() < 0)).ok()
}

/// Rewrites five robfig/cron fields for croner: `?` is `*` in every field, and a day field
/// with robfig's star bit (a `*` or `*/1` part) is `*`, so that day-of-month and day-of-week
/// combine with AND as in robfig rather than OR.
fn robfig_fields(spec: &str) -> String {
    spec.split_whitespace()
        .enumerate()
        .map(|(i, field)| {
            let parts: Vec<String> = field
                .split(',')
                .map(|p| match p.strip_prefix('?') {
                    Some(rest) => format!("*{rest}"),
                    None => p.to_string(),
                })
                .collect();
            let day_field = i == 2 || i == 4;
            if day_field && parts.iter().any(|p| p == "*" || p == "*/1") {
                "*".to_string()
            } else {
                parts.join(",")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// What upstream's `mostRecentScheduleTime` answers: the time counted from (last schedule,
/// else creation, moved up to `now - deadline` when one is given), the latest schedule time
/// at or before `now` after it, and how many were missed.
#[derive(Debug, PartialEq)]
struct MostRecent {
    earliest: Timestamp,
    time: Option<Timestamp>,
    missed: Missed,
}

/// Upstream's error for a schedule with no (or no second) time.
const NO_NEXT_TIME: &str = "time difference between two schedules is less than 1 second";

fn most_recent(
    schedule: &Schedule,
    created: Timestamp,
    last: Option<Timestamp>,
    deadline: Option<i64>,
    now: Timestamp,
) -> Result<MostRecent, String> {
    let mut earliest = last.unwrap_or(created);
    if let Some(d) = deadline {
        let limit = now - SignedDuration::from_secs(d);
        earliest = earliest.max(limit);
    }
    let answer = |time, missed| {
        Ok(MostRecent {
            earliest,
            time,
            missed,
        })
    };
    let t1 = schedule.next(earliest).ok_or(NO_NEXT_TIME)?;
    if now < t1 {
        return answer(None, Missed::None);
    }
    let t2 = schedule.next(t1).ok_or(NO_NEXT_TIME)?;
    if now < t2 {
        return answer(Some(t1), Missed::None);
    }
    let (mut count, mut latest, mut t) = (1usize, t1, t2);
    while t <= now {
        count += 1;
        latest = t;
        if count > TOO_MANY_MISSED {
            let latest = schedule.last_at_or_before(now, t1).unwrap_or(latest);
            return answer(Some(latest), Missed::Many);
        }
        t = schedule.next(t).ok_or(NO_NEXT_TIME)?;
    }
    answer(Some(latest), Missed::Few)
}

/// Upstream's `nextScheduleTimeDuration`: how long until the schedule time after the most
/// recent one (without the starting deadline), plus 100 ms.
fn requeue_after(
    schedule: &Schedule,
    created: Timestamp,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let from = match most_recent(schedule, created, last, None, now) {
        Err(_) => now,
        Ok(MostRecent { time: Some(t), .. }) => t,
        Ok(MostRecent {
            earliest,
            missed: Missed::None,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    match schedule.next(from) {
        Some(next) => Duration::try_from(next - now)
            .unwrap_or(Duration::ZERO)
            .saturating_add(NEXT_SCHEDULE_DELTA),
        // Nothing will ever be due; look again in a day in case the zone data changes.
        None => Duration::from_secs(24 * 3600),
    }
}

/// An event a sync records on its CronJob.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Note {
        Note {
            warning: false,
            reason,
            message,
        }
    }
    fn warning(reason: &'static str, message: String) -> Note {
        Note {
            warning: true,
            reason,
            message,
        }
    }
}

/// What the schedule asks of a sync.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Nothing until the CronJob changes (suspended, or its schedule or zone is unusable).
    Idle,
    /// Nothing now; look again after this long.
    Wait(Duration),
    /// Start the Job of `scheduled` (first deleting the active ones if `replace`), then look
    /// again after `requeue`.
    Start {
        scheduled: Timestamp,
        replace: bool,
        requeue: Duration,
    },
}

fn time_of(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

/// Upstream's `syncCronJob` after the active list is reconciled: whether a Job is due at
/// `now`, given the CronJob (with its status) and the controller's local zone.
pub(crate) fn decide(cj: &CronJob, now: Timestamp, local: &TimeZone) -> (Decision, Vec<Note>) {
    let mut notes = Vec::new();
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let zone = match spec.time_zone.as_deref() {
        None => None,
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                notes.push(Note::warning(
                    "UnknownTimeZone",
                    format!("invalid timeZone: {name:?}: unknown time zone {name}"),
                ));
                return (Decision::Idle, notes);
            }
        },
    };
    if spec.suspend == Some(true) {
        return (Decision::Idle, notes);
    }
    let tz = if spec.schedule.contains("TZ") {
        notes.push(Note::warning(
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see \
                 https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        ));
        local.clone()
    } else {
        zone.unwrap_or_else(|| local.clone())
    };
    let schedule = match Schedule::parse(&spec.schedule, tz) {
        Ok(s) => s,
        Err(e) => {
            notes.push(Note::warning(
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return (Decision::Idle, notes);
        }
    };
    let created = time_of(&cj.metadata.creation_timestamp).unwrap_or(now);
    let last = time_of(&status.last_schedule_time);
    let wait = Decision::Wait(requeue_after(&schedule, created, last, now));
    let recent = match most_recent(
        &schedule,
        created,
        last,
        spec.starting_deadline_seconds,
        now,
    ) {
        Ok(r) => r,
        Err(e) => {
            notes.push(Note::warning(
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return (Decision::Idle, notes);
        }
    };
    let Some(scheduled) = recent.time else {
        return (wait, notes);
    };
    if recent.missed == Missed::Many {
        notes.push(Note::warning(
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    if let Some(d) = spec.starting_deadline_seconds
        && scheduled + SignedDuration::from_secs(d) < now
    {
        notes.push(Note::warning(
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
            ),
        ));
        return (wait, notes);
    }
    let name = job_name(cj, scheduled);
    let active = status.active.unwrap_or_default();
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || last == Some(scheduled)
    {
        return (wait, notes);
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        notes.push(Note::normal(
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        ));
        return (wait, notes);
    }
    let decision = Decision::Start {
        scheduled,
        replace: policy == "Replace",
        requeue: requeue_after(&schedule, created, Some(scheduled), now),
    };
    (decision, notes)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
pub fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!("{}-{}", cj.name_any(), scheduled.as_second().div_euclid(60))
}

/// RFC 3339 as Go writes it (`Z` for a zero offset).
fn rfc3339_in(t: Timestamp, tz: TimeZone) -> String {
    let z = t.to_zoned(tz);
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job a CronJob starts for `scheduled` (upstream's `getJobFromTemplate2`).
pub(crate) fn job_for(cj: &CronJob, scheduled: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let tz = cj
        .spec
        .as_ref()
        .and_then(|s| s.time_zone.as_deref())
        .and_then(|z| TimeZone::get(z).ok())
        .unwrap_or(TimeZone::UTC);
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pods::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// `Complete` or `Failed` when the Job has finished.
fn finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"]
        .into_iter()
        .find(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
}

/// The finished Jobs beyond the history limits, oldest start first (names break ties;
/// Jobs that never started count as newest), as upstream's `cleanupFinishedJobs`.
fn surplus<'a>(cj: &CronJob, jobs: &'a [Job]) -> Vec<&'a Job> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut of_kind: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none() && finished(j) == Some(kind))
            .collect();
        let excess = of_kind
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        of_kind.sort_by(|a, b| {
            let start = |j: &Job| j.status.as_ref().and_then(|s| time_of(&s.start_time));
            match (start(a), start(b)) {
                (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.name_any().cmp(&b.name_any())),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.name_any().cmp(&b.name_any()),
            }
        });
        out.extend(of_kind.into_iter().take(excess));
    }
    out
}

fn is_active(cj: &CronJob, uid: &str) -> bool {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .is_some_and(|a| a.iter().any(|r| r.uid.as_deref() == Some(uid)))
}

fn remove_active(cj: &mut CronJob, uid: &str) {
    if let Some(active) = cj.status.as_mut().and_then(|s| s.active.as_mut()) {
        active.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

fn status_mut(cj: &mut CronJob) -> &mut CronJobStatus {
    cj.status.get_or_insert_with(CronJobStatus::default)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn note(ctx: &crate::Ctx, cj: &CronJob, n: Note) {
    let kind = if n.warning { "Warning" } else { "Normal" };
    ctx.recorder.event(cj, kind, n.reason, n.message).await;
}

/// Deletes a Job with background propagation (upstream's `deleteJob`), dropping it from the
/// active list; false when the delete failed.
async fn delete_job(ctx: &crate::Ctx, cj: &mut CronJob, job: &Job) -> bool {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => {
            let n = Note::warning("FailedDelete", format!("Deleted job: {e}"));
            note(ctx, cj, n).await;
            return false;
        }
    }
    remove_active(cj, &job.uid().unwrap_or_default());
    let n = Note::normal(
        "SuccessfulDelete",
        format!("Deleted job {}", job.name_any()),
    );
    note(ctx, cj, n).await;
    true
}

/// Brings `status.active` and `lastSuccessfulTime` in line with the Jobs that exist.
async fn sync_active(
    ctx: &crate::Ctx,
    api: &Api<CronJob>,
    cj: &mut CronJob,
    jobs: &[Job],
) -> Result<(), Error> {
    let mut children = BTreeSet::new();
    for job in jobs {
        let uid = job.uid().unwrap_or_default();
        children.insert(uid.clone());
        let done = finished(job);
        let found = is_active(cj, &uid);
        if !found && done.is_none() {
            // The cache may predate the status update that listed this Job: ask the API.
            let fresh = api.get(&cj.name_any()).await?;
            if is_active(&fresh, &uid) {
                *cj = fresh;
                continue;
            }
            let n = Note::warning(
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    job.name_any()
                ),
            );
            note(ctx, cj, n).await;
        } else if found && let Some(condition) = done {
            remove_active(cj, &uid);
            let n = Note::normal(
                "SawCompletedJob",
                format!(
                    "Saw completed job: {}, condition: {condition}",
                    job.name_any()
                ),
            );
            note(ctx, cj, n).await;
        }
        if done == Some("Complete")
            && let Some(at) = job.status.as_ref().and_then(|s| s.completion_time.clone())
        {
            let status = status_mut(cj);
            if time_of(&status.last_successful_time).is_none_or(|t| t < at.0) {
                status.last_successful_time = Some(at);
            }
        }
    }
    let refs = cj
        .status
        .as_ref()
        .and_then(|s| s.active.clone())
        .unwrap_or_default();
    for r in refs {
        let uid = r.uid.clone().unwrap_or_default();
        if children.contains(&uid) {
            continue;
        }
        let jobs_api: Api<Job> = Api::namespaced(
            ctx.client.clone(),
            r.namespace.as_deref().unwrap_or_default(),
        );
        match jobs_api.get(r.name.as_deref().unwrap_or_default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {
                let name = r.name.clone().unwrap_or_default();
                let n = Note::normal("MissingJob", format!("Active job went missing: {name}"));
                note(ctx, cj, n).await;
                remove_active(cj, &uid);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Starts the Job of `scheduled` and lists it as active. A Job of that name that exists
/// already is listed only if it is this CronJob's.
async fn start(
    ctx: &crate::Ctx,
    cj: &mut CronJob,
    scheduled: Timestamp,
    replace: bool,
) -> Result<(), Error> {
    let ns = cj.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if replace {
        let refs = cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for r in refs {
            let job = match jobs_api.get(r.name.as_deref().unwrap_or_default()).await {
                Ok(j) => j,
                Err(e) => {
                    note(ctx, cj, Note::warning("FailedGet", format!("Get job: {e}"))).await;
                    return Err(e.into());
                }
            };
            if !delete_job(ctx, cj, &job).await {
                return Err(Error::invalid(
                    "job",
                    format!("could not replace job {ns}/{}", job.name_any()),
                ));
            }
        }
    }
    let want = job_for(cj, scheduled);
    let job = match jobs_api.create(&PostParams::default(), &want).await {
        Ok(job) => {
            let n = Note::normal(
                "SuccessfulCreate",
                format!("Created job {}", job.name_any()),
            );
            note(ctx, cj, n).await;
            job
        }
        Err(e) if is_status(&e, 409) => {
            let job = jobs_api.get(&want.name_any()).await?;
            let ours = pods::controller_uid(&job.metadata) == cj.uid().as_deref();
            if !ours || is_active(cj, &job.uid().unwrap_or_default()) {
                return Ok(());
            }
            job
        }
        Err(e) => {
            let n = Note::warning("FailedCreate", format!("Error creating job: {e}"));
            note(ctx, cj, n).await;
            return Err(e.into());
        }
    };
    let status = status_mut(cj);
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(object_reference(&job));
    status.last_schedule_time = Some(Time(scheduled));
    Ok(())
}

fn status_patch(status: &CronJobStatus) -> Value {
    let time = |t: &Option<Time>| {
        t.as_ref()
            .map(|t| json!(kubox_core::meta::format_time(t.0)))
            .unwrap_or(Value::Null)
    };
    let active: Vec<&ObjectReference> = status.active.iter().flatten().collect();
    json!({"status": {
        "active": if active.is_empty() { Value::Null } else { json!(active) },
        "lastScheduleTime": time(&status.last_schedule_time),
        "lastSuccessfulTime": time(&status.last_successful_time),
    }})
}

async fn reconcile(obj: Arc<CronJob>, ctx: Arc<crate::Ctx>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = obj.uid().unwrap_or_default();
    let jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| pods::controller_uid(&j.metadata) == Some(uid.as_str()))
        .collect();
    let mut cj = (*obj).clone();
    for job in surplus(&cj, &jobs) {
        delete_job(&ctx, &mut cj, job).await;
    }
    sync_active(&ctx, &api, &mut cj, &jobs).await?;
    let mut action = Action::await_change();
    if cj.metadata.deletion_timestamp.is_none() {
        let local = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        let (decision, notes) = decide(&cj, Timestamp::now(), &local);
        for n in notes {
            note(&ctx, &cj, n).await;
        }
        match decision {
            Decision::Idle => {}
            Decision::Wait(d) => action = Action::requeue(d),
            Decision::Start {
                scheduled,
                replace,
                requeue,
            } => {
                // The cache may lag behind a change made just before the due time (a
                // suspend, a new schedule): decide again once it has caught up.
                let stored = api.get(&cj.name_any()).await?;
                if stored.metadata.resource_version != cj.metadata.resource_version {
                    return Ok(Action::requeue(std::time::Duration::from_millis(200)));
                }
                start(&ctx, &mut cj, scheduled, replace).await?;
                action = Action::requeue(requeue);
            }
        }
    }
    let before = obj.status.clone().unwrap_or_default();
    let after = cj.status.clone().unwrap_or_default();
    if status_patch(&before) != status_patch(&after) {
        api.patch_status(
            &cj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status_patch(&after)),
        )
        .await?;
    }
    Ok(action)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(spec: &str) -> Schedule {
        Schedule::parse(spec, TimeZone::UTC).unwrap()
    }

    fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        (0..n)
            .map(|_| {
                t = s.next(t).unwrap();
                t.to_string()
            })
            .collect()
    }

    fn cron_job(spec: Value, status: Value) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default", "uid": "cj-uid",
                         "creationTimestamp": "2026-01-15T10:00:30Z"},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn spec(extra: Value) -> Value {
        let mut s = json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "n"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    fn active(name: &str) -> Value {
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "namespace": "default", "uid": format!("{name}-uid")}])
    }

    #[test]
    fn five_fields_and_descriptors_follow_robfig() {
        assert_eq!(
            next_n(&utc("*/15 * * * *"), "2026-01-15T10:07:12.5Z", 3),
            [
                "2026-01-15T10:15:00Z",
                "2026-01-15T10:30:00Z",
                "2026-01-15T10:45:00Z"
            ]
        );
        // robfig's `N/step` runs from N to the end of the range.
        assert_eq!(
            next_n(&utc("5/20 * * * *"), "2026-01-15T10:00:00Z", 3),
            [
                "2026-01-15T10:05:00Z",
                "2026-01-15T10:25:00Z",
                "2026-01-15T10:45:00Z"
            ]
        );
        assert_eq!(
            next_n(&utc("? 3 * * ?"), "2026-01-15T10:00:00Z", 2),
            ["2026-01-16T03:00:00Z", "2026-01-16T03:01:00Z"]
        );
        for (d, next) in [
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@monthly", "2026-02-01T00:00:00Z"),
            // 2026-01-15 is a Thursday; @weekly is Sunday midnight.
            ("@weekly", "2026-01-18T00:00:00Z"),
            ("@daily", "2026-01-16T00:00:00Z"),
            ("@midnight", "2026-01-16T00:00:00Z"),
            ("@hourly", "2026-01-15T11:00:00Z"),
            ("@every 1h30m", "2026-01-15T11:37:12Z"),
        ] {
            assert_eq!(next_n(&utc(d), "2026-01-15T10:07:12.5Z", 1), [next], "{d}");
        }
        // Both day fields restricted: either matches (the 1st, or any Monday).
        assert_eq!(
            next_n(&utc("0 0 1 * mon"), "2026-01-15T10:00:00Z", 3),
            [
                "2026-01-19T00:00:00Z",
                "2026-01-26T00:00:00Z",
                "2026-02-01T00:00:00Z"
            ]
        );
        // A `*/1` day of month is a wildcard to robfig: only Mondays.
        assert_eq!(
            next_n(&utc("0 0 */1 * MON"), "2026-01-15T10:00:00Z", 2),
            ["2026-01-19T00:00:00Z", "2026-01-26T00:00:00Z"]
        );
        assert_eq!(
            Schedule::parse("* * *", TimeZone::UTC).unwrap_err(),
            "expected exactly 5 fields, found 3: [* * *]"
        );
        assert!(
            Schedule::parse("0 0 30 2 *", TimeZone::UTC)
                .unwrap()
                .next(ts("2026-01-01T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 9 * * *", berlin.clone()).unwrap();
        // 09:00 in Berlin is 08:00Z in winter and 07:00Z in summer.
        assert_eq!(
            next_n(&s, "2026-01-15T10:00:00Z", 1),
            ["2026-01-16T08:00:00Z"]
        );
        assert_eq!(
            next_n(&s, "2026-07-15T10:00:00Z", 1),
            ["2026-07-16T07:00:00Z"]
        );
        // Across the spring change (2026-03-29, 02:00 -> 03:00) the wall clock time holds.
        assert_eq!(
            next_n(&s, "2026-03-28T00:00:00Z", 2),
            ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"]
        );
        // A prefix zone wins over the given one.
        let prefixed = Schedule::parse("CRON_TZ=America/New_York 0 9 * * *", berlin).unwrap();
        assert_eq!(
            next_n(&prefixed, "2026-01-15T10:00:00Z", 1),
            ["2026-01-15T14:00:00Z"]
        );

        let ny = TimeZone::get("America/New_York").unwrap();
        // 02:30 does not exist on 2026-03-08 (02:00 EST -> 03:00 EDT): it runs once, at the
        // end of the gap, and the day after at 02:30 EDT again.
        let gap = Schedule::parse("30 2 * * *", ny.clone()).unwrap();
        assert_eq!(
            next_n(&gap, "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z"
            ]
        );
        // 01:30 happens twice on 2026-11-01 (EDT, then EST): a fixed time runs once.
        let twice = Schedule::parse("30 1 * * *", ny.clone()).unwrap();
        assert_eq!(
            next_n(&twice, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // An hourly schedule runs in both repeated hours.
        let hourly = Schedule::parse("15 * * * *", ny).unwrap();
        assert_eq!(
            next_n(&hourly, "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01T05:15:00Z",
                "2026-11-01T06:15:00Z",
                "2026-11-01T07:15:00Z"
            ]
        );
    }

    #[test]
    fn missed_schedules_are_counted_and_only_the_latest_runs() {
        let s = utc("* * * * *");
        let created = ts("2026-01-15T10:00:30Z");
        let r = |last, deadline, now| most_recent(&s, created, last, deadline, ts(now)).unwrap();
        assert_eq!(r(None, None, "2026-01-15T10:00:59Z").time, None);
        let one = r(None, None, "2026-01-15T10:01:10Z");
        assert_eq!(
            (one.time, one.missed),
            (Some(ts("2026-01-15T10:01:00Z")), Missed::None)
        );
        let few = r(None, None, "2026-01-15T10:05:10Z");
        assert_eq!(
            (few.time, few.missed),
            (Some(ts("2026-01-15T10:05:00Z")), Missed::Few)
        );
        let last = Some(ts("2026-01-15T10:05:00Z"));
        assert_eq!(r(last, None, "2026-01-15T10:05:40Z").time, None);
        // Three hours down: more than 100 missed, the latest still found.
        let many = r(None, None, "2026-01-15T13:00:05Z");
        assert_eq!(
            (many.time, many.missed),
            (Some(ts("2026-01-15T13:00:00Z")), Missed::Many)
        );
        // A starting deadline moves the start of the count: nothing older than it.
        let late = r(last, Some(10), "2026-01-15T10:09:30Z");
        assert_eq!((late.time, late.missed), (None, Missed::None));
        let in_time = r(last, Some(40), "2026-01-15T10:09:30Z");
        assert_eq!(in_time.time, Some(ts("2026-01-15T10:09:00Z")));
        assert_eq!(
            most_recent(
                &utc("0 0 30 2 *"),
                created,
                None,
                None,
                ts("2026-03-01T00:00:00Z")
            )
            .unwrap_err(),
            NO_NEXT_TIME
        );
    }

    #[test]
    fn a_due_time_starts_a_job_and_requeues_at_the_next_time() {
        let cj = cron_job(spec(json!({})), json!({}));
        let now = ts("2026-01-15T10:05:10Z");
        let (d, notes) = decide(&cj, now, &TimeZone::UTC);
        assert_eq!(
            d,
            Decision::Start {
                scheduled: ts("2026-01-15T10:05:00Z"),
                replace: false,
                requeue: Duration::from_millis(4 * 60_000 + 50_000 + 100),
            }
        );
        assert!(notes.is_empty());
        // Before the first time: wait for it exactly.
        let (d, _) = decide(&cj, ts("2026-01-15T10:03:00Z"), &TimeZone::UTC);
        assert_eq!(d, Decision::Wait(Duration::from_millis(2 * 60_000 + 100)));
        // Already started (by lastScheduleTime or by the Job's name): wait for the next.
        let done = cron_job(
            spec(json!({})),
            json!({"lastScheduleTime": "2026-01-15T10:05:00Z"}),
        );
        assert!(matches!(
            decide(&done, now, &TimeZone::UTC).0,
            Decision::Wait(_)
        ));
        let named = cron_job(spec(json!({})), json!({"active": active("hello-29474525")}));
        assert!(matches!(
            decide(&named, now, &TimeZone::UTC).0,
            Decision::Wait(_)
        ));
    }

    #[test]
    fn concurrency_policies_and_suspend() {
        let now = ts("2026-01-15T10:05:10Z");
        let status =
            json!({"active": active("hello-29475000"), "lastScheduleTime": "2026-01-15T10:00:00Z"});
        let allow = cron_job(spec(json!({})), status.clone());
        assert!(matches!(
            decide(&allow, now, &TimeZone::UTC).0,
            Decision::Start { replace: false, .. }
        ));
        let forbid = cron_job(spec(json!({"concurrencyPolicy": "Forbid"})), status.clone());
        let (d, notes) = decide(&forbid, now, &TimeZone::UTC);
        assert_eq!(
            d,
            Decision::Wait(Duration::from_millis(4 * 60_000 + 50_000 + 100))
        );
        assert_eq!(notes[0].reason, "JobAlreadyActive");
        let replace = cron_job(
            spec(json!({"concurrencyPolicy": "Replace"})),
            status.clone(),
        );
        assert!(matches!(
            decide(&replace, now, &TimeZone::UTC).0,
            Decision::Start { replace: true, .. }
        ));
        let suspended = cron_job(spec(json!({"suspend": true})), status);
        assert_eq!(
            decide(&suspended, now, &TimeZone::UTC),
            (Decision::Idle, vec![])
        );
    }

    #[test]
    fn bad_zones_and_schedules_stop_with_an_event() {
        let now = ts("2026-01-15T10:05:10Z");
        let cj = cron_job(spec(json!({"timeZone": "Mars/Olympus"})), json!({}));
        let (d, notes) = decide(&cj, now, &TimeZone::UTC);
        assert_eq!(d, Decision::Idle);
        assert_eq!(
            notes,
            vec![Note::warning(
                "UnknownTimeZone",
                "invalid timeZone: \"Mars/Olympus\": unknown time zone Mars/Olympus".into()
            )]
        );
        let cj = cron_job(spec(json!({"schedule": "0 0 30 2 *"})), json!({}));
        let (d, notes) = decide(&cj, now, &TimeZone::UTC);
        assert_eq!(d, Decision::Idle);
        assert_eq!(notes[0].reason, "InvalidSchedule");
        let cj = cron_job(spec(json!({"schedule": "61 * * * *"})), json!({}));
        assert_eq!(
            decide(&cj, now, &TimeZone::UTC).1[0].reason,
            "UnparseableSchedule"
        );
        // TZ in the schedule: warned about, and the prefix zone is used.
        let cj = cron_job(
            spec(json!({"schedule": "TZ=Asia/Tokyo 0 19 * * *"})),
            json!({}),
        );
        let (d, notes) = decide(&cj, ts("2026-01-16T10:00:10Z"), &TimeZone::UTC);
        assert_eq!(notes[0].reason, "UnsupportedSchedule");
        assert!(
            matches!(d, Decision::Start { scheduled, .. } if scheduled == ts("2026-01-16T10:00:00Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_schedule_and_the_annotation() {
        let cj = cron_job(
            spec(json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"})),
            json!({}),
        );
        let (d, _) = decide(&cj, ts("2026-01-16T08:00:05Z"), &TimeZone::UTC);
        let Decision::Start { scheduled, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(scheduled, ts("2026-01-16T08:00:00Z"));
        let job = job_for(&cj, scheduled);
        assert_eq!(job.metadata.name.as_deref(), Some("hello-29475840"));
        let ann = job.metadata.annotations.unwrap();
        assert_eq!(ann[SCHEDULED_TIMESTAMP], "2026-01-16T09:00:00+01:00");
        assert_eq!(ann["note"], "n");
        assert_eq!(job.metadata.labels.unwrap()["team"], "a");
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("CronJob", "hello", "cj-uid", Some(true))
        );
        assert_eq!(
            job.spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .restart_policy
                .as_deref(),
            Some("Never")
        );
        let utc_job = job_for(&cron_job(spec(json!({})), json!({})), scheduled);
        assert_eq!(
            utc_job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2026-01-16T08:00:00Z"
        );
    }

    #[test]
    fn history_limits_pick_the_oldest_finished_jobs() {
        let job = |name: &str, cond: &str, start: Option<&str>| -> Job {
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"startTime": start, "conditions": [{"type": cond, "status": "True"}]}}))
            .unwrap()
        };
        let jobs = vec![
            job("c", "Complete", Some("2026-01-15T10:02:00Z")),
            job("a", "Complete", Some("2026-01-15T10:01:00Z")),
            job("b", "Complete", Some("2026-01-15T10:01:00Z")),
            job("n", "Complete", None),
            job("f1", "Failed", Some("2026-01-15T10:00:00Z")),
            job("f2", "Failed", Some("2026-01-15T10:03:00Z")),
            job("r", "Suspended", Some("2026-01-15T09:00:00Z")),
        ];
        let cj = cron_job(
            spec(json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1})),
            json!({}),
        );
        let names: Vec<String> = surplus(&cj, &jobs).iter().map(|j| j.name_any()).collect();
        assert_eq!(names, ["a", "b", "c", "f1"]);
        let keep_all = cron_job(
            spec(json!({"successfulJobsHistoryLimit": null, "failedJobsHistoryLimit": null})),
            json!({}),
        );
        assert!(surplus(&keep_all, &jobs).is_empty());
    }
}
