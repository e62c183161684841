//! A whole node: `kubox server` with its agent, real containerd and runc, the kubox CNI
//! plugin, images from the airgap directory. Runs in namespaces of its own (see
//! [`Server::start_node`]).
use std::time::Duration;

use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server, eventually};
use serde_json::Value;

pub(crate) fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A node started with `extra` server flags, the busybox test image in its airgap directory.
pub(crate) fn start_node_with(extra: &[&str]) -> Server {
    Server::start_node(extra, |data| {
        let images = data.join("agent").join("images");
        std::fs::create_dir_all(&images).unwrap();
        crate::images::write_busybox_image(&images.join("busybox.tar"), "test");
    })
}

/// A node whose Node object is Ready.
pub(crate) fn ready_node() -> Server {
    ready_node_with(&[])
}

/// A node started with `extra` server flags whose Node object is Ready.
pub(crate) fn ready_node_with(extra: &[&str]) -> Server {
    let s = start_node_with(extra);
    let ready = eventually(Duration::from_secs(120), || node_ready(&s).then_some(()));
    assert!(ready.is_some(), "node not ready:\n{}", s.log());
    s
}

/// Runs pod `web`: busybox httpd on port 8080 serving the test image's /www.
pub(crate) fn run_web(s: &Server) {
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "web",
            "--image=docker.io/library/busybox:test",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    );
}

/// GET `url` from the node (busybox wget, 5 s timeout): the body, or None.
pub(crate) fn http_get(s: &Server, url: &str) -> Option<String> {
    let out = s
        .command("timeout")
        .args(["5", "/bin/busybox", "wget", "-qO-", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

pub(crate) fn node_ready(s: &Server) -> bool {
    let out = s.kubectl(KUBECTL_NEW, &["get", "node", "node-1", "-o", "json"]);
    if !out.status.success() {
        return false;
    }
    let n = json(&String::from_utf8_lossy(&out.stdout));
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn a_deployment_runs_real_pods_reachable_by_their_ips_and_through_a_service() {
    let s = ready_node();
    let node = json(&s.k(KUBECTL_NEW, &["get", "node", "node-1", "-o", "json"]));
    assert_eq!(node["spec"]["podCIDR"], "10.42.0.0/24");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{node}"
    );
    s.k(
        KUBECTL_NEW,
        &[
            "create",
            "deployment",
            "web",
            "--image=docker.io/library/busybox:test",
            "--replicas=3",
            "--port=8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    );
    let out = s.kubectl(
        KUBECTL_NEW,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    );
    assert!(
        out.status.success(),
        "rollout: {}{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "yaml"]),
        s.log()
    );
    let pods = json(&s.k(KUBECTL_OLD, &["get", "pods", "-l", "app=web", "-o", "json"]));
    let pods = pods["items"].as_array().unwrap().clone();
    assert_eq!(pods.len(), 3);
    let mut ips = Vec::new();
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.42.0."), "{ip}");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        assert!(
            p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .is_some_and(|c| c.starts_with("containerd://"))
        );
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "distinct pod IPs");
    // Each pod serves HTTP on its own IP, from the node.
    for ip in &ips {
        let body = eventually(Duration::from_secs(30), || {
            http_get(&s, &format!("http://{ip}:8080/"))
        });
        assert_eq!(body.as_deref(), Some("hello from kubox\n"), "pod {ip}");
    }
    // Through a Service: from the node, and from a pod that finds it by its environment.
    s.k(
        KUBECTL_NEW,
        &[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ],
    );
    let svc = json(&s.k(KUBECTL_NEW, &["get", "service", "web", "-o", "json"]));
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let body = eventually(Duration::from_secs(30), || {
        http_get(&s, &format!("http://{cluster_ip}:80/"))
    });
    assert_eq!(
        body.as_deref(),
        Some("hello from kubox\n"),
        "service {cluster_ip}"
    );
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "client",
            "--image=docker.io/library/busybox:test",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "wget -qO- http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/ | grep -q 'hello from kubox'",
        ],
    );
    let phase = eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "client", "-o", "json"]));
        let phase = p["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    });
    assert_eq!(
        phase.as_deref(),
        Some("Succeeded"),
        "{}",
        s.k(KUBECTL_NEW, &["get", "pod", "client", "-o", "yaml"])
    );
    // A Service without endpoints refuses connections at once.
    s.k(
        KUBECTL_NEW,
        &["create", "service", "clusterip", "nobody", "--tcp=80:8080"],
    );
    let nobody = json(&s.k(KUBECTL_NEW, &["get", "service", "nobody", "-o", "json"]));
    let nobody_ip = nobody["spec"]["clusterIP"].as_str().unwrap().to_string();
    let refused = eventually(Duration::from_secs(30), || {
        let out = s
            .command("timeout")
            .args([
                "5",
                "/bin/busybox",
                "wget",
                "-qO-",
                &format!("http://{nobody_ip}:80/"),
            ])
            .output()
            .ok()?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.contains("refused").then_some(err)
    });
    assert!(
        refused.is_some(),
        "connections to a Service without endpoints must be refused"
    );

    let first = pods[0]["metadata"]["name"].as_str().unwrap();
    // A deleted pod's containers stop and a replacement starts.
    s.k(KUBECTL_NEW, &["delete", "pod", first, "--timeout=60s"]);
    assert!(
        eventually(Duration::from_secs(90), || {
            let pods = json(&s.k(KUBECTL_NEW, &["get", "pods", "-l", "app=web", "-o", "json"]));
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 3
                && items
                    .iter()
                    .all(|p| p["status"]["phase"] == "Running" && p["metadata"]["name"] != first))
            .then_some(())
        })
        .is_some(),
        "{}",
        s.k(KUBECTL_NEW, &["get", "pods", "-o", "wide"])
    );
}

#[test]
fn restarting_kubox_keeps_running_containers() {
    let mut s = ready_node();
    run_web(&s);
    let running = |s: &Server| {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "web", "-o", "json"]));
        let cs = &p["status"]["containerStatuses"][0];
        (p["status"]["phase"] == "Running" && cs["ready"] == true).then(|| {
            (
                cs["containerID"].as_str().unwrap_or_default().to_string(),
                cs["state"]["running"]["startedAt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                cs["restartCount"].as_i64().unwrap_or(-1),
                p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
    };
    let before = eventually(Duration::from_secs(60), || running(&s)).expect("pod running");
    for signal in ["TERM", "KILL"] {
        s.restart_node_process(signal);
        assert!(eventually(Duration::from_secs(60), || node_ready(&s).then_some(())).is_some());
        // Give the new agent time to look at the pod; it must adopt, not restart, it.
        std::thread::sleep(Duration::from_secs(3));
        let after =
            eventually(Duration::from_secs(60), || running(&s)).expect("pod running after restart");
        assert_eq!(
            before, after,
            "after SIG{signal}: the container must be the same, not restarted"
        );
        assert_eq!(
            http_get(&s, &format!("http://{}:8080/", before.3)).as_deref(),
            Some("hello from kubox\n"),
            "after SIG{signal}"
        );
    }
}

#[test]
fn volumes_carry_config_secrets_and_scratch_space_and_config_updates_arrive() {
    let s = ready_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data: {index.html: "v1\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: site}
spec:
  volumes:
  - {name: www, configMap: {name: site}}
  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}
  - {name: work, emptyDir: {}}
  initContainers:
  - name: prep
    image: docker.io/library/busybox:test
    command: [sh, -c, "echo init-ran > /work/marker"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: web
    image: docker.io/library/busybox:test
    command: [sh, -c, "mkdir -p /srv && cp /work/marker /srv/marker && cp /etc/creds/token /srv/token && ln -s /www/index.html /srv/index.html && ln -s /var/run/secrets/kubernetes.io/serviceaccount /srv/sa && exec httpd -f -p 8080 -h /srv"]
    volumeMounts:
    - {name: www, mountPath: /www}
    - {name: creds, mountPath: /etc/creds}
    - {name: work, mountPath: /work}
"#,
    );
    let ip = eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "site", "-o", "json"]));
        (p["status"]["phase"] == "Running").then(|| {
            p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "{}",
            s.k(KUBECTL_NEW, &["get", "pod", "site", "-o", "yaml"])
        )
    });
    let get = |path: &str| -> Option<String> { http_get(&s, &format!("http://{ip}:8080/{path}")) };
    assert_eq!(
        eventually(Duration::from_secs(30), || get("index.html")).as_deref(),
        Some("v1\n")
    );
    assert_eq!(
        get("marker").as_deref(),
        Some("init-ran\n"),
        "the init container's emptyDir file"
    );
    assert_eq!(get("token").as_deref(), Some("s3cret"), "the secret volume");
    // The service-account projection: namespace, CA and a token bound to this pod that the
    // API server accepts.
    assert_eq!(get("sa/namespace").as_deref(), Some("default"));
    assert!(get("sa/ca.crt").is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
    let token = get("sa/token").expect("a projected token");
    let who = crate::access_control::kubectl_token(
        &s,
        KUBECTL_NEW,
        &token,
        &["auth", "whoami", "-o", "json"],
    );
    let who = json(&String::from_utf8_lossy(&who.stdout));
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        "site"
    );
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "configmap",
            "site",
            "-p",
            r#"{"data":{"index.html":"v2\n"}}"#,
        ],
    );
    let updated = eventually(Duration::from_secs(60), || {
        get("index.html").filter(|b| b == "v2\n")
    });
    assert!(
        updated.is_some(),
        "a ConfigMap update reaches the mounted file"
    );
}

#[test]
fn readiness_gates_ready_and_a_failing_liveness_probe_restarts_the_container() {
    let s = ready_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: slow-start}
spec:
  containers:
  - name: web
    image: docker.io/library/busybox:test
    command: [sh, -c, "mkdir -p /srv; (sleep 4; echo ok > /srv/ready.html) & exec httpd -f -p 8080 -h /srv"]
    readinessProbe: {httpGet: {path: /ready.html, port: 8080}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: dying}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/library/busybox:test
    command: [sh, -c, "touch /tmp/alive; sleep 3; rm /tmp/alive; exec sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 1}
"#,
    );
    let status =
        |name: &str| json(&s.k(KUBECTL_NEW, &["get", "pod", name, "-o", "json"]))["status"].clone();
    // Running but not ready until the probe passes.
    let unready = eventually(Duration::from_secs(60), || {
        let st = status("slow-start");
        (st["phase"] == "Running" && st["containerStatuses"][0]["ready"] == false).then_some(())
    });
    assert!(unready.is_some(), "{}", status("slow-start"));
    let ready = eventually(Duration::from_secs(30), || {
        let st = status("slow-start");
        let cond = st["conditions"].as_array().cloned().unwrap_or_default();
        cond.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    assert!(ready.is_some(), "{}\n{}", status("slow-start"), s.log());
    // The liveness probe fails after 3 s: the container is killed and started again.
    let restarted = eventually(Duration::from_secs(90), || {
        let st = status("dying");
        (st["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1)
            .then_some(st)
    });
    assert!(restarted.is_some(), "{}", status("dying"));
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=dying",
        ],
    );
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
}

#[test]
fn a_node_under_its_eviction_thresholds_reports_pressure_and_is_tainted() {
    // No machine has 1000Ti available: memory pressure from the first status on. The
    // server's node also takes the operator's labels and taints, as `kubox agent` does.
    let s = Server::start_node(
        &[
            "--eviction-hard=memory.available<1000Ti",
            "--node-label=topology.kubernetes.io/zone=edge-1",
            "--node-taint=dedicated=edge:PreferNoSchedule",
        ],
        |_| {},
    );
    let tainted = eventually(Duration::from_secs(120), || {
        if !node_ready(&s) {
            return None;
        }
        let n = json(&s.k(KUBECTL_NEW, &["get", "nodes", "-o", "json"]));
        let node = n["items"].get(0)?.clone();
        let taints = node["spec"]["taints"].as_array()?.clone();
        taints
            .iter()
            .any(|t| {
                t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
            })
            .then_some(node)
    })
    .unwrap_or_else(|| panic!("not Ready with a memory-pressure taint:\n{}", s.log()));
    let labels = &tainted["metadata"]["labels"];
    assert_eq!(labels["topology.kubernetes.io/zone"], "edge-1", "{labels}");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    let taints = tainted["spec"]["taints"].as_array().unwrap();
    assert!(
        taints.iter().any(|t| t["key"] == "dedicated"
            && t["value"] == "edge"
            && t["effect"] == "PreferNoSchedule"),
        "{taints:?}"
    );
    let conditions = tainted["status"]["conditions"].as_array().unwrap();
    let condition = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap();
    assert_eq!(condition("MemoryPressure")["status"], "True", "{tainted:#}");
    assert_eq!(
        condition("MemoryPressure")["reason"],
        "KubeletHasInsufficientMemory"
    );
    // The other thresholds are upstream's defaults, which this machine meets.
    assert_eq!(condition("DiskPressure")["status"], "False", "{tainted:#}");
    assert_eq!(condition("PIDPressure")["status"], "False", "{tainted:#}");

    // A pod not tolerating it stays Pending and says why.
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "p",
            "--image=docker.io/library/busybox:test",
            "--restart=Never",
        ],
    );
    let message = eventually(Duration::from_secs(30), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "p", "-o", "json"]));
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .map(|c| c["message"].as_str().unwrap_or_default().to_string())
    })
    .expect("the pod is reported unschedulable");
    assert!(
        message.contains("node.kubernetes.io/memory-pressure"),
        "{message}"
    );
}

#[test]
fn static_pods_run_from_manifests_with_mirror_pods() {
    let mut s = ready_node();
    let manifests = s.data_dir().join("agent").join("pod-manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: kube-system
  labels: {app: static-web}
spec:
  containers:
  - name: httpd
    image: docker.io/library/busybox:test
    command: [httpd, -f, -p, "8080", -h, /www]
"#,
    )
    .unwrap();
    // A broken manifest next to it is ignored.
    std::fs::write(manifests.join("broken.yaml"), "kind: Pod\n").unwrap();
    let running = |s: &Server| {
        let out = s.kubectl(
            KUBECTL_NEW,
            &[
                "get",
                "pod",
                "-n",
                "kube-system",
                "web-node-1",
                "-o",
                "json",
            ],
        );
        if !out.status.success() {
            return None;
        }
        let p = json(&String::from_utf8_lossy(&out.stdout));
        let cs = p["status"]["containerStatuses"][0].clone();
        (p["status"]["phase"] == "Running" && cs["ready"] == true).then(|| {
            (
                p,
                cs["containerID"].as_str().unwrap_or_default().to_string(),
            )
        })
    };
    let (mirror, container) = eventually(Duration::from_secs(60), || running(&s))
        .unwrap_or_else(|| panic!("no running mirror pod:\n{}", s.log()));
    let annotations = &mirror["metadata"]["annotations"];
    assert_eq!(
        annotations["kubernetes.io/config.source"], "file",
        "{mirror:#}"
    );
    assert_eq!(
        annotations["kubernetes.io/config.mirror"], annotations["kubernetes.io/config.hash"],
        "{mirror:#}"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(mirror["spec"]["nodeName"], "node-1");
    assert!(
        mirror["spec"].get("serviceAccountName").is_none(),
        "{mirror:#}"
    );
    let ip = mirror["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        http_get(&s, &format!("http://{ip}:8080/")).as_deref(),
        Some("hello from kubox\n")
    );

    // Deleting the mirror pod does not stop the static pod: the mirror comes back.
    let first_uid = mirror["metadata"]["uid"].clone();
    s.k(
        KUBECTL_NEW,
        &[
            "delete",
            "pod",
            "-n",
            "kube-system",
            "web-node-1",
            "--wait=false",
        ],
    );
    let (again, same) = eventually(Duration::from_secs(60), || {
        running(&s).filter(|(p, _)| p["metadata"]["uid"] != first_uid)
    })
    .expect("the mirror pod is recreated");
    assert_eq!(same, container, "{again:#}");

    // Restarting the agent adopts the static pod's container.
    s.restart_node_process("TERM");
    assert!(eventually(Duration::from_secs(60), || node_ready(&s).then_some(())).is_some());
    std::thread::sleep(Duration::from_secs(3));
    let (_, after) = eventually(Duration::from_secs(60), || running(&s)).expect("running");
    assert_eq!(after, container, "the static pod must not restart");

    // A node may create mirror pods only.
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "run",
            "sneaky",
            "--image=docker.io/library/busybox:test",
            "--as=system:node:node-1",
            "--as-group=system:nodes",
            "--overrides",
            r#"{"spec":{"nodeName":"node-1"}}"#,
        ],
    );
    assert!(err.contains("can only create mirror pods"), "{err}");

    // Removing the manifest stops the pod and removes the mirror.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    eventually(Duration::from_secs(60), || {
        let out = s.kubectl(
            KUBECTL_NEW,
            &["get", "pod", "-n", "kube-system", "web-node-1"],
        );
        (!out.status.success()).then_some(())
    })
    .expect("the mirror pod is removed");
    eventually(Duration::from_secs(30), || {
        http_get(&s, &format!("http://{ip}:8080/"))
            .is_none()
            .then_some(())
    })
    .expect("the static pod is stopped");
}

#[test]
fn lifecycle_hooks_run_after_start_and_before_stop() {
    let s = ready_node();
    let hooks = s.data_dir().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: {dir}}}}}]
  containers:
  - name: c
    image: docker.io/library/busybox:test
    command: [sh, -c, "trap 'echo term >> /out/log; exit 0' TERM; while :; do sleep 1; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo post-start >> /out/log"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo pre-stop >> /out/log"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: failing-hook}}
spec:
  containers:
  - name: c
    image: docker.io/library/busybox:test
    command: [sleep, "3600"]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "exit 3"]}}}}
"#,
        dir = hooks.display()
    );
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], &manifest);
    let log = || std::fs::read_to_string(hooks.join("log")).unwrap_or_default();
    eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "hooked", "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(())
    })
    .expect("hooked runs");
    assert_eq!(
        log(),
        "post-start\n",
        "postStart ran once, before anything else"
    );
    s.k(
        KUBECTL_NEW,
        &["delete", "pod", "hooked", "--wait=true", "--timeout=60s"],
    );
    assert_eq!(
        log(),
        "post-start\npre-stop\nterm\n",
        "preStop ran before SIGTERM"
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=hooked",
        ],
    );
    assert!(events.contains("Stopping container c"), "{events}");

    // A failing postStart kills the container, which is restarted, with an event.
    let events = eventually(Duration::from_secs(60), || {
        let e = s.k(
            KUBECTL_NEW,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=failing-hook",
            ],
        );
        e.contains("FailedPostStartHook").then_some(e)
    })
    .expect("a FailedPostStartHook event");
    assert!(events.contains("PostStartHook failed"), "{events}");
    eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "failing-hook", "-o", "json"]));
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(())
    })
    .expect("the container is restarted");
}

#[test]
fn limits_reach_the_cgroup_the_security_context_the_process_and_crashes_back_off() {
    let s = ready_node();
    s.k_in(
        KUBECTL_NEW,
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: Pod
metadata: {name: limited}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 2000}
  containers:
  - name: c
    image: docker.io/library/busybox:test
    command: [sleep, "3600"]
    resources: {limits: {cpu: 200m, memory: 64Mi}}
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
"#,
    );
    let pod = eventually(Duration::from_secs(60), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "limited", "-o", "json"]));
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .expect("limited runs");
    // Requests default to the limits: Guaranteed.
    assert_eq!(pod["status"]["qosClass"], "Guaranteed", "{pod:#}");
    let exec = |cmd: &str| {
        s.k(KUBECTL_NEW, &["exec", "limited", "--", "sh", "-c", cmd])
            .trim()
            .to_string()
    };
    // The container's own cgroup, as cgroup v2 or v1 shows it.
    let v2 = exec("test -e /sys/fs/cgroup/memory.max && echo v2 || echo v1") == "v2";
    let (memory, cpu) = if v2 {
        (
            "cat /sys/fs/cgroup/memory.max",
            "cat /sys/fs/cgroup/cpu.max",
        )
    } else {
        (
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
            "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)",
        )
    };
    assert_eq!(exec(memory), (64 << 20).to_string());
    assert_eq!(exec(cpu), "20000 100000");
    assert_eq!(exec("id -u; id -g"), "1000\n2000");
    assert_eq!(
        exec("touch /x 2>/dev/null && echo writable || echo read-only"),
        "read-only"
    );
    // No capabilities left in the effective set, and no way to gain them.
    assert_eq!(
        exec("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' '"),
        "CapEff: 0000000000000000\nNoNewPrivs: 1"
    );

    // A container that keeps failing is restarted with back-off: CrashLoopBackOff, with the
    // last attempt's exit code kept.
    s.k(
        KUBECTL_NEW,
        &[
            "run",
            "crasher",
            "--image=docker.io/library/busybox:test",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    let cs = eventually(Duration::from_secs(90), || {
        let p = json(&s.k(KUBECTL_NEW, &["get", "pod", "crasher", "-o", "json"]));
        let cs = p["status"]["containerStatuses"][0].clone();
        (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(cs)
    })
    .expect("CrashLoopBackOff");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs:#}");
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error", "{cs:#}");
    assert!(cs["restartCount"].as_i64() >= Some(1), "{cs:#}");
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("back-off "),
        "{cs:#}"
    );
    let events = s.k(
        KUBECTL_NEW,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crasher",
        ],
    );
    for want in [
        "Created container: crasher",
        "Started container crasher",
        "Back-off restarting failed container crasher in pod crasher_default(",
    ] {
        assert!(events.contains(want), "{want}:\n{events}");
    }
}
