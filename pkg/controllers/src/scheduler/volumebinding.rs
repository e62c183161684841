//! Upstream's VolumeBinding plugin, simplified: a pod's claims must exist; unbound claims of
//! `Immediate` classes keep it pending; a bound claim's volume node affinity limits the nodes;
//! an unbound `WaitForFirstConsumer` claim fits a node when its class has a provisioner or a
//! free volume that fits is reachable there. Once a node is chosen, [`prebind`] says what to
//! write before the pod is bound: `volume.kubernetes.io/selected-node` on claims to provision,
//! or the chosen static volume's `claimRef` (the PV controller completes both bindings).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::persistentvolume::{claim_class, find_volume, satisfies, waits_for_consumer};

/// The claims, volumes and classes the scheduler sees.
pub struct Volumes {
    pub pvcs: Vec<Arc<PersistentVolumeClaim>>,
    pub pvs: Vec<Arc<PersistentVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
}

/// What to write for one claim before the pod is bound.
#[derive(Debug, PartialEq, Eq)]
pub enum PreBind {
    /// Annotate the claim with the node (provisioning).
    SelectNode { namespace: String, claim: String },
    /// Pre-bind this volume to the claim.
    BindVolume {
        namespace: String,
        claim: String,
        uid: String,
        volume: String,
    },
}

fn claim_name(v: &k8s_openapi::api::core::v1::Volume, pod: &Pod) -> Option<(String, bool)> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some((c.claim_name.clone(), false));
    }
    v.ephemeral
        .as_ref()
        .map(|_| (format!("{}-{}", pod.name_any(), v.name), true))
}

impl Volumes {
    fn class(&self, pvc: &PersistentVolumeClaim) -> Option<&StorageClass> {
        let name = claim_class(pvc);
        self.classes
            .iter()
            .find(|c| c.name_any() == name)
            .map(AsRef::as_ref)
    }

    /// The pod's claims, or why no node can take it (upstream's PreFilter messages).
    pub fn pod_claims(&self, pod: &Pod) -> Result<Vec<Arc<PersistentVolumeClaim>>, String> {
        let ns = pod.namespace().unwrap_or_default();
        let mut out = Vec::new();
        let mut unbound_immediate = false;
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some((name, ephemeral)) = claim_name(v, pod) else {
                continue;
            };
            let Some(pvc) = self
                .pvcs
                .iter()
                .find(|c| c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == name)
            else {
                return Err(if ephemeral {
                    format!(
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim \"{name}\""
                    )
                } else {
                    format!("persistentvolumeclaim \"{name}\" not found")
                });
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            if !is_bound(pvc) && !waits_for_consumer(self.class(pvc)) {
                unbound_immediate = true;
            }
            out.push(pvc.clone());
        }
        if unbound_immediate {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        Ok(out)
    }

    /// Why `node` cannot host the pod's claims (empty: it can).
    pub fn filter(&self, claims: &[Arc<PersistentVolumeClaim>], node: &Node) -> Vec<String> {
        let mut reasons = Vec::new();
        for pvc in claims {
            if is_bound(pvc) {
                let name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                match self
                    .pvs
                    .iter()
                    .find(|p| Some(p.name_any().as_str()) == name)
                {
                    None => reasons.push(
                        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
                            .to_string(),
                    ),
                    Some(pv) if !reachable(pv, node) => {
                        reasons.push("node(s) had volume node affinity conflict".to_string())
                    }
                    Some(_) => {}
                }
            } else if self.static_volume(pvc, node).is_none() && !self.provisionable(pvc) {
                reasons
                    .push("node(s) didn't find available persistent volumes to bind".to_string());
            }
        }
        reasons.sort();
        reasons.dedup();
        reasons
    }

    fn provisionable(&self, pvc: &PersistentVolumeClaim) -> bool {
        self.class(pvc).is_some_and(|c| {
            !c.provisioner.is_empty() && c.provisioner != "kubernetes.io/no-provisioner"
        })
    }

    /// A volume pre-bound to the claim, else a free one that fits, reachable from `node`.
    fn static_volume(&self, pvc: &PersistentVolumeClaim, node: &Node) -> Option<String> {
        let reachable: Vec<Arc<PersistentVolume>> = self
            .pvs
            .iter()
            .filter(|p| reachable(p, node) && satisfies(p, pvc))
            .cloned()
            .collect();
        find_volume(pvc, &reachable, true).map(|p| p.name_any())
    }

    /// What to write before binding the pod to `node`.
    pub fn prebind(&self, claims: &[Arc<PersistentVolumeClaim>], node: &Node) -> Vec<PreBind> {
        let node_name = node.name_any();
        let mut out = Vec::new();
        for pvc in claims.iter().filter(|c| !is_bound(c)) {
            let namespace = pvc.namespace().unwrap_or_default();
            let claim = pvc.name_any();
            if let Some(volume) = self.static_volume(pvc, node) {
                let prebound = self
                    .pvs
                    .iter()
                    .any(|p| p.name_any() == volume && crate::persistentvolume::bound_to(p, pvc));
                if !prebound {
                    out.push(PreBind::BindVolume {
                        namespace,
                        claim,
                        uid: pvc.metadata.uid.clone().unwrap_or_default(),
                        volume,
                    });
                }
            } else if pvc
                .annotations()
                .get(crate::persistentvolume::ANN_SELECTED_NODE)
                != Some(&node_name)
            {
                out.push(PreBind::SelectNode { namespace, claim });
            }
        }
        out
    }
}

fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// Whether the volume's required node affinity admits `node`.
pub fn reachable(pv: &PersistentVolume, node: &Node) -> bool {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice());
    match terms {
        None => true,
        Some(terms) => terms.iter().any(|t| super::fit::term_matches(t, node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn node(name: &str) -> Node {
        from(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}))
    }

    fn state() -> Volumes {
        Volumes {
            pvcs: vec![
                Arc::new(from(
                    json!({"metadata": {"name": "wffc", "namespace": "ns", "uid": "1"},
                    "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "imm", "namespace": "ns", "uid": "2"},
                    "spec": {"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "bound", "namespace": "ns", "uid": "3"},
                    "spec": {"storageClassName": "local-path", "volumeName": "pv-n1", "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "static", "namespace": "ns", "uid": "4"},
                    "spec": {"storageClassName": "local-storage", "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
                )),
            ],
            pvs: vec![
                Arc::new(from(
                    json!({"metadata": {"name": "pv-n1"}, "spec": {"storageClassName": "local-path",
                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "claimRef": {"namespace": "ns", "name": "bound", "uid": "3"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "local-n2"}, "spec": {"storageClassName": "local-storage",
                    "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
                )),
            ],
            classes: vec![
                Arc::new(from(
                    json!({"metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path",
                    "volumeBindingMode": "WaitForFirstConsumer"}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "local-storage"}, "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "WaitForFirstConsumer"}),
                )),
                Arc::new(from(
                    json!({"metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner",
                    "volumeBindingMode": "Immediate"}),
                )),
            ],
        }
    }

    fn pod(claims: &[&str]) -> Pod {
        let vols: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        from(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [], "volumes": vols}}),
        )
    }

    #[test]
    fn missing_and_unbound_immediate_claims_keep_the_pod_pending() {
        let s = state();
        assert_eq!(
            s.pod_claims(&pod(&["nope"])).err().as_deref(),
            Some("persistentvolumeclaim \"nope\" not found")
        );
        assert_eq!(
            s.pod_claims(&pod(&["wffc", "imm"])).err().as_deref(),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
        let eph: Pod = from(
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [],
            "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}}),
        );
        assert!(
            s.pod_claims(&eph)
                .is_err_and(|m| m.contains("\"p-scratch\""))
        );
    }

    #[test]
    fn bound_volumes_pin_the_node_and_delayed_claims_get_the_chosen_node() {
        let s = state();
        let claims = s.pod_claims(&pod(&["bound", "wffc"])).unwrap_or_default();
        assert_eq!(claims.len(), 2);
        assert!(s.filter(&claims, &node("n1")).is_empty());
        assert_eq!(
            s.filter(&claims, &node("n2")),
            vec!["node(s) had volume node affinity conflict".to_string()]
        );
        assert_eq!(
            s.prebind(&claims, &node("n1")),
            vec![PreBind::SelectNode {
                namespace: "ns".into(),
                claim: "wffc".into()
            }]
        );
    }

    #[test]
    fn static_local_volumes_are_found_on_their_node_only() {
        let s = state();
        let claims = s.pod_claims(&pod(&["static"])).unwrap_or_default();
        assert_eq!(
            s.filter(&claims, &node("n1")),
            vec!["node(s) didn't find available persistent volumes to bind".to_string()]
        );
        assert!(s.filter(&claims, &node("n2")).is_empty());
        assert_eq!(
            s.prebind(&claims, &node("n2")),
            vec![PreBind::BindVolume {
                namespace: "ns".into(),
                claim: "static".into(),
                uid: "4".into(),
                volume: "local-n2".into()
            }]
        );
    }
}
