//! Pod volumes on the node: emptyDir (disk, or tmpfs for `medium: Memory`), hostPath,
//! configMap, secret, downwardAPI and projected (configMap, secret, downwardAPI and
//! service-account tokens from TokenRequest, bound to the pod and refreshed at 80% of their
//! lifetime as kubelet does), and the CRI mounts of a
//! container's volumeMounts. Content volumes are written the way kubelet's atomic writer
//! does: into a fresh timestamped directory, published by swapping the `..data` symlink, with
//! each key a symlink through `..data`, so updates of a ConfigMap or Secret reach running
//! pods whole.
//!
//! `persistentVolumeClaim` and `ephemeral` volumes (claim `<pod>-<volume>`) are resolved
//! claim → bound volume (the pod waits in ContainerCreating while the claim is unbound) and
//! bind-mount the volume's `hostPath` (created when its type is `DirectoryOrCreate`, mode 0777
//! as k3s's local-path provisioner makes it) or `local` path; the claim's `readOnly` makes every
//! mount of it read-only. [`clean_local_paths`] removes the directories of deleted local-path
//! volumes pinned to this node, then their cleanup finalizer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubox_containerd::cri::api;

use crate::pods::Ctx;

/// Where a pod's volumes live: `<pods_dir>/<uid>/volumes/<name>`.
pub fn volume_dir(ctx: &Ctx, pod: &Pod, name: &str) -> PathBuf {
    ctx.pods_dir
        .join(crate::spec::pod_uid(pod))
        .join("volumes")
        .join(name)
}

/// One file of a content volume: relative path, bytes, mode.
type File = (String, Vec<u8>, u32);

/// Prepares every volume of `pod` (creating dirs, writing content); returns why one cannot be
/// made yet (a missing ConfigMap or Secret that is not optional).
pub async fn prepare(ctx: &Ctx, pod: &Pod) -> Result<(), String> {
    let spec = pod.spec.clone().unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        let dir = volume_dir(ctx, pod, &v.name);
        if let Some(ed) = &v.empty_dir {
            std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {}: {e}", v.name))?;
            if ed.medium.as_deref() == Some("Memory") && !is_mountpoint(&dir) {
                nix::mount::mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(|e| format!("emptyDir {} (Memory): {e}", v.name))?;
            }
        } else if let Some(hp) = &v.host_path {
            let create = matches!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
            if create {
                std::fs::create_dir_all(&hp.path)
                    .map_err(|e| format!("hostPath {}: {e}", hp.path))?;
            }
        } else if let Some(claim) = claim_name(pod, v) {
            let path = claim_path(ctx, pod, &claim).await?;
            if let Ok(mut m) = ctx.claims.lock() {
                m.insert((crate::spec::pod_uid(pod), v.name.clone()), path);
            }
        } else if let Some(files) = content(ctx, pod, v).await? {
            write_atomic(&dir, &files).map_err(|e| format!("volume {}: {e}", v.name))?;
        }
    }
    Ok(())
}

/// The claim a volume uses: `persistentVolumeClaim.claimName`, or `<pod>-<volume>` for an
/// ephemeral volume.
fn claim_name(pod: &Pod, v: &Volume) -> Option<String> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some(c.claim_name.clone());
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    v.ephemeral
        .as_ref()
        .map(|_| format!("{pod_name}-{}", v.name))
}

/// Resolved host paths of claim volumes: (pod uid, volume name) → path.
pub type ClaimPaths = std::sync::Mutex<BTreeMap<(String, String), PathBuf>>;

/// The host directory of `claim`'s bound volume, created for `DirectoryOrCreate` hostPaths.
async fn claim_path(ctx: &Ctx, pod: &Pod, claim: &str) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pvc = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get_opt(claim)
        .await
        .map_err(|e| format!("getting persistentvolumeclaim \"{claim}\": {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        // kubelet's words.
        return Err(format!(
            "PVC {ns}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
        ));
    }
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get(&volume)
        .await
        .map_err(|e| format!("getting persistentvolume \"{volume}\": {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = spec.host_path {
        if hp.type_.as_deref() == Some("DirectoryOrCreate") && !Path::new(&hp.path).exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&hp.path)
                .and_then(|()| {
                    std::fs::set_permissions(&hp.path, std::fs::Permissions::from_mode(0o777))
                })
                .map_err(|e| format!("persistentvolume {volume} ({}): {e}", hp.path))?;
        }
        return Ok(PathBuf::from(hp.path));
    }
    if let Some(local) = spec.local {
        if !Path::new(&local.path).is_dir() {
            return Err(format!(
                "persistentvolume {volume}: local path {} does not exist",
                local.path
            ));
        }
        return Ok(PathBuf::from(local.path));
    }
    Err(format!(
        "persistentvolume {volume}: only hostPath and local volumes are supported"
    ))
}

/// The finalizer kubox's local-path provisioner puts on its volumes (kubox-controllers'
/// `localpath::CLEANUP_FINALIZER`): this node's agent removes it once the directory is gone.
const LOCAL_PATH_FINALIZER: &str = "kubox.io/local-path-cleanup";

/// The one node a volume's affinity pins it to (`kubernetes.io/hostname In [node]`).
fn pinned_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [req] = term.match_expressions.as_deref()? else {
        return None;
    };
    match req.values.as_deref() {
        Some([node]) if req.key == "kubernetes.io/hostname" && req.operator == "In" => Some(node),
        _ => None,
    }
}

/// The directory of a deleted local-path volume of `node` to remove, if it is one: only a
/// path ending in `<claim uid>_<namespace>_<claim>` is ever removed.
fn local_path_to_remove(pv: &PersistentVolume, node: &str) -> Option<PathBuf> {
    pv.metadata.deletion_timestamp.as_ref()?;
    if !pv
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == LOCAL_PATH_FINALIZER)
        || pinned_node(pv) != Some(node)
    {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let c = spec.claim_ref.as_ref()?;
    let dir_name = format!(
        "{}_{}_{}",
        c.uid.as_deref()?,
        c.namespace.as_deref()?,
        c.name.as_deref()?
    );
    let path = PathBuf::from(&spec.host_path.as_ref()?.path);
    (path.is_absolute() && path.file_name()?.to_str()? == dir_name).then_some(path)
}

/// Removes the directories of deleted local-path volumes of this node, then their finalizer.
pub async fn clean_local_paths(client: kube::Client, node: String) {
    let api = Api::<PersistentVolume>::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(ev) = events.next().await {
        let Ok(pv) = ev else { continue };
        let Some(path) = local_path_to_remove(&pv, &node) else {
            continue;
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(volume = %name, path = %path.display(), "removed local-path volume")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(volume = %name, error = %e, "removing a local-path volume failed");
                continue;
            }
        }
        let finalizers: Vec<String> = pv
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != LOCAL_PATH_FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers,
            "resourceVersion": pv.metadata.resource_version}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(volume = %name, error = %e, "removing the local-path finalizer failed");
        }
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let d = dir.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(d.as_str()))
}

/// Unmounts a pod's Memory emptyDirs and removes its volume directories.
/// (pod uid, audience, expirationSeconds) of a projected token.
type TokenKey = (String, String, i64);

/// Tokens issued for pods, with when to renew them.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<BTreeMap<TokenKey, (String, std::time::Instant)>>,
}

/// A token for `pod`'s service account as its projection asks, from the cache while fresh.
async fn service_account_token(
    ctx: &Ctx,
    pod: &Pod,
    p: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<String, String> {
    let uid = crate::spec::pod_uid(pod);
    let audience = p.audience.clone().unwrap_or_default();
    let expiration = p.expiration_seconds.unwrap_or(3600).max(600);
    let key = (uid.clone(), audience.clone(), expiration);
    if let Ok(m) = ctx.tokens.entries.lock()
        && let Some((token, renew_at)) = m.get(&key)
        && std::time::Instant::now() < *renew_at
    {
        return Ok(token.clone());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let mut spec = serde_json::json!({
        "expirationSeconds": expiration,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": uid},
    });
    if !audience.is_empty() {
        spec["audiences"] = serde_json::json!([audience]);
    }
    let req: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": spec}))
            .map_err(|e| format!("building a token request: {e}"))?;
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &ns);
    let resp = api
        .create_token_request(&sa, &Default::default(), &req)
        .await
        .map_err(|e| format!("requesting a token for service account {ns}/{sa}: {e}"))?;
    let token = resp
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("no token issued for service account {ns}/{sa}"))?;
    // Renew at 80% of the lifetime, as kubelet's token manager does.
    let renew_at =
        std::time::Instant::now() + std::time::Duration::from_secs((expiration as u64) * 8 / 10);
    if let Ok(mut m) = ctx.tokens.entries.lock() {
        m.insert(key, (token.clone(), renew_at));
    }
    Ok(token)
}

pub fn cleanup(ctx: &Ctx, uid: &str) {
    if let Ok(mut m) = ctx.tokens.entries.lock() {
        m.retain(|(pod_uid, _, _), _| pod_uid != uid);
    }
    if let Ok(mut m) = ctx.claims.lock() {
        m.retain(|(pod_uid, _), _| pod_uid != uid);
    }
    let root = ctx.pods_dir.join(uid).join("volumes");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if is_mountpoint(&e.path()) {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn pick(
    items: &Option<Vec<KeyToPath>>,
    data: &BTreeMap<String, Vec<u8>>,
    default_mode: u32,
) -> Result<Vec<File>, String> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                data.get(&i.key)
                    .map(|v| {
                        (
                            i.path.clone(),
                            v.clone(),
                            i.mode.map_or(default_mode, |m| m as u32),
                        )
                    })
                    .ok_or_else(|| format!("key {} not found", i.key))
            })
            .collect(),
    }
}

async fn config_map(ctx: &Ctx, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    Some(data)
}

async fn secret(ctx: &Ctx, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.extend(
        s.string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    Some(data)
}

fn downward(
    pod: &Pod,
    ctx: &Ctx,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
    default_mode: u32,
) -> Vec<File> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    items
        .iter()
        .map(|i| {
            let value = match &i.field_ref {
                Some(f)
                    if f.field_path == "metadata.labels"
                        || f.field_path == "metadata.annotations" =>
                {
                    let m = if f.field_path == "metadata.labels" {
                        pod.metadata.labels.clone()
                    } else {
                        pod.metadata.annotations.clone()
                    };
                    m.unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}\n"))
                        .collect::<String>()
                }
                Some(f) => crate::env::field_value(pod, &f.field_path, &ip, &ctx.node_ip),
                None => String::new(),
            };
            (
                i.path.clone(),
                value.into_bytes(),
                i.mode.map_or(default_mode, |m| m as u32),
            )
        })
        .collect()
}

/// The files of a content volume (None for other kinds); Err if a required source is missing.
async fn content(ctx: &Ctx, pod: &Pod, v: &Volume) -> Result<Option<Vec<File>>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.map_or(0o644, |m| m as u32);
        return match config_map(ctx, &ns, &c.name).await {
            Some(data) => pick(&c.items, &data, mode).map(Some),
            None if c.optional == Some(true) => Ok(Some(Vec::new())),
            None => Err(format!("configmap \"{}\" not found", c.name)),
        };
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.map_or(0o644, |m| m as u32);
        let name = s.secret_name.clone().unwrap_or_default();
        return match secret(ctx, &ns, &name).await {
            Some(data) => pick(&s.items, &data, mode).map(Some),
            None if s.optional == Some(true) => Ok(Some(Vec::new())),
            None => Err(format!("secret \"{name}\" not found")),
        };
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map_or(0o644, |m| m as u32);
        return Ok(Some(downward(
            pod,
            ctx,
            d.items.as_deref().unwrap_or_default(),
            mode,
        )));
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.map_or(0o644, |m| m as u32);
        let mut files = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                match config_map(ctx, &ns, &c.name).await {
                    Some(data) => files.extend(pick(&c.items, &data, mode)?),
                    None if c.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", c.name)),
                }
            }
            if let Some(s) = &src.secret {
                match secret(ctx, &ns, &s.name).await {
                    Some(data) => files.extend(pick(&s.items, &data, mode)?),
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward(
                    pod,
                    ctx,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                ));
            }
            if let Some(t) = &src.service_account_token {
                let token = service_account_token(ctx, pod, t).await?;
                files.push((t.path.clone(), token.into_bytes(), mode));
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// kubelet's atomic writer: a new `..<timestamp>` dir, `..data` swapped to it, key symlinks.
fn write_atomic(dir: &Path, files: &[File]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    // Unchanged content: nothing to do.
    if let Ok(current) = std::fs::read_link(&data_link) {
        let cur = dir.join(&current);
        let same = files
            .iter()
            .all(|(p, b, _)| std::fs::read(cur.join(p)).is_ok_and(|x| &x == b))
            && count_files(&cur) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let target = dir.join(&stamp);
    std::fs::create_dir_all(&target)?;
    for (path, bytes, mode) in files {
        if path.contains("..") || path.starts_with('/') {
            continue;
        }
        let f = target.join(path);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&f, bytes)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode & 0o777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp, &data_link)?;
    // Top-level names point through ..data.
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|(p, _, _)| p.split('/').next().map(str::to_string))
        .collect();
    tops.sort();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    // Names that went away, and the previous generation.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// The CRI mounts of `c`'s volumeMounts.
pub fn mounts(ctx: &Ctx, pod: &Pod, c: &Container) -> Vec<api::Mount> {
    let spec = pod.spec.clone().unwrap_or_default();
    let volumes: BTreeMap<String, Volume> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(v) = volumes.get(&m.name) else {
            continue;
        };
        let claim_read_only = v
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.read_only == Some(true));
        let claim_path = claim_name(pod, v).and_then(|_| {
            ctx.claims
                .lock()
                .ok()?
                .get(&(crate::spec::pod_uid(pod), v.name.clone()))
                .cloned()
        });
        let base = match (&v.host_path, claim_path) {
            (Some(hp), _) => PathBuf::from(&hp.path),
            (None, Some(p)) => p,
            (None, None) => volume_dir(ctx, pod, &v.name),
        };
        let content = v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if content => base.join("..data").join(sub),
            Some(sub) => {
                let p = base.join(sub);
                let _ = std::fs::create_dir_all(&p);
                p
            }
            None => base,
        };
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: m.read_only == Some(true) || content || claim_read_only,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deleted_local_path_dirs_of_this_node_are_removed() {
        let pv = |path: &str, deleting: bool| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pvc-u1", "finalizers": [LOCAL_PATH_FINALIZER],
                    "deletionTimestamp": if deleting { Some("2024-01-01T00:00:00Z") } else { None }},
                "spec": {"hostPath": {"path": path},
                    "claimRef": {"uid": "u1", "namespace": "ns", "name": "data"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let good = "/var/lib/kubox/storage/u1_ns_data";
        assert_eq!(
            local_path_to_remove(&pv(good, true), "n1"),
            Some(PathBuf::from(good))
        );
        assert_eq!(local_path_to_remove(&pv(good, true), "n2"), None);
        assert_eq!(local_path_to_remove(&pv(good, false), "n1"), None);
        assert_eq!(local_path_to_remove(&pv("/etc", true), "n1"), None);
    }

    #[test]
    fn the_atomic_writer_publishes_whole_generations_through_data() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = d.path().join("vol");
        write_atomic(
            &dir,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("sub/b".into(), b"2".to_vec(), 0o600),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(dir.join("a")).ok(), Some(b"1".to_vec()));
        assert_eq!(std::fs::read(dir.join("sub/b")).ok(), Some(b"2".to_vec()));
        let first = std::fs::read_link(dir.join("..data")).ok();
        write_atomic(
            &dir,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("sub/b".into(), b"2".to_vec(), 0o600),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_link(dir.join("..data")).ok(),
            first,
            "unchanged content is not rewritten"
        );
        write_atomic(&dir, &[("a".into(), b"3".to_vec(), 0o644)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(dir.join("a")).ok(), Some(b"3".to_vec()));
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "removed keys go"
        );
        let generations = std::fs::read_dir(&dir)
            .map(|e| {
                e.flatten()
                    .filter(|e| {
                        e.file_name().to_string_lossy().starts_with("..2")
                            || e.file_name().to_string_lossy().starts_with("..1")
                    })
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(generations, 1, "old generations are removed");
    }
}
