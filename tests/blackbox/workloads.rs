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
    stall_rollout(&s, "deployment/stuck");
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

fn apply(s: &Server, yaml: &str) {
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], yaml);
}

fn statefulset(name: &str, extra_spec: &str, pod_labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
{extra_spec}
  template:
    metadata: {{labels: {{app: {name}{pod_labels}}}}}
    spec:
      containers: [{{name: c, image: docker.io/library/busybox:test}}]
"#
    )
}

/// Names of the live pods labelled `app=<app>`, sorted, with their images.
fn members(s: &Server, app: &str) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = pods_of(s, &format!("app={app}"))
        .iter()
        .filter(|p| live(p))
        .map(|p| (name(p), image(p)))
        .collect();
    m.sort();
    m
}

#[test]
fn parallel_statefulsets_create_all_pods_at_once_ordered_ones_one_by_one() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 16);
    // Pods that never become ready: OrderedReady stops at the first, Parallel does not wait.
    apply(
        &s,
        &statefulset(
            "par",
            "  podManagementPolicy: Parallel",
            ", stand-in/ready: \"false\"",
        ),
    );
    apply(&s, &statefulset("ord", "", ", stand-in/ready: \"false\""));
    eventually(WAIT, || (members(&s, "par").len() == 3).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", members(&s, "par")));
    std::thread::sleep(Duration::from_secs(2));
    let names: Vec<String> = members(&s, "ord").into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["ord-0"]);
    let sts = get(&s, "statefulset/par");
    assert_eq!(sts["status"]["replicas"], 3, "{sts}");
    assert_eq!(
        sts["status"]["readyReplicas"].as_i64().unwrap_or(0),
        0,
        "{sts}"
    );
    let (out, _) = rollout_fails(&s, "statefulset/par", "2s");
    assert!(out.contains("Waiting for 3 pods to be ready"), "{out}");

    // Scale down: Parallel deletes every condemned pod at once even though none is ready;
    // OrderedReady waits for unready pods (upstream's monotonic mode).
    s.k(KUBECTL_NEW, &["scale", "statefulset/par", "--replicas=1"]);
    eventually(WAIT, || (members(&s, "par").len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", members(&s, "par")));
    assert_eq!(members(&s, "par")[0].0, "par-0");
}

#[test]
fn ordered_statefulsets_scale_down_from_the_highest_ordinal_one_at_a_time() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 17);
    apply(&s, &statefulset("db", "", ""));
    rollout_ok(&s, "statefulset/db");
    let sts = get(&s, "statefulset/db");
    assert_eq!(sts["status"]["replicas"], 3, "{sts}");
    assert_eq!(sts["status"]["readyReplicas"], 3, "{sts}");
    assert_eq!(sts["status"]["availableReplicas"], 3, "{sts}");
    assert_eq!(sts["status"]["currentReplicas"], 3, "{sts}");
    // Hold db-2 in termination: db-1 must wait for it.
    hold(&s, "db-2");
    let pods = Recording::start::<k8s_openapi::api::core::v1::Pod>(&s, "app=db");
    s.k(KUBECTL_NEW, &["scale", "statefulset/db", "--replicas=0"]);
    eventually(WAIT, || {
        let p = pods_of(&s, "app=db");
        p.iter()
            .any(|p| name(p) == "db-2" && !live(p))
            .then_some(())
    })
    .expect("db-2 terminating");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(members(&s, "db").len(), 2, "{:?}", members(&s, "db"));
    remove_finalizers(&s, "db-2");
    eventually(WAIT, || pods_of(&s, "app=db").is_empty().then_some(()))
        .unwrap_or_else(|| panic!("{:?}", members(&s, "db")));
    std::thread::sleep(Duration::from_millis(300));
    // Each deletion starts only after the previous pod is gone, highest first.
    let mut order = Vec::new();
    for (kind, p) in pods.events() {
        let n = name(&p);
        if kind == "MODIFIED" && !live(&p) && !order.contains(&format!("terminating {n}")) {
            order.push(format!("terminating {n}"));
        }
        if kind == "DELETED" {
            order.push(format!("deleted {n}"));
        }
    }
    assert_eq!(
        order,
        [
            "terminating db-2",
            "deleted db-2",
            "terminating db-1",
            "deleted db-1",
            "terminating db-0",
            "deleted db-0"
        ],
        "{order:?}"
    );
}

#[test]
fn a_partitioned_rolling_update_touches_only_ordinals_at_or_above_the_partition() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 18);
    apply(
        &s,
        &statefulset(
            "web",
            "  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}",
            "",
        ),
    );
    rollout_ok(&s, "statefulset/web");
    let first = get(&s, "statefulset/web")["status"]["currentRevision"].clone();
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "statefulset/web",
            "c=docker.io/library/busybox:v2",
        ],
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
    );
    assert!(
        out.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{out}"
    );
    let old = "docker.io/library/busybox:test".to_string();
    let new = "docker.io/library/busybox:v2".to_string();
    assert_eq!(
        members(&s, "web"),
        [
            ("web-0".to_string(), old.clone()),
            ("web-1".to_string(), old.clone()),
            ("web-2".to_string(), new.clone())
        ]
    );
    let sts = get(&s, "statefulset/web");
    let status = &sts["status"];
    assert_eq!(status["currentRevision"], first, "{sts}");
    assert_ne!(status["updateRevision"], first, "{sts}");
    assert_eq!(status["updatedReplicas"], 1, "{sts}");
    assert_eq!(status["currentReplicas"], 2, "{sts}");
    assert_eq!(status["replicas"], 3, "{sts}");
    // A pod below the partition comes back at the current revision.
    // Not waiting: the replacement takes the name at once, and kubectl's wait for the old
    // pod to go can miss its deletion when it finds the new one (a kubectl race that a
    // real kubelet's grace period hides).
    s.k(KUBECTL_NEW, &["delete", "pod", "web-0", "--wait=false"]);
    let pod = eventually(WAIT, || {
        pods_of(&s, "app=web")
            .into_iter()
            .find(|p| name(p) == "web-0" && live(p) && ready(p))
    })
    .expect("web-0 back");
    assert_eq!(image(&pod), old);
    assert_eq!(pod["metadata"]["labels"]["controller-revision-hash"], first);
    // Lowering the partition finishes the rollout, highest ordinal first.
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "statefulset/web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ],
    );
    let out = s.k(
        KUBECTL_NEW,
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
    );
    assert!(out.contains("3 new pods have been updated"), "{out}");
    eventually(WAIT, || {
        let st = get(&s, "statefulset/web")["status"].clone();
        (st["currentRevision"] == st["updateRevision"] && st["currentReplicas"] == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", get(&s, "statefulset/web")));
    assert!(members(&s, "web").iter().all(|(_, i)| *i == new));
}

#[test]
fn on_delete_statefulsets_update_only_pods_that_are_deleted() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 19);
    apply(
        &s,
        &statefulset("od", "  updateStrategy: {type: OnDelete}", ""),
    );
    eventually(WAIT, || {
        let m = pods_of(&s, "app=od");
        (m.len() == 3 && m.iter().all(ready)).then_some(())
    })
    .expect("3 ready pods");
    s.k(
        KUBECTL_NEW,
        &[
            "set",
            "image",
            "statefulset/od",
            "c=docker.io/library/busybox:v2",
        ],
    );
    eventually(WAIT, || {
        let st = get(&s, "statefulset/od")["status"].clone();
        (st["updateRevision"] != st["currentRevision"]).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", get(&s, "statefulset/od")));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        members(&s, "od").iter().all(|(_, i)| i.ends_with(":test")),
        "{:?}",
        members(&s, "od")
    );
    let err = s.k_err(KUBECTL_NEW, &["rollout", "status", "statefulset/od"]);
    assert!(
        err.contains("rollout status is only available for RollingUpdate strategy type"),
        "{err}"
    );
    // Not waiting, as above.
    s.k(KUBECTL_NEW, &["delete", "pod", "od-1", "--wait=false"]);
    eventually(WAIT, || {
        let m = members(&s, "od");
        (m.len() == 3 && m[1].1.ends_with(":v2")).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", members(&s, "od")));
    let m = members(&s, "od");
    assert!(
        m[0].1.ends_with(":test") && m[2].1.ends_with(":test"),
        "{m:?}"
    );
    let st = get(&s, "statefulset/od")["status"].clone();
    assert_eq!(st["updatedReplicas"], 1, "{st}");
}

#[test]
fn claim_retention_policy_deletes_claims_on_scale_down_and_with_the_set() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 20);
    let claims = |s: &Server| -> Vec<String> {
        let mut c: Vec<String> = items(s, "pvc", "app=keep")
            .iter()
            .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
            .map(name)
            .collect();
        c.sort();
        c
    };
    apply(
        &s,
        &statefulset(
            "keep",
            r#"  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Delete}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}"#,
            "",
        ),
    );
    rollout_ok(&s, "statefulset/keep");
    assert_eq!(claims(&s), ["data-keep-0", "data-keep-1", "data-keep-2"]);
    let c = get(&s, "pvc/data-keep-0");
    assert_eq!(
        c["metadata"]["ownerReferences"][0]["kind"], "StatefulSet",
        "{c}"
    );
    s.k(KUBECTL_NEW, &["scale", "statefulset/keep", "--replicas=1"]);
    eventually(WAIT, || (claims(&s) == ["data-keep-0"]).then_some(()))
        .unwrap_or_else(|| panic!("{}", s.k(KUBECTL_NEW, &["get", "pvc,pods", "-o", "yaml"])));
    s.k(KUBECTL_NEW, &["delete", "statefulset/keep"]);
    eventually(WAIT, || claims(&s).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("{:?}", claims(&s)));
}

/// `(pod name, ready, serving, terminating, port)` of every endpoint in the slices of
/// `service`, sorted.
fn slice_endpoints(s: &Server, service: &str) -> Vec<(String, bool, bool, bool, i64)> {
    let mut out = Vec::new();
    for slice in items(
        s,
        "endpointslices",
        &format!("kubernetes.io/service-name={service}"),
    ) {
        let port = slice["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in slice["endpoints"].as_array().cloned().unwrap_or_default() {
            let c = &e["conditions"];
            out.push((
                e["targetRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
                port,
            ));
        }
    }
    out.sort();
    out
}

/// Pod names with a port.
type Addresses = Vec<(String, i64)>;

/// `(ready addresses, not-ready addresses)` of the Endpoints of `service` by pod name, each
/// with its subset's first port.
fn endpoints_of(s: &Server, service: &str) -> (Addresses, Addresses) {
    let ep = get(s, &format!("endpoints/{service}"));
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for subset in ep["subsets"].as_array().cloned().unwrap_or_default() {
        let port = subset["ports"][0]["port"].as_i64().unwrap_or(0);
        let names = |key: &str| -> Addresses {
            subset[key]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    (
                        a["targetRef"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        port,
                    )
                })
                .collect()
        };
        ready.extend(names("addresses"));
        not_ready.extend(names("notReadyAddresses"));
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

fn e(
    name: &str,
    ready: bool,
    serving: bool,
    terminating: bool,
    port: i64,
) -> (String, bool, bool, bool, i64) {
    (name.to_string(), ready, serving, terminating, port)
}

#[test]
fn endpoint_slices_carry_ready_serving_and_terminating_as_upstream() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 21);
    let pod = |name: &str, port: u16, extra: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: ep{extra}}}}}
spec:
  containers:
  - name: c
    image: docker.io/library/busybox:test
    ports: [{{name: http, containerPort: {port}}}]
"#
        )
    };
    let mut yaml = String::from(
        r#"
apiVersion: v1
kind: Service
metadata: {name: ep}
spec:
  selector: {app: ep}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: ep-all}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: ep}
  ports: [{name: web, port: 80, targetPort: http}]
"#,
    );
    yaml += &pod("a", 8080, "");
    yaml += &pod("b", 8080, ", stand-in/ready: \"false\"");
    // The same named port is another number in this pod: a slice of its own.
    yaml += &pod("c", 9090, "");
    apply(&s, &yaml);
    let want = vec![
        e("a", true, true, false, 8080),
        e("b", false, false, false, 8080),
        e("c", true, true, false, 9090),
    ];
    eventually(WAIT, || (slice_endpoints(&s, "ep") == want).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", slice_endpoints(&s, "ep")));
    let slices = items(&s, "endpointslices", "kubernetes.io/service-name=ep");
    assert_eq!(slices.len(), 2, "{slices:#?}");
    for slice in &slices {
        assert_eq!(slice["ports"][0]["name"], "web");
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
    }
    assert_eq!(
        endpoints_of(&s, "ep"),
        (
            vec![("a".to_string(), 8080), ("c".to_string(), 9090)],
            vec![("b".to_string(), 8080)]
        )
    );
    // publishNotReadyAddresses: the not-ready pod is ready for the Service (not serving).
    let want_all = vec![
        e("a", true, true, false, 8080),
        e("b", true, false, false, 8080),
        e("c", true, true, false, 9090),
    ];
    eventually(WAIT, || {
        (slice_endpoints(&s, "ep-all") == want_all).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", slice_endpoints(&s, "ep-all")));
    assert_eq!(endpoints_of(&s, "ep-all").0.len(), 3);
    let ep_all = get(&s, "endpoints/ep-all");
    assert_eq!(
        ep_all["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    assert_eq!(
        ep_all["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );

    // A terminating pod (held in its grace period): not ready, still serving, terminating;
    // gone from Endpoints unless not-ready addresses are published.
    hold(&s, "a");
    s.k(KUBECTL_NEW, &["delete", "pod", "a", "--wait=false"]);
    let want = vec![
        e("a", false, true, true, 8080),
        e("b", false, false, false, 8080),
        e("c", true, true, false, 9090),
    ];
    eventually(WAIT, || (slice_endpoints(&s, "ep") == want).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", slice_endpoints(&s, "ep")));
    assert_eq!(
        endpoints_of(&s, "ep"),
        (vec![("c".to_string(), 9090)], vec![("b".to_string(), 8080)])
    );
    let want_all = vec![
        e("a", true, true, true, 8080),
        e("b", true, false, false, 8080),
        e("c", true, true, false, 9090),
    ];
    eventually(WAIT, || {
        (slice_endpoints(&s, "ep-all") == want_all).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", slice_endpoints(&s, "ep-all")));
    assert_eq!(endpoints_of(&s, "ep-all").0.len(), 3);
    remove_finalizers(&s, "a");
    let want = vec![
        e("b", false, false, false, 8080),
        e("c", true, true, false, 9090),
    ];
    eventually(WAIT, || (slice_endpoints(&s, "ep") == want).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", slice_endpoints(&s, "ep")));
}

#[test]
fn endpoints_of_services_without_selectors_are_mirrored_to_slices() {
    let s = Server::start();
    apply(
        &s,
        r#"
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  ports: [{name: web, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, labels: {team: blue}}
subsets:
- addresses: [{ip: 10.9.0.1}, {ip: 10.9.0.2, hostname: two}]
  notReadyAddresses: [{ip: 10.9.0.3}]
  ports: [{name: web, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sel}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"#,
    );
    let mirrored = |s: &Server| -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for slice in items(s, "endpointslices", "kubernetes.io/service-name=ext") {
            for e in slice["endpoints"].as_array().cloned().unwrap_or_default() {
                out.push((
                    e["addresses"][0].as_str().unwrap_or_default().to_string(),
                    e["conditions"]["ready"] == true,
                ));
            }
        }
        out.sort();
        out
    };
    let want = vec![
        ("10.9.0.1".to_string(), true),
        ("10.9.0.2".to_string(), true),
        ("10.9.0.3".to_string(), false),
    ];
    eventually(WAIT, || (mirrored(&s) == want).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", mirrored(&s)));
    let slices = items(&s, "endpointslices", "kubernetes.io/service-name=ext");
    assert_eq!(slices.len(), 1, "{slices:#?}");
    let slice = &slices[0];
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["team"], "blue");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Endpoints");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["name"], "web");
    assert_eq!(slice["ports"][0]["port"], 8080);
    let two = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addresses"][0] == "10.9.0.2")
        .cloned()
        .unwrap();
    assert_eq!(two["hostname"], "two");
    // Edits follow.
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "endpoints/ext",
            "--type=merge",
            "-p",
            r#"{"subsets":[{"addresses":[{"ip":"10.9.0.1"}],"ports":[{"name":"web","port":8080}]}]}"#,
        ],
    );
    eventually(WAIT, || {
        (mirrored(&s) == [("10.9.0.1".to_string(), true)]).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", mirrored(&s)));
    // The controller's own Endpoints are never mirrored.
    eventually(WAIT, || {
        let slices = items(&s, "endpointslices", "kubernetes.io/service-name=sel");
        (slices.len() == 1).then_some(())
    })
    .expect("the selector's slice");
    std::thread::sleep(Duration::from_secs(1));
    let slices = items(&s, "endpointslices", "kubernetes.io/service-name=sel");
    assert_eq!(slices.len(), 1, "{slices:#?}");
    assert_eq!(
        slices[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    // skip-mirror, then deletion, take the mirrored slices away.
    s.k(
        KUBECTL_NEW,
        &[
            "label",
            "endpoints/ext",
            "endpointslice.kubernetes.io/skip-mirror=true",
        ],
    );
    eventually(WAIT, || mirrored(&s).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("{:?}", mirrored(&s)));
    s.k(
        KUBECTL_NEW,
        &[
            "label",
            "endpoints/ext",
            "endpointslice.kubernetes.io/skip-mirror-",
        ],
    );
    eventually(WAIT, || (mirrored(&s).len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", mirrored(&s)));
    s.k(KUBECTL_NEW, &["delete", "endpoints/ext"]);
    eventually(WAIT, || {
        items(&s, "endpointslices", "kubernetes.io/service-name=ext")
            .is_empty()
            .then_some(())
    })
    .expect("mirrored slices deleted with their Endpoints");
}

/// Starts a rollout of `what` whose new pods never become ready (as with an image that
/// cannot start): the stand-in node keeps pods labelled `stand-in/ready: "false"` unready.
fn stall_rollout(s: &Server, what: &str) {
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            what,
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"labels":{"stand-in/ready":"false"}}}}}"#,
        ],
    );
}

#[test]
fn scaling_a_paused_rollout_is_proportional() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 22);
    apply(
        &s,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: prop}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: prop}}
  template:
    metadata: {labels: {app: prop}}
    spec:
      containers: [{name: c, image: docker.io/library/busybox:test}]
"#,
    );
    rollout_ok(&s, "deployment/prop");
    // A rollout whose new pod never becomes ready stalls at 4 old + 1 new.
    stall_rollout(&s, "deployment/prop");
    let sizes = |s: &Server| -> (i64, i64) {
        let sets = items(s, "replicasets", "app=prop");
        let size = |new: bool| {
            sets.iter()
                .find(|rs| {
                    rs["spec"]["template"]["metadata"]["labels"]["stand-in/ready"].is_null() != new
                })
                .map_or(-1, |rs| rs["spec"]["replicas"].as_i64().unwrap_or(0))
        };
        (size(false), size(true))
    };
    eventually(WAIT, || (sizes(&s) == (4, 1)).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", sizes(&s)));
    s.k(KUBECTL_NEW, &["rollout", "pause", "deployment/prop"]);
    // 8 replicas + 1 surge spread over both in proportion (upstream: 7 and 2).
    s.k(KUBECTL_NEW, &["scale", "deployment/prop", "--replicas=8"]);
    eventually(WAIT, || (sizes(&s) == (7, 2)).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", sizes(&s)));
    eventually(WAIT, || {
        (running(&pods_of(&s, "app=prop")) == 9).then_some(())
    })
    .expect("9 pods");
    // Down to 2 (+1 surge): 3 in all, taken from the larger first.
    s.k(KUBECTL_NEW, &["scale", "deployment/prop", "--replicas=2"]);
    eventually(WAIT, || (sizes(&s) == (2, 1)).then_some(()))
        .unwrap_or_else(|| panic!("{:?}", sizes(&s)));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sizes(&s), (2, 1));
}
