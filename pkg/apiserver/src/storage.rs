//! Object storage on top of the revisioned store: key layout, encoding, version views.
//!
//! Objects are stored as JSON in their storage version without `metadata.resourceVersion`;
//! reads set it from the store revision that wrote the value. Keys are
//! `/registry/<storage>/<namespace>/<name>` (namespaced) or `/registry/<storage>/<name>`.

use crate::error::{ApiError, ApiResult};
use kubox_core::resources::ResourceDef;
use kubox_store::KeyValue;
use serde_json::{Value, json};

pub const PREFIX: &str = "/registry/";

pub fn key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{PREFIX}{}/{ns}/{name}", def.storage),
        _ => format!("{PREFIX}{}/{name}", def.storage),
    }
}

/// Prefix of every key of `def` (in one namespace when given).
pub fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{PREFIX}{}/{ns}/", def.storage),
        _ => format!("{PREFIX}{}/", def.storage),
    }
}

/// The stored object at `/registry/<storage>/[<namespace>/]<name>` in its storage version
/// (for internal lookups such as token and admission checks), or None.
pub async fn get_stored(
    state: &crate::state::ApiState,
    storage: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Option<Value>> {
    let key = match namespace {
        Some(ns) => format!("{PREFIX}{storage}/{ns}/{name}"),
        None => format!("{PREFIX}{storage}/{name}"),
    };
    let kv = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(format!("reading {key}: {e}")))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Bytes to store: the object without resourceVersion.
pub fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// The object a stored value represents, as seen through `def`'s group/version.
pub fn decode(def: &ResourceDef, kv: &KeyValue) -> ApiResult<Value> {
    decode_at(def, &kv.value, kv.mod_revision)
}

pub fn decode_at(def: &ResourceDef, bytes: &[u8], revision: i64) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
    kubox_core::meta::set_meta(&mut obj, "resourceVersion", json!(revision.to_string()));
    Ok(to_version(def, obj))
}

/// Converts a stored object to the version `def` serves.
pub fn to_version(def: &ResourceDef, mut obj: Value) -> Value {
    let want = def.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return obj;
    }
    if def.storage == "core/events" && def.group == "events.k8s.io" {
        obj = core_event_to_events_v1(obj);
    }
    obj["apiVersion"] = json!(want);
    obj["kind"] = json!(def.kind);
    obj
}

/// Converts an object received through `def` into its storage version (`storage_def`).
pub fn to_storage(def: &ResourceDef, storage_def: &ResourceDef, mut obj: Value) -> Value {
    if def.api_version() == storage_def.api_version() {
        return obj;
    }
    if def.storage == "core/events" && def.group == "events.k8s.io" {
        obj = events_v1_to_core_event(obj);
    }
    obj["apiVersion"] = json!(storage_def.api_version());
    obj["kind"] = json!(storage_def.kind);
    obj
}

/// Field renames between core/v1 Event and events.k8s.io/v1 Event.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(mut obj: Value, to_events: bool) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (core, ev) in EVENT_RENAMES {
            let (from, to) = if to_events { (core, ev) } else { (ev, core) };
            if let Some(v) = m.remove(*from) {
                m.insert(to.to_string(), v);
            }
        }
    }
    obj
}

fn core_event_to_events_v1(obj: Value) -> Value {
    let mut o = rename(obj, true);
    // events.k8s.io requires eventTime; old-style events only carry timestamps.
    if o.get("eventTime").is_none_or(Value::is_null) {
        let t = o
            .get("deprecatedFirstTimestamp")
            .cloned()
            .or_else(|| o.pointer("/metadata/creationTimestamp").cloned())
            .unwrap_or(Value::Null);
        if let Some(s) = t.as_str() {
            o["eventTime"] = json!(s.replace('Z', ".000000Z"));
        }
    }
    o
}

fn events_v1_to_core_event(obj: Value) -> Value {
    rename(obj, false)
}

/// Continue tokens: the list revision and the last key returned, opaque to clients.
pub fn encode_continue(revision: i64, last_key: &str) -> String {
    use base64::Engine;
    let t = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

pub fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    use base64::Engine;
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not a continue token"))?;
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|rv| *rv > 0)
        .ok_or_else(|| bad("missing revision"))?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing start key"))?;
    if !start.starts_with(prefix) {
        return Err(bad("the continue token belongs to another list"));
    }
    Ok((rv, start.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubox_core::resources::Registry;

    #[test]
    fn keys_separate_namespaces_and_cluster_scope() {
        let reg = Registry::builtin();
        let pods = reg.lookup("", "v1", "pods").expect("pods");
        assert_eq!(
            key(pods, Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(prefix(pods, None), "/registry/core/pods/");
        let ns = reg.lookup("", "v1", "namespaces").expect("ns");
        assert_eq!(
            key(ns, None, "default"),
            "/registry/core/namespaces/default"
        );
    }

    #[test]
    fn events_read_through_events_k8s_io_are_renamed() {
        let reg = Registry::builtin();
        let core = reg.lookup("", "v1", "events").expect("ev");
        let v1 = reg.lookup("events.k8s.io", "v1", "events").expect("ev");
        let stored = json!({"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},"message":"hi","involvedObject":{"name":"p"},"firstTimestamp":"2026-01-01T00:00:00Z"});
        let bytes = encode(&stored).expect("encode");
        let seen = decode_at(v1, &bytes, 7).expect("decode");
        assert_eq!(seen["note"], "hi");
        assert_eq!(seen["regarding"]["name"], "p");
        assert_eq!(seen["apiVersion"], "events.k8s.io/v1");
        assert_eq!(seen["metadata"]["resourceVersion"], "7");
        let back = to_storage(v1, core, seen);
        assert_eq!(back["message"], "hi");
        assert_eq!(back["apiVersion"], "v1");
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/core/pods/a/b");
        assert_eq!(
            decode_continue(&t, "/registry/core/pods/").expect("ok"),
            (42, "/registry/core/pods/a/b".to_string())
        );
        assert!(decode_continue("!!!", "/registry/core/pods/").is_err());
        assert!(decode_continue(&t, "/registry/core/secrets/").is_err());
    }
}
