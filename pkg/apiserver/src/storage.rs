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

/// Appends the JSON a client gets for the stored `kv` through `def` — exactly what serializing
/// [`decode`]'s object gives — to `out`. When the stored apiVersion is the one served (no
/// conversion) the stored bytes are copied with the resourceVersion spliced into `metadata`
/// (`rawjson`), else the object is decoded and written.
pub fn write_json(
    def: &ResourceDef,
    api_version: &str,
    kv: &KeyValue,
    out: &mut Vec<u8>,
) -> ApiResult<()> {
    match crate::rawjson::Stored::served_as(&kv.value, api_version) {
        Some(stored) => stored.write_with_revision(out, kv.mod_revision),
        None => write_value(out, &decode(def, kv)?)?,
    }
    Ok(())
}

/// Appends `obj` as compact JSON to `out`.
pub fn write_value(out: &mut Vec<u8>, obj: &Value) -> ApiResult<()> {
    serde_json::to_writer(out, obj).map_err(|e| ApiError::internal(format!("encoding object: {e}")))
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
    if is_hpa_v1(def) {
        obj = hpa_v2_to_v1(obj);
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
    if is_hpa_v1(def) {
        obj = hpa_v1_to_v2(obj);
    }
    obj["apiVersion"] = json!(storage_def.api_version());
    obj["kind"] = json!(storage_def.kind);
    obj
}

fn is_hpa_v1(def: &ResourceDef) -> bool {
    def.group == "autoscaling" && def.version == "v1" && def.kind == "HorizontalPodAutoscaler"
}

/// Annotations keeping what autoscaling/v1 cannot say, as upstream's conversion does (the
/// values are autoscaling/v2 JSON here).
const HPA_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const HPA_CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const HPA_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const HPA_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotate(obj: &mut Value, key: &str, v: Option<Value>) {
    let Some(v) = v.filter(|v| v.as_array().is_none_or(|a| !a.is_empty())) else {
        return;
    };
    let md = kubox_core::meta::metadata_mut(obj);
    let ann = md.entry("annotations").or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    ann[key] = json!(v.to_string());
}

/// A stored autoscaling/v2 HPA as autoscaling/v1: the cpu utilization target and current
/// value become `targetCPUUtilizationPercentage`/`currentCPUUtilizationPercentage`; other
/// metrics, conditions and behavior go into annotations.
fn hpa_v2_to_v1(mut obj: Value) -> Value {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec.remove("metrics").and_then(|m| m.as_array().cloned());
        let behavior = spec.remove("behavior");
        let mut others = Vec::new();
        for m in metrics.into_iter().flatten() {
            if is_cpu_utilization(&m) && !spec.contains_key("targetCPUUtilizationPercentage") {
                spec.insert(
                    "targetCPUUtilizationPercentage".into(),
                    m["resource"]["target"]["averageUtilization"].clone(),
                );
            } else {
                others.push(m);
            }
        }
        annotate(&mut obj, HPA_METRICS, Some(Value::Array(others)));
        annotate(&mut obj, HPA_BEHAVIOR, behavior);
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = status
            .remove("currentMetrics")
            .and_then(|m| m.as_array().cloned());
        let conditions = status.remove("conditions");
        let mut others = Vec::new();
        for m in current.into_iter().flatten() {
            if m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && !m["resource"]["current"]["averageUtilization"].is_null()
            {
                status.insert(
                    "currentCPUUtilizationPercentage".into(),
                    m["resource"]["current"]["averageUtilization"].clone(),
                );
            } else {
                others.push(m);
            }
        }
        annotate(&mut obj, HPA_CURRENT_METRICS, Some(Value::Array(others)));
        annotate(&mut obj, HPA_CONDITIONS, conditions);
    }
    obj
}

/// An autoscaling/v1 HPA as stored (autoscaling/v2): the reverse of [`hpa_v2_to_v1`].
fn hpa_v1_to_v2(mut obj: Value) -> Value {
    let mut taken = |key: &str| -> Option<Value> {
        let ann = kubox_core::meta::metadata_mut(&mut obj)
            .get_mut("annotations")
            .and_then(Value::as_object_mut)?;
        let v = ann.remove(key)?;
        serde_json::from_str(v.as_str()?).ok()
    };
    let (metrics, current, conditions, behavior) = (
        taken(HPA_METRICS),
        taken(HPA_CURRENT_METRICS),
        taken(HPA_CONDITIONS),
        taken(HPA_BEHAVIOR),
    );
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && md
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
    {
        md.remove("annotations");
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let mut list = Vec::new();
        if let Some(t) = spec.remove("targetCPUUtilizationPercentage") {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": t}}}));
        }
        let has_cpu = !list.is_empty();
        list.extend(
            metrics
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|m| !(has_cpu && is_cpu_utilization(m))),
        );
        if !list.is_empty() {
            spec.insert("metrics".into(), Value::Array(list));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let mut list = Vec::new();
        if let Some(c) = status.remove("currentCPUUtilizationPercentage") {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}));
        }
        list.extend(
            current
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
        );
        if !list.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(list));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
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
    fn hpas_convert_between_v1_and_v2() {
        let reg = Registry::builtin();
        let v1 = reg
            .lookup("autoscaling", "v1", "horizontalpodautoscalers")
            .unwrap()
            .clone();
        let v2 = reg
            .lookup("autoscaling", "v2", "horizontalpodautoscalers")
            .unwrap()
            .clone();
        let created = json!({"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"h"},"spec":{"maxReplicas":3,"targetCPUUtilizationPercentage":50}});
        let stored = to_storage(&v1, &v2, created);
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(
            stored["spec"]
                .get("targetCPUUtilizationPercentage")
                .is_none()
        );
        let mut with_status = stored.clone();
        with_status["spec"]["metrics"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}));
        with_status["status"] = json!({"currentReplicas": 1, "currentMetrics": [{"type":"Resource","resource":{"name":"cpu","current":{"averageUtilization": 120, "averageValue": "120m"}}}], "conditions": [{"type":"AbleToScale","status":"True"}]});
        let seen = to_version(&v1, with_status.clone());
        assert_eq!(seen["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(seen["status"]["currentCPUUtilizationPercentage"], 120);
        assert!(seen["spec"].get("metrics").is_none());
        assert!(
            seen["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"]
                .as_str()
                .unwrap()
                .contains("memory")
        );
        // Back to v2 (a v1 update): nothing is lost but the cpu's averageValue.
        let back = to_storage(&v1, &v2, seen);
        assert_eq!(back["spec"]["metrics"], with_status["spec"]["metrics"]);
        assert_eq!(
            back["status"]["conditions"],
            with_status["status"]["conditions"]
        );
        assert!(back["metadata"].get("annotations").is_none());
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
