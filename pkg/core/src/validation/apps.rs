//! apps/v1 workloads and core/v1 ReplicationController validation.

use super::meta::{go_label_selector, go_string_map, validate_label_selector};
use super::pod::validate_template;
use super::{FieldError, non_negative, one_of};
use crate::selectors::LabelSelector;
use serde_json::{Map, Value, json};

const MISMATCH: &str = "`selector` does not match template `labels`";

fn template_labels(spec: &Value) -> Map<String, Value> {
    spec.pointer("/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Selector required, non-empty, well-formed and matching the template labels; template valid.
fn selector_and_template(errs: &mut Vec<FieldError>, spec: &Value, what: &str) {
    let sel = spec.get("selector").filter(|s| s.is_object());
    match sel {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let before = errs.len();
            validate_label_selector(errs, Some(sel), "spec.selector");
            let empty = ["matchLabels", "matchExpressions"].iter().all(|k| {
                sel.get(*k).is_none_or(|v| {
                    v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty)
                })
            });
            if empty {
                errs.push(FieldError::invalid_raw(
                    "spec.selector",
                    &go_label_selector(Some(sel)),
                    &format!("empty selector is invalid for {what}"),
                ));
            } else if errs.len() == before && spec.get("template").is_some() {
                let labels = template_labels(spec);
                let matches = LabelSelector::from_object(sel)
                    .is_ok_and(|s| s.matches_object(&json!({"metadata": {"labels": labels}})));
                if !matches {
                    errs.push(FieldError::invalid_raw(
                        "spec.template.metadata.labels",
                        &go_string_map(&labels),
                        MISMATCH,
                    ));
                }
            }
        }
    }
    validate_template(errs, spec.get("template"), "spec.template", &["Always"]);
}

fn selector_immutable(errs: &mut Vec<FieldError>, spec: &Value, old: Option<&Value>) {
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    let (new_sel, old_sel) = (spec.get("selector"), old_spec.get("selector"));
    if new_sel.filter(|v| !v.is_null()) != old_sel.filter(|v| !v.is_null()) {
        errs.push(FieldError::invalid_raw(
            "spec.selector",
            &go_label_selector(new_sel),
            "field is immutable",
        ));
    }
}

/// An IntOrString that must be a non-negative int or a percentage (≤ 100%).
fn int_or_percent(errs: &mut Vec<FieldError>, v: Option<&Value>, field: &str) {
    match v {
        Some(Value::Number(_)) => non_negative(errs, v, field),
        Some(Value::String(p)) => {
            let digits = p
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()));
            match digits {
                None => errs.push(FieldError::invalid_str(field, p, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
                Some(d) if d.parse::<u64>().map_or(true, |n| n > 100) => {
                    errs.push(FieldError::invalid_str(field, p, "must not be greater than 100%"))
                }
                Some(_) => {}
            }
        }
        _ => {}
    }
}

fn is_zero(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0%" || s == "0",
        _ => false,
    }
}

fn rolling_update(errs: &mut Vec<FieldError>, ru: &Value, path: &str) {
    let (mu, ms) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
    int_or_percent(errs, mu, &format!("{path}.maxUnavailable"));
    int_or_percent(errs, ms, &format!("{path}.maxSurge"));
    if ms.is_some() && is_zero(mu) && is_zero(ms) {
        let shown = mu.cloned().unwrap_or(json!(0));
        errs.push(FieldError::invalid(
            &format!("{path}.maxUnavailable"),
            &shown,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn common_counts(errs: &mut Vec<FieldError>, spec: &Value) {
    for f in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(errs, spec.get(f), &format!("spec.{f}"));
    }
}

pub(crate) fn validate_deployment(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    common_counts(errs, spec);
    selector_and_template(errs, spec, "deployment");
    if let Some(st) = spec.get("strategy") {
        one_of(
            errs,
            st.get("type"),
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
        );
        let ru = st.get("rollingUpdate").filter(|v| !v.is_null());
        if st.get("type").and_then(Value::as_str) == Some("Recreate") && ru.is_some() {
            errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        } else if let Some(ru) = ru {
            rolling_update(errs, ru, "spec.strategy.rollingUpdate");
        }
    }
    if let Some(pd) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        non_negative(
            errs,
            spec.get("progressDeadlineSeconds"),
            "spec.progressDeadlineSeconds",
        );
        let min_ready = spec
            .get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if pd >= 0 && pd <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &json!(pd),
                "must be greater than minReadySeconds",
            ));
        }
    }
    selector_immutable(errs, spec, old);
}

pub(crate) fn validate_replica_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    common_counts(errs, spec);
    selector_and_template(errs, spec, "deployment");
    selector_immutable(errs, spec, old);
}

pub(crate) fn validate_daemon_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    common_counts(errs, spec);
    selector_and_template(errs, spec, "daemonset");
    if let Some(us) = spec.get("updateStrategy") {
        one_of(
            errs,
            us.get("type"),
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
        );
        if let Some(ru) = us.get("rollingUpdate").filter(|v| !v.is_null()) {
            rolling_update(errs, ru, "spec.updateStrategy.rollingUpdate");
        }
    }
    selector_immutable(errs, spec, old);
}

const STS_MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

pub(crate) fn validate_stateful_set(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    common_counts(errs, spec);
    // Containers may mount the claim templates: the controller adds them to each pod as
    // persistentVolumeClaim volumes, so the template is checked with them.
    let mut with_claims = spec.clone();
    if let Some(vols) = with_claims
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
        .map(|s| s.entry("volumes").or_insert_with(|| json!([])))
        .and_then(Value::as_array_mut)
    {
        for t in spec
            .get("volumeClaimTemplates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = t.pointer("/metadata/name").and_then(Value::as_str) {
                vols.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
            }
        }
    }
    selector_and_template(errs, &with_claims, "statefulset");
    one_of(
        errs,
        spec.get("podManagementPolicy"),
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
    );
    if let Some(us) = spec.get("updateStrategy") {
        one_of(
            errs,
            us.get("type"),
            "spec.updateStrategy.type",
            &["OnDelete", "RollingUpdate"],
        );
        if let Some(ru) = us.get("rollingUpdate").filter(|v| !v.is_null()) {
            non_negative(
                errs,
                ru.get("partition"),
                "spec.updateStrategy.rollingUpdate.partition",
            );
        }
    }
    if let Some(p) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            one_of(
                errs,
                p.get(f),
                &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                &["Retain", "Delete"],
            );
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                for f in STS_MUTABLE {
                    m.remove(f);
                }
            }
            v
        };
        if strip(spec) != strip(old_spec) {
            errs.push(FieldError::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
}

/// core/v1 ReplicationController: map selector required and matching the template labels.
pub(crate) fn validate_rc(errs: &mut Vec<FieldError>, obj: &Value, _old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    common_counts(errs, spec);
    let sel = spec
        .get("selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty());
    match sel {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            super::validate_labels(errs, spec.get("selector"), "spec.selector");
            if spec.get("template").is_some() {
                let labels = template_labels(spec);
                if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    errs.push(FieldError::invalid_raw(
                        "spec.template.metadata.labels",
                        &go_string_map(&labels),
                        MISMATCH,
                    ));
                }
            }
        }
    }
    validate_template(errs, spec.get("template"), "spec.template", &["Always"]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::validation::{FieldError, validate};
    use serde_json::{Value, json};

    fn deploy(spec: Value) -> Value {
        json!({"metadata": {"name": "d", "namespace": "default"}, "spec": spec})
    }

    fn good_spec() -> Value {
        json!({"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}})
    }

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_well_formed_deployment_is_valid() {
        let e = validate("apps", "v1", "Deployment", &deploy(good_spec()), None);
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn deployment_selector_must_match_template_labels() {
        let mut s = good_spec();
        s["template"]["metadata"]["labels"] = json!({"app": "b"});
        let e = validate("apps", "v1", "Deployment", &deploy(s), None);
        assert_eq!(fields(&e), vec!["spec.template.metadata.labels"]);
        assert_eq!(
            e[0].message,
            "Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn deployment_selector_is_required_and_replicas_non_negative() {
        let mut s = good_spec();
        s.as_object_mut().unwrap().remove("selector");
        s["replicas"] = json!(-1);
        let e = validate("apps", "v1", "Deployment", &deploy(s), None);
        assert_eq!(fields(&e), vec!["spec.replicas", "spec.selector"]);
        assert_eq!(
            e[0].message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn deployment_template_needs_images_and_restart_always() {
        let mut s = good_spec();
        s["template"]["spec"] = json!({"restartPolicy": "Never", "containers": [{"name": "c"}]});
        let e = validate("apps", "v1", "Deployment", &deploy(s), None);
        assert_eq!(
            fields(&e),
            vec![
                "spec.template.spec.containers[0].image",
                "spec.template.spec.restartPolicy"
            ]
        );
        assert_eq!(
            e[1].message,
            "Unsupported value: \"Never\": supported values: \"Always\""
        );
    }

    #[test]
    fn rolling_update_may_not_be_all_zero_or_over_100_percent() {
        let mut s = good_spec();
        s["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        let e = validate("apps", "v1", "Deployment", &deploy(s.clone()), None);
        assert_eq!(
            e[0].message,
            "Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
        s["strategy"]["rollingUpdate"] = json!({"maxUnavailable": "150%", "maxSurge": 1});
        let e = validate("apps", "v1", "Deployment", &deploy(s), None);
        assert_eq!(
            e[0].message,
            "Invalid value: \"150%\": must not be greater than 100%"
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let old = deploy(good_spec());
        let mut s = good_spec();
        s["selector"] = json!({"matchLabels": {"app": "a", "x": "y"}});
        s["template"]["metadata"]["labels"]["x"] = json!("y");
        for kind in ["Deployment", "ReplicaSet", "DaemonSet"] {
            let e = validate("apps", "v1", kind, &deploy(s.clone()), Some(&old));
            assert_eq!(fields(&e), vec!["spec.selector"], "{kind}");
            assert!(e[0].message.ends_with("field is immutable"));
        }
    }

    #[test]
    fn statefulset_updates_are_limited_to_mutable_fields() {
        let mut old_spec = good_spec();
        old_spec["serviceName"] = json!("web");
        let old = deploy(old_spec.clone());
        let mut ok = old_spec.clone();
        ok["replicas"] = json!(5);
        assert!(validate("apps", "v1", "StatefulSet", &deploy(ok), Some(&old)).is_empty());
        let mut bad = old_spec;
        bad["serviceName"] = json!("other");
        let e = validate("apps", "v1", "StatefulSet", &deploy(bad), Some(&old));
        assert_eq!(fields(&e), vec!["spec"]);
        assert_eq!(e[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn statefulset_containers_may_mount_claim_templates() {
        let mut spec = good_spec();
        spec["serviceName"] = json!("web");
        spec["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        let e = validate("apps", "v1", "StatefulSet", &deploy(spec.clone()), None);
        assert_eq!(
            fields(&e),
            vec!["spec.template.spec.containers[0].volumeMounts[0].name"]
        );
        spec["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        assert!(validate("apps", "v1", "StatefulSet", &deploy(spec), None).is_empty());
    }

    #[test]
    fn replication_controller_selector_must_match_template() {
        let rc = deploy(
            json!({"selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "b"}},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}),
        );
        let e = validate("", "v1", "ReplicationController", &rc, None);
        assert_eq!(fields(&e), vec!["spec.template.metadata.labels"]);
    }
}
