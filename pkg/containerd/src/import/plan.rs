//! Turning a scanned archive into an import plan: which blobs to write (with the labels that
//! keep them from containerd's garbage collector), which image records to create, and which
//! layers to unpack for the host platform. OCI image layouts and `docker save` archives both
//! end up as the same [`Plan`].

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Problem;
use super::archive::{Compression, Scan};
use super::reference;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Layer media types the host platform's images may use.
const LAYER_TYPES: &[&str] = &[
    LAYER_TAR,
    LAYER_GZIP,
    LAYER_ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// Annotation holding an image's full name (containerd's export and docker ≥ 25).
const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI annotation that holds a full reference or a bare tag.
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Nesting depth of indexes followed.
const MAX_DEPTH: usize = 4;

/// A content descriptor: what containerd's APIs call a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// Where a blob's bytes are.
#[derive(Debug)]
pub(crate) enum Content {
    /// In the archive, at this tar entry position.
    Archive(usize),
    /// Made by the import (manifests converted from `docker save`).
    Memory(Vec<u8>),
    /// Not in the archive; fine unless required, then it must already be in the content store.
    Absent,
}

/// One blob of the plan.
#[derive(Debug)]
pub(crate) struct Blob {
    pub desc: Desc,
    pub content: Content,
    /// Labels the blob must carry in the content store.
    pub labels: BTreeMap<String, String>,
    /// Needed to create or unpack an image.
    pub required: bool,
}

/// A layer to unpack.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    /// The layer blob, with the media type the diff service should apply it as.
    pub desc: Desc,
    pub diff_id: String,
    pub chain_id: String,
}

/// What unpacking an image for the host platform takes.
#[derive(Clone, Debug)]
pub(crate) struct Unpack {
    /// Digest of the image config.
    pub config: String,
    pub layers: Vec<Layer>,
}

/// One image of the archive: its names, record target and what to unpack for the host.
#[derive(Debug)]
pub(crate) struct Image {
    pub names: Vec<String>,
    pub target: Desc,
    pub unpack: Unpack,
}

/// Everything an import does, decided before anything is written.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Blobs, layers first, then configs, manifests and indexes.
    pub blobs: Vec<Blob>,
    pub images: Vec<Image>,
}

#[derive(Deserialize)]
struct RawDesc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<RawDesc>,
}

#[derive(Deserialize)]
struct Manifest {
    config: RawDesc,
    #[serde(default)]
    layers: Vec<RawDesc>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The plan for a scanned archive; `snapshotter` names the snapshot GC label.
pub(crate) fn build(scan: &Scan, snapshotter: &str) -> Result<Plan, Problem> {
    let mut builder = Builder {
        scan,
        snapshotter,
        blobs: HashMap::new(),
        order: Vec::new(),
        images: Vec::new(),
    };
    let oci = scan.contains("index.json");
    if oci {
        builder.oci()?;
    }
    if builder.images.is_empty() && scan.contains("manifest.json") {
        builder.docker()?;
    }
    if builder.images.is_empty() {
        return Err(Problem::malformed(
            if oci || scan.contains("manifest.json") {
                "no image in the archive has a name (io.containerd.image.name, a full \
             org.opencontainers.image.ref.name, or docker RepoTags)"
            } else {
                "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)"
            },
        ));
    }
    let mut blobs: Vec<(u8, Blob)> = Vec::new();
    for digest in builder.order {
        if let Some(entry) = builder.blobs.remove(&digest) {
            blobs.push(entry);
        }
    }
    blobs.sort_by_key(|(rank, _)| *rank);
    Ok(Plan {
        blobs: blobs.into_iter().map(|(_, blob)| blob).collect(),
        images: builder.images,
    })
}

/// The OCI architecture of this machine.
pub(crate) fn host_architecture() -> &'static str {
    crate::pause::architecture()
}

/// How well a platform suits this machine: 0 not at all, 2 exactly.
fn platform_score(os: &str, architecture: &str, variant: Option<&str>) -> u8 {
    if os != "linux" || architecture != host_architecture() {
        return 0;
    }
    match variant.unwrap_or("") {
        "" | "v1" | "v8" => 2,
        _ => 1,
    }
}

/// Blob ranks: the write order (children before the documents that reference them).
const LAYER: u8 = 0;
const CONFIG: u8 = 1;
const MANIFEST: u8 = 2;
const INDEX: u8 = 3;

/// State of a plan being built.
struct Builder<'a> {
    scan: &'a Scan,
    snapshotter: &'a str,
    blobs: HashMap<String, (u8, Blob)>,
    order: Vec<String>,
    images: Vec<Image>,
}

impl Builder<'_> {
    /// Images named in an OCI layout's `index.json`.
    fn oci(&mut self) -> Result<(), Problem> {
        let index: Index = parse(self.scan.document("index.json"), "index.json")?;
        for raw in &index.manifests {
            let names = oci_names(raw);
            if names.is_empty() {
                tracing::debug!(digest = %raw.digest, "skipping unnamed image in index.json");
                continue;
            }
            let target = desc_of(raw)?;
            let unpack = self.walk(&target, true, 0)?.ok_or_else(|| {
                Problem::Unsupported(format!(
                    "image {} ({}) has no manifest for linux/{}",
                    names.join(", "),
                    target.digest,
                    host_architecture()
                ))
            })?;
            self.push_image(names, target, unpack);
        }
        Ok(())
    }

    /// Records an image and labels its config with the snapshot it unpacks to.
    fn push_image(&mut self, names: Vec<String>, target: Desc, unpack: Unpack) {
        if let Some(top) = unpack.layers.last() {
            let key = format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter);
            let chain = top.chain_id.clone();
            self.label(&unpack.config, key, &chain);
        }
        self.images.push(Image {
            names,
            target,
            unpack,
        });
    }

    /// Adds the manifest or index `desc` and everything below it; returns the layers to unpack
    /// for the host platform (`None` if there is no such manifest or it is not in the archive).
    fn walk(
        &mut self,
        desc: &Desc,
        required: bool,
        depth: usize,
    ) -> Result<Option<Unpack>, Problem> {
        match desc.media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => self.manifest(desc, required),
            OCI_INDEX | DOCKER_LIST if depth < MAX_DEPTH => self.index(desc, required, depth),
            other if required => Err(Problem::UnsupportedMediaType {
                media_type: other.to_string(),
                what: format!("image target {}", desc.digest),
            }),
            _ => Ok(None),
        }
    }

    /// Adds an index and its children; picks the child manifest for the host platform.
    fn index(
        &mut self,
        desc: &Desc,
        required: bool,
        depth: usize,
    ) -> Result<Option<Unpack>, Problem> {
        let Some(bytes) = self.add(desc, INDEX, required)? else {
            return Ok(None);
        };
        let index: Index = parse(Some(&bytes), &desc.digest)?;
        let mut children = Vec::with_capacity(index.manifests.len());
        for (i, raw) in index.manifests.iter().enumerate() {
            let child = desc_of(raw)?;
            self.label(
                &desc.digest,
                format!("containerd.io/gc.ref.content.m.{i}"),
                &child.digest,
            );
            let score = match &raw.platform {
                Some(p) => platform_score(&p.os, &p.architecture, p.variant.as_deref()),
                None => self.config_platform_score(&child),
            };
            children.push((child, score));
        }
        // The first of the best-suited children is unpacked; only its content must be complete,
        // the other platforms' content is kept if the archive has it.
        let best = children
            .iter()
            .enumerate()
            .filter(|(_, (_, score))| *score > 0)
            .rev()
            .max_by_key(|(_, (_, score))| *score)
            .map(|(i, _)| i);
        let mut chosen = None;
        for (i, (child, _)) in children.iter().enumerate() {
            let unpack = self.walk(child, required && best == Some(i), depth + 1)?;
            if best == Some(i) {
                chosen = unpack;
            }
        }
        Ok(chosen)
    }

    /// The platform score of a manifest without a platform in its index, from its config.
    fn config_platform_score(&self, desc: &Desc) -> u8 {
        let Some(manifest) = self
            .document(desc)
            .and_then(|b| serde_json::from_slice::<Manifest>(b).ok())
        else {
            return 0;
        };
        let Ok(config) = desc_of(&manifest.config) else {
            return 0;
        };
        self.document(&config)
            .and_then(|b| serde_json::from_slice::<Config>(b).ok())
            .map_or(0, |c| {
                platform_score(&c.os, &c.architecture, c.variant.as_deref())
            })
    }

    /// Adds a manifest, its config and layers; returns its layers.
    fn manifest(&mut self, desc: &Desc, required: bool) -> Result<Option<Unpack>, Problem> {
        let Some(bytes) = self.add(desc, MANIFEST, required)? else {
            return Ok(None);
        };
        let manifest: Manifest = parse(Some(&bytes), &desc.digest)?;
        let config = desc_of(&manifest.config)?;
        let layers = manifest
            .layers
            .iter()
            .map(desc_of)
            .collect::<Result<Vec<_>, _>>()?;
        self.label(
            &desc.digest,
            "containerd.io/gc.ref.content.config".into(),
            &config.digest,
        );
        for (i, layer) in layers.iter().enumerate() {
            self.label(
                &desc.digest,
                format!("containerd.io/gc.ref.content.l.{i}"),
                &layer.digest,
            );
        }
        let config_bytes = self.add(&config, CONFIG, required)?;
        for layer in &layers {
            if required && !LAYER_TYPES.contains(&layer.media_type.as_str()) {
                return Err(Problem::UnsupportedMediaType {
                    media_type: layer.media_type.clone(),
                    what: format!("layer {} of manifest {}", layer.digest, desc.digest),
                });
            }
            self.add(layer, LAYER, required)?;
        }
        let Some(config_bytes) = config_bytes else {
            return Ok(None);
        };
        let parsed: Config = parse(Some(&config_bytes), &config.digest)?;
        let layers = self.layers(&config, &parsed.rootfs.diff_ids, &layers)?;
        Ok(Some(Unpack {
            config: config.digest,
            layers,
        }))
    }

    /// Pairs layers with their diffIDs, labels them and the config; computes chainIDs.
    fn layers(
        &mut self,
        config: &Desc,
        diff_ids: &[String],
        layers: &[Desc],
    ) -> Result<Vec<Layer>, Problem> {
        if diff_ids.len() != layers.len() {
            return Err(Problem::malformed(format!(
                "config {} lists {} diff_ids for {} layers",
                config.digest,
                diff_ids.len(),
                layers.len()
            )));
        }
        let mut out = Vec::with_capacity(layers.len());
        let mut chain = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            check_digest(diff_id)?;
            self.label(&layer.digest, "containerd.io/uncompressed".into(), diff_id);
            chain = if chain.is_empty() {
                diff_id.clone()
            } else {
                format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(format!("{chain} {diff_id}")))
                )
            };
            let compression = match self.scan.file(&blob_path(&layer.digest)) {
                Some(file) => file.compression,
                None if layer.media_type.ends_with("gzip") => Compression::Gzip,
                None if layer.media_type.ends_with("zstd") => Compression::Zstd,
                None => Compression::None,
            };
            let media_type = match compression {
                Compression::Gzip => LAYER_GZIP,
                Compression::Zstd => LAYER_ZSTD,
                Compression::None => LAYER_TAR,
            };
            let desc = Desc {
                media_type: media_type.into(),
                ..layer.clone()
            };
            out.push(Layer {
                desc,
                diff_id: diff_id.clone(),
                chain_id: chain.clone(),
            });
        }
        Ok(out)
    }

    /// Images listed in a `docker save` archive's `manifest.json`, converted to OCI manifests.
    fn docker(&mut self) -> Result<(), Problem> {
        let entries: Vec<DockerEntry> =
            parse(self.scan.document("manifest.json"), "manifest.json")?;
        for entry in entries {
            let mut names = Vec::new();
            for tag in entry.repo_tags.iter().flatten() {
                match reference::normalize(tag) {
                    Some(name) if !names.contains(&name) => names.push(name),
                    Some(_) => {}
                    None => {
                        return Err(Problem::malformed(format!(
                            "invalid image name {tag:?} in manifest.json"
                        )));
                    }
                }
            }
            if names.is_empty() {
                tracing::debug!(config = %entry.config, "skipping untagged image in manifest.json");
                continue;
            }
            let file = self.scan.file(&entry.config).ok_or_else(|| {
                Problem::malformed(format!(
                    "manifest.json names config {}, which the archive lacks",
                    entry.config
                ))
            })?;
            let bytes = file.data.clone().ok_or_else(|| {
                Problem::malformed(format!("config {} is not a JSON document", entry.config))
            })?;
            let config = Desc {
                media_type: OCI_CONFIG.into(),
                digest: file.digest.clone(),
                size: file.size as i64,
            };
            let parsed: Config = parse(Some(&bytes), &entry.config)?;
            self.insert(&config, CONFIG, true, Content::Archive(file.index));

            if entry.layers.len() != parsed.rootfs.diff_ids.len() {
                return Err(Problem::malformed(format!(
                    "manifest.json lists {} layers but config {} has {} diff_ids",
                    entry.layers.len(),
                    entry.config,
                    parsed.rootfs.diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
                let file = self.scan.file(path).ok_or_else(|| {
                    Problem::malformed(format!(
                        "manifest.json names layer {path}, which the archive lacks"
                    ))
                })?;
                let media_type = match file.compression {
                    Compression::Gzip => LAYER_GZIP,
                    Compression::Zstd => LAYER_ZSTD,
                    Compression::None => LAYER_TAR,
                };
                if file.compression == Compression::None && &file.digest != diff_id {
                    return Err(Problem::DigestMismatch {
                        what: format!("layer {path} (its diff_id in config {})", entry.config),
                        expected: diff_id.clone(),
                        actual: file.digest.clone(),
                    });
                }
                let desc = Desc {
                    media_type: media_type.into(),
                    digest: file.digest.clone(),
                    size: file.size as i64,
                };
                self.insert(&desc, LAYER, true, Content::Archive(file.index));
                layers.push(desc);
            }
            let unpack = Unpack {
                config: config.digest.clone(),
                layers: self.layers(&config, &parsed.rootfs.diff_ids, &layers)?,
            };

            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor_json(&config),
                "layers": layers.iter().map(descriptor_json).collect::<Vec<_>>(),
            });
            let manifest =
                serde_json::to_vec(&manifest).map_err(|e| Problem::malformed(e.to_string()))?;
            let target = Desc {
                media_type: OCI_MANIFEST.into(),
                digest: format!("sha256:{}", hex::encode(Sha256::digest(&manifest))),
                size: manifest.len() as i64,
            };
            self.insert(&target, MANIFEST, true, Content::Memory(manifest));
            self.label(
                &target.digest,
                "containerd.io/gc.ref.content.config".into(),
                &config.digest,
            );
            for (i, layer) in layers.iter().enumerate() {
                self.label(
                    &target.digest,
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    &layer.digest,
                );
            }
            self.push_image(names, target, unpack);
        }
        Ok(())
    }

    /// Adds the blob `desc` from the OCI layout's `blobs/`; returns its bytes if it is a JSON
    /// document held in the archive. A required blob the archive lacks is an error unless
    /// it is a layer (which the content store may already hold).
    fn add(&mut self, desc: &Desc, rank: u8, required: bool) -> Result<Option<Vec<u8>>, Problem> {
        let path = blob_path(&desc.digest);
        let Some(file) = self.scan.file(&path) else {
            if required && rank != LAYER {
                return Err(Problem::malformed(format!(
                    "{path} is referenced but missing from the archive"
                )));
            }
            self.insert(desc, rank, required, Content::Absent);
            return Ok(None);
        };
        if file.size as i64 != desc.size {
            return Err(Problem::malformed(format!(
                "{path} holds {} bytes but its descriptor says {}",
                file.size, desc.size
            )));
        }
        self.insert(desc, rank, required, Content::Archive(file.index));
        if rank == LAYER {
            return Ok(None);
        }
        match &file.data {
            Some(data) => Ok(Some(data.clone())),
            None if required => Err(Problem::malformed(format!(
                "{path} ({}) is not a JSON document",
                desc.media_type
            ))),
            None => Ok(None),
        }
    }

    /// Adds or merges a blob.
    fn insert(&mut self, desc: &Desc, rank: u8, required: bool, content: Content) {
        match self.blobs.get_mut(&desc.digest) {
            Some((_, blob)) => {
                blob.required |= required;
                if matches!(blob.content, Content::Absent) {
                    blob.content = content;
                }
            }
            None => {
                self.order.push(desc.digest.clone());
                let blob = Blob {
                    desc: desc.clone(),
                    content,
                    labels: BTreeMap::new(),
                    required,
                };
                self.blobs.insert(desc.digest.clone(), (rank, blob));
            }
        }
    }

    /// Sets label `key` on the blob `digest` if the plan has it.
    fn label(&mut self, digest: &str, key: String, value: &str) {
        if let Some((_, blob)) = self.blobs.get_mut(digest) {
            blob.labels.insert(key, value.to_string());
        }
    }

    /// The JSON content of `desc` if the archive holds it.
    fn document(&self, desc: &Desc) -> Option<&[u8]> {
        self.scan.document(&blob_path(&desc.digest))
    }
}

/// Full names of an `index.json` entry, from its annotations.
fn oci_names(raw: &RawDesc) -> Vec<String> {
    let name = raw.annotations.get(NAME_ANNOTATION).or_else(|| {
        raw.annotations
            .get(REF_ANNOTATION)
            .filter(|r| reference::is_full_reference(r))
    });
    name.and_then(|n| reference::normalize(n))
        .into_iter()
        .collect()
}

/// Path of a blob in an OCI image layout.
fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// A checked descriptor.
fn desc_of(raw: &RawDesc) -> Result<Desc, Problem> {
    check_digest(&raw.digest)?;
    if raw.size < 0 {
        return Err(Problem::malformed(format!(
            "descriptor {} has a negative size",
            raw.digest
        )));
    }
    Ok(Desc {
        media_type: raw.media_type.clone(),
        digest: raw.digest.clone(),
        size: raw.size,
    })
}

/// Accepts `sha256:<64 lowercase hex>` only.
fn check_digest(digest: &str) -> Result<(), Problem> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" => Err(Problem::Unsupported(format!(
            "digest algorithm of {digest}"
        ))),
        _ => Err(Problem::malformed(format!("invalid digest {digest:?}"))),
    }
}

/// A descriptor as it appears in a manifest.
fn descriptor_json(desc: &Desc) -> serde_json::Value {
    json!({ "mediaType": desc.media_type, "digest": desc.digest, "size": desc.size })
}

/// Parses the JSON document `what` (missing if `bytes` is `None`).
fn parse<T: DeserializeOwned>(bytes: Option<&[u8]>, what: &str) -> Result<T, Problem> {
    let bytes = bytes
        .ok_or_else(|| Problem::malformed(format!("{what} is missing or not a JSON document")))?;
    serde_json::from_slice(bytes).map_err(|e| Problem::malformed(format!("{what}: {e}")))
}
