//! Structural schemas of custom resources: unknown fields, pruning, defaulting and validation
//! (the subset of OpenAPI v3 validation apiextensions-apiserver applies to stored objects).

use serde_json::{Map, Value};

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        || schema
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true)
            && schema.get("properties").is_none()
}

fn is_root_meta(path: &str, key: &str) -> bool {
    path.is_empty() && matches!(key, "apiVersion" | "kind" | "metadata")
}

/// Walks `obj` against `schema`, calling `unknown` with the dotted path and the map for
/// every field the schema does not define.
fn walk_unknown(schema: &Value, obj: &Value, path: &str, out: &mut Vec<String>) {
    if preserves_unknown(schema) && schema.get("properties").is_none() {
        return;
    }
    match obj {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in m {
                if is_root_meta(path, k) {
                    continue;
                }
                let child = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => walk_unknown(s, v, &child, out),
                    None => match additional {
                        Some(Value::Object(a)) => {
                            walk_unknown(&Value::Object(a.clone()), v, &child, out)
                        }
                        Some(Value::Bool(true)) => {}
                        _ if preserves_unknown(schema) => {}
                        _ if props.is_none()
                            && schema.get("type").and_then(Value::as_str) != Some("object") => {}
                        _ => out.push(child),
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk_unknown(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Dotted paths (".spec.foo") of fields `obj` has that `schema` does not define.
pub fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(schema, obj, "", &mut out);
    out
}

/// Removes the fields `schema` does not define (upstream's pruning), in place.
pub fn prune(schema: &Value, obj: &mut Value, root: bool) {
    if preserves_unknown(schema) && schema.get("properties").is_none() {
        return;
    }
    match obj {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").cloned();
            let keep_unknown =
                preserves_unknown(schema) || matches!(additional, Some(Value::Bool(true)));
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.and_then(|p| p.get(&k)) {
                    Some(s) => {
                        if let Some(v) = m.get_mut(&k) {
                            prune(s, v, false);
                        }
                    }
                    None => match &additional {
                        Some(Value::Object(a)) => {
                            let a = Value::Object(a.clone());
                            if let Some(v) = m.get_mut(&k) {
                                prune(&a, v, false);
                            }
                        }
                        _ if keep_unknown => {}
                        _ => {
                            m.remove(&k);
                        }
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items.iter_mut() {
                    prune(s, v, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills `default`s of missing properties, recursively.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if !m.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(v) = m.get_mut(k) {
                        apply_defaults(s, v);
                    }
                }
            }
            if let Some(a @ Value::Object(_)) = schema.get("additionalProperties") {
                for v in m.values_mut() {
                    apply_defaults(a, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items.iter_mut() {
                    apply_defaults(s, v);
                }
            }
        }
        _ => {}
    }
}

/// One validation failure: (reason, field path, message).
pub type Failure = (String, String, String);

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 64 {
        format!(
            "{}...",
            &s[..s.char_indices().take(61).last().map_or(0, |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Validates `obj` against `schema`; field paths are upstream's ("spec.replicas").
pub fn validate(schema: &Value, obj: &Value) -> Vec<Failure> {
    let mut out = Vec::new();
    check(schema, obj, "", true, &mut out);
    out
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn check(schema: &Value, v: &Value, path: &str, root: bool, out: &mut Vec<Failure>) {
    let field = if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    };
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
            // Upstream prunes nulls of non-nullable fields rather than failing.
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = t == actual
            || (t == "number" && actual == "integer")
            || (int_or_string && matches!(actual, "integer" | "string"));
        if !(ok || int_or_string && t.is_empty()) {
            out.push((
                "FieldValueTypeInvalid".into(),
                field.clone(),
                format!(
                    "Invalid value: {:?}: {field} in body must be of type {t}: {:?}",
                    short(v),
                    actual
                ),
            ));
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let supported: Vec<String> = en.iter().map(|e| e.to_string()).collect();
        out.push((
            "FieldValueNotSupported".into(),
            field.clone(),
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                supported.join(", ")
            ),
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push((
                "FieldValueInvalid".into(),
                field.clone(),
                format!(
                    "Invalid value: {v}: {field} in body should be greater than or equal to {min}"
                ),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push((
                "FieldValueInvalid".into(),
                field.clone(),
                format!(
                    "Invalid value: {v}: {field} in body should be less than or equal to {max}"
                ),
            ));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push((
                "FieldValueInvalid".into(),
                field.clone(),
                format!("Invalid value: {v}: {field} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push((
                "FieldValueTooLong".into(),
                field.clone(),
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
    match v {
        Value::Object(m) => check_object(schema, m, path, root, out),
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                out.push((
                    "FieldValueInvalid".into(),
                    field.clone(),
                    format!(
                        "Invalid value: {}: {field} in body should have at least {min} items",
                        items.len()
                    ),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.push((
                    "FieldValueTooMany".into(),
                    field.clone(),
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(s, item, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    m: &Map<String, Value>,
    path: &str,
    root: bool,
    out: &mut Vec<Failure>,
) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(k) = r.as_str()
            && m.get(k).is_none_or(Value::is_null)
        {
            out.push((
                "FieldValueRequired".into(),
                join(path, k),
                "Required value".into(),
            ));
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, v) in m {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)) {
            check(s, v, &join(path, k), false, out);
        } else if let Some(a @ Value::Object(_)) = schema.get("additionalProperties") {
            check(a, v, &join(path, k), false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "default": 3},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    }
                }
            }
        })
    }

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"size": 1, "bogus": 1, "labels": {"a": "b"}, "free": {"any": 1}}, "extra": 2});
        assert_eq!(
            unknown_fields(&schema(), &obj),
            vec![".spec.bogus".to_string(), ".extra".to_string()]
        );
    }

    #[test]
    fn pruning_drops_unknown_fields_but_keeps_preserved_ones() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"size": 1, "bogus": 1, "free": {"any": 1}}, "extra": 2});
        prune(&schema(), &mut obj, true);
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"size": 1, "free": {"any": 1}}})
        );
    }

    #[test]
    fn validation_reports_types_enums_minimums_and_required_fields() {
        let errs = validate(&schema(), &json!({"spec": {"size": 0, "mode": "c"}}));
        let fields: Vec<&str> = errs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(fields, vec!["spec.size", "spec.mode"]);
        let errs = validate(&schema(), &json!({"spec": {"size": "x"}}));
        assert_eq!(errs[0].0, "FieldValueTypeInvalid");
        let errs = validate(&schema(), &json!({"spec": {}}));
        assert_eq!(
            errs[0],
            (
                "FieldValueRequired".into(),
                "spec.size".into(),
                "Required value".into()
            )
        );
    }

    #[test]
    fn defaults_fill_missing_properties() {
        let mut obj = json!({"spec": {}});
        apply_defaults(&schema(), &mut obj);
        assert_eq!(obj["spec"]["size"], 3);
    }
}
