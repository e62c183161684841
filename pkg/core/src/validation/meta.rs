//! ObjectMeta, label, annotation and label selector validation.

use super::{FieldError, child, immutable, index};
use crate::names::{is_dns1123_label, is_dns1123_subdomain, is_qualified_name_part, name_error};
use serde_json::Value;

const QUALIFIED_NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1035_FMT: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
/// Upstream's TotalAnnotationSizeLimitB.
pub const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;

/// Kinds whose create requests carry no persisted metadata (reviews).
pub(crate) fn skips_metadata(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("authentication.k8s.io", _) | ("authorization.k8s.io", _)
    ) || kind.ends_with("Review")
}

/// Upstream's IsQualifiedName: `[prefix/]name`, prefix a DNS-1123 subdomain.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".into());
            } else if !is_dns1123_subdomain(prefix)
                && let Some(msg) = name_error(prefix, false)
            {
                out.push(format!("prefix part {msg}"));
            }
            *name
        }
        _ => {
            out.push("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into());
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".into());
    }
    if !name.is_empty() && !is_qualified_name_part(name.get(..63).unwrap_or(name)) {
        out.push(QUALIFIED_NAME_FMT.into());
    }
    out
}

/// Upstream's IsValidLabelValue.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push("must be no more than 63 characters".into());
    }
    if !v.is_empty() && !is_qualified_name_part(v.get(..63).unwrap_or(v)) {
        out.push(LABEL_VALUE_FMT.into());
    }
    out
}

/// Upstream's ValidateLabels: errors are reported at `field` itself.
pub fn validate_labels(errs: &mut Vec<FieldError>, labels: Option<&Value>, field: &str) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for msg in qualified_name_errors(k) {
            errs.push(FieldError::invalid_str(field, k, &msg));
        }
        let val = v.as_str().unwrap_or("");
        for msg in label_value_errors(val) {
            errs.push(FieldError::invalid_str(field, val, &msg));
        }
    }
}

fn validate_annotations(errs: &mut Vec<FieldError>, ann: Option<&Value>, field: &str) {
    let Some(map) = ann.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.push(FieldError::invalid_str(field, k, &msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATIONS_SIZE {
        errs.push(FieldError::too_long(field, MAX_ANNOTATIONS_SIZE));
    }
}

/// Upstream's path segment name rule (RBAC objects).
fn path_segment_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name == "." || name == ".." {
        out.push(format!("may not be '{name}'"));
    }
    for c in ['/', '%'] {
        if name.contains(c) {
            out.push(format!("may not contain '{c}'"));
        }
    }
    out
}

fn dns1035_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 63 {
        out.push("must be no more than 63 characters".into());
    }
    let ok = is_dns1123_label(name.get(..63).unwrap_or(name))
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !ok {
        out.push(DNS1035_FMT.into());
    }
    out
}

/// The name rule of a kind, as upstream's ValidateNameFunc: errors for `name`.
pub(crate) fn name_errors(group: &str, kind: &str, name: &str) -> Vec<String> {
    match (group, kind) {
        ("rbac.authorization.k8s.io", _) => path_segment_errors(name),
        ("", "Service") => dns1035_errors(name),
        ("", "Namespace") => {
            let mut out = Vec::new();
            if name.len() > 63 {
                out.push("must be no more than 63 characters".into());
            }
            out.extend(name_error(name.get(..63).unwrap_or(name), true));
            out
        }
        _ => {
            let mut out = Vec::new();
            if name.len() > 253 {
                out.push("must be no more than 253 characters".into());
            }
            out.extend(name_error(name.get(..253).unwrap_or(name), false));
            out
        }
    }
}

/// Upstream's ValidateObjectMeta (+ ValidateObjectMetaUpdate when `old` is given).
pub(crate) fn validate_object_meta(
    errs: &mut Vec<FieldError>,
    group: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = super::s(meta, "name");
    let generate = super::s(meta, "generateName");
    if !generate.is_empty() {
        let prefix = generate.strip_suffix('-').unwrap_or(generate);
        for msg in name_errors(group, kind, prefix) {
            errs.push(FieldError::invalid_str(
                "metadata.generateName",
                generate,
                &msg,
            ));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in name_errors(group, kind, name) {
            errs.push(FieldError::invalid_str("metadata.name", name, &msg));
        }
    }
    let ns = super::s(meta, "namespace");
    if !ns.is_empty() {
        for msg in name_errors("", "Namespace", ns) {
            errs.push(FieldError::invalid_str("metadata.namespace", ns, &msg));
        }
    }
    validate_labels(errs, meta.get("labels"), "metadata.labels");
    validate_annotations(errs, meta.get("annotations"), "metadata.annotations");
    if let Some(fs) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in fs.iter().enumerate() {
            let f = f.as_str().unwrap_or("");
            for msg in qualified_name_errors(f) {
                errs.push(FieldError::invalid_str(
                    &index("metadata.finalizers", i),
                    f,
                    &msg,
                ));
            }
        }
    }
    if let Some(old) = old {
        let old_meta = old.get("metadata").unwrap_or(&Value::Null);
        for f in ["name", "namespace", "uid", "creationTimestamp"] {
            let new_v = meta.get(f).filter(|v| v.as_str() != Some(""));
            let old_v = old_meta.get(f).filter(|v| v.as_str() != Some(""));
            if f != "name" && f != "namespace" && new_v.is_none() {
                continue; // unset server fields are restored by the store
            }
            immutable(errs, new_v, old_v, &child("metadata", f));
        }
    }
}

/// Upstream's ValidateLabelSelector (metav1.LabelSelector) at `field`.
pub fn validate_label_selector(errs: &mut Vec<FieldError>, sel: Option<&Value>, field: &str) {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return;
    };
    validate_labels(errs, sel.get("matchLabels"), &child(field, "matchLabels"));
    let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) else {
        return;
    };
    for (i, e) in exprs.iter().enumerate() {
        let p = index(&child(field, "matchExpressions"), i);
        let op = super::s(e, "operator");
        let nvalues = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match op {
            "In" | "NotIn" if nvalues == 0 => errs.push(FieldError::required(
                &child(&p, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if nvalues > 0 => errs.push(FieldError::forbidden(
                &child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => errs.push(FieldError::invalid_str(
                &child(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let k = super::s(e, "key");
        for msg in qualified_name_errors(k) {
            errs.push(FieldError::invalid_str(&child(&p, "key"), k, &msg));
        }
    }
}

/// Go's `%#v` of a metav1.LabelSelector, as upstream prints it in immutability errors.
pub(crate) fn go_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "(*v1.LabelSelector)(nil)".into();
    };
    let ml = match sel.get("matchLabels").and_then(Value::as_object) {
        Some(m) => go_string_map(m),
        None => "map[string]string(nil)".into(),
    };
    let me = match sel.get("matchExpressions").and_then(Value::as_array) {
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|e| {
                    let vals = e
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|v| {
                            let q: Vec<String> = v
                                .iter()
                                .map(|x| super::quote(x.as_str().unwrap_or("")))
                                .collect();
                            format!("[]string{{{}}}", q.join(", "))
                        })
                        .unwrap_or_else(|| "[]string(nil)".into());
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{vals}}}",
                        super::quote(super::s(e, "key")),
                        super::quote(super::s(e, "operator"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
        None => "[]v1.LabelSelectorRequirement(nil)".into(),
    };
    format!("v1.LabelSelector{{MatchLabels:{ml}, MatchExpressions:{me}}}")
}

/// Go's `%#v` of a `map[string]string` (keys sorted).
pub(crate) fn go_string_map(m: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let items: Vec<String> = keys
        .iter()
        .map(|k| {
            let v = m.get(*k).and_then(Value::as_str).unwrap_or("");
            format!("{}:{}", super::quote(k), super::quote(v))
        })
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::validation::validate;
    use serde_json::json;

    fn cm(meta: Value) -> Value {
        json!({"metadata": meta})
    }

    #[test]
    fn name_is_required_unless_generate_name() {
        let errs = validate("", "v1", "ConfigMap", &cm(json!({})), None);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            errs[0].message,
            "Required value: name or generateName is required"
        );
        assert_eq!(errs[0].reason, "FieldValueRequired");
        let errs = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"generateName": "x-", "name": "x-abc"})),
            None,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn names_follow_the_kind_rule() {
        assert!(validate("", "v1", "ConfigMap", &cm(json!({"name": "a.b"})), None).is_empty());
        let errs = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"name": "Bad_Name"})),
            None,
        );
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        assert!(!validate("", "v1", "Namespace", &cm(json!({"name": "a.b"})), None).is_empty());
        let errs = validate("", "v1", "Service", &cm(json!({"name": "1abc"})), None);
        assert!(
            errs.iter().any(|e| e.message.contains("DNS-1035")),
            "{errs:?}"
        );
        assert!(
            validate(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                &cm(json!({"name": "system:Admin"})),
                None
            )
            .is_empty()
        );
        let errs = validate(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            &cm(json!({"name": "a/b"})),
            None,
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"a/b\": may not contain '/'"
        );
    }

    #[test]
    fn label_keys_and_values_are_checked_at_metadata_labels() {
        let errs = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"name": "a", "labels": {"a/b/c": "x", "ok": "bad value"}})),
            None,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.field == "metadata.labels"));
        assert!(
            validate(
                "",
                "v1",
                "ConfigMap",
                &cm(json!({"name": "a", "labels": {"example.com/app": "web_1"}})),
                None
            )
            .is_empty()
        );
        assert_eq!(
            qualified_name_errors("/x"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(
            label_value_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn annotations_are_limited_to_256_kib_in_total() {
        let big = "x".repeat(MAX_ANNOTATIONS_SIZE);
        let errs = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"name": "a", "annotations": {"k": big}})),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueTooLong");
        assert_eq!(errs[0].field, "metadata.annotations");
    }

    #[test]
    fn metadata_name_and_uid_are_immutable() {
        let old = cm(json!({"name": "a", "uid": "1"}));
        let errs = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"name": "b", "uid": "2"})),
            Some(&old),
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.name", "metadata.uid"]);
        assert_eq!(errs[0].message, "Invalid value: \"b\": field is immutable");
    }

    #[test]
    fn selector_operators_and_values_are_checked() {
        let mut errs = Vec::new();
        let sel = json!({"matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Bogus"}]});
        validate_label_selector(&mut errs, Some(&sel), "spec.selector");
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].field, "spec.selector.matchExpressions[0].values");
        assert_eq!(errs[1].reason, "FieldValueForbidden");
        assert_eq!(
            errs[2].message,
            "Invalid value: \"Bogus\": not a valid selector operator"
        );
    }

    #[test]
    fn selectors_render_as_go_values() {
        let s = json!({"matchLabels": {"app": "x"}});
        assert_eq!(
            go_label_selector(Some(&s)),
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
    }
}
