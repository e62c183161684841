//! `metadata.managedFields` entries: decoding, encoding and ordering.

use serde_json::{Map, Value};

use crate::fieldset::{FieldSet, PathElement};

/// One decoded managedFields entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: String,
    pub(crate) set: FieldSet,
}

impl Entry {
    /// Upstream's manager identity: apiVersion only counts for updaters.
    pub(crate) fn same_identity(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        subresource: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }
}

fn str_field(o: &Map<String, Value>, k: &str) -> String {
    o.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Managed fields of `obj` as written in `metadata.managedFields`.
pub(crate) fn managed_fields(obj: &Value) -> Option<&Vec<Value>> {
    obj.get("metadata")?.get("managedFields")?.as_array()
}

/// Decode entries; entries that are not objects are skipped.
pub(crate) fn decode(list: &[Value]) -> Vec<Entry> {
    list.iter()
        .filter_map(Value::as_object)
        .map(|o| Entry {
            manager: str_field(o, "manager"),
            operation: str_field(o, "operation"),
            api_version: str_field(o, "apiVersion"),
            time: o.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: str_field(o, "subresource"),
            set: o
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
        })
        .collect()
}

/// `[]` or `[{}]` in an update resets managed fields (upstream rule).
pub(crate) fn is_reset(list: &[Value]) -> bool {
    match list {
        [] => true,
        [only] => only.as_object().is_some_and(Map::is_empty),
        _ => false,
    }
}

fn seconds(t: &Option<String>) -> i64 {
    t.as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|ts| ts.as_second())
        .unwrap_or(0)
}

/// Encode entries in upstream order: operation, time, manager, apiVersion, subresource.
pub(crate) fn encode(mut entries: Vec<Entry>) -> Value {
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| seconds(&a.time).cmp(&seconds(&b.time)))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let list = entries
        .into_iter()
        .map(|e| {
            let mut o = Map::new();
            o.insert("manager".into(), Value::String(e.manager));
            o.insert("operation".into(), Value::String(e.operation));
            o.insert("apiVersion".into(), Value::String(e.api_version));
            if let Some(t) = e.time {
                o.insert("time".into(), Value::String(t));
            }
            o.insert("fieldsType".into(), Value::String("FieldsV1".into()));
            o.insert("fieldsV1".into(), e.set.to_fields_v1());
            if !e.subresource.is_empty() {
                o.insert("subresource".into(), Value::String(e.subresource));
            }
            Value::Object(o)
        })
        .collect();
    Value::Array(list)
}

/// Write `entries` into `obj.metadata.managedFields` (removed when empty).
pub(crate) fn store(obj: &mut Value, entries: Vec<Entry>) {
    let Some(o) = obj.as_object_mut() else { return };
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encode(entries));
    }
}

/// Remove `metadata.managedFields` from a copy of `obj`.
pub(crate) fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    out
}

/// Server-managed metadata that is never tracked as owned.
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Drop fields upstream never tracks (and `status` when it is reset).
pub(crate) fn strip(mut set: FieldSet, reset_status: bool) -> FieldSet {
    let f = |n: &str| PathElement::Field(n.to_string());
    set.remove_subtree(&[f("apiVersion")]);
    set.remove_subtree(&[f("kind")]);
    for m in STRIPPED_META {
        set.remove_subtree(&[f("metadata"), f(m)]);
    }
    if reset_status {
        set.remove_subtree(&[f("status")]);
    }
    set.pruned()
}
