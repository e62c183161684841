use super::*;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

/// A running pod, ready since long before `now` (started 10 minutes earlier).
fn pod(name: &str, request: i64) -> PodInfo {
    PodInfo {
        name: name.into(),
        phase: "Running".into(),
        deleting: false,
        ready: Some((true, ts(-590))),
        start_time: Some(ts(-600)),
        request: Ok(request),
    }
}

fn samples(values: &[(&str, i64)]) -> HashMap<String, PodMetric> {
    values
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                PodMetric {
                    value: *v,
                    timestamp: ts(-1),
                    window: SignedDuration::from_secs(15),
                },
            )
        })
        .collect()
}

#[test]
fn utilization_above_target_scales_up_by_the_ratio() {
    // One pod using 1 cpu of a 200m request against 50 %: 500 % / 50 % = 10 → ceil(10 × 1).
    let p = replicas_for_resource(
        1,
        Target::Utilization(50),
        &[pod("a", 200)],
        &samples(&[("a", 1000)]),
        true,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 10);
    assert_eq!(p.utilization, Some(500));
    assert_eq!(p.average_milli, 1000);
    // Two pods at 150 % of request against 100 %: ceil(1.5 × 2) = 3.
    let p = replicas_for_resource(
        2,
        Target::Utilization(100),
        &[pod("a", 100), pod("b", 100)],
        &samples(&[("a", 150), ("b", 150)]),
        true,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 3);
}

#[test]
fn within_tolerance_nothing_changes() {
    let p = replicas_for_resource(
        3,
        Target::Utilization(50),
        &[pod("a", 100), pod("b", 100), pod("c", 100)],
        &samples(&[("a", 54), ("b", 53), ("c", 55)]),
        true,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 3);
    assert_eq!(p.utilization, Some(54));
}

#[test]
fn below_target_scales_down() {
    let p = replicas_for_resource(
        4,
        Target::Utilization(50),
        &[pod("a", 100), pod("b", 100), pod("c", 100), pod("d", 100)],
        &samples(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]),
        true,
        ts(0),
    )
    .unwrap();
    // 10 % / 50 % = 0.2 → ceil(0.8) = 1.
    assert_eq!(p.replicas, 1);
}

#[test]
fn average_value_targets_divide_the_mean_by_the_target() {
    // Memory 300Mi and 500Mi against 200Mi average: 400/200 × 2 = 4 (requests not needed).
    let mut a = pod("a", 0);
    a.request = Err("x".into());
    let mut b = pod("b", 0);
    b.request = Err("x".into());
    let mi = 1024 * 1024 * 1000;
    let p = replicas_for_resource(
        2,
        Target::AverageValue(200 * mi),
        &[a, b],
        &samples(&[("a", 300 * mi), ("b", 500 * mi)]),
        false,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 4);
    assert_eq!(p.utilization, None);
    assert_eq!(p.average_milli, 400 * mi);
}

#[test]
fn missing_requests_and_missing_metrics_are_errors() {
    let mut a = pod("a", 0);
    a.request = Err("x".into());
    let err = replicas_for_resource(
        1,
        Target::Utilization(50),
        &[a],
        &samples(&[("a", 100)]),
        true,
        ts(0),
    )
    .unwrap_err();
    assert_eq!(err, "missing request for cpu in container x of Pod a");
    let err = replicas_for_resource(
        1,
        Target::Utilization(50),
        &[pod("a", 100)],
        &HashMap::new(),
        true,
        ts(0),
    )
    .unwrap_err();
    assert!(err.contains("did not receive metrics"), "{err}");
}

#[test]
fn missing_pods_count_as_at_target_when_scaling_down_and_zero_when_scaling_up() {
    // Scale up: a at 200 % of 100m vs 50 % target, b has no sample → counts 0:
    // (200 + 0) / 200 = 100 % → ratio 2 → ceil(2 × 2) = 4.
    let p = replicas_for_resource(
        2,
        Target::Utilization(50),
        &[pod("a", 100), pod("b", 100)],
        &samples(&[("a", 200)]),
        true,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 4);
    // Scale down: a at 10 %, b missing counts as 100 %: 55 % vs 50 % is within tolerance.
    let p = replicas_for_resource(
        2,
        Target::Utilization(50),
        &[pod("a", 100), pod("b", 100)],
        &samples(&[("a", 10)]),
        true,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 2);
}

#[test]
fn unready_and_ignored_pods() {
    // A pending pod is unready: scaling up counts it as 0.
    let mut pending = pod("p", 100);
    pending.phase = "Pending".into();
    let mut deleting = pod("d", 100);
    deleting.deleting = true;
    let p = replicas_for_resource(
        2,
        Target::Utilization(50),
        &[pod("a", 100), pending, deleting],
        &samples(&[("a", 300), ("d", 1000)]),
        true,
        ts(0),
    )
    .unwrap();
    // a: 300 %, p: 0 → 150 % / 50 % = 3 → ceil(3 × 2) = 6.
    assert_eq!(p.replicas, 6);
    // A cpu sample taken before one window after the pod turned ready (in its first five
    // minutes) makes the pod unready; with no other pod there is nothing to go on.
    let mut fresh = pod("f", 100);
    fresh.start_time = Some(ts(-20));
    fresh.ready = Some((true, ts(-10)));
    let err = replicas_for_resource(
        1,
        Target::Utilization(50),
        &[fresh.clone()],
        &samples(&[("f", 500)]),
        true,
        ts(0),
    )
    .unwrap_err();
    assert!(err.contains("did not receive metrics"), "{err}");
    // Memory does not look at readiness.
    let p = replicas_for_resource(
        1,
        Target::Utilization(50),
        &[fresh],
        &samples(&[("f", 500)]),
        false,
        ts(0),
    )
    .unwrap();
    assert_eq!(p.replicas, 10);
}

#[test]
fn limits_without_behavior() {
    assert_eq!(
        limit_without_behavior(1, 10, 1, 3),
        (3, "TooManyReplicas", TOO_MANY.1)
    );
    assert_eq!(
        limit_without_behavior(1, 10, 1, 20),
        (4, "ScaleUpLimit", UP_LIMIT.1)
    );
    assert_eq!(limit_without_behavior(3, 0, 1, 5).0, 1);
    assert_eq!(limit_without_behavior(3, 2, 1, 5).1, "DesiredWithinRange");
}

#[test]
fn downscale_stabilization_keeps_the_highest_recent_recommendation() {
    let mut h = History::default();
    let w = SignedDuration::from_secs(300);
    assert_eq!(stabilize(&mut h, 1, 5, None, w, ts(0)).0, 5);
    let (r, reason, _) = stabilize(&mut h, 5, 2, None, w, ts(60));
    assert_eq!((r, reason), (5, "ScaleDownStabilized"));
    // Once the window has passed, the lower recommendation wins.
    let (r, reason, _) = stabilize(&mut h, 5, 2, None, w, ts(400));
    assert_eq!((r, reason), (2, "ReadyForNewScale"));
}

#[test]
fn behavior_windows_and_rate_policies() {
    let spec = json!({"behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}
    }});
    let b = behavior_of(&spec, 300).unwrap();
    assert_eq!(b.up.window_seconds, 60);
    assert_eq!(b.down.window_seconds, 0);
    let mut h = History::default();
    // Scale-up stabilization: the lowest recommendation of the last 60 s.
    stabilize(&mut h, 2, 2, Some(&b), SignedDuration::ZERO, ts(0));
    let (r, reason, _) = stabilize(&mut h, 2, 6, Some(&b), SignedDuration::ZERO, ts(10));
    assert_eq!((r, reason), (2, "ScaleUpStabilized"));
    // Rate: one pod per minute up.
    assert_eq!(
        limit_with_behavior(2, 6, 1, 10, &b, &h, ts(100)),
        (3, "ScaleUpLimit", UP_LIMIT.1)
    );
    record_scale(&mut h, &b, 2, 3, ts(100));
    assert_eq!(limit_with_behavior(3, 6, 1, 10, &b, &h, ts(120)).0, 3);
    assert_eq!(limit_with_behavior(3, 6, 1, 10, &b, &h, ts(170)).0, 4);
    // Down: at most half per minute.
    assert_eq!(
        limit_with_behavior(8, 1, 1, 10, &b, &h, ts(500)),
        (4, "ScaleDownLimit", DOWN_LIMIT.1)
    );
    // Defaults of a behavior that names nothing: the controller's scale-down window, up
    // 100 % or 4 pods.
    let d = behavior_of(&json!({"behavior": {}}), 300).unwrap();
    assert_eq!(d.down.window_seconds, 300);
    let short = behavior_of(&json!({"behavior": {"scaleDown": {}}}), 60).unwrap();
    assert_eq!(short.down.window_seconds, 60);
    assert_eq!(d.up.policies.len(), 2);
    assert_eq!(
        limit_with_behavior(1, 10, 1, 10, &d, &History::default(), ts(0)).0,
        5
    );
}

#[test]
fn pod_metrics_objects_become_samples() {
    let m = json!([{
        "metadata": {"name": "a", "namespace": "default"},
        "timestamp": "2024-01-01T00:00:00Z",
        "window": "15.2s",
        "containers": [
            {"name": "x", "usage": {"cpu": "250m", "memory": "10Mi"}},
            {"name": "y", "usage": {"cpu": "1234567n", "memory": "1Ki"}}
        ]
    }]);
    let s = samples_for(m.as_array().unwrap(), "cpu", None);
    assert_eq!(s["a"].value, 252);
    assert_eq!(s["a"].window.as_secs(), 15);
    let s = samples_for(m.as_array().unwrap(), "memory", Some("y"));
    assert_eq!(s["a"].value, 1024 * 1000);
    assert_eq!(milli_quantity(250, "cpu"), "250m");
    assert_eq!(milli_quantity(1024 * 1000, "memory"), "1024");
}

fn evaluated(replicas: i32, description: &str) -> Result<Evaluated, Failure> {
    Ok(Evaluated {
        proposal: Proposal {
            replicas,
            utilization: None,
            average_milli: 0,
        },
        status: serde_json::Value::Null,
        description: description.into(),
    })
}

#[test]
fn the_largest_proposal_decides_and_failed_metrics_block_only_scaling_down() {
    let pods = || {
        Err(custom_metric_failure(
            "Pods",
            &serde_json::json!({"pods": {"metric": {"name": "qps"}}}),
            "default",
        ))
    };
    let chosen = |r: &[Result<Evaluated, Failure>], current| {
        deciding_metric(r, current).map(|e| e.description.clone())
    };
    let r = [
        evaluated(3, "cpu"),
        evaluated(5, "memory"),
        evaluated(5, "later"),
    ];
    assert_eq!(chosen(&r, 4).as_deref(), Some("memory"));
    // A failed metric: scaling up (or staying) still goes ahead, scaling down does not.
    let r = [pods(), evaluated(6, "cpu")];
    assert_eq!(chosen(&r, 4).as_deref(), Some("cpu"));
    let r = [pods(), evaluated(4, "cpu")];
    assert_eq!(chosen(&r, 4).as_deref(), Some("cpu"));
    let r = [evaluated(2, "cpu"), pods()];
    assert_eq!(chosen(&r, 4), None);
    assert_eq!(chosen(&[pods()], 4), None);
}

#[test]
fn custom_and_external_metrics_fail_as_without_their_apis() {
    use serde_json::json;
    let f = custom_metric_failure(
        "Pods",
        &json!({"pods": {"metric": {"name": "packets-per-second"},
            "target": {"type": "AverageValue", "averageValue": "1k"}}}),
        "default",
    );
    assert_eq!(f.reason, "FailedGetPodsMetric");
    assert_eq!(
        f.error,
        "unable to get metric packets-per-second: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
    );
    assert_eq!(
        f.wrapped,
        format!("failed to get pods metric value: {}", f.error)
    );
    let f = custom_metric_failure(
        "Object",
        &json!({"object": {"metric": {"name": "requests-per-second"},
            "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main-route"},
            "target": {"type": "Value", "value": "10k"}}}),
        "shop",
    );
    assert_eq!(f.reason, "FailedGetObjectMetric");
    assert_eq!(
        f.error,
        "unable to get metric requests-per-second: Ingress on shop main-route/unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
    );
    let f = custom_metric_failure(
        "Object",
        &json!({"object": {"metric": {"name": "x"}, "target": {"type": "Utilization"}}}),
        "shop",
    );
    assert_eq!(
        f.error,
        "invalid object metric source: neither a value target nor an average value target was set"
    );
    let f = custom_metric_failure(
        "External",
        &json!({"external": {"metric": {"name": "queue_messages_ready",
            "selector": {"matchLabels": {"queue": "worker_tasks"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]}},
            "target": {"type": "AverageValue", "averageValue": "30"}}}),
        "default",
    );
    assert_eq!(f.reason, "FailedGetExternalMetric");
    assert_eq!(
        f.error,
        "unable to get external metric default/queue_messages_ready/&LabelSelector{MatchLabels:map[string]string{queue: worker_tasks,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:env,Operator:In,Values:[a b],},},}: unable to fetch metrics from external metrics API: the server could not find the requested resource (get queue_messages_ready.external.metrics.k8s.io)"
    );
    assert_eq!(
        f.wrapped,
        format!(
            "failed to get queue_messages_ready external metric value: {}",
            f.error
        )
    );
    assert_eq!(go_label_selector(&serde_json::Value::Null), "nil");
}
