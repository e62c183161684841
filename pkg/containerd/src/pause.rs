//! kubox's own sandbox ("pause") image: a few-KB static binary built from `pause/pause.c`,
//! packed into an OCI image layout archive that kubox imports at start, so pods run offline.

use serde_json::json;
use sha2::{Digest, Sha256};

/// The image reference CRI's `sandbox_image` is set to.
pub const PAUSE_IMAGE: &str = "docker.io/kubox/pause:3.10";

/// The pause program for the architecture kubox was built for (static ELF, no libc).
pub const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Fixed modification time of every archive entry, so the archive's bytes never change.
const MTIME: u64 = 0;

/// Media types of the blobs in the pause image.
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The OCI architecture name of the build target.
pub fn architecture() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// An OCI image layout tar holding the pause image for this architecture.
///
/// One uncompressed layer with `/pause` (mode 0755), a config with `Entrypoint ["/pause"]`,
/// and `index.json` naming it [`PAUSE_IMAGE`] through the `io.containerd.image.name`
/// annotation. The bytes are deterministic (fixed mtimes, owners and JSON key order).
pub fn pause_image_archive() -> Vec<u8> {
    image_archive(
        PAUSE_IMAGE,
        &[("pause", PAUSE_BINARY, 0o755)],
        json!({
            "User": "65535:65535",
            "Entrypoint": ["/pause"],
            "WorkingDir": "/",
        }),
        "kubox pause image (pause/pause.c)",
    )
}

/// An OCI image layout tar (what an airgap archive is) of one image for this architecture:
/// one uncompressed layer of `files` (path, content, mode; regular files owned by root),
/// the image config `config` (`Entrypoint`, `Env`, ...), one history entry `created_by`, and
/// `index.json` naming it `image` (`registry/repo:tag`) through the
/// `io.containerd.image.name` annotation. The bytes are deterministic.
pub fn image_archive(
    image: &str,
    files: &[(&str, &[u8], u32)],
    config: serde_json::Value,
    created_by: &str,
) -> Vec<u8> {
    let layer = tar_of(files);
    let layer_digest = sha256(&layer);

    let config = json!({
        "architecture": architecture(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": created_by }],
    });
    let config = to_json(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len() }],
    });
    let manifest = to_json(&manifest);
    let tag = image.rsplit(':').next().unwrap_or("latest");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": image,
                "org.opencontainers.image.ref.name": tag,
            },
            "platform": { "architecture": architecture(), "os": "linux" },
        }],
    });
    let index = to_json(&index);
    let layout = to_json(&json!({ "imageLayoutVersion": "1.0.0" }));

    let blob_path = |data: &[u8]| format!("blobs/sha256/{}", hex::encode(Sha256::digest(data)));
    let (layer_path, config_path, manifest_path) =
        (blob_path(&layer), blob_path(&config), blob_path(&manifest));
    tar_of(&[
        ("oci-layout", layout.as_slice(), 0o644),
        ("index.json", index.as_slice(), 0o644),
        (manifest_path.as_str(), manifest.as_slice(), 0o644),
        (config_path.as_str(), config.as_slice(), 0o644),
        (layer_path.as_str(), layer.as_slice(), 0o644),
    ])
}

/// `sha256:<hex>` of `data`.
fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Compact JSON bytes of `value` (keys stay in the order written).
fn to_json(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` to a Vec cannot fail: it has only string keys and no I/O.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A tar of regular files owned by root with a fixed mtime (writing to a Vec cannot fail).
fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_size(data.len() as u64);
        // Paths here are short, relative and ASCII: set_path and append cannot fail.
        if header.set_path(path).is_err() {
            continue;
        }
        header.set_cksum();
        let _ = builder.append(&header, *data);
    }
    builder.into_inner().unwrap_or_default()
}
