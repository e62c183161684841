//! What objects count against ResourceQuota names (`pods`, `requests.cpu`,
//! `count/deployments.apps`, ...), shared by the quota admission and the quota controller.

use crate::quantity::parse_milli;
use serde_json::Value;
use std::collections::BTreeMap;

/// A quantity (string, or a bare number) in milli-units.
pub fn milli(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_milli(s),
        Value::Number(n) => n.as_i64().map(|i| i128::from(i) * 1000),
        _ => None,
    }
}

/// What `obj` (a `group`/`plural` object) counts against quota names, in milli-units.
pub fn usage(group: &str, plural: &str, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let qualified = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    u.insert(format!("count/{qualified}"), 1000);
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "secrets"
                | "configmaps"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        u.insert(plural.to_string(), 1000);
    }
    match (group, plural) {
        ("", "pods") => {
            let phase = obj["status"]["phase"].as_str().unwrap_or_default();
            if matches!(phase, "Succeeded" | "Failed") {
                return BTreeMap::new();
            }
            for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
                for group in ["containers", "initContainers"] {
                    for c in obj["spec"][group].as_array().into_iter().flatten() {
                        for (k, v) in c["resources"][field].as_object().into_iter().flatten() {
                            let m = milli(v).unwrap_or(0);
                            // Init containers run one at a time: their largest counts.
                            let e = u.entry(format!("{prefix}{k}")).or_insert(0);
                            if group == "containers" {
                                *e += m;
                            } else {
                                *e = (*e).max(m);
                            }
                            if field == "requests" && matches!(k.as_str(), "cpu" | "memory") {
                                let e = u.entry(k.clone()).or_insert(0);
                                if group == "containers" {
                                    *e += m;
                                } else {
                                    *e = (*e).max(m);
                                }
                            }
                        }
                    }
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(m) = milli(&obj["spec"]["resources"]["requests"]["storage"]) {
                u.insert("requests.storage".into(), m);
            }
        }
        ("", "services") => {
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
            match obj["spec"]["type"].as_str() {
                Some("NodePort") => {
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                Some("LoadBalancer") => {
                    u.insert("services.loadbalancers".into(), 1000);
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                _ => {}
            }
        }
        _ => {}
    }
    u
}

/// Formats milli-units as a quantity (`2`, `500m`).
pub fn format_milli(m: i128) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_count_requests_limits_and_the_largest_init_container() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "500m"}}}]}});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 2000, "the init container's 2 beats 750m");
        assert_eq!(u["cpu"], 2000);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(format_milli(750), "750m");
        assert_eq!(format_milli(2000), "2");
        let done = json!({"status": {"phase": "Succeeded"}, "spec": pod["spec"]});
        assert!(usage("", "pods", &done).is_empty());
        let d = usage("apps", "deployments", &json!({}));
        assert_eq!(d["count/deployments.apps"], 1000);
    }
}
