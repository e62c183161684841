//! Pod, PodSpec, container, probe and volume defaults (upstream `core/v1/defaults.go`).

use super::{each_obj, ensure_obj, is_unset, obj_at, set_default};
use serde_json::{Map, Value, json};

/// Defaults of a Pod object: PodSpec defaults plus the Pod-only ones (enableServiceLinks,
/// requests from limits). `priority` and `preemptionPolicy` are set by the Priority admission
/// plugin, from the pod's PriorityClass.
pub(crate) fn pod_defaults(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = ensure_obj(root, "spec");
    pod_spec_defaults(spec);
    set_default(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers"] {
        for c in each_obj(spec, key) {
            requests_from_limits(c);
        }
    }
}

/// Defaults of a PodTemplateSpec (`template` of workloads): PodSpec defaults only.
pub fn pod_template_defaults(template: Option<&mut Value>) {
    let Some(t) = template.and_then(Value::as_object_mut) else {
        return;
    };
    pod_spec_defaults(ensure_obj(t, "spec"));
}

/// Upstream's SetDefaults_PodSpec plus the nested container/volume defaults.
pub fn pod_spec_defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each_obj(spec, key) {
            container_defaults(c, host_network);
        }
    }
    for v in each_obj(spec, "volumes") {
        volume_defaults(v);
    }
}

fn container_defaults(c: &mut Map<String, Value>, host_network: bool) {
    if is_unset(c, "imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(pull_policy_for(image)));
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    for p in each_obj(c, "ports") {
        set_default(p, "protocol", json!("TCP"));
        if host_network && let Some(cp) = p.get("containerPort").cloned() {
            set_default(p, "hostPort", cp);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_at(c, probe) {
            probe_defaults(p);
        }
    }
    if let Some(l) = obj_at(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_at(l, hook) {
                handler_defaults(h);
            }
        }
    }
    for e in each_obj(c, "env") {
        if let Some(vf) = obj_at(e, "valueFrom")
            && let Some(fr) = obj_at(vf, "fieldRef")
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
}

/// `Always` for `:latest` or untagged images (digests excluded), `IfNotPresent` otherwise.
pub(crate) fn pull_policy_for(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry port is before a '/').
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn probe_defaults(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    handler_defaults(p);
}

fn handler_defaults(h: &mut Map<String, Value>) {
    if let Some(g) = obj_at(h, "httpGet") {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
}

fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(res) = obj_at(c, "resources") else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = ensure_obj(res, "requests");
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn items_field_refs(m: &mut Map<String, Value>) {
    for item in each_obj(m, "items") {
        if let Some(fr) = obj_at(item, "fieldRef") {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
}

/// Upstream's SetDefaults_Volume and the per-source defaults.
fn volume_defaults(v: &mut Map<String, Value>) {
    let has_source = v.keys().any(|k| k != "name");
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = obj_at(v, src) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    if let Some(d) = obj_at(v, "downwardAPI") {
        items_field_refs(d);
    }
    if let Some(h) = obj_at(v, "hostPath") {
        set_default(h, "type", json!(""));
    }
    if let Some(i) = obj_at(v, "iscsi") {
        set_default(i, "iscsiInterface", json!("default"));
    }
    if let Some(p) = obj_at(v, "projected") {
        for s in each_obj(p, "sources") {
            if let Some(d) = obj_at(s, "downwardAPI") {
                items_field_refs(d);
            }
            if let Some(t) = obj_at(s, "serviceAccountToken") {
                set_default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(e) = obj_at(v, "ephemeral")
        && let Some(t) = obj_at(e, "volumeClaimTemplate")
        && let Some(s) = obj_at(t, "spec")
    {
        set_default(s, "volumeMode", json!("Filesystem"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::defaults::apply_defaults;

    #[test]
    fn pull_policy_is_always_for_latest_or_untagged_images() {
        assert_eq!(pull_policy_for("nginx"), "Always");
        assert_eq!(pull_policy_for("nginx:latest"), "Always");
        assert_eq!(pull_policy_for("localhost:5000/nginx"), "Always");
        assert_eq!(pull_policy_for("nginx:1.25"), "IfNotPresent");
        assert_eq!(pull_policy_for("localhost:5000/nginx:1.2"), "IfNotPresent");
        assert_eq!(pull_policy_for("nginx@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn pod_gets_upstream_spec_and_container_defaults() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{
            "name": "c", "image": "nginx:1.25",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "livenessProbe": {"httpGet": {"port": 80}},
        }]}});
        apply_defaults("", "v1", "Pod", &mut p);
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        for by_admission in ["priority", "preemptionPolicy"] {
            assert!(
                s.get(by_admission).is_none(),
                "set by admission, from the PriorityClass"
            );
        }
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let probe = &c["livenessProbe"];
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(probe["httpGet"]["path"], "/");
    }

    #[test]
    fn pod_defaults_keep_user_values() {
        let mut p = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}});
        apply_defaults("", "v1", "Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn pod_requests_default_to_limits() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}]}});
        apply_defaults("", "v1", "Pod", &mut p);
        let r = &p["spec"]["containers"][0]["resources"]["requests"];
        assert_eq!(r["cpu"], "1");
        assert_eq!(r["memory"], "1Gi");
    }

    #[test]
    fn volumes_get_default_modes_and_empty_dir() {
        let mut p = json!({"spec": {"containers": [], "volumes": [
            {"name": "a"}, {"name": "b", "configMap": {"name": "cm"}}, {"name": "c", "secret": {"secretName": "s"}}
        ]}});
        apply_defaults("", "v1", "Pod", &mut p);
        let v = &p["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"], json!({}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn host_network_pods_default_host_ports() {
        let mut p = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 53}]}]}});
        apply_defaults("", "v1", "Pod", &mut p);
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["hostPort"], 53);
    }

    #[test]
    fn pod_templates_do_not_get_pod_only_defaults() {
        let mut t = json!({"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}});
        apply_defaults("", "v1", "PodTemplate", &mut t);
        assert_eq!(t["template"]["spec"]["restartPolicy"], "Always");
        assert!(t["template"]["spec"].get("enableServiceLinks").is_none());
        assert!(t["template"]["spec"].get("priority").is_none());
    }
}
