//! core/v1 (non-workload) and discovery.k8s.io defaults.

use super::{each_obj, ensure_obj, is_unset, obj_at, set_default, spec};
use serde_json::{Map, Value, json};

pub(crate) fn service(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "sessionAffinity", json!("None"));
    if s.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        let cfg = ensure_obj(s, "sessionAffinityConfig");
        let cip = ensure_obj(cfg, "clientIP");
        set_default(cip, "timeoutSeconds", json!(10800));
    }
    set_default(s, "type", json!("ClusterIP"));
    let ty = s
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for p in each_obj(s, "ports") {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(t)) => t.is_empty(),
            Some(_) => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(s, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(s, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        set_default(s, "internalTrafficPolicy", json!("Cluster"));
        let headless = s.get("clusterIP").and_then(Value::as_str) == Some("None");
        let selectorless = is_unset(s, "selector");
        if headless && selectorless {
            set_default(s, "ipFamilyPolicy", json!("RequireDualStack"));
        } else {
            set_default(s, "ipFamilyPolicy", json!("SingleStack"));
        }
        if is_unset(s, "ipFamilies") {
            let dual = s.get("ipFamilyPolicy").and_then(Value::as_str) == Some("RequireDualStack");
            let fams = if dual {
                json!(["IPv4", "IPv6"])
            } else {
                json!(["IPv4"])
            };
            s.insert("ipFamilies".into(), fams);
        }
    }
}

/// Namespace: finalizer `kubernetes`, phase Active and the immutable name label.
pub(crate) fn namespace(obj: &mut Value) {
    let name = crate::meta::name(obj).map(String::from);
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if let Some(name) = name {
        let meta = ensure_obj(root, "metadata");
        let labels = ensure_obj(meta, "labels");
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    let s = ensure_obj(root, "spec");
    set_default(s, "finalizers", json!(["kubernetes"]));
    set_default(ensure_obj(root, "status"), "phase", json!("Active"));
}

pub(crate) fn secret(obj: &mut Value) {
    if let Some(root) = obj.as_object_mut()
        && is_unset(root, "type")
    {
        root.insert("type".into(), json!("Opaque"));
    }
}

pub(crate) fn persistent_volume(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let s = ensure_obj(root, "spec");
    set_default(s, "persistentVolumeReclaimPolicy", json!("Retain"));
    set_default(s, "volumeMode", json!("Filesystem"));
    if let Some(h) = obj_at(s, "hostPath") {
        set_default(h, "type", json!(""));
    }
    set_default(ensure_obj(root, "status"), "phase", json!("Pending"));
}

pub(crate) fn persistent_volume_claim(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    set_default(ensure_obj(root, "spec"), "volumeMode", json!("Filesystem"));
    set_default(ensure_obj(root, "status"), "phase", json!("Pending"));
}

/// Node: allocatable defaults to capacity.
pub(crate) fn node(obj: &mut Value) {
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    if is_unset(status, "allocatable")
        && let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned()
    {
        status.insert("allocatable".into(), cap);
    }
}

fn port_protocols(ports: &mut Map<String, Value>) {
    for p in each_obj(ports, "ports") {
        set_default(p, "protocol", json!("TCP"));
    }
}

pub(crate) fn endpoints(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    for subset in each_obj(root, "subsets") {
        port_protocols(subset);
    }
}

pub(crate) fn endpoint_slice(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    for p in each_obj(root, "ports") {
        set_default(p, "name", json!(""));
        set_default(p, "protocol", json!("TCP"));
    }
}

/// LimitRange Container items: default = max, defaultRequest = default or min.
pub(crate) fn limit_range(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    for item in each_obj(s, "limits") {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let get = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_object).cloned();
        let max = get(item, "max").unwrap_or_default();
        let min = get(item, "min").unwrap_or_default();
        let default = ensure_obj(item, "default");
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        let default = default.clone();
        let req = ensure_obj(item, "defaultRequest");
        for (k, v) in default.into_iter().chain(min) {
            req.entry(k).or_insert(v);
        }
        for key in ["default", "defaultRequest"] {
            if is_unset(item, key) {
                item.remove(key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::defaults::apply_defaults;
    use serde_json::json;

    #[test]
    fn cluster_ip_service_gets_policies_families_and_target_port() {
        let mut s = json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}});
        apply_defaults("", "v1", "Service", &mut s);
        let sp = &s["spec"];
        assert_eq!(sp["type"], "ClusterIP");
        assert_eq!(sp["sessionAffinity"], "None");
        assert_eq!(sp["internalTrafficPolicy"], "Cluster");
        assert_eq!(sp["ipFamilyPolicy"], "SingleStack");
        assert_eq!(sp["ipFamilies"], json!(["IPv4"]));
        assert_eq!(sp["ports"][0]["protocol"], "TCP");
        assert_eq!(sp["ports"][0]["targetPort"], 80);
        assert_eq!(sp["ports"][1]["targetPort"], "https");
        assert!(sp.get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn node_port_and_load_balancer_services_get_external_policy() {
        let mut s = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        apply_defaults("", "v1", "Service", &mut s);
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["allocateLoadBalancerNodePorts"], true);
    }

    #[test]
    fn external_name_services_get_no_ip_families() {
        let mut s = json!({"spec": {"type": "ExternalName", "externalName": "x.example.com"}});
        apply_defaults("", "v1", "Service", &mut s);
        assert!(s["spec"].get("ipFamilies").is_none());
        assert!(s["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn client_ip_affinity_gets_timeout() {
        let mut s = json!({"spec": {"sessionAffinity": "ClientIP"}});
        apply_defaults("", "v1", "Service", &mut s);
        assert_eq!(
            s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }

    #[test]
    fn namespace_gets_finalizer_phase_and_name_label() {
        let mut n =
            json!({"metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "x"}}});
        apply_defaults("", "v1", "Namespace", &mut n);
        assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(n["status"]["phase"], "Active");
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "dev"
        );
    }

    #[test]
    fn secret_type_defaults_to_opaque() {
        let mut s = json!({"data": {}});
        apply_defaults("", "v1", "Secret", &mut s);
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn volumes_and_claims_get_filesystem_mode_and_pending_phase() {
        let mut pv = json!({"spec": {"hostPath": {"path": "/x"}}});
        apply_defaults("", "v1", "PersistentVolume", &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["hostPath"]["type"], "");
        assert_eq!(pv["status"]["phase"], "Pending");
        let mut pvc = json!({"spec": {}});
        apply_defaults("", "v1", "PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
    }

    #[test]
    fn endpoint_ports_default_to_tcp() {
        let mut e = json!({"subsets": [{"ports": [{"port": 80}]}]});
        apply_defaults("", "v1", "Endpoints", &mut e);
        assert_eq!(e["subsets"][0]["ports"][0]["protocol"], "TCP");
        let mut s = json!({"ports": [{"port": 80}]});
        apply_defaults("discovery.k8s.io", "v1", "EndpointSlice", &mut s);
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
    }

    #[test]
    fn node_allocatable_defaults_to_capacity() {
        let mut n = json!({"status": {"capacity": {"cpu": "2"}}});
        apply_defaults("", "v1", "Node", &mut n);
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "2"}));
    }

    #[test]
    fn limit_range_defaults_follow_max_and_min() {
        let mut l = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}});
        apply_defaults("", "v1", "LimitRange", &mut l);
        let item = &l["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "1Mi"}));
    }
}
