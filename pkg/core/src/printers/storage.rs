//! Storage kinds: core PersistentVolume/PersistentVolumeClaim and storage.k8s.io.

use serde_json::{Value, json};

use super::Column;
use super::util::{
    age_cell, age_col, arr, boolean, col, name_cell, name_col, quantity, s, st, st_or, wide,
};
use crate::meta;

/// Upstream's `GetAccessModesAsString`: "RWO,ROX,RWX,RWOP" in that order.
pub(super) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class(obj: &Value) -> String {
    match crate::meta::map_entry(
        obj,
        "annotations",
        "volume.beta.kubernetes.io/storage-class",
    ) {
        Some(c) => c.to_string(),
        None => st(obj, "/spec/storageClassName").to_string(),
    }
}

fn deleting(obj: &Value) -> bool {
    crate::meta::meta_str(obj, "deletionTimestamp").is_some()
}

pub(super) fn pv_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Capacity",
            "string",
            "capacity is the description of the persistent volume's resources and capacity.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains all ways the volume can be mounted.",
        ),
        col(
            "Reclaim Policy",
            "string",
            "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
        ),
        col(
            "Status",
            "string",
            "phase indicates if a volume is available, bound to a claim, or released by a claim.",
        ),
        col(
            "Claim",
            "string",
            "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
        ),
        col("StorageClass", "string", "StorageClass of the pv"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pv",
        ),
        col(
            "Reason",
            "string",
            "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
        ),
        age_col(),
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
        ),
    ]
}

pub(super) fn pv_row(obj: &Value) -> Vec<Value> {
    let claim = match obj.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", st(c, "/namespace"), st(c, "/name")),
        None => String::new(),
    };
    let phase = if deleting(obj) {
        "Terminating"
    } else {
        st(obj, "/status/phase")
    };
    vec![
        name_cell(obj),
        json!(quantity(obj.pointer("/spec/capacity/storage"))),
        json!(access_modes(arr(obj, "/spec/accessModes"))),
        s(obj.pointer("/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(obj)),
        json!(st_or(obj, "/spec/volumeAttributesClassName", "<unset>")),
        s(obj.pointer("/status/reason")),
        age_cell(obj),
        json!(st_or(obj, "/spec/volumeMode", "<unset>")),
    ]
}

pub(super) fn pvc_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Status",
            "string",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        col(
            "Volume",
            "string",
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
        ),
        col(
            "Capacity",
            "string",
            "capacity represents the actual resources of the underlying volume.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains the actual access modes the volume backing the PVC has.",
        ),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        age_col(),
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
        ),
    ]
}

pub(super) fn pvc_row(obj: &Value) -> Vec<Value> {
    let phase = if deleting(obj) {
        "Terminating"
    } else {
        st(obj, "/status/phase")
    };
    let volume = st(obj, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(obj.pointer("/status/capacity/storage")),
            access_modes(arr(obj, "/status/accessModes")),
        )
    };
    vec![
        name_cell(obj),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(obj)),
        json!(st_or(obj, "/spec/volumeAttributesClassName", "<unset>")),
        age_cell(obj),
        json!(st_or(obj, "/spec/volumeMode", "<unset>")),
    ]
}

pub(super) fn storage_class_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Provisioner",
            "string",
            "provisioner indicates the type of the provisioner.",
        ),
        col(
            "ReclaimPolicy",
            "string",
            "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
        ),
        col(
            "VolumeBindingMode",
            "string",
            "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used.",
        ),
        col(
            "AllowVolumeExpansion",
            "string",
            "allowVolumeExpansion shows whether the storage class allow volume expand.",
        ),
        age_col(),
    ]
}

pub(super) fn storage_class_row(obj: &Value) -> Vec<Value> {
    let is_default = |key| meta::map_entry(obj, "annotations", key) == Some("true");
    let mut name = meta::name(obj).unwrap_or_default().to_string();
    if is_default("storageclass.kubernetes.io/is-default-class")
        || is_default("storageclass.beta.kubernetes.io/is-default-class")
    {
        name.push_str(" (default)");
    }
    vec![
        json!(name),
        s(obj.get("provisioner")),
        json!(st_or(obj, "/reclaimPolicy", "Delete")),
        json!(st_or(obj, "/volumeBindingMode", "Immediate")),
        json!(boolean(obj, "/allowVolumeExpansion").unwrap_or(false)),
        age_cell(obj),
    ]
}

pub(super) fn csi_driver_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "AttachRequired",
            "boolean",
            "attachRequired indicates this CSI volume driver requires an attach operation.",
        ),
        col(
            "PodInfoOnMount",
            "boolean",
            "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations.",
        ),
        col(
            "StorageCapacity",
            "boolean",
            "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report.",
        ),
        col(
            "TokenRequests",
            "string",
            "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication.",
        ),
        col(
            "RequiresRepublish",
            "boolean",
            "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume.",
        ),
        col(
            "Modes",
            "string",
            "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
        ),
        age_col(),
    ]
}

pub(super) fn csi_driver_row(obj: &Value) -> Vec<Value> {
    let tokens = match obj.pointer("/spec/tokenRequests").and_then(Value::as_array) {
        None => "<unset>".to_string(),
        Some(t) => t
            .iter()
            .map(|t| st(t, "/audience"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let modes: Vec<&str> = arr(obj, "/spec/volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let modes = if modes.is_empty() {
        "<none>".to_string()
    } else {
        modes.join(",")
    };
    vec![
        name_cell(obj),
        json!(boolean(obj, "/spec/attachRequired").unwrap_or(true)),
        json!(boolean(obj, "/spec/podInfoOnMount").unwrap_or(false)),
        json!(boolean(obj, "/spec/storageCapacity").unwrap_or(false)),
        json!(tokens),
        json!(boolean(obj, "/spec/requiresRepublish").unwrap_or(false)),
        json!(modes),
        age_cell(obj),
    ]
}

pub(super) fn csi_node_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Drivers",
            "integer",
            "Drivers indicates the number of CSI drivers registered on the node",
        ),
        age_col(),
    ]
}

pub(super) fn csi_node_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(arr(obj, "/spec/drivers").len()),
        age_cell(obj),
    ]
}

pub(super) fn attachment_columns() -> Vec<Column> {
    vec![
        name_col(),
        // Upstream declares this column with format "name" too.
        Column {
            format: "name".into(),
            ..col(
                "Attacher",
                "string",
                "attacher indicates the name of the volume driver that MUST handle this request.",
            )
        },
        col(
            "PV",
            "string",
            "persistentVolumeName represents the name of the persistent volume to attach.",
        ),
        col(
            "Node",
            "string",
            "nodeName represents the node that the volume should be attached to.",
        ),
        col(
            "Attached",
            "boolean",
            "attached indicates the volume is successfully attached.",
        ),
        age_col(),
    ]
}

pub(super) fn attachment_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(obj.pointer("/spec/attacher")),
        s(obj.pointer("/spec/source/persistentVolumeName")),
        s(obj.pointer("/spec/nodeName")),
        json!(boolean(obj, "/status/attached").unwrap_or(false)),
        age_cell(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_capacity_shows_only_when_bound() {
        let pvc = json!({"spec": {"volumeName": "pv1", "storageClassName": "local-path"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let row = pvc_row(&pvc);
        assert_eq!(
            row[1..7],
            [
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO"),
                json!("local-path"),
                json!("<unset>")
            ]
        );
    }

    #[test]
    fn default_storage_classes_are_marked() {
        let sc = json!({"metadata": {"name": "local-path", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path"});
        let row = storage_class_row(&sc);
        assert_eq!(
            row[..5],
            [
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }
}
