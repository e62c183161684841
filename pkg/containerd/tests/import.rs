//! Image import against a private containerd: OCI layouts and `docker save` archives (plain,
//! gzip, zstd), unpacking for overlayfs, idempotent re-imports, corrupt archives, and kubox's
//! own pause image and binary. Needs root, `/usr/bin/containerd`, `/usr/bin/ctr` and runc.
#![allow(clippy::unwrap_used)]

#[path = "import/harness.rs"]
mod harness;
#[path = "import/images.rs"]
mod images;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::with_namespace;
use kubox_containerd::import::{Error, import_archive, import_bytes};
use kubox_containerd::pause::{PAUSE_BINARY, PAUSE_IMAGE, pause_image_archive};
use serde_json::json;
use tonic::Request;

use harness::{
    Containerd, NS, SNAPSHOTTER, assert_snapshot_has_busybox, content_labels, image_names, state,
};
use images::*;

#[tokio::test]
async fn oci_archive_imports_unpacks_and_reimport_skips() {
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;
    let archive = ctrd.path("busybox.tar.gz");
    std::fs::write(&archive, gzip(&oci_archive(BUSYBOX, false, false))).unwrap();

    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &archive)
        .await
        .unwrap();
    assert_eq!(imported.images, vec![BUSYBOX.to_string()]);
    assert!(!imported.skipped);
    assert!(image_names(&channel).await.contains(BUSYBOX));
    assert!(
        ctrd.ctr(&["images", "ls", "-q"])
            .lines()
            .any(|l| l == BUSYBOX)
    );

    // One uncompressed layer: its chainID is its diffID, which is its digest.
    let layer = busybox_layer();
    let chain_id = sha256(&layer);
    assert_snapshot_has_busybox(&channel, &chain_id).await;
    assert!(
        ctrd.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])
            .contains(&chain_id)
    );

    // The labels that keep everything from the garbage collector.
    let config = sha256(&config_for(&chain_id));
    let labels = content_labels(&channel, &config).await;
    assert_eq!(
        labels.get("containerd.io/gc.ref.snapshot.overlayfs"),
        Some(&chain_id)
    );
    let labels = content_labels(&channel, &chain_id).await;
    assert_eq!(labels.get("containerd.io/uncompressed"), Some(&chain_id));
    assert!(
        ctrd.ctr(&["leases", "ls", "-q"]).trim().is_empty(),
        "the import lease is gone"
    );

    // Importing again changes nothing and says so.
    let before = state(&channel).await;
    let again = import_archive(channel.clone(), NS, SNAPSHOTTER, &archive)
        .await
        .unwrap();
    assert_eq!(again.images, vec![BUSYBOX.to_string()]);
    assert!(again.skipped);
    assert_eq!(state(&channel).await, before);
}

#[tokio::test]
async fn docker_save_archives_import_plain_and_zstd() {
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;
    let plain = ctrd.path("busybox-docker.tar");
    std::fs::write(&plain, docker_archive("busybox:test", None)).unwrap();
    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &plain)
        .await
        .unwrap();
    assert_eq!(imported.images, vec![BUSYBOX.to_string()]);
    assert!(!imported.skipped);
    assert_snapshot_has_busybox(&channel, &sha256(&busybox_layer())).await;

    // The manifest made from manifest.json is an OCI manifest in the content store.
    let mut images = ImagesClient::new(channel.clone());
    let request = containerd_client::services::v1::GetImageRequest {
        name: BUSYBOX.into(),
    };
    let target = images
        .get(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .target
        .unwrap();
    assert_eq!(
        target.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let labels = content_labels(&channel, &target.digest).await;
    assert_eq!(
        labels.get("containerd.io/gc.ref.content.l.0"),
        Some(&sha256(&busybox_layer()))
    );

    // A second tag of the same image, zstd compressed and with a misleading extension: the
    // content is there already, the new name is not, so it is not skipped.
    let other = "docker.io/library/busybox:other";
    let compressed = ctrd.path("busybox-docker.tar");
    std::fs::write(&compressed, zstd(&docker_archive("busybox:other", None))).unwrap();
    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &compressed)
        .await
        .unwrap();
    assert_eq!(imported.images, vec![other.to_string()]);
    assert!(!imported.skipped);
    let names = image_names(&channel).await;
    assert!(
        names.contains(BUSYBOX) && names.contains(other),
        "{names:?}"
    );
    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &compressed)
        .await
        .unwrap();
    assert!(imported.skipped);
}

#[tokio::test]
async fn gzip_layers_unpack_from_plain_tar_and_memory() {
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;
    let archive = ctrd.path("busybox-gzip-layer.tar");
    std::fs::write(&archive, oci_archive("busybox:gz", true, false)).unwrap();
    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &archive)
        .await
        .unwrap();
    assert_eq!(
        imported.images,
        vec!["docker.io/library/busybox:gz".to_string()]
    );
    assert_snapshot_has_busybox(&channel, &sha256(&busybox_layer())).await;

    // The same bytes from memory, zstd compressed: everything is there already.
    let bytes = zstd(&oci_archive("busybox:gz", true, false));
    let imported = import_bytes(channel.clone(), NS, SNAPSHOTTER, &bytes)
        .await
        .unwrap();
    assert!(imported.skipped);
}

#[tokio::test]
async fn multi_platform_index_unpacks_this_platform() {
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;
    let (archive, index_digest) = multi_platform_archive("busybox:multi");
    let path = ctrd.path("multi.tar");
    std::fs::write(&path, archive).unwrap();
    let name = "docker.io/library/busybox:multi";
    let imported = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap();
    assert_eq!(imported.images, vec![name.to_string()]);
    assert_snapshot_has_busybox(&channel, &sha256(&busybox_layer())).await;

    // The record points at the index, which references all three manifests for the GC.
    let mut images = ImagesClient::new(channel.clone());
    let request = containerd_client::services::v1::GetImageRequest { name: name.into() };
    let image = images
        .get(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner()
        .image;
    let target = image.unwrap().target.unwrap();
    assert_eq!(
        (target.media_type.as_str(), target.digest.as_str()),
        (OCI_INDEX, index_digest.as_str())
    );
    let labels = content_labels(&channel, &index_digest).await;
    for i in 0..3 {
        assert!(
            labels.contains_key(&format!("containerd.io/gc.ref.content.m.{i}")),
            "{labels:?}"
        );
    }
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        name,
        "multi-test",
        "/bin/sh",
        "-c",
        "echo $((6 * 7))",
    ]);
    assert_eq!(out.trim(), "42");
}

#[tokio::test]
async fn corrupt_archives_fail_clearly_and_leave_no_image() {
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;

    // A blob whose content does not match its name.
    let path = ctrd.path("bad-digest.tar");
    std::fs::write(&path, oci_archive(BUSYBOX, false, true)).unwrap();
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("bad-digest.tar") && message.contains("digest mismatch"),
        "{message}"
    );

    // A truncated archive, plain and gzip compressed.
    let whole = oci_archive(BUSYBOX, true, false);
    let path = ctrd.path("truncated.tar");
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains("truncated.tar"), "{err}");
    let gz = gzip(&whole);
    let path = ctrd.path("truncated.tar.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains("truncated.tar.gz"), "{err}");

    // A docker layer that is not what its config's diff_id says.
    let mut layer = busybox_layer();
    let middle = layer.len() / 2;
    layer[middle] ^= 0xff;
    let path = ctrd.path("bad-layer.tar");
    std::fs::write(&path, docker_archive("busybox:test", Some(layer))).unwrap();
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // Not an image archive at all, and not even a tar.
    let mut builder = tar::Builder::new(Vec::new());
    add_file(&mut builder, "hello.txt", b"hello", 0o644);
    let path = ctrd.path("not-an-image.tar");
    std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &path)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    let err = import_bytes(channel.clone(), NS, SNAPSHOTTER, &[0x42; 1000])
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::Malformed { .. }), "{err}");

    // A missing file.
    let err = import_archive(channel.clone(), NS, SNAPSHOTTER, &ctrd.path("nope.tar"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, Error::Io { .. }), "{err}");

    assert!(image_names(&channel).await.is_empty());
    assert!(ctrd.ctr(&["images", "ls", "-q"]).trim().is_empty());
}

#[tokio::test]
async fn pause_image_imports() {
    let archive = pause_image_archive();
    assert_eq!(
        archive,
        pause_image_archive(),
        "the archive is deterministic"
    );
    let ctrd = Containerd::start();
    let channel = ctrd.channel().await;
    let imported = import_bytes(channel.clone(), NS, SNAPSHOTTER, &archive)
        .await
        .unwrap();
    assert_eq!(imported.images, vec![PAUSE_IMAGE.to_string()]);
    assert!(!imported.skipped);
    assert!(
        ctrd.ctr(&["images", "ls", "-q"])
            .lines()
            .any(|l| l == PAUSE_IMAGE)
    );

    // The archive: index → manifest → config with the entrypoint, architecture and diff_id
    // of a single layer holding only /pause (0755).
    let mut files = std::collections::HashMap::new();
    let mut tar = tar::Archive::new(archive.as_slice());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.insert(entry.path().unwrap().to_string_lossy().into_owned(), data);
    }
    let blob = |digest: &str| files[&format!("blobs/sha256/{}", hex_of(digest))].clone();
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        PAUSE_IMAGE
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
    assert_eq!(config["architecture"], arch());
    assert_eq!(config["os"], "linux");
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut layer_tar = tar::Archive::new(layer.as_slice());
    let entries: Vec<(String, u32, Vec<u8>)> = layer_tar
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mode().unwrap(),
                data,
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![("pause".to_string(), 0o755, PAUSE_BINARY.to_vec())]
    );
    let chain_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(chain_id, sha256(&layer));

    let snapshots = ctrd.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"]);
    assert!(snapshots.contains(&chain_id), "{snapshots}");

    let again = import_bytes(channel.clone(), NS, SNAPSHOTTER, &archive)
        .await
        .unwrap();
    assert!(again.skipped);
}

/// Waits until process `pid` has a handler for signal `sig`.
fn wait_for_handler(pid: u32, sig: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        if caught & (1 << (sig - 1)) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pause never installed its handler for {sig}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pause_binary_is_small_static_and_exits_zero_on_sigterm() {
    let elf = PAUSE_BINARY;
    assert!(elf.len() < 64 * 1024, "{} bytes", elf.len());
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    assert_eq!(
        u16::from_le_bytes([elf[16], elf[17]]),
        2,
        "ET_EXEC: static, not PIE"
    );
    // No PT_INTERP program header: nothing to load it, it is static.
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([elf[54], elf[55]]) as usize;
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_ne!(kind, 3, "PT_INTERP");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause");
    std::fs::write(&path, PAUSE_BINARY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (signal, number) in [("-TERM", 15), ("-INT", 2)] {
        let mut child = Command::new(&path).spawn().unwrap();
        wait_for_handler(child.id(), number);
        // SIGCHLD is handled (reaping) and does not end it.
        wait_for_handler(child.id(), 17);
        assert!(
            Command::new("kill")
                .args(["-CHLD", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause ended on SIGCHLD"
        );
        assert!(
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
    }
}

#[tokio::test]
async fn import_futures_can_be_spawned() {
    fn send<T: Send + 'static>(_: T) {}
    let channel = tonic::transport::Endpoint::from_static("http://[::]:1").connect_lazy();
    let path = std::path::PathBuf::from("/nonexistent");
    send(async move { import_archive(channel.clone(), NS, SNAPSHOTTER, &path).await });
    let channel = tonic::transport::Endpoint::from_static("http://[::]:1").connect_lazy();
    send(async move { import_bytes(channel, NS, SNAPSHOTTER, &[]).await });
}
