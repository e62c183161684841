//! The PersistentVolume controller (upstream's persistentvolume binder, simplified) and the
//! loop that drives the local-path provisioner.
//!
//! Claims of `Immediate` classes are bound to the smallest Available volume that fits (class,
//! volume mode, access modes, capacity, selector); a volume pre-bound to a claim
//! (`spec.claimRef`) or named by a claim (`spec.volumeName`) is taken first. Binding writes the
//! volume's `claimRef` (annotated `pv.kubernetes.io/bound-by-controller`) before the claim's
//! `volumeName` and `pv.kubernetes.io/bind-completed`, then both statuses. Claims of
//! `WaitForFirstConsumer` classes are bound only to volumes pre-bound to them: by the
//! scheduler (which also sets `volume.kubernetes.io/selected-node`) or by a provisioner.
//! Unmatched claims of a class with a provisioner get `volume.kubernetes.io/storage-provisioner`;
//! `rancher.io/local-path` claims are provisioned here (`localpath`). A volume whose claim is
//! gone is Released, then reclaimed: `Retain` keeps it, `Delete` deletes it when its provisioner
//! is known (local-path), otherwise it is Failed as upstream fails it.
//!
//! One pass over every claim and volume runs on each change (from reflectors) and every 15 s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::SelectorExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kubox_core::quantity::parse_milli;
use serde_json::json;
use tokio::sync::Notify;

use crate::Error;
use crate::events::Recorder;
use crate::localpath;

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The class a claim asks for (`storageClassName`, else the beta annotation; "" none).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or_else(|| {
            pvc.annotations()
                .get("volume.beta.kubernetes.io/storage-class")
                .cloned()
        })
        .unwrap_or_default()
}

pub fn volume_class(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or_else(|| {
            pv.annotations()
                .get("volume.beta.kubernetes.io/storage-class")
                .cloned()
        })
        .unwrap_or_default()
}

/// Whether `class` delays binding until a pod uses the claim.
pub fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The storage a claim requests, in thousandths of a byte.
fn requested(pvc: &PersistentVolumeClaim) -> i128 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

fn capacity(pv: &PersistentVolume) -> i128 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

/// Whether the volume's `claimRef` names this claim (uid empty: pre-bound by name).
pub fn bound_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(c) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    c.name.as_deref() == pvc.metadata.name.as_deref()
        && c.namespace.as_deref() == pvc.metadata.namespace.as_deref()
        && c.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

/// Whether `pv` can serve `pvc` by class, volume mode, access modes, size and selector.
pub fn satisfies(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() || volume_class(pv) != claim_class(pvc) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&vs.volume_mode) != mode(&cs.volume_mode) {
        return false;
    }
    let have = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    if capacity(pv) < requested(pvc) {
        return false;
    }
    match &cs.selector {
        None => true,
        Some(sel) => kube::core::Selector::try_from(sel.clone())
            .is_ok_and(|s| s.matches(pv.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))),
    }
}

/// The volume for an unbound claim: one pre-bound to it, else (`any_available`) the smallest
/// unclaimed volume that satisfies it (ties broken by name).
pub fn find_volume<'a>(
    pvc: &PersistentVolumeClaim,
    pvs: &'a [Arc<PersistentVolume>],
    any_available: bool,
) -> Option<&'a Arc<PersistentVolume>> {
    if let Some(pv) = pvs
        .iter()
        .find(|pv| bound_to(pv, pvc) && satisfies(pv, pvc))
    {
        return Some(pv);
    }
    if !any_available {
        return None;
    }
    pvs.iter()
        .filter(|pv| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()) && satisfies(pv, pvc))
        .min_by(|a, b| {
            capacity(a)
                .cmp(&capacity(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

fn phase_of_pv(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn phase_of_pvc(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Where the local-path provisioner puts volumes: `<storage_dir>/<uid>_<ns>_<name>`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub local_path_dir: PathBuf,
}

struct Binder {
    client: Client,
    recorder: Recorder,
    pvcs: Store<PersistentVolumeClaim>,
    pvs: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    cfg: StorageConfig,
}

/// Runs until the task is dropped.
pub async fn run(client: Client, cfg: StorageConfig) {
    let kick = Arc::new(Notify::new());
    let (pvcs, w1) = reflector::store();
    let (pvs, w2) = reflector::store();
    let (classes, w3) = reflector::store();
    spawn_reflector(Api::<PersistentVolumeClaim>::all(client.clone()), w1, &kick);
    spawn_reflector(Api::<PersistentVolume>::all(client.clone()), w2, &kick);
    spawn_reflector(Api::<StorageClass>::all(client.clone()), w3, &kick);
    let _ = pvcs.wait_until_ready().await;
    let _ = pvs.wait_until_ready().await;
    let _ = classes.wait_until_ready().await;
    let b = Binder {
        recorder: Recorder::new(client.clone(), "persistentvolume-controller"),
        client,
        pvcs,
        pvs,
        classes,
        cfg,
    };
    loop {
        b.sync_all().await;
        let _ = tokio::time::timeout(Duration::from_secs(15), kick.notified()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a reflector into `writer` that wakes `kick` on every change.
pub(crate) fn spawn_reflector<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    kick: &Arc<Notify>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let k = kick.clone();
    tokio::spawn(
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(move |_| {
                k.notify_one();
                async {}
            }),
    );
}

impl Binder {
    async fn sync_all(&self) {
        let pvs = self.pvs.state();
        for pvc in self.pvcs.state() {
            if let Err(e) = self.sync_claim(&pvc, &pvs).await {
                tracing::debug!(claim = %pvc.name_any(), error = %e, "syncing claim failed");
            }
        }
        for pv in &pvs {
            if let Err(e) = self.sync_volume(pv).await {
                tracing::debug!(volume = %pv.name_any(), error = %e, "syncing volume failed");
            }
        }
    }

    fn pvc_api(&self, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &pvc.namespace().unwrap_or_default())
    }

    async fn claim_phase(&self, pvc: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
        if phase_of_pvc(pvc) != phase {
            self.pvc_api(pvc)
                .patch_status(
                    &pvc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": phase}})),
                )
                .await?;
        }
        Ok(())
    }

    async fn volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> Result<(), Error> {
        if phase_of_pv(pv) != phase {
            Api::<PersistentVolume>::all(self.client.clone())
                .patch_status(
                    &pv.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": phase, "message": message,
                        "lastPhaseTransitionTime": kubox_core::meta::now_rfc3339()}})),
                )
                .await?;
        }
        Ok(())
    }

    async fn sync_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        pvs: &[Arc<PersistentVolume>],
    ) -> Result<(), Error> {
        if pvc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let volume_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(name) = volume_name {
            let Some(pv) = pvs.iter().find(|p| p.name_any() == name) else {
                let lost = phase_of_pvc(pvc) == "Bound" || phase_of_pvc(pvc) == "Lost";
                return self
                    .claim_phase(pvc, if lost { "Lost" } else { "Pending" })
                    .await;
            };
            let claimed = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            if claimed.is_none() {
                if !satisfies(pv, pvc) {
                    return self.claim_phase(pvc, "Pending").await;
                }
                self.bind_volume(pv, pvc).await?;
            } else if !bound_to(pv, pvc) {
                // The named volume is bound to another claim.
                return self.claim_phase(pvc, "Pending").await;
            } else if claimed
                .and_then(|c| c.uid.as_deref())
                .is_none_or(str::is_empty)
            {
                self.bind_volume(pv, pvc).await?;
            }
            return self.complete_claim(pvc, pv, false).await;
        }
        let class_name = claim_class(pvc);
        let class = self
            .classes
            .state()
            .into_iter()
            .find(|c| c.name_any() == class_name);
        let delayed = waits_for_consumer(class.as_deref());
        if let Some(pv) = find_volume(pvc, pvs, !delayed) {
            if !bound_to(pv, pvc)
                || pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.uid.as_deref())
                    .is_none_or(str::is_empty)
            {
                self.bind_volume(pv, pvc).await?;
            }
            return self.complete_claim(pvc, pv, true).await;
        }
        self.claim_phase(pvc, "Pending").await?;
        let Some(class) = class else { return Ok(()) };
        let provisioner = class.provisioner.as_str();
        if provisioner.is_empty() || provisioner == NO_PROVISIONER {
            return Ok(());
        }
        let annotations = pvc.annotations();
        if annotations.get(ANN_STORAGE_PROVISIONER).map(String::as_str) != Some(provisioner) {
            self.pvc_api(pvc)
                .patch(
                    &pvc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {
                        ANN_STORAGE_PROVISIONER: provisioner,
                        ANN_BETA_STORAGE_PROVISIONER: provisioner,
                    }}})),
                )
                .await?;
        }
        if provisioner == localpath::PROVISIONER {
            let node = localpath::selected_node(pvc).map(String::from);
            if pvs.iter().any(|pv| bound_to(pv, pvc)) {
                return Ok(());
            }
            match localpath::volume_for(pvc, &class, node.as_deref(), &self.cfg.local_path_dir) {
                Ok(pv) => {
                    let api = Api::<PersistentVolume>::all(self.client.clone());
                    match api.create(&Default::default(), &pv).await {
                        Ok(_) => {
                            self.recorder
                                .event(
                                    pvc,
                                    "Normal",
                                    "ProvisioningSucceeded",
                                    format!("Successfully provisioned volume {}", pv.name_any()),
                                )
                                .await;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(localpath::NotYet::WaitingForConsumer) => {}
                Err(localpath::NotYet::NoNode) => {
                    tracing::debug!(claim = %pvc.name_any(), "local-path needs a selected node");
                }
                Err(localpath::NotYet::Invalid(message)) => {
                    return Err(Error::invalid("local-path volume", message));
                }
            }
        }
        Ok(())
    }

    /// Points `pv`'s claimRef at `pvc` (bound by this controller).
    async fn bind_volume(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let patch = json!({
            "metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
            "spec": {"claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": pvc.namespace(),
                "name": pvc.name_any(),
                "uid": pvc.metadata.uid,
                "resourceVersion": pvc.metadata.resource_version,
            }},
        });
        Api::<PersistentVolume>::all(self.client.clone())
            .patch(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    /// The claim side of a binding: volumeName and annotations, then Bound status.
    async fn complete_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
        by_controller: bool,
    ) -> Result<(), Error> {
        let api = self.pvc_api(pvc);
        let annotations = pvc.annotations();
        let named =
            pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(&pv.name_any());
        if !named || !annotations.contains_key(ANN_BIND_COMPLETED) {
            let mut ann = json!({ANN_BIND_COMPLETED: "yes"});
            if by_controller && !named {
                ann[ANN_BOUND_BY_CONTROLLER] = json!("yes");
            }
            api.patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": ann},
                    "spec": {"volumeName": pv.name_any()}})),
            )
            .await?;
        }
        if phase_of_pvc(pvc) != "Bound" {
            let spec = pv.spec.clone().unwrap_or_default();
            api.patch_status(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Bound",
                    "accessModes": spec.access_modes,
                    "capacity": spec.capacity,
                }})),
            )
            .await?;
        }
        if phase_of_pv(pv) != "Bound" {
            self.volume_phase(pv, "Bound", None).await?;
        }
        Ok(())
    }

    async fn sync_volume(&self, pv: &PersistentVolume) -> Result<(), Error> {
        if pv.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(claim) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            return self.volume_phase(pv, "Available", None).await;
        };
        let uid = claim.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            // Pre-bound by name, waiting for its claim.
            return self.volume_phase(pv, "Available", None).await;
        }
        let ns = claim.namespace.clone().unwrap_or_default();
        let name = claim.name.clone().unwrap_or_default();
        let cached = self
            .pvcs
            .state()
            .into_iter()
            .find(|c| c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == name);
        if let Some(pvc) = cached.filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str())) {
            let named = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            match named.as_deref() {
                Some(n) if n == pv.name_any() => return self.volume_phase(pv, "Bound", None).await,
                Some(n)
                    if !n.is_empty() && pv.annotations().contains_key(ANN_BOUND_BY_CONTROLLER) =>
                {
                    // The claim went to another volume: this one is free again.
                    Api::<PersistentVolume>::all(self.client.clone())
                        .patch(
                            &pv.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"claimRef": null}})),
                        )
                        .await?;
                    return self.volume_phase(pv, "Available", None).await;
                }
                _ => return Ok(()),
            }
        }
        // The cache may lag: ask the API before releasing.
        let live = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .get_opt(&name)
            .await?;
        if live.is_some_and(|c| c.metadata.uid.as_deref() == Some(uid.as_str())) {
            return Ok(());
        }
        self.reclaim(pv).await
    }

    /// The claim of `pv` is gone: Released, then its reclaim policy.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), Error> {
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Retain".into());
        if phase_of_pv(pv) == "Failed" {
            return Ok(());
        }
        self.volume_phase(pv, "Released", None).await?;
        match policy.as_str() {
            "Delete" => {
                let provisioner = pv.annotations().get(ANN_PROVISIONED_BY).map(String::as_str);
                if provisioner == Some(localpath::PROVISIONER) {
                    let api = Api::<PersistentVolume>::all(self.client.clone());
                    match api.delete(&pv.name_any(), &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    let message = "error getting deleter volume plugin for volume \"".to_string()
                        + &pv.name_any()
                        + "\": no deletable volume plugin matched";
                    self.volume_phase(pv, "Failed", Some(&message)).await?;
                    self.recorder
                        .event(pv, "Warning", "VolumeFailedDelete", message)
                        .await;
                }
            }
            "Recycle" => {
                let message = "no volume plugin matched".to_string();
                self.volume_phase(pv, "Failed", Some(&message)).await?;
                self.recorder
                    .event(pv, "Warning", "VolumeFailedRecycle", message)
                    .await;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }
    fn pv(v: serde_json::Value) -> Arc<PersistentVolume> {
        Arc::new(serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")))
    }

    fn claim(size: &str, modes: &[&str]) -> PersistentVolumeClaim {
        pvc(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"storageClassName": "manual", "accessModes": modes,
                "resources": {"requests": {"storage": size}}}}),
        )
    }

    fn volume(name: &str, size: &str, modes: &[&str]) -> Arc<PersistentVolume> {
        pv(
            json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"storageClassName": "manual", "accessModes": modes,
                "capacity": {"storage": size}, "hostPath": {"path": "/x"}}}),
        )
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_class_is_chosen() {
        let c = claim("1Gi", &["ReadWriteOnce"]);
        let pvs = vec![
            volume("big", "10Gi", &["ReadWriteOnce"]),
            volume("small", "500Mi", &["ReadWriteOnce"]),
            volume("fits", "2Gi", &["ReadWriteOnce", "ReadOnlyMany"]),
            volume("ro", "1Gi", &["ReadOnlyMany"]),
        ];
        let got = find_volume(&c, &pvs, true).map(|p| p.name_any());
        assert_eq!(got.as_deref(), Some("fits"));
        assert!(
            find_volume(&c, &pvs, false).is_none(),
            "delayed binding takes only pre-bound volumes"
        );
        let c = claim("1Gi", &["ReadWriteMany"]);
        assert!(find_volume(&c, &pvs, true).is_none(), "no volume has RWX");
        let mut other = claim("1Gi", &["ReadWriteOnce"]);
        if let Some(s) = other.spec.as_mut() {
            s.storage_class_name = Some("other".into());
        }
        assert!(
            find_volume(&other, &pvs, true).is_none(),
            "class must match"
        );
    }

    #[test]
    fn selectors_claimed_and_prebound_volumes() {
        let mut c = claim("1Gi", &["ReadWriteOnce"]);
        let mut tagged = (*volume("tagged", "5Gi", &["ReadWriteOnce"])).clone();
        if let Some(l) = tagged.metadata.labels.as_mut() {
            l.insert("tier".into(), "slow".into());
        }
        let pvs = vec![Arc::new(tagged), volume("fast", "8Gi", &["ReadWriteOnce"])];
        if let Some(s) = c.spec.as_mut() {
            s.selector = serde_json::from_value(json!({"matchLabels": {"tier": "fast"}})).ok();
        }
        assert_eq!(
            find_volume(&c, &pvs, true).map(|p| p.name_any()).as_deref(),
            Some("fast")
        );

        let c = claim("1Gi", &["ReadWriteOnce"]);
        let taken = pv(
            json!({"metadata": {"name": "taken"}, "spec": {"storageClassName": "manual",
            "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "claimRef": {"namespace": "ns", "name": "other", "uid": "u9"}}}),
        );
        let prebound = pv(
            json!({"metadata": {"name": "mine"}, "spec": {"storageClassName": "manual",
            "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "9Gi"},
            "claimRef": {"namespace": "ns", "name": "data"}}}),
        );
        let pvs = vec![
            taken.clone(),
            volume("free", "1Gi", &["ReadWriteOnce"]),
            prebound,
        ];
        assert_eq!(
            find_volume(&c, &pvs, false)
                .map(|p| p.name_any())
                .as_deref(),
            Some("mine"),
            "a volume pre-bound to the claim wins, even when binding is delayed"
        );
        assert!(!bound_to(&taken, &c));
        let wrong_uid = pv(json!({"metadata": {"name": "old"}, "spec": {
            "claimRef": {"namespace": "ns", "name": "data", "uid": "u0"}}}));
        assert!(
            !bound_to(&wrong_uid, &c),
            "a volume of a deleted claim of the same name"
        );
    }

    #[test]
    fn volume_modes_and_classes_from_annotations() {
        let c = pvc(json!({"metadata": {"name": "d", "namespace": "ns",
            "annotations": {"volume.beta.kubernetes.io/storage-class": "manual"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                "resources": {"requests": {"storage": "1Gi"}}}}));
        assert_eq!(claim_class(&c), "manual");
        let fs = volume("fs", "1Gi", &["ReadWriteOnce"]);
        assert!(!satisfies(&fs, &c), "Filesystem volume for a Block claim");
    }
}
