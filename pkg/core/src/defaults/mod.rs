//! Server-side defaulting of built-in types, as upstream's `SetDefaults_*` functions do it.
//!
//! Entry points: [`apply_defaults`] (run on create/update after decoding) and
//! [`job_selector_defaults`] (Job selector/labels generation, run once `metadata.uid` is set).

mod core;
mod other;
mod pod;
mod workloads;

use serde_json::{Map, Value};

pub use pod::{pod_spec_defaults, pod_template_defaults};
pub use workloads::job_selector_defaults;

/// Fills upstream's defaults into a built-in object of `group`/`version`/`kind`, in place.
/// Unknown kinds are left untouched.
pub fn apply_defaults(group: &str, version: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (group, kind) {
        ("", "Pod") => pod::pod_defaults(obj),
        ("", "PodTemplate") => pod_template_defaults(obj.get_mut("template")),
        ("", "ReplicationController") => workloads::replication_controller(obj),
        ("", "Service") => core::service(obj),
        ("", "Namespace") => core::namespace(obj),
        ("", "Secret") => core::secret(obj),
        ("", "PersistentVolume") => core::persistent_volume(obj),
        ("", "PersistentVolumeClaim") => core::persistent_volume_claim(obj),
        ("", "Node") => core::node(obj),
        ("", "Endpoints") => core::endpoints(obj),
        ("", "LimitRange") => core::limit_range(obj),
        ("apps", "Deployment") => workloads::deployment(obj),
        ("apps", "ReplicaSet") => workloads::replica_set(obj),
        ("apps", "StatefulSet") => workloads::stateful_set(obj),
        ("apps", "DaemonSet") => workloads::daemon_set(obj),
        ("batch", "Job") => workloads::job(obj),
        ("batch", "CronJob") => workloads::cron_job(obj),
        ("discovery.k8s.io", "EndpointSlice") => core::endpoint_slice(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => other::hpa(version, obj),
        ("networking.k8s.io", "NetworkPolicy") => other::network_policy(obj),
        ("storage.k8s.io", "StorageClass") => other::storage_class(obj),
        ("storage.k8s.io", "CSIDriver") => other::csi_driver(obj),
        ("scheduling.k8s.io", "PriorityClass") => other::priority_class(obj),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            other::webhook_configuration(obj, false)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            other::webhook_configuration(obj, true)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            other::validating_admission_policy(obj)
        }
        _ => {}
    }
}

/// Sets `m[key] = value` unless a non-null value is already there.
pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            m.insert(key.to_string(), value);
        }
    }
}

/// `m[key]` as an object, created (or replacing null/non-objects) if needed.
pub(crate) fn ensure_obj<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
    let slot = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable!("made an object above"),
    }
}

/// `v[key]` as an existing object, if it is one.
pub(crate) fn obj_at<'a>(
    v: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

/// Every object element of the array `m[key]`.
pub(crate) fn each_obj<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
        .filter_map(Value::as_object_mut)
}

/// Whether `m[key]` is absent, null or an empty string/array/object.
pub(crate) fn is_unset(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// The object's `spec` map, created if absent.
pub(crate) fn spec(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.as_object_mut().map(|o| ensure_obj(o, "spec"))
}
