//! Static pods (the kubelet's file source): Pod manifests in `<data-dir>/agent/pod-manifests/`
//! run by the agent itself, without the API server's say, and shown in the API as mirror
//! pods.
//!
//! As upstream: one Pod per file (`.yaml`, `.yml`, `.json`; hidden files skipped), named
//! `<name>-<node>`, namespace `default` unless given, defaulted, its uid a hash of the
//! manifest and the node (so a restarted agent adopts its containers and an edited manifest
//! replaces the pod), tolerating every NoExecute taint. The mirror pod carries the
//! `kubernetes.io/config.mirror` annotation and an owner reference to the Node; deleting it
//! does not stop the static pod (it comes back), removing the file does. The directory is
//! read again every few seconds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// Whether `pod` is the API's mirror of a static pod (the agent runs the file's pod instead).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The pod of one manifest, as the agent runs it.
pub fn from_manifest(text: &str, node: &str) -> Result<Pod, String> {
    let mut v: Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    if v.get("kind").and_then(Value::as_str) != Some("Pod") {
        return Err("a static pod manifest must be one object of kind Pod".into());
    }
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is required")?
        .to_string();
    let name = format!("{name}-{node}");
    if let Some(e) = kubox_core::names::name_error(&name, false) {
        return Err(format!("pod name {name:?}: {e}"));
    }
    kubox_core::defaults::apply_defaults("", "v1", "Pod", &mut v);
    let meta = v
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("metadata must be an object")?;
    meta.insert("name".into(), json!(name));
    if meta
        .get("namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), json!("default"));
    }
    for server_owned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(server_owned);
    }
    let spec = v
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or("spec is required")?;
    spec.insert("nodeName".into(), json!(node));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        list.push(json!({"operator": "Exists", "effect": "NoExecute"}));
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    // The uid: the defaulted manifest and the node, hashed.
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&v).unwrap_or_default());
    h.update(node.as_bytes());
    let hash = hex::encode(&h.finalize()[..16]);
    let meta = v
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or("metadata must be an object")?;
    meta.insert("uid".into(), json!(hash));
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    annotations[HASH_ANNOTATION] = json!(hash);
    annotations[SOURCE_ANNOTATION] = json!("file");
    serde_json::from_value(v).map_err(|e| format!("not a valid Pod: {e}"))
}

/// The mirror pod of a static pod: the same object for the API, uid left to the server,
/// marked as a mirror and owned by the node.
fn mirror_of(pod: &Pod, node: &Node) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    let hash = annotation(pod, HASH_ANNOTATION)
        .unwrap_or_default()
        .to_string();
    m.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(MIRROR_ANNOTATION.into(), hash);
    m.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.metadata.name.clone().unwrap_or_default(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    m
}

/// What the API shows of a mirror pod.
struct Mirror {
    uid: String,
    hash: String,
    deleting: bool,
}

/// The static pods of this node and their mirror pods.
pub struct StaticPods {
    dir: PathBuf,
    node: String,
    client: Client,
    /// By uid.
    pods: BTreeMap<String, Arc<Pod>>,
    /// Mirror pods seen in the API, by (namespace, name).
    mirrors: HashMap<(String, String), Mirror>,
    /// Manifests that failed, with the error last logged (logged again only when it changes).
    broken: HashMap<PathBuf, String>,
}

/// What reading the manifests changed: pods to run (new ones), uids to stop.
#[derive(Default)]
pub struct Changes {
    pub started: Vec<Arc<Pod>>,
    pub stopped: Vec<String>,
}

fn key_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl StaticPods {
    pub fn new(dir: PathBuf, node: String, client: Client) -> StaticPods {
        StaticPods {
            dir,
            node,
            client,
            pods: BTreeMap::new(),
            mirrors: HashMap::new(),
            broken: HashMap::new(),
        }
    }

    /// The uids of the static pods (their sandboxes are not orphans).
    pub fn uids(&self) -> impl Iterator<Item = &String> {
        self.pods.keys()
    }

    /// Reads the manifest directory again.
    pub fn reload(&mut self) -> Changes {
        let mut now = BTreeMap::new();
        for path in manifest_files(&self.dir) {
            let result = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| from_manifest(&text, &self.node));
            match result {
                Ok(pod) => {
                    self.broken.remove(&path);
                    now.insert(crate::spec::pod_uid(&pod), Arc::new(pod));
                }
                Err(e) => {
                    if self.broken.get(&path) != Some(&e) {
                        tracing::warn!(manifest = %path.display(), error = %e, "static pod manifest ignored");
                        self.broken.insert(path, e);
                    }
                }
            }
        }
        let mut changes = Changes::default();
        for (uid, pod) in &now {
            if !self.pods.contains_key(uid) {
                tracing::info!(pod = %key_of(pod).1, "static pod added");
                changes.started.push(pod.clone());
            }
        }
        for uid in self.pods.keys() {
            if !now.contains_key(uid) {
                changes.stopped.push(uid.clone());
            }
        }
        self.pods = now;
        changes
    }

    /// Takes note of a mirror pod from the pod watch (`deleted` when it left the API).
    pub fn observe(&mut self, pod: &Pod, deleted: bool) {
        let key = key_of(pod);
        if deleted {
            if self
                .mirrors
                .get(&key)
                .is_some_and(|m| Some(&m.uid) == pod.metadata.uid.as_ref())
            {
                self.mirrors.remove(&key);
            }
            return;
        }
        self.mirrors.insert(
            key,
            Mirror {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                hash: annotation(pod, MIRROR_ANNOTATION)
                    .unwrap_or_default()
                    .to_string(),
                deleting: pod.metadata.deletion_timestamp.is_some(),
            },
        );
    }

    /// Brings the mirror pods in line with the static pods: creates missing ones, replaces
    /// stale or deleted ones, removes those whose manifest is gone.
    pub async fn sync_mirrors(&mut self) {
        let wanted: HashMap<(String, String), Arc<Pod>> =
            self.pods.values().map(|p| (key_of(p), p.clone())).collect();
        let stale: Vec<((String, String), String)> = self
            .mirrors
            .iter()
            .filter(|(key, m)| {
                m.deleting
                    || wanted
                        .get(*key)
                        .is_none_or(|p| annotation(p, HASH_ANNOTATION) != Some(m.hash.as_str()))
            })
            .map(|(k, m)| (k.clone(), m.uid.clone()))
            .collect();
        for ((ns, name), uid) in stale {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    self.mirrors.remove(&(ns, name));
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    self.mirrors.remove(&(ns, name));
                }
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, "deleting a stale mirror pod failed")
                }
            }
        }
        let missing: Vec<Arc<Pod>> = wanted
            .iter()
            .filter(|(k, _)| !self.mirrors.contains_key(*k))
            .map(|(_, p)| p.clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = match nodes.get(&self.node).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "reading the Node for mirror pods failed");
                return;
            }
        };
        for pod in missing {
            let (ns, name) = key_of(&pod);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api
                .create(&PostParams::default(), &mirror_of(&pod, &node))
                .await
            {
                Ok(created) => self.observe(&created, false),
                // A deleted mirror still terminating, or a pod of that name: next round.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(pod = %name, namespace = %ns, error = %e, "creating the mirror pod failed")
                }
            }
        }
    }
}

/// The manifest files of `dir`, sorted (none if it does not exist).
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox
"#;

    #[test]
    fn a_manifest_becomes_a_node_bound_defaulted_pod_with_a_stable_uid() {
        let pod = from_manifest(MANIFEST, "node-1").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert!(
            spec.tolerations
                .as_ref()
                .unwrap()
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists")
                    && t.effect.as_deref() == Some("NoExecute"))
        );
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(annotation(&pod, HASH_ANNOTATION), Some(uid.as_str()));
        assert_eq!(annotation(&pod, SOURCE_ANNOTATION), Some("file"));
        // Same manifest, same uid; another node or another spec, another one.
        assert_eq!(
            from_manifest(MANIFEST, "node-1").unwrap().metadata.uid,
            Some(uid.clone())
        );
        assert_ne!(
            from_manifest(MANIFEST, "node-2").unwrap().metadata.uid,
            Some(uid.clone())
        );
        let edited = MANIFEST.replace("image: busybox", "image: busybox:2");
        assert_ne!(
            from_manifest(&edited, "node-1").unwrap().metadata.uid,
            Some(uid)
        );
    }

    #[test]
    fn bad_manifests_say_why() {
        let e = from_manifest("kind: Service\nmetadata: {name: s}", "n").unwrap_err();
        assert!(e.contains("kind Pod"), "{e}");
        let e = from_manifest("kind: Pod\nmetadata: {}\nspec: {}", "n").unwrap_err();
        assert!(e.contains("metadata.name"), "{e}");
        let e = from_manifest("kind: Pod\nmetadata: {name: Bad_Name}\nspec: {}", "n").unwrap_err();
        assert!(e.contains("Bad_Name"), "{e}");
        let e = from_manifest(": : :", "n").unwrap_err();
        assert!(e.contains("not YAML"), "{e}");
    }

    #[test]
    fn the_mirror_is_marked_and_owned_by_the_node() {
        let pod = from_manifest(MANIFEST, "node-1").unwrap();
        let mut node = Node::default();
        node.metadata.name = Some("node-1".into());
        node.metadata.uid = Some("nuid".into());
        let m = mirror_of(&pod, &node);
        assert!(is_mirror(&m));
        assert_eq!(m.metadata.uid, None);
        assert_eq!(
            annotation(&m, MIRROR_ANNOTATION),
            pod.metadata.uid.as_deref()
        );
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "nuid"));
    }

    #[test]
    fn only_visible_manifest_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.yaml", "b.json", "c.yml", ".hidden.yaml", "notes.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let names: Vec<String> = manifest_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "b.json", "c.yml"]);
        assert!(manifest_files(&dir.path().join("missing")).is_empty());
    }
}
