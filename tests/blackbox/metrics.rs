//! Resource metrics and autoscaling on a real node: the kubelet's `/stats/summary` and
//! `/metrics/resource` through `nodes/proxy`, the built-in metrics.k8s.io API behind
//! `kubectl top`, and the HorizontalPodAutoscaler controller scaling a cpu-burning
//! Deployment. The scrape and sync periods are shortened by their hidden flags.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::node::{json, node_ready, start_node_with};
use serde_json::Value;

fn metrics_node() -> Server {
    let s = start_node_with(&[
        "--metric-resolution=2s",
        "--horizontal-pod-autoscaler-sync-period=2s",
    ]);
    let ready = eventually(Duration::from_secs(120), || node_ready(&s).then_some(()));
    assert!(ready.is_some(), "node not ready:\n{}", s.log());
    s
}

/// The millicores of a `kubectl top` cpu column (`12m`, `1`).
fn millicores(v: &str) -> Option<i64> {
    match v.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => v.parse::<i64>().ok().map(|c| c * 1000),
    }
}

#[test]
fn kubelet_stats_kubectl_top_and_an_hpa_scaling_a_cpu_burner() {
    let s = metrics_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: docker.io/library/busybox:test
        command: [sh, -c, "while :; do :; done"]
        resources:
          requests: {cpu: 20m}
          limits: {cpu: 100m}
"#,
    );
    let out = s.kubectl(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/burn", "--timeout=120s"],
    );
    assert!(out.status.success(), "rollout: {:?}\n{}", out, s.log());

    // The kubelet's Summary API and resource metrics, through the API server's nodes/proxy.
    let summary = eventually(Duration::from_secs(30), || {
        let v = json(&s.k(
            KUBECTL_NEW,
            &["get", "--raw", "/api/v1/nodes/node-1/proxy/stats/summary"],
        ));
        let burning = v["pods"].as_array()?.iter().any(|p| {
            p["podRef"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("burn-"))
                && p["containers"][0]["name"] == "burn"
                && p["containers"][0]["cpu"]["usageCoreNanoSeconds"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
                && p["containers"][0]["memory"]["workingSetBytes"].is_u64()
        });
        burning.then_some(v)
    })
    .unwrap_or_else(|| panic!("no burn pod in the summary\n{}", s.log()));
    let node = &summary["node"];
    assert_eq!(node["nodeName"], "node-1");
    assert!(
        node["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0,
        "{node}"
    );
    assert!(
        node["memory"]["workingSetBytes"].as_u64().unwrap() > 0,
        "{node}"
    );
    assert!(node["fs"]["capacityBytes"].as_u64().unwrap() > 0, "{node}");
    let text = s.k(
        KUBECTL_OLD,
        &[
            "get",
            "--raw",
            "/api/v1/nodes/node-1/proxy/metrics/resource",
        ],
    );
    assert!(
        text.contains("# TYPE node_cpu_usage_seconds_total counter"),
        "{text}"
    );
    assert!(text.contains("node_memory_working_set_bytes "), "{text}");
    assert!(
        text.contains(
            "container_cpu_usage_seconds_total{container=\"burn\",namespace=\"default\",pod=\"burn-"
        ),
        "{text}"
    );
    assert!(
        text.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"burn-"),
        "{text}"
    );

    // metrics.k8s.io and kubectl top, oldest and newest kubectl.
    for v in [KUBECTL_OLD, KUBECTL_NEW] {
        let nodes = eventually(Duration::from_secs(60), || {
            let out = s.kubectl(v, &["top", "node"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let row = text.lines().find(|l| l.starts_with("node-1"))?.to_string();
            let cols: Vec<&str> = row.split_whitespace().collect();
            (millicores(cols.get(1)?)? > 0 && cols.get(3)?.ends_with("Mi")).then_some(text)
        });
        assert!(
            nodes.is_some(),
            "kubectl {v} top node: {:?}\n{}",
            s.kubectl(v, &["top", "node"]),
            s.log()
        );
        let pods = eventually(Duration::from_secs(60), || {
            let out = s.kubectl(v, &["top", "pod", "-l", "app=burn"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let row = text.lines().find(|l| l.starts_with("burn-"))?.to_string();
            let cols: Vec<&str> = row.split_whitespace().collect();
            (millicores(cols.get(1)?)? >= 20).then_some(text)
        });
        assert!(
            pods.is_some(),
            "kubectl {v} top pod: {:?}",
            s.kubectl(v, &["top", "pod"])
        );
    }
    let list = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dburn",
        ],
    ));
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let item = &list["items"][0];
    assert_eq!(item["metadata"]["labels"]["app"], "burn");
    assert!(item["window"].as_str().unwrap().ends_with('s'), "{item}");
    assert_eq!(item["containers"][0]["name"], "burn");
    let none = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dnone",
        ],
    ));
    assert_eq!(none["items"], serde_json::json!([]));
    // Viewers may read metrics (the aggregated metrics-reader role), as RBAC says: pods of
    // their namespace, not nodes.
    let view = eventually(Duration::from_secs(30), || {
        let view = s.k(KUBECTL_NEW, &["get", "clusterrole", "view", "-o", "json"]);
        view.contains("metrics.k8s.io").then_some(())
    });
    assert!(view.is_some(), "view does not aggregate the metrics reader");
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "rolebinding",
            "viewer",
            "--clusterrole=view",
            "--user=viewer",
        ],
    );
    let out = eventually(Duration::from_secs(10), || {
        let out = s.kubectl(KUBECTL_NEW, &["top", "pod", "--as=viewer"]);
        out.status.success().then_some(out)
    });
    assert!(
        out.is_some(),
        "{:?}",
        s.kubectl(KUBECTL_NEW, &["top", "pod", "--as=viewer"])
    );
    let denied = s.k_err(KUBECTL_NEW, &["top", "node", "--as=viewer"]);
    assert!(denied.contains("forbidden"), "{denied}");

    // kubectl 1.27 creates an autoscaling/v1 HPA: 100m used of a 20m request is 500 % of
    // the 50 % target, so the Deployment goes to the maximum, 3.
    s.k(
        KUBECTL_OLD,
        &[
            "autoscale",
            "deployment",
            "burn",
            "--cpu-percent=50",
            "--min=1",
            "--max=3",
        ],
    );
    let scaled = eventually(Duration::from_secs(90), || {
        let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "burn", "-o", "json"]));
        (d["spec"]["replicas"] == 3).then_some(())
    });
    let hpa = |v: &str| json(&s.k(v, &["get", "hpa", "burn", "-o", "json"]));
    assert!(
        scaled.is_some(),
        "not scaled: {}\n{}",
        hpa(KUBECTL_NEW),
        s.log()
    );
    let h = eventually(Duration::from_secs(30), || {
        let h = hpa(KUBECTL_NEW);
        (h["status"]["desiredReplicas"] == 3 && h["status"]["currentReplicas"] == 3).then_some(h)
    })
    .unwrap_or_else(|| panic!("status: {}", hpa(KUBECTL_NEW)));
    assert_eq!(h["apiVersion"], "autoscaling/v2");
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    let current = &h["status"]["currentMetrics"][0]["resource"];
    assert_eq!(current["name"], "cpu");
    assert!(
        current["current"]["averageUtilization"].as_i64().unwrap() > 50,
        "{h}"
    );
    assert!(h["status"]["lastScaleTime"].is_string(), "{h}");
    let cond = |t: &str| -> Value {
        h["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(cond("AbleToScale")["status"], "True", "{h}");
    assert_eq!(cond("ScalingActive")["status"], "True", "{h}");
    assert_eq!(cond("ScalingActive")["reason"], "ValidMetricFound", "{h}");
    assert_eq!(cond("ScalingLimited")["status"], "True", "{h}");
    assert_eq!(cond("ScalingLimited")["reason"], "TooManyReplicas", "{h}");
    // The v1 view of the same object.
    let v1 = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "--raw",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/burn",
        ],
    ));
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50, "{v1}");
    assert!(
        v1["status"]["currentCPUUtilizationPercentage"]
            .as_i64()
            .unwrap()
            > 50,
        "{v1}"
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler",
        ],
    );
    assert!(events.contains("SuccessfulRescale"), "{events}");
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    let table = s.k(KUBECTL_NEW, &["get", "hpa", "burn"]);
    assert!(table.contains("/50%"), "{table}");

    // Pods without a cpu request cannot be measured against a utilization target.
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "idle",
            "--image=docker.io/library/busybox:test",
            "--",
            "sleep",
            "3600",
        ],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "autoscale",
            "deployment",
            "idle",
            "--cpu-percent=50",
            "--max=2",
        ],
    );
    // Once the pod has samples, the missing request is what fails (upstream's messages).
    let failing = eventually(Duration::from_secs(60), || {
        let h = json(&s.k(KUBECTL_NEW, &["get", "hpa", "idle", "-o", "json"]));
        let active = h["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ScalingActive")?
            .clone();
        (active["status"] == "False"
            && active["reason"] == "FailedGetResourceMetric"
            && active["message"]
                .as_str()?
                .starts_with("the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container busybox of Pod idle-"))
        .then_some(active)
    });
    assert!(
        failing.is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "hpa", "idle", "-o", "yaml"])
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=idle,reason=FailedGetResourceMetric",
        ],
    );
    assert!(
        events.contains("failed to get cpu utilization: missing request for cpu"),
        "{events}"
    );
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "idle", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 1);

    // A Pods metric needs the custom metrics API kubox does not serve: it fails as upstream's
    // does without it, and the other metric (one container's cpu) still decides.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burn}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Pods
    pods:
      metric: {name: packets-per-second}
      target: {type: AverageValue, averageValue: 1k}
  - type: ContainerResource
    containerResource:
      name: cpu
      container: burn
      target: {type: Utilization, averageUtilization: 50}
"#,
    );
    let h = eventually(Duration::from_secs(30), || {
        let h = hpa(KUBECTL_NEW);
        let m = &h["status"]["currentMetrics"];
        (m[0]["type"] == "" && m[1]["type"] == "ContainerResource").then_some(h)
    })
    .unwrap_or_else(|| panic!("status: {}", hpa(KUBECTL_NEW)));
    let current = &h["status"]["currentMetrics"][1]["containerResource"];
    assert_eq!(current["container"], "burn", "{h}");
    assert!(
        current["current"]["averageUtilization"].as_i64().unwrap() > 50,
        "{h}"
    );
    let active = h["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned())
        .unwrap_or_default();
    assert_eq!(active["reason"], "ValidMetricFound", "{h}");
    assert_eq!(
        active["message"],
        "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
    );
    assert_eq!(h["status"]["desiredReplicas"], 3, "{h}");
    let no_api = "unable to get metric packets-per-second: unable to fetch metrics from custom \
                  metrics API: no custom metrics API (custom.metrics.k8s.io) registered";
    let events = eventually(Duration::from_secs(10), || {
        let e = s.k(
            KUBECTL_NEW,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=burn,reason=FailedGetPodsMetric",
            ],
        );
        e.contains(no_api).then_some(e)
    });
    assert!(events.is_some(), "{}", s.k(KUBECTL_NEW, &["get", "events"]));
    // With only that metric nothing can be computed.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: idle}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}
  maxReplicas: 2
  metrics:
  - type: Pods
    pods:
      metric: {name: packets-per-second}
      target: {type: AverageValue, averageValue: 1k}
"#,
    );
    let want = format!("the HPA was unable to compute the replica count: {no_api}");
    let failing = eventually(Duration::from_secs(30), || {
        let h = json(&s.k(KUBECTL_NEW, &["get", "hpa", "idle", "-o", "json"]));
        let active = h["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ScalingActive")?
            .clone();
        (active["status"] == "False"
            && active["reason"] == "FailedGetPodsMetric"
            && active["message"] == want.as_str())
        .then_some(())
    });
    assert!(
        failing.is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "hpa", "idle", "-o", "yaml"])
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=idle,reason=FailedComputeMetricsReplicas",
            "-o",
            "json",
        ],
    );
    assert!(
        events.contains(
            "failed to compute desired number of replicas based on listed metrics for \
             Deployment/default/idle: invalid metrics (1 invalid out of 1), first error is: \
             failed to get pods metric value: unable to get metric packets-per-second"
        ),
        "{events}"
    );
}

#[test]
fn disabling_metrics_server_removes_the_metrics_api() {
    let on = Server::start();
    assert!(
        on.k(KUBECTL_NEW, &["api-versions"])
            .contains("metrics.k8s.io/v1beta1")
    );
    drop(on);
    let off = Server::start_with(&["--disable=metrics-server"]);
    assert!(
        !off.k(KUBECTL_NEW, &["api-versions"])
            .contains("metrics.k8s.io")
    );
    let err = off.k_err(KUBECTL_OLD, &["top", "node"]);
    assert!(err.contains("Metrics API not available"), "{err}");
}
