//! kubox-events: recording core/v1 Events (what `kubectl describe` and `kubectl get events`
//! show), for the controllers and the node agent (whose events name their node as `host` and
//! a container as the involved object's `fieldPath`, as the kubelet's do).
//!
//! As client-go's event correlator does, an event identical to one this recorder already
//! wrote (same source, object, type, reason and message) is not written again: the stored
//! Event's `count` and `lastTimestamp` are patched instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

/// How many distinct events a recorder remembers for aggregation (client-go's LRU size);
/// beyond it the memory starts over.
const REMEMBERED: usize = 4096;

/// Who records: `default-scheduler`, `deployment-controller`, ...
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// The node an agent's events come from (`source.host`, `reportingInstance`).
    host: Option<String>,
    /// Event key -> (stored Event's name, its count).
    seen: Arc<Mutex<HashMap<String, (String, i32)>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            host: None,
            seen: Arc::default(),
        }
    }

    /// A recorder of a node's component (`kubelet`): events carry the node as their source host.
    pub fn on_node(client: Client, component: &'static str, node: &str) -> Recorder {
        Recorder {
            host: Some(node.to_string()),
            ..Recorder::new(client, component)
        }
    }

    /// The stored Event and count of an identical earlier event, if any.
    fn earlier(&self, key: &str) -> Option<(String, i32)> {
        self.seen.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: String, name: String, count: i32) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= REMEMBERED && !seen.contains_key(&key) {
                seen.clear();
            }
            seen.insert(key, (name, count));
        }
    }

    /// Records a `Normal` or `Warning` event about `obj`. Failures are logged, never returned:
    /// an event is not worth failing a reconcile for.
    pub async fn event<K>(&self, obj: &K, type_: &str, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.event_on(obj, None, type_, reason, message).await
    }

    /// [`Recorder::event`] about a part of `obj` (`fieldPath`, as `spec.containers{web}`).
    pub async fn event_on<K>(
        &self,
        obj: &K,
        field_path: Option<String>,
        type_: &str,
        reason: &str,
        message: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let mut reference = object_reference(obj);
        reference.field_path = field_path;
        let ns = obj.namespace().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        // client-go's getEventKey: the object without its resourceVersion.
        let key = [
            self.component,
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default(),
            reference.uid.as_deref().unwrap_or_default(),
            reference.api_version.as_deref().unwrap_or_default(),
            reference.field_path.as_deref().unwrap_or_default(),
            type_,
            reason,
            &message,
        ]
        .join("\u{0}");
        if let Some((name, count)) = self.earlier(&key) {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": kubox_core::meta::format_time(now),
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, name, count + 1);
                    return;
                }
                // Gone (expired, deleted): record it afresh.
                Err(e) => tracing::debug!(error = %e, reason, "aggregating an event failed"),
            }
        }
        let name = format!("{}.{:x}", obj.name_any(), now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.into())),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => self.remember(key, name, 1),
            Err(e) => tracing::debug!(error = %e, reason, "recording an event failed"),
        }
    }
}

pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}
