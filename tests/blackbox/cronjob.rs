//! CronJobs with kubectl: a `*/1` schedule starts a Job at the minute, named after it and
//! owned by the CronJob; finished Jobs move from `status.active` to `lastSuccessfulTime`;
//! history limits delete the oldest finished Jobs; a suspended CronJob starts nothing and,
//! resumed, starts the time it missed; `kubectl create job --from=cronjob/x` works; the API
//! server defaults and validates CronJobs as upstream does.
//!
//! Pods "run" on a [`StandInNode`], which reports pods of Jobs as Succeeded.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::controllers::StandInNode;
use serde_json::Value;

const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// `kubectl get <args> -o json`, parsed.
fn get(s: &Server, args: &[&str]) -> Value {
    let out = s.k(KUBECTL_NEW, &[args, &["-o", "json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The Jobs whose controller is CronJob `owner`, by name.
fn jobs_of(s: &Server, owner: &str) -> Vec<Value> {
    let mut jobs: Vec<Value> = get(s, &["get", "jobs"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| {
                    o.iter().any(|o| {
                        o["kind"] == "CronJob" && o["name"] == owner && o["controller"] == true
                    })
                })
        })
        .collect();
    jobs.sort_by_key(|j| {
        j["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    jobs
}

fn names(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn seconds(t: &Value) -> i64 {
    kubox_core::meta::parse_time(t.as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("not a time: {t}"))
        .as_second()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn complete(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

fn events_of(s: &Server, name: &str) -> String {
    s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=CronJob,involvedObject.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ],
    )
}

#[test]
fn a_cronjob_runs_on_schedule_keeps_its_history_and_stops_when_suspended() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 21);
    s.k(
        KUBECTL_OLD,
        &[
            "create",
            "cronjob",
            "tick",
            "--image=docker.io/library/busybox:test",
            "--schedule=*/1 * * * *",
            "--",
            "true",
        ],
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: held}
spec:
  schedule: "* * * * *"
  suspend: true
  jobTemplate:
    metadata: {labels: {team: held}}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    let tick = get(&s, &["get", "cronjob", "tick"]);
    assert_eq!(tick["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(tick["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(tick["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(tick["spec"]["suspend"], false);

    // The first minute boundary starts a Job named after it.
    let first = eventually(Duration::from_secs(75), || {
        jobs_of(&s, "tick").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no job from tick:\n{}", events_of(&s, "tick")));
    let scheduled = seconds(&first["metadata"]["annotations"][SCHEDULED]);
    assert_eq!(scheduled % 60, 0, "{first}");
    assert_eq!(
        first["metadata"]["name"],
        format!("tick-{}", scheduled / 60)
    );
    let lag = seconds(&first["metadata"]["creationTimestamp"]) - scheduled;
    // Created for its own minute, not before it (how soon is the benchmark's business).
    assert!((0..60).contains(&lag), "created {lag}s after its time");
    assert_eq!(
        first["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["true"])
    );
    // It completes; the CronJob records it and forgets it as active.
    let tick = eventually(Duration::from_secs(30), || {
        let cj = get(&s, &["get", "cronjob", "tick"]);
        (cj["status"]["active"].is_null() && !cj["status"]["lastSuccessfulTime"].is_null())
            .then_some(cj)
    })
    .unwrap_or_else(|| {
        panic!(
            "{}",
            s.k(KUBECTL_NEW, &["get", "cronjob", "tick", "-o", "yaml"])
        )
    });
    assert_eq!(seconds(&tick["status"]["lastScheduleTime"]), scheduled);

    // `held` was suspended at that boundary: nothing started. Resumed, it starts the time it
    // missed at once.
    assert!(jobs_of(&s, "held").is_empty());
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "cronjob",
            "held",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    // Within the wait, so well before the next minute boundary would have started it.
    let held = eventually(Duration::from_secs(10), || {
        jobs_of(&s, "held").into_iter().next()
    })
    .unwrap_or_else(|| panic!("resumed held started nothing:\n{}", events_of(&s, "held")));
    assert!(seconds(&held["metadata"]["annotations"][SCHEDULED]) >= scheduled);
    assert_eq!(held["metadata"]["labels"]["team"], "held");

    // Suspend tick and keep one successful Job; manual Jobs from the template count too.
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "cronjob",
            "tick",
            "-p",
            r#"{"spec":{"suspend":true,"successfulJobsHistoryLimit":1}}"#,
        ],
    );
    let suspended_at = unix_now();
    assert!(
        suspended_at < scheduled + 60,
        "suspended after the next boundary"
    );
    // History is ordered by `status.startTime`, whole seconds, ties broken by name (upstream's
    // byJobStartTime): the manual Jobs must start in a later second than the scheduled one,
    // else `manual-1` sorts before `tick-…` and goes first. The stand-in node runs all of this
    // within a second or two of the boundary.
    let started = seconds(
        &get(
            &s,
            &["get", "job", first["metadata"]["name"].as_str().unwrap()],
        )["status"]["startTime"],
    );
    while unix_now() <= started {
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["manual-1", "manual-2"] {
        let manual = get(&s, &["create", "job", name, "--from=cronjob/tick"]);
        assert_eq!(
            manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
    }
    let kept = eventually(Duration::from_secs(30), || {
        let jobs = jobs_of(&s, "tick");
        (names(&jobs) == ["manual-2"] && complete(&jobs[0])).then_some(())
    });
    assert!(
        kept.is_some(),
        "{:?}\n{}",
        names(&jobs_of(&s, "tick")),
        events_of(&s, "tick")
    );
    let events = events_of(&s, "tick");
    for reason in ["SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"] {
        assert!(events.contains(reason), "{reason} missing:\n{events}");
    }
    assert!(
        events.contains(&format!("Deleted job tick-{}", scheduled / 60)),
        "{events}"
    );
    // Manual Jobs are unexpected to the controller on every sync; the recorder aggregates
    // the repeats into one Event with a count, as client-go's does.
    for name in ["manual-1", "manual-2"] {
        let unexpected = format!("did not create or forgot: {name}");
        assert_eq!(events.matches(&unexpected).count(), 1, "{events}");
    }

    // The next boundary passes: held (running) starts its Job, suspended tick does not.
    let held_next = eventually(Duration::from_secs(80), || {
        jobs_of(&s, "held")
            .into_iter()
            .find(|j| seconds(&j["metadata"]["annotations"][SCHEDULED]) >= scheduled + 60)
    });
    assert!(
        held_next.is_some(),
        "held did not run again: {:?}",
        names(&jobs_of(&s, "held"))
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(names(&jobs_of(&s, "tick")), ["manual-2"]);
    let table = s.k(KUBECTL_NEW, &["get", "cronjob", "tick"]);
    assert!(table.contains("True"), "SUSPEND column: {table}");
}

#[test]
fn cronjob_schedules_and_time_zones_are_validated() {
    let s = Server::start_with(&["--disable-controller-manager"]);
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "create",
            "cronjob",
            "tz",
            "--image=busybox",
            "--schedule=CRON_TZ=UTC 0 * * * *",
        ],
    );
    assert!(
        err.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        "{err}"
    );
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "create",
            "cronjob",
            "bad",
            "--image=busybox",
            "--schedule=61 * * * *",
        ],
    );
    assert!(
        err.contains("end of range (61) above maximum (59): 61"),
        "{err}"
    );
    let manifest = |tz: &str| {
        format!(
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {{name: zoned}}
spec:
  schedule: "0 9 * * 1-5"
  timeZone: {tz}
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{{name: c, image: busybox}}]
"#
        )
    };
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &manifest("Mars/Olympus"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown time zone Mars/Olympus"), "{err}");
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &manifest("Europe/Berlin"),
    );
    let table = s.k(KUBECTL_NEW, &["get", "cronjob", "zoned", "-o", "wide"]);
    assert!(table.contains("Europe/Berlin"), "{table}");
}
