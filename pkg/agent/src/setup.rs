//! Node set-up around containerd: the CNI bin dir (links to the kubox binary, which is its own
//! CNI plugin), the network conflist once the node has a podCIDR, forwarding sysctls and the
//! masquerade rule for traffic leaving the cluster CIDR, and airgap image import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubox_containerd::cri::Cri;

/// The containerd namespace CRI uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
pub const SNAPSHOTTER: &str = "overlayfs";
pub const BRIDGE: &str = "cni0";
/// Room for the VXLAN header of the multi-node overlay (`flannel.1` has the same MTU).
pub const MTU: u32 = 1450;

/// Links `<bin_dir>/<plugin>` → the kubox binary for every CNI plugin kubox implements.
pub fn link_cni_plugins(bin_dir: &Path, exe: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(bin_dir)?;
    for plugin in kubox_network::cni::PLUGINS {
        let link = bin_dir.join(plugin);
        if std::fs::read_link(&link).is_ok_and(|t| t == exe) {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(exe, &link)?;
    }
    Ok(())
}

/// Writes the node's conflist (atomically) if it differs.
pub fn write_conflist(conf_dir: &Path, pod_cidr: &str, ipam_dir: &Path) -> std::io::Result<bool> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join("10-kubox.conflist");
    let body = kubox_network::cni::conflist(pod_cidr, BRIDGE, MTU, ipam_dir);
    if std::fs::read_to_string(&path).is_ok_and(|b| b == body) {
        return Ok(false);
    }
    let tmp = conf_dir.join(".10-kubox.conflist.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// Turns on IPv4 forwarding and bridged traffic through netfilter (best effort for the
/// latter: the br_netfilter module may be unavailable).
pub fn enable_forwarding() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    let bridge_nf = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if !bridge_nf.exists() {
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    if bridge_nf.exists() {
        let _ = std::fs::write(bridge_nf, "1");
    }
    Ok(())
}

/// kubox's nftables table: masquerade pod traffic leaving the cluster CIDR. Replaced whole at
/// every start (stale rules from a previous run go); no other table is touched.
pub fn masquerade(cluster_cidr: &str) -> Result<(), String> {
    let script = format!(
        "table ip kubox-nat {{}}\ndelete table ip kubox-nat\ntable ip kubox-nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {cluster_cidr} ip daddr != {cluster_cidr} masquerade\n  }}\n}}\n"
    );
    kubox_network::proxy::apply(&script)
}

/// Imports kubox's pause image, then every archive in `images_dir` now and whenever new or
/// changed files appear (checked every 10 s; already imported files are skipped by name,
/// size and mtime).
pub async fn import_images(cri: Cri, images_dir: PathBuf) {
    let pause = kubox_containerd::pause::pause_image_archive();
    match kubox_containerd::import::import_bytes(
        cri.channel.clone(),
        K8S_NAMESPACE,
        SNAPSHOTTER,
        &pause,
    )
    .await
    {
        Ok(_) => tracing::debug!("pause image ready"),
        Err(e) => tracing::warn!(error = %e, "importing the pause image failed"),
    }
    let mut seen: BTreeMap<PathBuf, (u64, Option<std::time::SystemTime>)> = BTreeMap::new();
    loop {
        if let Ok(entries) = std::fs::read_dir(&images_dir) {
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for path in files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let archive = name.ends_with(".tar")
                    || name.ends_with(".tar.gz")
                    || name.ends_with(".tgz")
                    || name.ends_with(".tar.zst");
                if !archive {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let stamp = (meta.len(), meta.modified().ok());
                if seen.get(&path) == Some(&stamp) {
                    continue;
                }
                match kubox_containerd::import::import_archive(
                    cri.channel.clone(),
                    K8S_NAMESPACE,
                    SNAPSHOTTER,
                    &path,
                )
                .await
                {
                    Ok(_) => {
                        seen.insert(path, stamp);
                    }
                    Err(e) => {
                        tracing::warn!(archive = %path.display(), error = %e, "importing an image archive failed");
                        seen.insert(path, stamp);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
