//! Test images built from scratch: busybox (a copy of `/bin/busybox` plus applet symlinks) as an
//! OCI image layout, as a multi-platform index, and as `docker save` writes it.

use std::io::Write;

use serde_json::json;
use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "docker.io/library/busybox:test";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// The OCI architecture of this machine.
pub fn arch() -> &'static str {
    kubox_containerd::pause::architecture()
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header
}

pub fn add_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut header = header(tar::EntryType::Regular, mode);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data).unwrap();
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut header = header(tar::EntryType::Directory, 0o755);
    builder
        .append_data(&mut header, path, std::io::empty())
        .unwrap();
}

fn add_symlink(builder: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut header = header(tar::EntryType::Symlink, 0o777);
    builder.append_link(&mut header, path, target).unwrap();
}

/// The busybox layer: `/bin/busybox` and two applet symlinks.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    add_dir(&mut builder, "bin/");
    add_file(&mut builder, "bin/busybox", &busybox, 0o755);
    add_symlink(&mut builder, "bin/sh", "busybox");
    add_symlink(&mut builder, "bin/echo", "busybox");
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// The busybox image config for this machine's architecture.
pub fn config_for(diff_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch(),
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .unwrap()
}

/// The blobs of the busybox image (layer, config, manifest) and the manifest's bytes.
/// `gzip_layer` compresses the layer; `corrupt` flips a byte in it after naming it.
fn busybox_blobs(gzip_layer: bool, corrupt: bool) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let layer = busybox_layer();
    let diff_id = sha256(&layer);
    let (mut blob, media_type) = if gzip_layer {
        (gzip(&layer), "application/vnd.oci.image.layer.v1.tar+gzip")
    } else {
        (layer, "application/vnd.oci.image.layer.v1.tar")
    };
    let layer_digest = sha256(&blob);
    if corrupt {
        let middle = blob.len() / 2;
        blob[middle] ^= 0xff;
    }
    let config = config_for(&diff_id);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": [{ "mediaType": media_type, "digest": layer_digest, "size": blob.len() }],
    }))
    .unwrap();
    let blobs = vec![
        (layer_digest, blob),
        (sha256(&config), config),
        (sha256(&manifest), manifest.clone()),
    ];
    (blobs, manifest)
}

/// An OCI image layout tar of `blobs` and `index.json`.
fn layout(blobs: &[(String, Vec<u8>)], index: &serde_json::Value) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    add_file(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    add_dir(&mut builder, "blobs/");
    add_dir(&mut builder, "blobs/sha256/");
    for (digest, data) in blobs {
        add_file(
            &mut builder,
            &format!("blobs/sha256/{}", hex_of(digest)),
            data,
            0o644,
        );
    }
    add_file(
        &mut builder,
        "index.json",
        &serde_json::to_vec(index).unwrap(),
        0o644,
    );
    builder.into_inner().unwrap()
}

/// The busybox image named `name` in an OCI layout tar.
pub fn oci_archive(name: &str, gzip_layer: bool, corrupt: bool) -> Vec<u8> {
    let (blobs, manifest) = busybox_blobs(gzip_layer, corrupt);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": "test",
            },
            "platform": { "architecture": arch(), "os": "linux" },
        }],
    });
    layout(&blobs, &index)
}

/// A multi-platform busybox named by a bare-tag-free `org.opencontainers.image.ref.name`:
/// an image index listing another architecture first (its manifest is not in the archive),
/// then this machine's, then an attestation-like `unknown/unknown` entry. Returns the
/// archive and the index's digest.
pub fn multi_platform_archive(name: &str) -> (Vec<u8>, String) {
    let (mut blobs, manifest) = busybox_blobs(false, false);
    let other_arch = if arch() == "amd64" { "arm64" } else { "amd64" };
    let absent = |what: &str| json!({ "mediaType": OCI_MANIFEST, "digest": sha256(what.as_bytes()), "size": what.len() });
    let mut other = absent("another platform's manifest");
    other["platform"] = json!({ "architecture": other_arch, "os": "linux" });
    let mut attestation = absent("an attestation manifest");
    attestation["platform"] = json!({ "architecture": "unknown", "os": "unknown" });
    let host = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sha256(&manifest),
        "size": manifest.len(),
        "platform": { "architecture": arch(), "os": "linux" },
    });
    let image_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [other, host, attestation],
    }))
    .unwrap();
    let digest = sha256(&image_index);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": image_index.len(),
            "annotations": { "org.opencontainers.image.ref.name": name },
        }],
    });
    blobs.push((digest.clone(), image_index));
    (layout(&blobs, &index), digest)
}

/// The same busybox image as `docker save` writes it (config `<hex>.json`, `<id>/layer.tar`).
/// `layer_override` replaces the layer's bytes (keeping the config's diff_id).
pub fn docker_archive(tag: &str, layer_override: Option<Vec<u8>>) -> Vec<u8> {
    let layer = busybox_layer();
    let config = config_for(&sha256(&layer));
    let layer = layer_override.unwrap_or(layer);
    let config_name = format!("{}.json", hex_of(&sha256(&config)));
    let layer_dir = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [format!("{layer_dir}/layer.tar")],
    }]))
    .unwrap();
    let (repo, t) = tag.rsplit_once(':').unwrap();
    let repositories = serde_json::to_vec(&json!({ repo: { t: layer_dir } })).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    add_dir(&mut builder, &format!("{layer_dir}/"));
    add_file(&mut builder, &format!("{layer_dir}/VERSION"), b"1.0", 0o644);
    add_file(
        &mut builder,
        &format!("{layer_dir}/json"),
        br#"{"id":"x"}"#,
        0o644,
    );
    add_file(
        &mut builder,
        &format!("{layer_dir}/layer.tar"),
        &layer,
        0o644,
    );
    add_file(&mut builder, &config_name, &config, 0o644);
    add_file(&mut builder, "manifest.json", &manifest, 0o644);
    add_file(&mut builder, "repositories", &repositories, 0o644);
    builder.into_inner().unwrap()
}
