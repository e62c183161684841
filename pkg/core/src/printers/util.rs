//! Shared column builders and cell formatters (upstream's printer helpers).

use serde_json::Value;

use super::Column;
use crate::meta;

/// `metav1.ObjectMeta` swagger doc of `name`.
pub(super) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` swagger doc of `creationTimestamp`.
pub(super) const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(super) const CONTAINERS_DESC: &str = "Names of each container in the template.";
pub(super) const IMAGES_DESC: &str = "Images referenced by each container in the template.";

pub(super) fn col(name: &str, type_: &str, description: &str) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: description.into(),
        priority: 0,
    }
}

/// A column shown only with `-o wide` (priority 1).
pub(super) fn wide(name: &str, type_: &str, description: &str) -> Column {
    Column {
        priority: 1,
        ..col(name, type_, description)
    }
}

pub(super) fn name_col() -> Column {
    Column {
        format: "name".into(),
        ..col("Name", "string", NAME_DESC)
    }
}

pub(super) fn age_col() -> Column {
    col("Age", "string", AGE_DESC)
}

pub(super) fn name_cell(obj: &Value) -> Value {
    Value::String(meta::name(obj).unwrap_or_default().to_string())
}

pub(super) fn age_cell(obj: &Value) -> Value {
    Value::String(meta::age(obj))
}

/// `metadata.creationTimestamp` as upstream's default table prints it (RFC 3339, UTC).
pub(super) fn created_at(obj: &Value) -> String {
    meta::meta_str(obj, "creationTimestamp")
        .and_then(meta::parse_time)
        .map(meta::format_time)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Upstream's `duration.HumanDuration` of a signed number of seconds.
pub(super) fn human(secs: i64) -> String {
    if secs < -1 {
        "<invalid>".into()
    } else {
        meta::human_duration(secs)
    }
}

/// Time elapsed since an RFC 3339 timestamp, "<unknown>" if unset or unparsable.
pub(super) fn since(ts: Option<&str>) -> String {
    match ts.and_then(meta::parse_time) {
        Some(t) => human(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

pub(super) fn s(v: Option<&Value>) -> Value {
    Value::String(v.and_then(Value::as_str).unwrap_or_default().to_string())
}

/// The string at a JSON pointer, "" if absent.
pub(super) fn st<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The string at a JSON pointer, `default` if absent or empty.
pub(super) fn st_or(obj: &Value, ptr: &str, default: &str) -> String {
    match st(obj, ptr) {
        "" => default.to_string(),
        v => v.to_string(),
    }
}

/// The integer at a JSON pointer, 0 if absent.
pub(super) fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn boolean(obj: &Value, ptr: &str) -> Option<bool> {
    obj.pointer(ptr).and_then(Value::as_bool)
}

/// The array at a JSON pointer, empty if absent.
pub(super) fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Number of entries of the map at a JSON pointer.
pub(super) fn map_len(obj: &Value, ptr: &str) -> usize {
    obj.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// A quantity (string or number) at a JSON pointer, as Go's `Quantity.String()` of a zero
/// value ("0") when absent.
pub(super) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    }
}

/// Go's `labels.FormatLabels`: sorted `k=v` joined by commas, "<none>" if empty.
pub(super) fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

/// A `metav1.LabelSelector` as `labels.Selector.String()` ("" if it selects nothing/everything).
pub(super) fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in arr(sel, "/matchExpressions") {
        let key = st(e, "/key");
        let mut values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let text = match st(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".into(),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(",")
}

/// Go's `metav1.FormatLabelSelector`: the selector string, "<none>" if empty.
pub(super) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        s if s.is_empty() => "<none>".into(),
        s => s,
    }
}

/// Upstream's `layoutContainerCells`: container names and images, comma-joined.
pub(super) fn container_cells(pod_spec: Option<&Value>) -> (Value, Value) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| st(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| st(c, "/image")).collect();
    (
        Value::String(names.join(",")),
        Value::String(images.join(",")),
    )
}

/// Upstream's `listWithMoreString` over at most `max` shown items.
pub(super) fn list_with_more(items: &[String], max: usize, empty: &str) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        empty.into()
    } else {
        shown
    }
}

/// Go's `net.JoinHostPort`: brackets IPv6 hosts.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `status` of the condition of `type_` in the array at `ptr`, if present.
pub(super) fn condition_status<'a>(obj: &'a Value, ptr: &str, type_: &str) -> Option<&'a str> {
    arr(obj, ptr)
        .iter()
        .find(|c| st(c, "/type") == type_)
        .map(|c| st(c, "/status"))
}

/// Upstream's `printBoolPtr`: "True"/"False", "<unset>" when absent.
pub(super) fn bool_ptr(v: Option<bool>) -> Value {
    Value::String(
        match v {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_format_like_upstream() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                 {"key": "x", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(Some(&sel)), "a=1,b=2,env in (dev,prod),!x");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
    }

    #[test]
    fn label_maps_are_sorted_and_none_when_empty() {
        assert_eq!(format_labels(Some(&json!({"z": "1", "a": "2"}))), "a=2,z=1");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn long_lists_say_how_many_more() {
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(list_with_more(&items, 3, "<unset>"), "1,2,3 + 2 more...");
        assert_eq!(list_with_more(&[], 3, "<unset>"), "<unset>");
    }
}
