//! Walking objects against a document's schemas: unknown fields and patch metadata.

use serde_json::{Map, Value};

use crate::FieldMeta;
use crate::schema::REF_PREFIX;

/// Deepest nesting followed; deeper input is not checked.
const MAX_DEPTH: usize = 96;

/// What a schema says about an object's members, after following `$ref` and `allOf`.
#[derive(Default)]
struct View<'a> {
    props: Vec<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
    /// Anything goes: preserve-unknown-fields, embedded objects, RawExtension-like `type: object`.
    free: bool,
}

fn view<'a>(schemas: &'a Map<String, Value>, schema: &'a Value) -> View<'a> {
    let mut v = View::default();
    collect(schemas, schema, &mut v, 0);
    if v.props.is_empty() && v.additional.is_none() && v.items.is_none() {
        // `type: object` without properties (RawExtension, FieldsV1, Patch) or an untyped schema.
        v.free = true;
    }
    v
}

fn collect<'a>(schemas: &'a Map<String, Value>, schema: &'a Value, v: &mut View<'a>, depth: usize) {
    let Value::Object(map) = schema else { return };
    if depth > 16 {
        return;
    }
    let flag = |k: &str| map.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("x-kubernetes-preserve-unknown-fields")
        || flag("x-kubernetes-embedded-resource")
        || flag("x-kubernetes-int-or-string")
    {
        v.free = true;
    }
    if let Some(target) = map
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
        .and_then(|name| schemas.get(name))
    {
        collect(schemas, target, v, depth + 1);
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        v.props.push(props);
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(true)) => v.free = true,
        Some(add @ Value::Object(_)) => v.additional = v.additional.or(Some(add)),
        _ => {}
    }
    if let Some(items) = map.get("items").filter(|i| i.is_object()) {
        v.items = v.items.or(Some(items));
    }
    if let Some(Value::Array(all)) = map.get("allOf") {
        for s in all {
            collect(schemas, s, v, depth + 1);
        }
    }
}

/// Dotted paths (`.spec.replicass`, `.spec.containers[0].imagee`) of members of `obj` that
/// `schema` does not know.
pub(crate) fn unknown_fields(
    schemas: &Map<String, Value>,
    schema: &Value,
    obj: &Value,
) -> Vec<String> {
    let mut out = Vec::new();
    walk(schemas, schema, obj, &mut String::new(), &mut out, 0);
    out
}

fn walk(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(members) => {
            let v = view(schemas, schema);
            if v.free {
                return;
            }
            for (k, member) in members {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                if let Some(sub) = v.props.iter().find_map(|p| p.get(k)) {
                    walk(schemas, sub, member, path, out, depth + 1);
                } else if let Some(add) = v.additional {
                    walk(schemas, add, member, path, out, depth + 1);
                } else if !v.props.is_empty() {
                    out.push(path.clone());
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let v = view(schemas, schema);
            let Some(item_schema) = v.items.filter(|_| !v.free) else {
                return;
            };
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(schemas, item_schema, item, path, out, depth + 1);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The patch metadata of the property at `path`, lists being transparent; `None` if the
/// schema has no such property.
pub(crate) fn field_meta(
    schemas: &Map<String, Value>,
    root: &Value,
    path: &[&str],
) -> Option<FieldMeta> {
    let mut current = root;
    for name in path {
        let mut v = view(schemas, current);
        let mut hops = 0;
        while v.props.is_empty() {
            let items = v.items?;
            v = view(schemas, items);
            hops += 1;
            if hops > 4 {
                return None;
            }
        }
        current = v.props.iter().find_map(|p| p.get(*name))?;
    }
    let map = current.as_object()?;
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    Some(FieldMeta {
        patch_strategy: text("x-kubernetes-patch-strategy"),
        patch_merge_key: text("x-kubernetes-patch-merge-key"),
        list_type: text("x-kubernetes-list-type"),
        list_map_keys: map
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}
