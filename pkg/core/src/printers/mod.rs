//! Table printers: upstream's `kubectl get` columns for built-in kinds (meta.k8s.io/v1 Table).
//!
//! Entry points: [`table_columns`] / [`table_row`] for built-in kinds (what the kube-apiserver's
//! `pkg/printers/internalversion` handlers produce, always with the `-o wide` cells since the
//! server renders tables wide), and [`custom_columns`] / [`custom_row`] for custom resources'
//! `additionalPrinterColumns`. Unknown kinds get upstream's default table (Name, Created At).

mod apps;
mod core;
mod custom;
mod other;
mod pod;
mod storage;
mod util;

use serde_json::Value;

pub use custom::{custom_columns, custom_row};

/// One column of a Table (`columnDefinitions` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// OpenAPI type: "string", "integer", "number", "boolean", "date".
    pub type_: String,
    /// "name" for the NAME column, "" otherwise.
    pub format: String,
    pub description: String,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: i32,
}

/// The columns and the row function of one built-in kind.
struct Printer {
    columns: fn() -> Vec<Column>,
    row: fn(&Value) -> Vec<Value>,
}

fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, row| Some(Printer { columns, row });
    match (group, kind) {
        ("", "Pod") => p(pod::columns, pod::row),
        ("", "PodTemplate") => p(core::pod_template_columns, core::pod_template_row),
        ("", "ReplicationController") => p(core::rc_columns, core::rc_row),
        ("", "Service") => p(core::service_columns, core::service_row),
        ("", "Endpoints") => p(core::endpoints_columns, core::endpoints_row),
        ("", "Node") => p(core::node_columns, core::node_row),
        ("", "Event") | ("events.k8s.io", "Event") => p(core::event_columns, core::event_row),
        ("", "Namespace") => p(core::namespace_columns, core::namespace_row),
        ("", "ConfigMap") => p(core::config_map_columns, core::config_map_row),
        ("", "Secret") => p(core::secret_columns, core::secret_row),
        ("", "ServiceAccount") => p(core::service_account_columns, core::service_account_row),
        ("", "PersistentVolume") => p(storage::pv_columns, storage::pv_row),
        ("", "PersistentVolumeClaim") => p(storage::pvc_columns, storage::pvc_row),
        ("", "ResourceQuota") => p(core::quota_columns, core::quota_row),
        ("apps", "Deployment") => p(apps::deployment_columns, apps::deployment_row),
        ("apps", "ReplicaSet") => p(apps::replica_set_columns, apps::replica_set_row),
        ("apps", "StatefulSet") => p(apps::stateful_set_columns, apps::stateful_set_row),
        ("apps", "DaemonSet") => p(apps::daemon_set_columns, apps::daemon_set_row),
        ("apps", "ControllerRevision") => p(apps::revision_columns, apps::revision_row),
        ("batch", "Job") => p(apps::job_columns, apps::job_row),
        ("batch", "CronJob") => p(apps::cron_job_columns, apps::cron_job_row),
        ("storage.k8s.io", "StorageClass") => {
            p(storage::storage_class_columns, storage::storage_class_row)
        }
        ("storage.k8s.io", "CSIDriver") => p(storage::csi_driver_columns, storage::csi_driver_row),
        ("storage.k8s.io", "CSINode") => p(storage::csi_node_columns, storage::csi_node_row),
        ("storage.k8s.io", "VolumeAttachment") => {
            p(storage::attachment_columns, storage::attachment_row)
        }
        _ => other::printer(group, kind),
    }
}

/// Columns for a built-in kind; unknown kinds get NAME and CREATED AT, as upstream's default.
pub fn table_columns(group: &str, kind: &str) -> Vec<Column> {
    match printer(group, kind) {
        Some(p) => (p.columns)(),
        None => vec![
            util::name_col(),
            util::col("Created At", "date", util::AGE_DESC),
        ],
    }
}

/// The cells of one object's row, one per column of [`table_columns`].
pub fn table_row(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    match printer(group, kind) {
        Some(p) => (p.row)(obj),
        None => vec![util::name_cell(obj), Value::String(util::created_at(obj))],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "ReplicationController"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Node"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "Namespace"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("policy", "PodDisruptionBudget"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        ("example.com", "Widget"),
    ];

    #[test]
    fn every_kind_has_one_cell_per_column_even_for_empty_objects() {
        for (g, k) in KINDS {
            let cols = table_columns(g, k);
            for obj in [json!({}), json!({"metadata": {"name": "x"}, "spec": null})] {
                assert_eq!(table_row(g, k, &obj).len(), cols.len(), "{g}/{k}");
            }
        }
    }

    #[test]
    fn every_kind_has_exactly_one_name_column() {
        for (g, k) in KINDS {
            let cols = table_columns(g, k);
            let names: Vec<_> = cols.iter().filter(|c| c.name == "Name").collect();
            assert_eq!(names.len(), 1, "{g}/{k}");
            assert_eq!(
                (names[0].type_.as_str(), names[0].format.as_str()),
                ("string", "name")
            );
        }
    }

    #[test]
    fn unknown_kinds_get_name_and_created_at() {
        let cols = table_columns("rbac.authorization.k8s.io", "ClusterRole");
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Created At"]);
        assert_eq!(cols[1].type_, "date");
        let row = table_row(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            &json!({"metadata": {"name": "admin", "creationTimestamp": "2024-01-02T03:04:05Z"}}),
        );
        assert_eq!(row, vec![json!("admin"), json!("2024-01-02T03:04:05Z")]);
    }

    #[test]
    fn event_columns_put_name_last_and_wide() {
        let cols = table_columns("", "Event");
        assert_eq!(cols[0].name, "Last Seen");
        let last = cols.last().unwrap();
        assert_eq!((last.name.as_str(), last.priority), ("Name", 1));
    }
}
