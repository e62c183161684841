//! Persistent volumes on a real node: the default `local-path` class, binding, the local-path
//! provisioner, PVC volumes in pods, reclaim policies, StatefulSet claims.
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use crate::node::{json, ready_node};
use serde_json::Value;

fn get(s: &Server, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let out = s.kubectl(KUBECTL_NEW, &a);
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

fn wait_for(s: &Server, what: &str, mut f: impl FnMut() -> bool) {
    let ok = eventually(Duration::from_secs(120), || f().then_some(()));
    if ok.is_none() {
        let state = s.kubectl(KUBECTL_NEW, &["get", "pods,pvc,pv,events", "-o", "wide"]);
        let pods = s.kubectl(KUBECTL_NEW, &["get", "pods", "-o", "yaml"]);
        panic!(
            "timed out waiting for {what}:\n{}\n{}\n{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&pods.stdout),
            s.log()
        );
    }
}

fn phase(s: &Server, args: &[&str]) -> String {
    get(s, args)
        .and_then(|v| v["status"]["phase"].as_str().map(String::from))
        .unwrap_or_default()
}

fn pod(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
        "spec": {{"terminationGracePeriodSeconds": 1,
          "containers": [{{"name": "c", "image": "docker.io/library/busybox:test",
            "command": ["sh", "-c", "{script}"],
            "volumeMounts": [{{"name": "data", "mountPath": "/data"}}]}}],
          "volumes": [{{"name": "data", "persistentVolumeClaim": {{"claimName": "{claim}"}}}}]}}}}"#
    )
}

#[test]
fn local_path_claims_are_provisioned_on_the_node_kept_across_pods_and_removed_with_the_claim() {
    let s = ready_node();
    let classes = s.k(KUBECTL_OLD, &["get", "storageclass"]);
    assert!(
        classes.contains("local-path (default)") && classes.contains("rancher.io/local-path"),
        "{classes}"
    );
    assert!(classes.contains("WaitForFirstConsumer"), "{classes}");
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}"#,
    );
    let pvc = get(&s, &["pvc", "data"]).expect("claim");
    assert_eq!(pvc["spec"]["storageClassName"], "local-path", "{pvc}");
    // Delayed binding: nothing happens without a pod.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(phase(&s, &["pvc", "data"]), "Pending");
    assert!(get(&s, &["pv"]).is_some_and(|l| l["items"] == serde_json::json!([])));

    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod(
            "writer",
            "data",
            "echo hello > /data/greeting && sleep 3600",
        ),
    );
    wait_for(&s, "the claim to be bound", || {
        phase(&s, &["pvc", "data"]) == "Bound"
    });
    wait_for(&s, "the writer to run", || {
        phase(&s, &["pod", "writer"]) == "Running"
    });
    let pvc = get(&s, &["pvc", "data"]).expect("claim");
    let uid = pvc["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(pvc["spec"]["volumeName"], pv_name.as_str(), "{pvc}");
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-1"
    );
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi");
    let pv = get(&s, &["pv", &pv_name]).expect("volume");
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "rancher.io/local-path"
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        serde_json::json!(["node-1"])
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    let dir = s
        .data_dir()
        .join("storage")
        .join(format!("{uid}_default_data"));
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        dir.display().to_string().as_str()
    );
    wait_for(&s, "the file on the node", || {
        std::fs::read_to_string(dir.join("greeting")).is_ok_and(|c| c == "hello\n")
    });
    let table = s.k(KUBECTL_OLD, &["get", "pvc", "data"]);
    assert!(
        table.contains("Bound") && table.contains(&pv_name),
        "{table}"
    );

    // A new pod sees what the first one wrote.
    s.k(KUBECTL_NEW, &["delete", "pod", "writer", "--wait=true"]);
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("reader", "data", "cat /data/greeting && sleep 3600"),
    );
    wait_for(&s, "the reader to print the file", || {
        crate::dns::container_log(&s, "reader", "c") == "hello"
    });

    // In-use protection: a claim deleted while a running pod uses it stays Terminating (and
    // its volume Bound) until the pod is gone.
    let pvc = get(&s, &["pvc", "data"]).expect("claim");
    assert_eq!(
        pvc["metadata"]["finalizers"],
        serde_json::json!(["kubernetes.io/pvc-protection"]),
        "{pvc}"
    );
    let pv = get(&s, &["pv", &pv_name]).expect("volume");
    assert!(
        pv["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&serde_json::json!("kubernetes.io/pv-protection"))),
        "{pv}"
    );
    s.k(KUBECTL_NEW, &["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(3));
    let pvc = get(&s, &["pvc", "data"]).expect("the claim is kept while in use");
    assert!(pvc["metadata"]["deletionTimestamp"].is_string(), "{pvc}");
    assert_eq!(phase(&s, &["pv", &pv_name]), "Bound");
    assert_eq!(phase(&s, &["pod", "reader"]), "Running");

    // Once the pod is gone, the claim goes, and with it the volume and its directory.
    s.k(KUBECTL_NEW, &["delete", "pod", "reader", "--wait=true"]);
    wait_for(&s, "the claim to be deleted", || {
        get(&s, &["pvc", "data"]).is_none()
    });
    wait_for(&s, "the volume to be deleted", || {
        get(&s, &["pv", &pv_name]).is_none()
    });
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn static_volumes_bind_by_size_are_retained_and_statefulsets_get_claims() {
    let s = ready_node();
    let static_dir = s.data_dir().join("static-pv");
    let pv = |name: &str, size: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "{name}"}},
            "spec": {{"capacity": {{"storage": "{size}"}}, "accessModes": ["ReadWriteOnce"],
              "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
              "hostPath": {{"path": "{}/{name}", "type": "DirectoryOrCreate"}}}}}}"#,
            static_dir.display()
        )
    };
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &pv("big", "5Gi"));
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &pv("small", "1Gi"));
    wait_for(&s, "the volumes to be Available", || {
        phase(&s, &["pv", "big"]) == "Available" && phase(&s, &["pv", "small"]) == "Available"
    });
    // An explicit empty class is kept: no default class is filled in.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "kept"},
            "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
              "resources": {"requests": {"storage": "500Mi"}}}}"#,
    );
    wait_for(&s, "the claim to bind", || {
        phase(&s, &["pvc", "kept"]) == "Bound"
    });
    let pvc = get(&s, &["pvc", "kept"]).expect("claim");
    assert_eq!(
        pvc["spec"]["volumeName"], "small",
        "the smallest fit: {pvc}"
    );
    assert_eq!(pvc["spec"]["storageClassName"], "");
    assert_eq!(
        pvc["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    let small = get(&s, &["pv", "small"]).expect("volume");
    assert_eq!(small["spec"]["claimRef"]["name"], "kept");
    assert_eq!(small["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);
    wait_for(&s, "the volume to be Bound", || {
        phase(&s, &["pv", "small"]) == "Bound"
    });
    assert_eq!(phase(&s, &["pv", "big"]), "Available");

    // A claim nothing fits keeps its pod pending with the scheduler's message.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "huge"},
            "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
              "resources": {"requests": {"storage": "100Gi"}}}}"#,
    );
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("waiting", "huge", "sleep 3600"),
    );
    wait_for(&s, "the unbound-claim message", || {
        get(&s, &["pod", "waiting"]).is_some_and(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["type"] == "PodScheduled"
                        && c["message"].as_str().is_some_and(|m| {
                            m.contains("pod has unbound immediate PersistentVolumeClaims")
                        })
                })
            })
        })
    });

    // The statically bound volume works in a pod, and is Released (data kept) after the claim.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        &pod("user", "kept", "echo kept > /data/f && sleep 3600"),
    );
    wait_for(&s, "the file in the static volume", || {
        std::fs::read_to_string(static_dir.join("small").join("f")).is_ok_and(|c| c == "kept\n")
    });
    s.k(KUBECTL_NEW, &["delete", "pod", "user", "--wait=true"]);
    s.k(KUBECTL_NEW, &["delete", "pvc", "kept"]);
    wait_for(&s, "the volume to be Released", || {
        phase(&s, &["pv", "small"]) == "Released"
    });
    assert!(
        static_dir.join("small").join("f").exists(),
        "Retain keeps the data"
    );

    // StatefulSet claims from volumeClaimTemplates get the default class and bind.
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
              "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "docker.io/library/busybox:test",
                  "command": ["sh", "-c", "hostname > /data/who && sleep 3600"],
                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
              "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}"#,
    );
    for i in 0..2 {
        let claim = format!("data-db-{i}");
        wait_for(&s, &claim, || phase(&s, &["pvc", &claim]) == "Bound");
        wait_for(&s, "the stateful pod", || {
            phase(&s, &["pod", &format!("db-{i}")]) == "Running"
        });
        let pvc = get(&s, &["pvc", &claim]).expect("claim");
        assert_eq!(pvc["spec"]["storageClassName"], "local-path");
        let uid = pvc["metadata"]["uid"].as_str().unwrap_or_default();
        let file = s
            .data_dir()
            .join("storage")
            .join(format!("{uid}_default_{claim}"))
            .join("who");
        wait_for(&s, "the pod's file", || {
            std::fs::read_to_string(&file).is_ok_and(|c| c.trim() == format!("db-{i}"))
        });
    }
}

#[test]
fn ephemeral_volumes_get_a_claim_owned_by_their_pod_and_go_with_it() {
    let s = ready_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scratch"},
        "spec": {"terminationGracePeriodSeconds": 1,
          "containers": [{"name": "c", "image": "docker.io/library/busybox:test",
            "command": ["sh", "-c", "echo hi > /data/f && cat /data/f && sleep 3600"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
          "volumes": [{"name": "data", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {"app": "scratch"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]}}"#,
    );
    wait_for(&s, "the pod to write to its ephemeral volume", || {
        crate::dns::container_log(&s, "scratch", "c") == "hi"
    });
    let pvc = get(&s, &["pvc", "scratch-data"]).expect("the ephemeral claim");
    let pod = get(&s, &["pod", "scratch"]).expect("pod");
    let owner = &pvc["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Pod", "{pvc}");
    assert_eq!(owner["uid"], pod["metadata"]["uid"], "{pvc}");
    assert_eq!(owner["controller"], true, "{pvc}");
    assert_eq!(pvc["metadata"]["labels"]["app"], "scratch", "{pvc}");
    assert_eq!(pvc["spec"]["storageClassName"], "local-path", "{pvc}");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The claim and its volume go with the pod.
    s.k(KUBECTL_NEW, &["delete", "pod", "scratch", "--wait=true"]);
    wait_for(&s, "the ephemeral claim to be deleted", || {
        get(&s, &["pvc", "scratch-data"]).is_none()
    });
    wait_for(&s, "its volume to be deleted", || {
        get(&s, &["pv", &pv_name]).is_none()
    });
}
