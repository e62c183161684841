//! The built-in kinds kubox knows a schema for: (group, version, kind) to a k8s-openapi type.

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::{JsonSchema, SchemaGenerator};

/// Adds the schema of `T` (and everything it references) to the generator; returns its name.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    let _ = generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

macro_rules! kinds {
    ($generator:ident; $( ($group:literal, $version:literal, $kind:literal) => $ty:ty, )*) => {
        vec![ $( (($group, $version, $kind), add::<$ty>($generator)), )* ]
    };
}

/// Adds the schema of every built-in kind to `generator`: ((group, version, kind), schema name
/// such as `io.k8s.api.apps.v1.Deployment`).
pub(crate) fn add_kinds(
    generator: &mut SchemaGenerator,
) -> Vec<((&'static str, &'static str, &'static str), String)> {
    kinds! { generator;
        ("", "v1", "Binding") => api::core::v1::Binding,
        ("", "v1", "ComponentStatus") => api::core::v1::ComponentStatus,
        ("", "v1", "ConfigMap") => api::core::v1::ConfigMap,
        ("", "v1", "Endpoints") => api::core::v1::Endpoints,
        ("", "v1", "Event") => api::core::v1::Event,
        ("", "v1", "LimitRange") => api::core::v1::LimitRange,
        ("", "v1", "Namespace") => api::core::v1::Namespace,
        ("", "v1", "Node") => api::core::v1::Node,
        ("", "v1", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaim,
        ("", "v1", "PersistentVolume") => api::core::v1::PersistentVolume,
        ("", "v1", "Pod") => api::core::v1::Pod,
        ("", "v1", "PodTemplate") => api::core::v1::PodTemplate,
        ("", "v1", "ReplicationController") => api::core::v1::ReplicationController,
        ("", "v1", "ResourceQuota") => api::core::v1::ResourceQuota,
        ("", "v1", "Secret") => api::core::v1::Secret,
        ("", "v1", "ServiceAccount") => api::core::v1::ServiceAccount,
        ("", "v1", "Service") => api::core::v1::Service,
        ("apps", "v1", "ControllerRevision") => api::apps::v1::ControllerRevision,
        ("apps", "v1", "DaemonSet") => api::apps::v1::DaemonSet,
        ("apps", "v1", "Deployment") => api::apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => api::apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => api::apps::v1::StatefulSet,
        ("events.k8s.io", "v1", "Event") => api::events::v1::Event,
        ("authentication.k8s.io", "v1", "TokenRequest") => api::authentication::v1::TokenRequest,
        ("authentication.k8s.io", "v1", "TokenReview") => api::authentication::v1::TokenReview,
        ("authentication.k8s.io", "v1", "SelfSubjectReview") => api::authentication::v1::SelfSubjectReview,
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => api::authorization::v1::LocalSubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => api::authorization::v1::SelfSubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => api::authorization::v1::SelfSubjectRulesReview,
        ("authorization.k8s.io", "v1", "SubjectAccessReview") => api::authorization::v1::SubjectAccessReview,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => api::autoscaling::v1::HorizontalPodAutoscaler,
        ("autoscaling", "v1", "Scale") => api::autoscaling::v1::Scale,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscaler,
        ("batch", "v1", "CronJob") => api::batch::v1::CronJob,
        ("batch", "v1", "Job") => api::batch::v1::Job,
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => api::certificates::v1::CertificateSigningRequest,
        ("networking.k8s.io", "v1", "IngressClass") => api::networking::v1::IngressClass,
        ("networking.k8s.io", "v1", "Ingress") => api::networking::v1::Ingress,
        ("networking.k8s.io", "v1", "NetworkPolicy") => api::networking::v1::NetworkPolicy,
        ("policy", "v1", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudget,
        ("policy", "v1", "Eviction") => api::policy::v1::Eviction,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => api::rbac::v1::ClusterRoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => api::rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => api::rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "Role") => api::rbac::v1::Role,
        ("storage.k8s.io", "v1", "CSIDriver") => api::storage::v1::CSIDriver,
        ("storage.k8s.io", "v1", "CSINode") => api::storage::v1::CSINode,
        ("storage.k8s.io", "v1", "CSIStorageCapacity") => api::storage::v1::CSIStorageCapacity,
        ("storage.k8s.io", "v1", "StorageClass") => api::storage::v1::StorageClass,
        ("storage.k8s.io", "v1", "VolumeAttachment") => api::storage::v1::VolumeAttachment,
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => api::admissionregistration::v1::MutatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => api::admissionregistration::v1::ValidatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => api::admissionregistration::v1::ValidatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiext::CustomResourceDefinition,
        ("scheduling.k8s.io", "v1", "PriorityClass") => api::scheduling::v1::PriorityClass,
        ("coordination.k8s.io", "v1", "Lease") => api::coordination::v1::Lease,
        ("node.k8s.io", "v1", "RuntimeClass") => api::node::v1::RuntimeClass,
        ("discovery.k8s.io", "v1", "EndpointSlice") => api::discovery::v1::EndpointSlice,
        ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema") => api::flowcontrol::v1::FlowSchema,
        ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration") => api::flowcontrol::v1::PriorityLevelConfiguration,
    }
}

/// Schema names of the meta/v1 types every group-version document references from its paths.
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Adds the meta/v1 types paths refer to (Status, DeleteOptions, Patch, WatchEvent, ...);
/// returns their schema names.
pub(crate) fn add_meta(generator: &mut SchemaGenerator) -> Vec<String> {
    vec![
        add::<meta::Status>(generator),
        add::<meta::DeleteOptions>(generator),
        add::<meta::Patch>(generator),
        add::<meta::WatchEvent<()>>(generator),
        add::<meta::APIResourceList>(generator),
        add::<meta::ObjectMeta>(generator),
        add::<meta::ListMeta>(generator),
    ]
}
