//! kubectl 1.27 and 1.33 against the real server: discovery, CRUD, apply, patches, explain,
//! tables, selectors, paging, conflicts and server-side apply.
use crate::common::{KUBECTL_NEW, KUBECTL_OLD, Server};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

const VERSIONS: [&str; 2] = [KUBECTL_OLD, KUBECTL_NEW];

#[test]
fn bootstrap_namespaces_and_kubernetes_service_exist() {
    let s = Server::start();
    let out = s.k(KUBECTL_NEW, &["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(&format!("namespace/{ns}")), "{out}");
    }
    let svc = json(&s.k(KUBECTL_NEW, &["get", "service", "kubernetes", "-o", "json"]));
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    let ep = json(&s.k(
        KUBECTL_NEW,
        &["get", "endpoints", "kubernetes", "-o", "json"],
    ));
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], s.port);
    let slice = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "endpointslices.discovery.k8s.io",
            "kubernetes",
            "-o",
            "json",
        ],
    ));
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
}

#[test]
fn api_resources_lists_builtin_kinds_on_both_kubectl_versions() {
    let s = Server::start();
    for v in VERSIONS {
        let out = s.k(v, &["api-resources"]);
        for want in [
            "deployments",
            "pods",
            "customresourcedefinitions",
            "leases",
            "endpointslices",
            "cronjobs",
        ] {
            assert!(
                out.contains(want),
                "kubectl {v} api-resources lacks {want}:\n{out}"
            );
        }
        let out = s.k(v, &["api-versions"]);
        assert!(
            out.contains("apps/v1")
                && out.contains("autoscaling/v2")
                && out.contains("events.k8s.io/v1"),
            "{out}"
        );
    }
}

#[test]
fn configmap_crud_with_kubectl() {
    let s = Server::start();
    for v in VERSIONS {
        let name = format!("cm-{}", v.replace('.', "-"));
        s.k(v, &["create", "configmap", &name, "--from-literal=a=1"]);
        // kubectl strips managedFields from -o json/yaml unless asked to show them.
        let cm = json(&s.k(
            v,
            &[
                "get",
                "configmap",
                &name,
                "-o",
                "json",
                "--show-managed-fields",
            ],
        ));
        assert_eq!(cm["data"]["a"], "1");
        assert!(
            cm["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty())
        );
        assert!(cm["metadata"]["creationTimestamp"].is_string());
        assert!(cm["metadata"]["managedFields"].is_array(), "{cm}");
        let err = s.k_err(v, &["create", "configmap", &name, "--from-literal=a=1"]);
        assert!(
            err.contains("AlreadyExists") || err.contains("already exists"),
            "{err}"
        );
        s.k(v, &["label", "configmap", &name, "tier=web"]);
        let out = s.k(v, &["get", "configmaps", "-l", "tier=web", "-o", "name"]);
        assert!(out.contains(&format!("configmap/{name}")), "{out}");
        let out = s.k(
            v,
            &["get", "configmaps", "-l", "tier notin (web)", "-o", "name"],
        );
        assert!(!out.contains(&name), "{out}");
        s.k(v, &["delete", "configmap", &name]);
        let err = s.k_err(v, &["get", "configmap", &name]);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{err}"
        );
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: docker.io/library/busybox:test
        ports:
        - containerPort: 80
"#;

#[test]
fn apply_twice_reports_created_unchanged_configured() {
    let s = Server::start();
    for v in VERSIONS {
        let ns = format!("apply-{}", v.replace('.', "-"));
        s.k(v, &["create", "namespace", &ns]);
        let out = s.k_in(v, &["apply", "-n", &ns, "-f", "-"], DEPLOYMENT);
        assert!(out.contains("deployment.apps/web created"), "{out}");
        let out = s.k_in(v, &["apply", "-n", &ns, "-f", "-"], DEPLOYMENT);
        assert!(out.contains("deployment.apps/web unchanged"), "{out}");
        let changed = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
        let out = s.k_in(v, &["apply", "-n", &ns, "-f", "-"], &changed);
        assert!(out.contains("deployment.apps/web configured"), "{out}");
        let d = json(&s.k(v, &["get", "-n", &ns, "deployment", "web", "-o", "json"]));
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["metadata"]["generation"], 2);
        // Server-side defaults, as upstream sets them.
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(
            d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string()
        );
    }
}

#[test]
fn explain_deployment_strategy_works_on_both_versions() {
    let s = Server::start();
    for v in VERSIONS {
        let out = s.k(v, &["explain", "deployment.spec.strategy"]);
        assert!(out.contains("rollingUpdate"), "kubectl {v} explain:\n{out}");
        assert!(
            out.contains("DeploymentStrategy") || out.contains("strategy"),
            "{out}"
        );
    }
}

#[test]
fn strict_field_validation_reports_unknown_fields() {
    let s = Server::start();
    let bad = DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  replicass: 3");
    for v in VERSIONS {
        let out = s.kubectl_stdin(v, &["create", "-f", "-"], &bad);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown field") && err.contains("replicass"),
            "kubectl {v}: {err}"
        );
    }
    // Warn (the server's default): accepted, with a warning kubectl prints.
    for v in VERSIONS {
        let bad = bad.replace("name: web", &format!("name: web-{}", v.replace('.', "-")));
        let out = s.kubectl_stdin(v, &["create", "--validate=warn", "-f", "-"], &bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {v}: {err}");
        assert!(
            err.contains("Warning: unknown field \"spec.replicass\""),
            "kubectl {v}: {err}"
        );
    }
}

#[test]
fn invalid_objects_get_422_with_field_causes() {
    let s = Server::start();
    let bad = DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: other}");
    let out = s.kubectl_stdin(KUBECTL_NEW, &["create", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is invalid") && err.contains("selector"),
        "{err}"
    );
    let err = s.k_err(KUBECTL_NEW, &["create", "configmap", "Bad_Name"]);
    assert!(
        err.contains("Invalid value") && err.contains("metadata.name"),
        "{err}"
    );
}

#[test]
fn patches_of_every_kind() {
    let s = Server::start();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], DEPLOYMENT);
    // Strategic merge: containers merge by name.
    s.k(KUBECTL_NEW, &["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:2"}]}}}}"#]);
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Upstream puts items the patch adds before the live ones (the patch's order first, see
    // the "kubectl patch" task in the Kubernetes docs).
    assert_eq!(names, vec!["side", "web"]);
    // JSON merge patch replaces the list.
    s.k(KUBECTL_NEW, &["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"only","image":"busybox:3"}]}}}}"#]);
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // JSON patch.
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
        ],
    );
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 5);
    // A failing JSON patch test op is refused and changes nothing.
    let err = s.k_err(
        KUBECTL_NEW,
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
        ],
    );
    assert!(!err.is_empty());
    // Scale subresource.
    s.k(KUBECTL_OLD, &["scale", "deployment", "web", "--replicas=7"]);
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 7);
}

/// `kind/name` with its managedFields (kubectl strips them unless asked).
fn with_managed_fields(s: &Server, kind: &str, name: &str) -> Value {
    json(&s.k(
        KUBECTL_NEW,
        &["get", kind, name, "-o", "json", "--show-managed-fields"],
    ))
}

/// The managedFields entries of `obj` that `keep` selects.
fn entries(obj: &Value, keep: impl Fn(&&Value) -> bool) -> Vec<&Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter(keep).collect())
        .unwrap_or_default()
}

#[test]
fn server_side_apply_conflicts_unless_forced() {
    let s = Server::start();
    let out = s.k_in(
        KUBECTL_NEW,
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        DEPLOYMENT,
    );
    assert!(out.contains("serverside-applied"), "{out}");
    // An apply that creates records its Apply entry only: the same manager applying a
    // changed value next must not conflict with itself.
    let d = with_managed_fields(&s, "deployment", "web");
    let alice: Vec<&Value> = entries(&d, |m| m["manager"] == "alice");
    assert_eq!(alice.len(), 1, "{alice:#?}");
    assert_eq!(alice[0]["operation"], "Apply");
    let mine = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    s.k_in(
        KUBECTL_NEW,
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        &mine,
    );
    let changed = DEPLOYMENT.replace("replicas: 2", "replicas: 4");
    let out = s.kubectl_stdin(
        KUBECTL_NEW,
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        &changed,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflict") && err.contains("alice") && err.contains(".spec.replicas"),
        "{err}"
    );
    s.k_in(
        KUBECTL_NEW,
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &changed,
    );
    let d = with_managed_fields(&s, "deployment", "web");
    assert_eq!(d["spec"]["replicas"], 4);
    let managers: Vec<&str> = entries(&d, |_| true)
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"bob"), "{managers:?}");

    // A write through the status subresource gets its own entry, tagged with it; the
    // controller's status writes are recorded under its own name.
    s.k(
        KUBECTL_NEW,
        &["create", "service", "clusterip", "st", "--tcp=80:80"],
    );
    s.k(
        KUBECTL_NEW,
        &[
            "patch",
            "service",
            "st",
            "--subresource=status",
            "--type=merge",
            "--field-manager=carol",
            "-p",
            r#"{"status":{"conditions":[{"type":"Probed","status":"True","reason":"Tested","message":"","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#,
        ],
    );
    let d = with_managed_fields(&s, "service", "st");
    let carol: Vec<&Value> = entries(&d, |m| m["manager"] == "carol");
    assert_eq!(carol.len(), 1, "{d:#}");
    assert_eq!(carol[0]["subresource"], "status", "{d:#}");
    assert_eq!(carol[0]["operation"], "Update", "{d:#}");
    assert!(
        carol[0]["fieldsV1"]["f:status"]
            .get("f:conditions")
            .is_some(),
        "{d:#}"
    );
    let d = with_managed_fields(&s, "deployment", "web");
    let status_writers: Vec<&Value> = entries(&d, |m| m["subresource"] == "status");
    assert!(
        status_writers
            .iter()
            .all(|m| m["manager"] == "kube-controller-manager"),
        "{d:#}"
    );
}

#[test]
fn tables_have_upstream_columns() {
    let s = Server::start();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], DEPLOYMENT);
    for v in VERSIONS {
        let out = s.k(v, &["get", "deployments"]);
        let header = out.lines().next().unwrap_or_default();
        for col in ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] {
            assert!(header.contains(col), "kubectl {v}: {out}");
        }
        let out = s.k(v, &["get", "services", "-o", "wide"]);
        let header = out.lines().next().unwrap_or_default();
        for col in ["TYPE", "CLUSTER-IP", "PORT(S)", "SELECTOR"] {
            assert!(header.contains(col), "kubectl {v}: {out}");
        }
        assert!(out.contains("443/TCP"), "{out}");
    }
}

#[test]
fn paging_with_chunk_size_returns_everything() {
    let s = Server::start();
    for i in 0..25 {
        s.k(
            KUBECTL_NEW,
            &["create", "configmap", &format!("page-{i:02}")],
        );
    }
    for v in VERSIONS {
        let out = s.k(v, &["get", "configmaps", "--chunk-size=7", "-o", "name"]);
        let n = out
            .lines()
            .filter(|l| l.starts_with("configmap/page-"))
            .count();
        assert_eq!(n, 25, "kubectl {v}: {out}");
    }
    let raw = json(&s.k(
        KUBECTL_NEW,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?limit=10",
        ],
    ));
    assert_eq!(raw["items"].as_array().unwrap().len(), 10);
    assert!(
        raw["metadata"]["continue"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    let all = json(&s.k(
        KUBECTL_NEW,
        &["get", "--raw", "/api/v1/namespaces/default/configmaps"],
    ));
    let total = all["items"].as_array().unwrap().len();
    assert!(total >= 25);
    assert_eq!(raw["metadata"]["remainingItemCount"], total - 10);
}

#[test]
fn services_get_cluster_ips_and_conflicts_are_refused() {
    let s = Server::start();
    s.k(
        KUBECTL_NEW,
        &["create", "service", "clusterip", "a", "--tcp=80:8080"],
    );
    let a = json(&s.k(KUBECTL_NEW, &["get", "svc", "a", "-o", "json"]));
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.43."), "{ip}");
    assert_ne!(ip, "10.43.0.1");
    assert_ne!(ip, "10.43.0.10");
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: b}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
    );
    let out = s.kubectl_stdin(KUBECTL_NEW, &["create", "-f", "-"], &svc);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already allocated"),
        "{err}"
    );
    let dns = "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec:\n  clusterIP: 10.43.0.10\n  ports: [{port: 53}]\n";
    let out = s.kubectl_stdin(KUBECTL_NEW, &["create", "-f", "-"], dns);
    assert!(
        !out.status.success(),
        "the cluster DNS IP must be reserved for kube-system/kube-dns"
    );
    s.k(
        KUBECTL_NEW,
        &["create", "service", "nodeport", "np", "--tcp=80:8080"],
    );
    let np = json(&s.k(KUBECTL_NEW, &["get", "svc", "np", "-o", "json"]));
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
}

#[test]
fn stale_resource_version_update_is_rejected_with_409() {
    let s = Server::start();
    s.k(
        KUBECTL_NEW,
        &["create", "configmap", "cc", "--from-literal=a=1"],
    );
    let mut cm = json(&s.k(KUBECTL_NEW, &["get", "configmap", "cc", "-o", "json"]));
    s.k(KUBECTL_NEW, &["label", "configmap", "cc", "x=y"]);
    cm["data"]["a"] = "2".into();
    let out = s.kubectl_stdin(KUBECTL_NEW, &["replace", "-f", "-"], &cm.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the object has been modified"),
        "{err}"
    );
}

#[test]
fn namespaces_missing_or_terminating_refuse_creates() {
    let s = Server::start();
    let err = s.k_err(KUBECTL_NEW, &["create", "configmap", "x", "-n", "nope"]);
    assert!(err.contains("not found"), "{err}");
    s.k(KUBECTL_NEW, &["create", "namespace", "gone"]);
    s.k(KUBECTL_NEW, &["create", "configmap", "x", "-n", "gone"]);
    s.k(
        KUBECTL_NEW,
        &[
            "delete",
            "namespace",
            "gone",
            "--wait=true",
            "--timeout=30s",
        ],
    );
    let err = s.k_err(KUBECTL_NEW, &["get", "namespace", "gone"]);
    assert!(err.contains("not found"), "{err}");
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, default: blue}
          status:
            type: object
            properties:
              ready: {type: boolean}
"#;

#[test]
fn crds_are_served_validated_pruned_and_printed() {
    let s = Server::start();
    s.k_in(KUBECTL_NEW, &["apply", "-f", "-"], CRD);
    s.k(
        KUBECTL_NEW,
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=30s",
        ],
    );
    for v in VERSIONS {
        let name = format!("w-{}", v.replace('.', "-"));
        let w = format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {{size: 3, junk: 1}}\n"
        );
        s.k_in(v, &["apply", "--validate=false", "-f", "-"], &w);
        let obj = json(&s.k(v, &["get", "wd", &name, "-o", "json"]));
        assert_eq!(obj["spec"]["size"], 3);
        assert_eq!(obj["spec"]["color"], "blue", "defaulted");
        assert!(obj["spec"].get("junk").is_none(), "pruned: {obj}");
        let out = s.k(v, &["get", "widgets"]);
        assert!(
            out.lines().next().unwrap_or_default().contains("SIZE"),
            "{out}"
        );
    }
    let bad = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 0}\n";
    let out = s.kubectl_stdin(KUBECTL_NEW, &["create", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("spec.size"), "{err}");
    s.k(KUBECTL_NEW, &["delete", "crd", "widgets.example.com"]);
    let gone = crate::common::eventually(std::time::Duration::from_secs(20), || {
        let out = s.kubectl(
            KUBECTL_NEW,
            &[
                "get",
                "--raw",
                "/apis/example.com/v1/namespaces/default/widgets",
            ],
        );
        (!out.status.success()).then_some(())
    });
    assert!(
        gone.is_some(),
        "CRD resources must disappear after the CRD is deleted"
    );
}
