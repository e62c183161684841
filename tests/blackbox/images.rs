//! Test images built here, as airgap archives are: an OCI image layout tar with one
//! uncompressed layer holding busybox-static and its applet links.
use sha2::{Digest, Sha256};
use std::path::Path;

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data).expect("tar entry");
}

fn dir(tar: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut h, path, std::io::empty())
        .expect("tar dir");
}

fn link(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Symlink);
    tar.append_link(&mut h, path, target).expect("tar link");
}

/// Writes `docker.io/library/busybox:<tag>` as an OCI layout tar to `out`.
pub fn write_busybox_image(out: &Path, tag: &str) {
    write_busybox_image_with(out, tag, &[]);
}

/// The blobs of the busybox test image: (layer, config, manifest), with `extra` files (path in
/// the image, content, mode; a path ending in `/` is a directory) in its layer.
pub fn busybox_blobs(extra: &[(&str, &[u8], u32)]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let mut layer = tar::Builder::new(Vec::new());
    for d in ["bin/", "tmp/", "www/", "etc/"] {
        dir(&mut layer, d);
    }
    append(&mut layer, "bin/busybox", &busybox, 0o755);
    for applet in [
        "sh", "httpd", "wget", "sleep", "cat", "echo", "hostname", "ls", "nc", "nslookup", "env",
        "mkdir", "true", "false",
    ] {
        link(&mut layer, &format!("bin/{applet}"), "busybox");
    }
    append(&mut layer, "www/index.html", b"hello from kubox\n", 0o644);
    for (path, data, mode) in extra {
        if path.ends_with('/') {
            dir(&mut layer, path);
        } else {
            append(&mut layer, path, data, *mode);
        }
    }
    let layer = layer.into_inner().expect("layer tar");
    let layer_digest = digest(&layer);
    let config = serde_json::json!({
        "architecture": match std::env::consts::ARCH { "aarch64" => "arm64", _ => "amd64" },
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    (layer, config, manifest)
}

/// [`write_busybox_image`] with `extra` files (path in the image, content, mode; a path ending
/// in `/` is a directory) in its layer.
pub fn write_busybox_image_with(out: &Path, tag: &str, extra: &[(&str, &[u8], u32)]) {
    let (layer, config, manifest) = busybox_blobs(extra);
    let name = format!("docker.io/library/busybox:{tag}");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    })
    .to_string()
    .into_bytes();
    let mut oci = tar::Builder::new(Vec::new());
    append(
        &mut oci,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    append(&mut oci, "index.json", &index, 0o644);
    for blob in [&layer, &config, &manifest] {
        let d = digest(blob);
        append(
            &mut oci,
            &format!("blobs/sha256/{}", &d["sha256:".len()..]),
            blob,
            0o644,
        );
    }
    std::fs::write(out, oci.into_inner().expect("oci tar")).expect("write image archive");
}
