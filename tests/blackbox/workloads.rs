//! Deployment, StatefulSet and EndpointSlice behaviour against upstream's: Recreate waits for
//! every old pod to be gone, pause/resume/restart/history through kubectl, maxSurge and
//! maxUnavailable held at every step of a rollout (checked on a watch, so every intermediate
//! state is seen), progress deadlines and minReadySeconds; StatefulSet Parallel management,
//! partitions, OnDelete and reverse-order scale down; EndpointSlice conditions of not-ready and
//! terminating pods, publishNotReadyAddresses and named ports resolved per pod.
//!
//! Pods run on a [`StandInNode`] (the kubelet's API calls, no containers); a pod held
//! terminating by a test finalizer stands for one in its grace period.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::controllers::{StandInNode, WAIT, json, pods_of, running};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, WatchEvent, WatchParams};
use serde_json::Value;

/// Every watch event of objects of one kind matching a label selector in `default`, from the
/// objects already there on: `(type, object)` in revision order.
pub(crate) struct Recording {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recording {
    pub(crate) fn start<K>(s: &Server, selector: &str) -> Recording
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(s.client());
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (log, flag, sel) = (events.clone(), stop.clone(), selector.to_string());
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let api: Api<K> = Api::namespaced(client, "default");
                let mut version = "0".to_string();
                let mut started = Some(tx);
                while !flag.load(Ordering::Relaxed) {
                    let wp = WatchParams::default().labels(&sel).timeout(290);
                    let Ok(stream) = api.watch(&wp, &version).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if let Some(tx) = started.take() {
                        let _ = tx.send(());
                    }
                    let mut stream = stream.boxed();
                    while !flag.load(Ordering::Relaxed) {
                        let next =
                            tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
                        let (kind, obj) = match next {
                            Err(_) => continue,
                            Ok(Some(Ok(WatchEvent::Added(o)))) => ("ADDED", o),
                            Ok(Some(Ok(WatchEvent::Modified(o)))) => ("MODIFIED", o),
                            Ok(Some(Ok(WatchEvent::Deleted(o)))) => ("DELETED", o),
                            Ok(Some(Ok(_))) => continue,
                            _ => break,
                        };
                        if let Some(v) = obj.meta().resource_version.clone() {
                            version = v;
                        }
                        let obj = serde_json::to_value(&obj).unwrap();
                        log.lock().unwrap().push((kind.to_string(), obj));
                    }
                }
            })
        });
        rx.recv_timeout(WAIT).expect("the watch started");
        Recording {
            events,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }

    /// The state after each event: name → object, objects deleted gone.
    pub(crate) fn states(&self) -> Vec<BTreeMap<String, Value>> {
        let mut now = BTreeMap::new();
        let mut out = Vec::new();
        for (kind, obj) in self.events() {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if kind == "DELETED" {
                now.remove(&name);
            } else {
                now.insert(name, obj);
            }
            out.push(now.clone());
        }
        out
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn get(s: &Server, what: &str) -> Value {
    json(&s.k(KUBECTL_NEW, &["get", what, "-o", "json"]))
}

fn items(s: &Server, kind: &str, selector: &str) -> Vec<Value> {
    let out = json(&s.k(KUBECTL_NEW, &["get", kind, "-l", selector, "-o", "json"]));
    out["items"].as_array().cloned().unwrap_or_default()
}

fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn image(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

fn ready(pod: &Value) -> bool {
    condition(pod, "Ready")["status"] == "True"
}

fn rollout_ok(s: &Server, what: &str) {
    let out = s.k(KUBECTL_NEW, &["rollout", "status", what, "--timeout=60s"]);
    assert!(
        out.contains("successfully rolled out") || out.contains("complete"),
        "{out}"
    );
}

/// `kubectl rollout status` that must fail: (stdout, stderr).
fn rollout_fails(s: &Server, what: &str, timeout: &str) -> (String, String) {
    let out = s.kubectl(
        KUBECTL_NEW,
        &["rollout", "status", what, &format!("--timeout={timeout}")],
    );
    assert!(
        !out.status.success(),
        "rollout status of {what} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn remove_finalizers(s: &Server, pod: &str) {
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "pod",
            pod,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
}

fn hold(s: &Server, pod: &str) {
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "pod",
            pod,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["kubox.test/hold"]}}"#,
        ],
    );
}

#[test]
fn recreate_removes_every_old_pod_before_creating_new_ones() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 11);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: rc}
spec:
  replicas: 3
  strategy: {type: Recreate}
  selector: {matchLabels: {app: rc}}
  template:
    metadata: {labels: {app: rc}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    rollout_ok(&s, "deployment/rc");
    let d = get(&s, "deployment/rc");
    assert_eq!(condition(&d, "Available")["status"], "True", "{d}");
    // One old pod stays terminating (as in a long grace period) until released.
    let held = name(&pods_of(&s, "app=rc")[0]);
    hold(&s, &held);
    let pods = Recording::start::<k8s_openapi::api::core::v1::Pod>(&s, "app=rc");
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "deployment/rc",
            "c=docker.io/library/busybox:v2",
        ],
    );
    eventually(WAIT, || {
        let p = pods_of(&s, "app=rc");
        (p.len() == 1 && !live(&p[0])).then_some(())
    })
    .unwrap_or_else(|| panic!("old pods not going: {:#?}", pods_of(&s, "app=rc")));
    // While it is there, no new pod is created, and the Deployment is not available.
    std::thread::sleep(Duration::from_secs(3));
    let p = pods_of(&s, "app=rc");
    assert_eq!(p.len(), 1, "{p:#?}");
    let d = get(&s, "deployment/rc");
    assert_eq!(
        d["status"]["updatedReplicas"].as_i64().unwrap_or(0),
        0,
        "{d}"
    );
    assert_eq!(condition(&d, "Available")["status"], "False", "{d}");
    let (out, _) = rollout_fails(&s, "deployment/rc", "2s");
    assert!(
        out.contains("0 out of 3 new replicas have been updated"),
        "{out}"
    );
    remove_finalizers(&s, &held);
    rollout_ok(&s, "deployment/rc");
    eventually(WAIT, || {
        let p = pods_of(&s, "app=rc");
        (p.len() == 3 && p.iter().all(|p| image(p).ends_with(":v2") && ready(p))).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#?}", pods_of(&s, "app=rc")));
    // In the watch's order: every old pod deleted before the first new one was added.
    let events = pods.events();
    let first_new = events
        .iter()
        .position(|(k, p)| k == "ADDED" && image(p).ends_with(":v2"))
        .expect("new pods seen");
    let last_old = events
        .iter()
        .rposition(|(k, p)| k == "DELETED" && image(p).ends_with(":test"))
        .expect("old pods deleted");
    assert!(last_old < first_new, "{events:#?}");
    let old_deleted = events[..first_new]
        .iter()
        .filter(|(k, p)| k == "DELETED" && image(p).ends_with(":test"))
        .count();
    assert_eq!(old_deleted, 3);
}

#[test]
fn pause_resume_restart_and_history_through_kubectl() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 12);
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "web",
            "--image=docker.io/library/busybox:test",
            "--replicas=2",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "annotate",
            "deployment/web",
            "kubernetes.io/change-cause=first image",
        ],
    );
    rollout_ok(&s, "deployment/web");

    s.k(KUBECTL_NEW, &["rollout", "pause", "deployment/web"]);
    eventually(WAIT, || {
        let c = condition(&get(&s, "deployment/web"), "Progressing");
        (c["reason"] == "DeploymentPaused" && c["status"] == "Unknown").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", get(&s, "deployment/web")));
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "deployment/web",
            "busybox=docker.io/library/busybox:v2",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "annotate",
            "--overwrite",
            "deployment/web",
            "kubernetes.io/change-cause=second image",
        ],
    );
    // Paused: the change is observed but not rolled out.
    let (out, _) = rollout_fails(&s, "deployment/web", "3s");
    assert!(
        out.contains("Waiting for deployment \"web\" rollout to finish: 0 out of 2 new replicas have been updated"),
        "{out}"
    );
    assert_eq!(items(&s, "replicasets", "app=web").len(), 1);
    assert!(
        pods_of(&s, "app=web")
            .iter()
            .all(|p| image(p).ends_with(":test"))
    );
    // A paused Deployment still scales.
    s.k(KUBECTL_NEW, &["scale", "deployment/web", "--replicas=3"]);
    eventually(WAIT, || {
        (running(&pods_of(&s, "app=web")) == 3).then_some(())
    })
    .expect("scaled while paused");
    assert!(
        pods_of(&s, "app=web")
            .iter()
            .all(|p| image(p).ends_with(":test"))
    );

    let deployments = Recording::start::<k8s_openapi::api::apps::v1::Deployment>(&s, "app=web");
    s.k(KUBECTL_OLD, &["rollout", "resume", "deployment/web"]);
    rollout_ok(&s, "deployment/web");
    eventually(WAIT, || {
        let p: Vec<Value> = pods_of(&s, "app=web").into_iter().filter(live).collect();
        (p.len() == 3 && p.iter().all(|p| image(p).ends_with(":v2"))).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#?}", pods_of(&s, "app=web")));
    let reasons: Vec<String> = deployments
        .events()
        .iter()
        .map(|(_, d)| {
            condition(d, "Progressing")["reason"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let resumed = reasons
        .iter()
        .position(|r| r == "DeploymentResumed")
        .unwrap_or_else(|| panic!("{reasons:?}"));
    assert!(
        reasons[resumed..]
            .iter()
            .any(|r| r == "NewReplicaSetAvailable"),
        "{reasons:?}"
    );

    // restart: a new ReplicaSet whose template carries restartedAt.
    s.k(KUBECTL_NEW, &["rollout", "restart", "deployment/web"]);
    rollout_ok(&s, "deployment/web");
    let sets = items(&s, "replicasets", "app=web");
    assert_eq!(sets.len(), 3, "{sets:#?}");
    let newest = sets
        .iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3")
        .unwrap_or_else(|| panic!("{sets:#?}"));
    assert!(
        newest["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{newest}"
    );
    assert_eq!(newest["status"]["readyReplicas"], 3, "{newest}");
    eventually(WAIT, || {
        let p: Vec<Value> = pods_of(&s, "app=web").into_iter().filter(live).collect();
        (p.len() == 3
            && p.iter().all(|p| {
                p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
            }))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("{:#?}", pods_of(&s, "app=web")));

    // history, whole and per revision.
    let history = s.k(KUBECTL_NEW, &["rollout", "history", "deployment/web"]);
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{history}");
    assert_eq!(rows[0][..3], ["1", "first", "image"], "{history}");
    assert_eq!(rows[1][..3], ["2", "second", "image"], "{history}");
    assert_eq!(rows[2][0], "3", "{history}");
    let two = s.k(
        KUBECTL_OLD,
        &["rollout", "history", "deployment/web", "--revision=2"],
    );
    assert!(two.contains("revision #2"), "{two}");
    assert!(two.contains("docker.io/library/busybox:v2"), "{two}");
    assert!(!two.contains("restartedAt"), "{two}");
    let three = s.k(
        KUBECTL_NEW,
        &["rollout", "history", "deployment/web", "--revision=3"],
    );
    assert!(
        three.contains("kubectl.kubernetes.io/restartedAt"),
        "{three}"
    );
    let err = s.k_err(
        KUBECTL_NEW,
        &["rollout", "history", "deployment/web", "--revision=9"],
    );
    assert!(
        err.contains("unable to find the specified revision"),
        "{err}"
    );

    // undo to a given revision.
    s.k(
        KUBECTL_NEW,
        &["rollout", "undo", "deployment/web", "--to-revision=1"],
    );
    rollout_ok(&s, "deployment/web");
    let d = get(&s, "deployment/web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/library/busybox:test"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );
}

/// Checks every state of a rolling update seen by a watch of pods and of ReplicaSets.
fn rolling_update_bounds(surge: &str, unavailable: &str, max_pods: usize, min_ready: usize) {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 13);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ru}}
spec:
  replicas: 4
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}}}
  selector: {{matchLabels: {{app: ru}}}}
  template:
    metadata: {{labels: {{app: ru}}}}
    spec:
      containers: [{{name: c, image: docker.io/library/busybox:test}}]
"#
        ),
    );
    rollout_ok(&s, "deployment/ru");
    let pods = Recording::start::<k8s_openapi::api::core::v1::Pod>(&s, "app=ru");
    let sets = Recording::start::<k8s_openapi::api::apps::v1::ReplicaSet>(&s, "app=ru");
    for tag in ["v2", "v3"] {
        s.k(
            KUBECTL_NEW,
            &[
                "set",
                "image",
                "deployment/ru",
                &format!("c=docker.io/library/busybox:{tag}"),
            ],
        );
        rollout_ok(&s, "deployment/ru");
    }
    eventually(WAIT, || {
        let p: Vec<Value> = pods_of(&s, "app=ru");
        (p.len() == 4 && p.iter().all(|p| image(p).ends_with(":v3") && ready(p))).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#?}", pods_of(&s, "app=ru")));
    std::thread::sleep(Duration::from_millis(500));
    let states = pods.states();
    assert!(states.len() > 20, "{} pod events", states.len());
    let mut fewest = usize::MAX;
    let mut most = 0;
    for (i, state) in states.iter().enumerate() {
        let up: Vec<&Value> = state.values().filter(|p| live(p)).collect();
        let available = up.iter().filter(|p| ready(p)).count();
        most = most.max(up.len());
        // The initial ADDED events build the first state up one by one.
        if i >= 4 {
            fewest = fewest.min(available);
        }
        assert!(
            up.len() <= max_pods,
            "{} pods at event {i}: {state:#?}",
            up.len()
        );
        assert!(
            i < 4 || available >= min_ready,
            "{available} available at event {i}: {state:#?}"
        );
    }
    // The bounds are reached, not just respected.
    assert_eq!(most, max_pods);
    assert_eq!(fewest, min_ready);
    // The ReplicaSets' replicas never add up to more than replicas + maxSurge either.
    for state in sets.states() {
        let total: i64 = state
            .values()
            .map(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(0))
            .sum();
        assert!(total <= max_pods as i64, "{state:#?}");
    }
}

#[test]
fn rolling_updates_keep_max_surge_and_max_unavailable_at_every_step() {
    // 25%/25% of 4: one extra pod, one unavailable.
    rolling_update_bounds("1", "1", 5, 3);
    // Percentages: 50% surge rounds up to 2, 0 unavailable keeps all 4 available.
    rolling_update_bounds("50%", "0", 6, 4);
}

#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 14);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 2
  progressDeadlineSeconds: 3
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    rollout_ok(&s, "deployment/stuck");
    // The new pods never become ready (as with an image that cannot start).
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "deployment/stuck",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"labels":{"stand-in/ready":"false"}}}}}"#,
        ],
    );
    let (_, err) = rollout_fails(&s, "deployment/stuck", "30s");
    assert!(
        err.contains("deployment \"stuck\" exceeded its progress deadline"),
        "{err}"
    );
    let d = get(&s, "deployment/stuck");
    let c = condition(&d, "Progressing");
    assert_eq!(c["status"], "False", "{d}");
    assert_eq!(c["reason"], "ProgressDeadlineExceeded", "{d}");
    let rs = items(&s, "replicasets", "app=stuck,stand-in/ready=false");
    assert_eq!(
        c["message"],
        format!("ReplicaSet \"{}\" has timed out progressing.", name(&rs[0]))
    );
    // maxUnavailable 0: the old pods all stay.
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
    assert_eq!(condition(&d, "Available")["status"], "True", "{d}");
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector=involvedObject.name=stuck",
        ],
    );
    assert!(events.contains("ProgressDeadlineExceeded"), "{events}");
    // Pausing does not hide the timeout; a new template starts a new rollout that finishes.
    s.k(KUBECTL_NEW, &["rollout", "pause", "deployment/stuck"]);
    std::thread::sleep(Duration::from_secs(1));
    let c = condition(&get(&s, "deployment/stuck"), "Progressing");
    assert_eq!(c["reason"], "ProgressDeadlineExceeded", "{c}");
    s.k(KUBECTL_NEW, &["rollout", "resume", "deployment/stuck"]);
    s.k(KUBECTL_NEW, &["rollout", "undo", "deployment/stuck"]);
    rollout_ok(&s, "deployment/stuck");
    let c = condition(&get(&s, "deployment/stuck"), "Progressing");
    assert_eq!(c["status"], "True", "{c}");
    assert_eq!(c["reason"], "NewReplicaSetAvailable", "{c}");
}

#[test]
fn min_ready_seconds_holds_pods_back_from_available() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 15);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  replicas: 2
  minReadySeconds: 4
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    let start = std::time::Instant::now();
    eventually(WAIT, || {
        let d = get(&s, "deployment/slow");
        (d["status"]["readyReplicas"] == 2).then_some(())
    })
    .expect("ready");
    let d = get(&s, "deployment/slow");
    assert_eq!(
        d["status"]["availableReplicas"].as_i64().unwrap_or(0),
        0,
        "{d}"
    );
    let (out, _) = rollout_fails(&s, "deployment/slow", "1s");
    assert!(
        out.contains("0 of 2 updated replicas are available"),
        "{out}"
    );
    rollout_ok(&s, "deployment/slow");
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let rs = items(&s, "replicasets", "app=slow");
    assert_eq!(rs[0]["spec"]["minReadySeconds"], 4);
    assert_eq!(rs[0]["status"]["availableReplicas"], 2);
}
