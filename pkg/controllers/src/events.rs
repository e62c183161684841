//! Recording core/v1 Events (what `kubectl describe` and `kubectl get events` show).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

/// Who records: `default-scheduler`, `deployment-controller`, ...
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    /// Records a `Normal` or `Warning` event about `obj`. Failures are logged, never returned:
    /// an event is not worth failing a reconcile for.
    pub async fn event<K>(&self, obj: &K, type_: &str, reason: &str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let reference = object_reference(obj);
        let ns = obj.namespace().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, reason, "recording an event failed");
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
