//! k3s's local-path provisioner (`rancher.io/local-path`): a claim of such a class becomes a
//! `hostPath` volume `pvc-<claim uid>` at `<storage dir>/<claim uid>_<namespace>_<name>`
//! (type `DirectoryOrCreate`: the node's agent creates it when a pod mounts it), pinned by node
//! affinity to the node the scheduler picked (`volume.kubernetes.io/selected-node`), pre-bound
//! to the claim and annotated `pv.kubernetes.io/provisioned-by`. It carries the finalizer
//! [`CLEANUP_FINALIZER`]: once the volume is deleted (reclaim policy Delete), the agent of that
//! node removes the directory and then the finalizer, so data is only ever removed on its node.
//!
//! The storage dir is the server's `<data-dir>/storage` for every node (k3s uses the fixed
//! `/var/lib/rancher/k3s/storage`); a joined agent with another data dir still uses that path.
//! The provisioning itself is driven by the PersistentVolume controller's loop.

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use serde_json::json;

use crate::persistentvolume::{ANN_PROVISIONED_BY, ANN_SELECTED_NODE, waits_for_consumer};

pub const PROVISIONER: &str = "rancher.io/local-path";
/// Removed by the node's agent once the volume's directory is gone.
pub const CLEANUP_FINALIZER: &str = "kubox.io/local-path-cleanup";

/// Why no volume can be made yet.
#[derive(Debug, PartialEq, Eq)]
pub enum NotYet {
    /// Binding waits for a pod using the claim to be scheduled.
    WaitingForConsumer,
    /// An Immediate class: local-path volumes need a node (upstream's
    /// "configuration error, no node was specified").
    NoNode,
    /// The claim or class did not encode into a volume.
    Invalid(String),
}

/// The directory of `pvc`'s volume under `dir`.
pub fn volume_path(dir: &Path, pvc: &PersistentVolumeClaim) -> String {
    dir.join(format!(
        "{}_{}_{}",
        pvc.metadata.uid.as_deref().unwrap_or_default(),
        pvc.namespace().unwrap_or_default(),
        pvc.name_any()
    ))
    .display()
    .to_string()
}

/// The volume to create for `pvc` of `class` on `node` (its selected node).
pub fn volume_for(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: Option<&str>,
    dir: &Path,
) -> Result<PersistentVolume, NotYet> {
    let node = match node.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None if waits_for_consumer(Some(class)) => return Err(NotYet::WaitingForConsumer),
        None => return Err(NotYet::NoNode),
    };
    let spec = pvc.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let v = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default()),
            "annotations": {
                ANN_PROVISIONED_BY: PROVISIONER,
                "local.path.provisioner/selected-node": node,
            },
            "finalizers": [CLEANUP_FINALIZER],
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": volume_path(dir, pvc), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": pvc.namespace(),
                "name": pvc.name_any(),
                "uid": pvc.metadata.uid,
                "resourceVersion": pvc.metadata.resource_version,
            },
        },
    });
    serde_json::from_value(v).map_err(|e| NotYet::Invalid(e.to_string()))
}

/// The node a claim was scheduled to, if any.
pub fn selected_node(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.annotations().get(ANN_SELECTED_NODE).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_pinned_to_the_selected_node_under_the_storage_dir() {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "web", "uid": "abc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                "storageClassName": "local-path"}}))
        .unwrap_or_else(|e| panic!("{e}"));
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "local-path"}, "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}))
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = Path::new("/var/lib/kubox/storage");
        assert_eq!(
            volume_for(&pvc, &class, None, dir).err(),
            Some(NotYet::WaitingForConsumer)
        );
        let pv = volume_for(&pvc, &class, Some("n1"), dir).unwrap_or_else(|e| panic!("{e:?}"));
        let v = serde_json::to_value(&pv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["metadata"]["name"], "pvc-abc");
        assert_eq!(
            v["spec"]["hostPath"]["path"],
            "/var/lib/kubox/storage/abc_web_data"
        );
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
                [0],
            "n1"
        );
        assert_eq!(v["spec"]["claimRef"]["uid"], "abc");
        assert_eq!(v["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert!(crate::persistentvolume::satisfies(&pv, &pvc));
        assert!(crate::persistentvolume::bound_to(&pv, &pvc));
    }
}
