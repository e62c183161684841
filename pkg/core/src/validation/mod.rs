//! Server-side validation of built-in types, as upstream's `Validate*` functions do it.
//!
//! Entry points: [`validate`] (create when `old` is None, update otherwise), [`FieldError`]
//! (one cause of a 422 Invalid Status) and [`quantity::parse_quantity`].
//! Expected call order on create: `apply_defaults`, set uid, `job_selector_defaults`, `validate`.

mod apps;
mod batch;
mod core;
mod meta;
mod pod;
pub mod quantity;

use serde_json::Value;

pub use batch::{parse_go_duration, parse_schedule, split_tz_prefix};
pub use meta::{validate_label_selector, validate_labels};
pub use quantity::{Quantity, parse_quantity};

/// One field error; rendered as a cause of a 422 `Invalid` Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Upstream cause reason: FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
    /// FieldValueDuplicate, FieldValueForbidden, FieldValueTooLong, FieldValueTooMany.
    pub reason: String,
    /// Field path as upstream prints it, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// Upstream's detail message, e.g. `Required value`, `Invalid value: "x": must be ...`.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn with_detail(base: String, detail: &str) -> String {
    if detail.is_empty() {
        base
    } else {
        format!("{base}: {detail}")
    }
}

/// Renders a bad value as upstream does: strings quoted, numbers and booleans bare.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Go's `%q` for simple strings.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl FieldError {
    fn new(reason: &str, field: &str, message: String) -> FieldError {
        FieldError {
            reason: reason.into(),
            field: field.into(),
            message,
        }
    }

    /// `Required value[: detail]`.
    pub fn required(field: &str, detail: &str) -> FieldError {
        Self::new(
            "FieldValueRequired",
            field,
            with_detail("Required value".into(), detail),
        )
    }

    /// `Invalid value: <value>[: detail]`.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        Self::invalid_raw(field, &render_value(value), detail)
    }

    /// `Invalid value: "<value>"[: detail]` for a string value.
    pub fn invalid_str(field: &str, value: &str, detail: &str) -> FieldError {
        Self::invalid_raw(field, &quote(value), detail)
    }

    /// `Invalid value: <rendered>[: detail]` with a pre-rendered value.
    pub fn invalid_raw(field: &str, rendered: &str, detail: &str) -> FieldError {
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {rendered}"), detail),
        )
    }

    /// `Unsupported value: "X": supported values: "A", "B"`.
    pub fn not_supported(field: &str, value: &Value, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        let detail = format!("supported values: {}", list.join(", "));
        Self::new(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: {}: {detail}", render_value(value)),
        )
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: &str, value: &Value) -> FieldError {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", render_value(value)),
        )
    }

    /// `Not found: <value>`.
    pub fn not_found(field: &str, value: &Value) -> FieldError {
        Self::new(
            "FieldValueNotFound",
            field,
            format!("Not found: {}", render_value(value)),
        )
    }

    /// `Forbidden[: detail]`.
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        Self::new(
            "FieldValueForbidden",
            field,
            with_detail("Forbidden".into(), detail),
        )
    }

    /// `Too long: must have at most N bytes`.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {max} bytes"),
        )
    }

    /// `Too many: N: must have at most M items`.
    pub fn too_many(field: &str, actual: usize, max: usize) -> FieldError {
        Self::new(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {max} items"),
        )
    }
}

/// Joins a field path: `child("spec", "replicas")` → `spec.replicas`.
pub(crate) fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// `base[key]`.
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

/// Errs if `v` (when present and an integer) is negative.
pub(crate) fn non_negative(errs: &mut Vec<FieldError>, v: Option<&Value>, field: &str) {
    if let Some(n) = v.and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            field,
            &Value::from(n),
            "must be greater than or equal to 0",
        ));
    }
}

/// Errs if `v` (when present) is not one of `allowed`.
pub(crate) fn one_of(errs: &mut Vec<FieldError>, v: Option<&Value>, field: &str, allowed: &[&str]) {
    if let Some(val) = v.filter(|v| !v.is_null())
        && !val.as_str().is_some_and(|s| allowed.contains(&s))
    {
        errs.push(FieldError::not_supported(field, val, allowed));
    }
}

/// Errs `field is immutable` when `new` differs from `old`.
pub(crate) fn immutable(
    errs: &mut Vec<FieldError>,
    new: Option<&Value>,
    old: Option<&Value>,
    field: &str,
) {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    if norm(new) != norm(old) {
        let shown = new.cloned().unwrap_or(Value::Null);
        errs.push(FieldError::invalid(field, &shown, "field is immutable"));
    }
}

/// `obj[key]` as a str, "" when absent.
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Validates a built-in object; `old` is the stored object on update (immutability checks).
/// Unknown kinds validate only metadata. Returns every error found (empty = valid).
pub fn validate(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let _ = version;
    let mut errs = Vec::new();
    if !meta::skips_metadata(group, kind) {
        meta::validate_object_meta(&mut errs, group, kind, obj, old);
    }
    match (group, kind) {
        ("", "Pod") => pod::validate_pod(&mut errs, obj, old),
        ("", "PodTemplate") => {
            pod::validate_template(&mut errs, obj.get("template"), "template", &[])
        }
        ("", "ReplicationController") => apps::validate_rc(&mut errs, obj, old),
        ("", "Service") => core::validate_service(&mut errs, obj, old),
        ("", "ConfigMap") => core::validate_config_map(&mut errs, obj, old),
        ("", "Secret") => core::validate_secret(&mut errs, obj, old),
        ("", "PersistentVolumeClaim") => core::validate_pvc(&mut errs, obj, old),
        ("apps", "Deployment") => apps::validate_deployment(&mut errs, obj, old),
        ("apps", "ReplicaSet") => apps::validate_replica_set(&mut errs, obj, old),
        ("apps", "StatefulSet") => apps::validate_stateful_set(&mut errs, obj, old),
        ("apps", "DaemonSet") => apps::validate_daemon_set(&mut errs, obj, old),
        ("batch", "Job") => batch::validate_job(&mut errs, obj, old),
        ("batch", "CronJob") => batch::validate_cron_job(&mut errs, obj, old),
        _ => {}
    }
    errs
}

/// A Pod written through its `ephemeralcontainers` subresource: `new` is the stored pod with
/// the request's `spec.ephemeralContainers` (already defaulted). Checks the whole pod as an
/// update that may change only that list, and that existing ephemeral containers stay as
/// they are.
pub fn validate_ephemeral_containers_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut base = old.clone();
    if let Some(spec) = base.get_mut("spec").and_then(Value::as_object_mut) {
        match new.pointer("/spec/ephemeralContainers") {
            Some(list) => spec.insert("ephemeralContainers".into(), list.clone()),
            None => spec.remove("ephemeralContainers"),
        };
    }
    let mut errs = validate("", "v1", "Pod", new, Some(&base));
    pod::validate_ephemeral_update(&mut errs, new, old);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_follow_upstream_error_bodies() {
        assert_eq!(FieldError::required("a", "").message, "Required value");
        assert_eq!(
            FieldError::invalid("a", &json!(-1), "must be greater than or equal to 0").message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldError::not_supported("a", &json!("X"), &["A", "B"]).message,
            "Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert_eq!(
            FieldError::duplicate("a", &json!("x")).message,
            "Duplicate value: \"x\""
        );
        assert_eq!(
            FieldError::forbidden("a", "nope").message,
            "Forbidden: nope"
        );
        assert_eq!(FieldError::too_long("a", 10).reason, "FieldValueTooLong");
    }

    #[test]
    fn unknown_kinds_validate_only_metadata() {
        let errs = validate(
            "example.com",
            "v1",
            "Widget",
            &json!({"metadata": {}}),
            None,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
    }
}
