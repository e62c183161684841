//! Defaults of networking, storage, scheduling, autoscaling and admissionregistration types.

use super::{each_obj, ensure_obj, is_unset, obj_at, set_default, spec};
use serde_json::{Map, Value, json};

/// autoscaling HPA: minReplicas 1; v2 also the default CPU metric and behavior rules.
pub(crate) fn hpa(version: &str, obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "minReplicas", json!(1));
    if version == "v1" {
        return;
    }
    if is_unset(s, "metrics") {
        s.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    if let Some(b) = obj_at(s, "behavior") {
        scaling_rules(
            ensure_obj(b, "scaleUp"),
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
        scaling_rules(
            ensure_obj(b, "scaleDown"),
            300,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn scaling_rules(r: &mut Map<String, Value>, window: i64, policies: Value) {
    set_default(r, "stabilizationWindowSeconds", json!(window));
    set_default(r, "selectPolicy", json!("Max"));
    if is_unset(r, "policies") {
        r.insert("policies".into(), policies);
    }
}

/// NetworkPolicy: policyTypes from the rules present; rule ports default to TCP.
pub(crate) fn network_policy(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    for dir in ["ingress", "egress"] {
        for rule in each_obj(s, dir) {
            for p in each_obj(rule, "ports") {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
    if is_unset(s, "policyTypes") {
        let mut types = vec![json!("Ingress")];
        if !is_unset(s, "egress") {
            types.push(json!("Egress"));
        }
        s.insert("policyTypes".into(), Value::Array(types));
    }
}

pub(crate) fn storage_class(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    set_default(root, "reclaimPolicy", json!("Delete"));
    set_default(root, "volumeBindingMode", json!("Immediate"));
}

pub(crate) fn csi_driver(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "attachRequired", json!(true));
    set_default(s, "podInfoOnMount", json!(false));
    set_default(s, "storageCapacity", json!(false));
    set_default(s, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    set_default(s, "requiresRepublish", json!(false));
    set_default(s, "seLinuxMount", json!(false));
    set_default(s, "volumeLifecycleModes", json!(["Persistent"]));
}

pub(crate) fn priority_class(obj: &mut Value) {
    if let Some(root) = obj.as_object_mut() {
        set_default(root, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

fn rules_scope(m: &mut Map<String, Value>) {
    for r in each_obj(m, "rules") {
        set_default(r, "scope", json!("*"));
    }
}

/// admissionregistration/v1 webhooks of a Validating/MutatingWebhookConfiguration.
pub(crate) fn webhook_configuration(obj: &mut Value, mutating: bool) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    for w in each_obj(root, "webhooks") {
        set_default(w, "failurePolicy", json!("Fail"));
        set_default(w, "matchPolicy", json!("Equivalent"));
        set_default(w, "namespaceSelector", json!({}));
        set_default(w, "objectSelector", json!({}));
        set_default(w, "timeoutSeconds", json!(10));
        if mutating {
            set_default(w, "reinvocationPolicy", json!("Never"));
        }
        rules_scope(w);
        if let Some(cc) = obj_at(w, "clientConfig")
            && let Some(svc) = obj_at(cc, "service")
        {
            set_default(svc, "port", json!(443));
        }
    }
}

pub(crate) fn validating_admission_policy(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "failurePolicy", json!("Fail"));
    if let Some(mc) = obj_at(s, "matchConstraints") {
        set_default(mc, "matchPolicy", json!("Equivalent"));
        set_default(mc, "namespaceSelector", json!({}));
        set_default(mc, "objectSelector", json!({}));
        rules_scope(mc);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::defaults::apply_defaults;
    use serde_json::json;

    #[test]
    fn hpa_v2_gets_cpu_metric_and_behavior_rules() {
        let mut h = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        apply_defaults("autoscaling", "v2", "HorizontalPodAutoscaler", &mut h);
        let s = &h["spec"];
        assert_eq!(s["minReplicas"], 1);
        assert_eq!(
            s["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(s["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(s["behavior"]["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(s["behavior"]["scaleUp"]["policies"][0]["value"], 4);
    }

    #[test]
    fn hpa_without_behavior_gets_none() {
        let mut h = json!({"spec": {"maxReplicas": 3}});
        apply_defaults("autoscaling", "v2", "HorizontalPodAutoscaler", &mut h);
        assert!(h["spec"].get("behavior").is_none());
    }

    #[test]
    fn network_policy_types_follow_rules() {
        let mut n = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", &mut n);
        assert_eq!(n["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(n["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let mut n = json!({"spec": {"podSelector": {}}});
        apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", &mut n);
        assert_eq!(n["spec"]["policyTypes"], json!(["Ingress"]));
    }

    #[test]
    fn storage_class_and_priority_class_defaults() {
        let mut s = json!({"provisioner": "x"});
        apply_defaults("storage.k8s.io", "v1", "StorageClass", &mut s);
        assert_eq!(s["reclaimPolicy"], "Delete");
        assert_eq!(s["volumeBindingMode"], "Immediate");
        let mut p = json!({"value": 10});
        apply_defaults("scheduling.k8s.io", "v1", "PriorityClass", &mut p);
        assert_eq!(p["preemptionPolicy"], "PreemptLowerPriority");
    }

    #[test]
    fn webhooks_get_policies_selectors_and_rule_scope() {
        let mut w = json!({"webhooks": [{"name": "a.b.c", "rules": [{"operations": ["CREATE"]}],
            "clientConfig": {"service": {"name": "s", "namespace": "n"}}}]});
        apply_defaults(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            &mut w,
        );
        let h = &w["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["namespaceSelector"], json!({}));
        assert_eq!(h["objectSelector"], json!({}));
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["reinvocationPolicy"], "Never");
        assert_eq!(h["rules"][0]["scope"], "*");
        assert_eq!(h["clientConfig"]["service"]["port"], 443);
    }
}
