//! The Job controller on a real node: completions, Indexed jobs, backoffLimit, podFailurePolicy
//! (FailJob, Count, Ignore on DisruptionTarget), backoffLimitPerIndex, successPolicy,
//! activeDeadlineSeconds, ttlSecondsAfterFinished, suspend/resume, and pod tracking with the
//! `batch.kubernetes.io/job-tracking` finalizer. Nodes run with a 1 s pod failure back-off.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::node::{json, ready_node_with};
use serde_json::Value;

const FAST_BACKOFF: &[&str] = &[
    "--job-pod-failure-backoff=1s",
    "--job-pod-failure-max-backoff=2s",
];

fn job(s: &Server, name: &str) -> Value {
    json(&s.k(KUBECTL_NEW, &["get", "job", name, "-o", "json"]))
}

fn condition(job: &Value, t: &str) -> Value {
    job["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t).cloned())
        .unwrap_or_default()
}

/// Waits for `kubectl wait --for=condition=<cond> job/<name>`.
fn wait_for(s: &Server, name: &str, cond: &str) {
    let out = s.kubectl(
        KUBECTL_NEW,
        &[
            "wait",
            &format!("--for=condition={cond}"),
            &format!("job/{name}"),
            "--timeout=60s",
        ],
    );
    assert!(
        out.status.success(),
        "job {name}: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.k(KUBECTL_NEW, &["get", "job", name, "-o", "yaml"]),
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])
    );
}

fn job_pods(s: &Server, name: &str) -> Vec<Value> {
    let list = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "pods",
            "-l",
            &format!("job-name={name}"),
            "-o",
            "json",
        ],
    ));
    list["items"].as_array().cloned().unwrap_or_default()
}

fn running_pod(s: &Server, name: &str) -> Option<Value> {
    job_pods(s, name)
        .into_iter()
        .find(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
}

#[test]
fn jobs_run_to_completion_or_fail_by_backoff_limit_failure_policy_index_and_deadline() {
    let s = ready_node_with(FAST_BACKOFF);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 2
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "test -n \"$JOB_COMPLETION_INDEX\""]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "exit 3"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failjob}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - {action: FailJob, onExitCodes: {containerName: c, operator: In, values: [42]}}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "exit 42"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: counted}
spec:
  backoffLimit: 1
  podFailurePolicy:
    rules:
    - {action: FailJob, onExitCodes: {operator: In, values: [42]}}
    - {action: Count, onExitCodes: {operator: In, values: [5]}}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "exit 5"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: perindex}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimitPerIndex: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "test \"$JOB_COMPLETION_INDEX\" != 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: leader}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  successPolicy:
    rules: [{succeededIndexes: "0"}]
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "test \"$JOB_COMPLETION_INDEX\" = 0 || sleep 300"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: deadline}
spec:
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 300"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: shortlived}
spec:
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "true"]}]
"#,
    );
    for (name, cond) in [
        ("three", "complete"),
        ("indexed", "complete"),
        ("broken", "failed"),
        ("failjob", "failed"),
        ("counted", "failed"),
        ("perindex", "failed"),
        ("leader", "complete"),
        ("deadline", "failed"),
    ] {
        wait_for(&s, name, cond);
    }
    let three = job(&s, "three");
    assert_eq!(three["status"]["succeeded"], 3);
    assert!(three["status"]["completionTime"].is_string());
    assert_eq!(condition(&three, "SuccessCriteriaMet")["status"], "True");
    assert_eq!(
        condition(&three, "Complete")["reason"],
        "CompletionsReached"
    );
    assert_eq!(job(&s, "indexed")["status"]["completedIndexes"], "0-1");

    let broken = job(&s, "broken");
    assert_eq!(
        broken["status"]["failed"], 2,
        "backoffLimit 1: the second failure fails the job"
    );
    assert_eq!(
        condition(&broken, "FailureTarget")["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        condition(&broken, "Failed")["reason"],
        "BackoffLimitExceeded"
    );
    assert!(broken["status"]["completionTime"].is_null());

    let failjob = job(&s, "failjob");
    let pod = job_pods(&s, "failjob")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = condition(&failjob, "Failed");
    assert_eq!(failed["reason"], "PodFailurePolicy");
    assert_eq!(
        failed["message"],
        format!(
            "Container c for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(
        failjob["status"]["failed"], 1,
        "FailJob stops at the first failure"
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=failjob",
        ],
    );
    assert!(events.contains("PodFailurePolicy"), "{events}");
    assert!(events.contains("SuccessfulCreate"), "{events}");

    let counted = job(&s, "counted");
    assert_eq!(counted["status"]["failed"], 2);
    assert_eq!(
        condition(&counted, "Failed")["reason"],
        "BackoffLimitExceeded"
    );

    let perindex = job(&s, "perindex");
    assert_eq!(perindex["status"]["failedIndexes"], "1", "{perindex}");
    assert_eq!(perindex["status"]["completedIndexes"], "0,2");
    assert_eq!(perindex["status"]["failed"], 2, "index 1 ran twice");
    assert_eq!(condition(&perindex, "Failed")["reason"], "FailedIndexes");

    let leader = job(&s, "leader");
    assert_eq!(
        condition(&leader, "SuccessCriteriaMet")["reason"],
        "SuccessPolicy"
    );
    assert_eq!(
        condition(&leader, "Complete")["message"],
        "Matched rules at index 0"
    );
    assert_eq!(leader["status"]["completedIndexes"], "0");

    let deadline = job(&s, "deadline");
    assert_eq!(condition(&deadline, "Failed")["reason"], "DeadlineExceeded");
    assert_eq!(
        condition(&deadline, "Failed")["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(deadline["status"]["active"], Value::Null);

    // Finished, the TTL job and its pods go.
    let gone = eventually(Duration::from_secs(40), || {
        let out = s.kubectl(KUBECTL_NEW, &["get", "job", "shortlived"]);
        (!out.status.success() && job_pods(&s, "shortlived").is_empty()).then_some(())
    });
    assert!(gone.is_some(), "ttlSecondsAfterFinished: job or pods left");
    // Every pod of a finished job is released.
    let all = json(&s.k(KUBECTL_NEW, &["get", "pods", "-o", "json"]));
    for p in all["items"].as_array().unwrap() {
        assert!(
            p["metadata"]["finalizers"].is_null(),
            "finalizer left on {}",
            p["metadata"]["name"]
        );
    }
}

#[test]
fn job_pods_are_tracked_by_finalizer_disruptions_ignored_and_suspension_resumes() {
    let mut s = ready_node_with(FAST_BACKOFF);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 4; exit 1"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: evicted}
spec:
  backoffLimit: 0
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions: [{type: DisruptionTarget, status: "True"}]
    - {action: FailJob, onExitCodes: {operator: NotIn, values: [0]}}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 300"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: pausing}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 300"]}]
"#,
    );
    // A running job pod carries the tracking finalizer.
    let pod = eventually(Duration::from_secs(40), || running_pod(&s, "once"))
        .expect("pod of job once running");
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let yaml = s.k(KUBECTL_NEW, &["get", "pod", &name, "-o", "yaml"]);
    assert!(yaml.contains("batch.kubernetes.io/job-tracking"), "{yaml}");
    wait_for(&s, "once", "failed");
    // Counted, the failed pod is released; deleting it does not uncount it.
    let released = json(&s.k(KUBECTL_NEW, &["get", "pod", &name, "-o", "json"]));
    assert!(released["metadata"]["finalizers"].is_null(), "{released}");
    assert_eq!(released["status"]["phase"], "Failed");
    s.k(KUBECTL_NEW, &["delete", "pod", &name, "--wait=true"]);
    let once = job(&s, "once");
    assert_eq!(once["status"]["failed"], 1, "{once}");
    assert!(once["status"]["uncountedTerminatedPods"]["failed"].is_null());

    // An evicted pod gets DisruptionTarget, which the Ignore rule matches: it is replaced and
    // not counted, although its exit code would fail the job by the next rule.
    let first = eventually(Duration::from_secs(40), || running_pod(&s, "evicted"))
        .expect("pod of job evicted running");
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    s.k_in(
        KUBECTL_NEW,
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{first_name}/eviction"),
            "-f",
            "-",
        ],
        &format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{first_name}","namespace":"default"}}}}"#
        ),
    );
    let marked = json(&s.k(KUBECTL_NEW, &["get", "pod", &first_name, "-o", "json"]));
    let target = condition(&marked, "DisruptionTarget");
    assert_eq!(target["reason"], "EvictionByEvictionAPI", "{marked}");
    let replacement = eventually(Duration::from_secs(40), || {
        running_pod(&s, "evicted").filter(|p| p["metadata"]["name"] != first_name.as_str())
    });
    assert!(
        replacement.is_some(),
        "no replacement: {}",
        s.k(KUBECTL_NEW, &["get", "job", "evicted", "-o", "yaml"])
    );
    let evicted = eventually(Duration::from_secs(20), || {
        let j = job(&s, "evicted");
        j["status"]["uncountedTerminatedPods"]["failed"]
            .is_null()
            .then_some(j)
    })
    .unwrap();
    assert!(evicted["status"]["failed"].is_null(), "{evicted}");
    assert!(condition(&evicted, "Failed").is_null(), "{evicted}");

    // Suspend: active pods go (not counted as failures), Suspended, startTime cleared.
    eventually(Duration::from_secs(40), || running_pod(&s, "pausing")).expect("pausing runs");
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "job",
            "pausing",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    );
    let suspended = eventually(Duration::from_secs(30), || {
        let j = job(&s, "pausing");
        (condition(&j, "Suspended")["status"] == "True"
            && j["status"]["active"].is_null()
            && job_pods(&s, "pausing").is_empty())
        .then_some(j)
    })
    .expect("job suspended and its pods gone");
    assert!(suspended["status"]["startTime"].is_null(), "{suspended}");
    assert!(suspended["status"]["failed"].is_null(), "{suspended}");
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "job",
            "pausing",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    eventually(Duration::from_secs(40), || running_pod(&s, "pausing")).expect("resumed pod runs");
    let resumed = job(&s, "pausing");
    assert_eq!(condition(&resumed, "Suspended")["status"], "False");
    assert_eq!(condition(&resumed, "Suspended")["reason"], "JobResumed");
    assert!(resumed["status"]["startTime"].is_string());
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pausing",
        ],
    );
    assert!(
        events.contains("Suspended") && events.contains("Resumed"),
        "{events}"
    );

    // Deleting a job, and a namespace holding a running one, never hangs on the finalizer.
    s.k(
        KUBECTL_NEW,
        &["delete", "job", "pausing", "--wait=true", "--timeout=40s"],
    );
    let pods_gone = eventually(Duration::from_secs(40), || {
        job_pods(&s, "pausing").is_empty().then_some(())
    });
    assert!(pods_gone.is_some(), "pods of a deleted job left");
    s.k(KUBECTL_NEW, &["create", "namespace", "batch"]);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-n", "batch", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: inside}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 300"]}]
"#,
    );
    let running = eventually(Duration::from_secs(40), || {
        let out = s.k(KUBECTL_NEW, &["get", "pods", "-n", "batch", "-o", "json"]);
        json(&out)["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["status"]["phase"] == "Running"))
            .then_some(())
    });
    assert!(running.is_some(), "job pod in namespace batch not running");
    s.k(
        KUBECTL_NEW,
        &[
            "delete",
            "namespace",
            "batch",
            "--wait=true",
            "--timeout=50s",
        ],
    );

    // Killed in the middle of a job, the controller picks up where the status says: every
    // success counted exactly once, no pod run twice.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: steady}
spec:
  completions: 4
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: docker.io/library/busybox:test, command: [sh, -c, "sleep 2"]}]
"#,
    );
    let started = eventually(Duration::from_secs(40), || {
        job_pods(&s, "steady")
            .iter()
            .any(|p| p["status"]["phase"] == "Succeeded")
            .then_some(())
    });
    assert!(started.is_some(), "no pod of job steady succeeded");
    s.restart_node_process("KILL");
    wait_for(&s, "steady", "complete");
    let steady = job(&s, "steady");
    assert_eq!(steady["status"]["succeeded"], 4, "{steady}");
    let pods = job_pods(&s, "steady");
    assert_eq!(pods.len(), 4, "one pod per completion");
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"].is_null()));
}
