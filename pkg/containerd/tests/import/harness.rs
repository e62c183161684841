//! The private containerd each test starts, and queries of its state through the native API.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    Kind, ListSnapshotsRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{InfoRequest, ListContentRequest, ListImagesRequest};
use containerd_client::with_namespace;
use tonic::Request;
use tonic::transport::Channel;

pub const NS: &str = "k8s.io";
pub const SNAPSHOTTER: &str = "overlayfs";

/// A containerd of our own under a temporary directory, stopped and cleaned up on drop.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Self {
        assert!(
            Path::new("/usr/bin/containerd").exists(),
            "these tests need /usr/bin/containerd"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let socket = d.join("c.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Containerd { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket.exists() || !me.ctr_ok(&["version"]) {
            if let Some(status) = me.child.try_wait().unwrap() {
                panic!("containerd exited with {status}: {}", me.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_ok(&self, args: &[&str]) -> bool {
        Command::new("/usr/bin/ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `ctr -a <socket> -n k8s.io <args>`, to be run.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("/usr/bin/ctr");
        command
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", NS])
            .args(args);
        command
    }

    /// Output of `ctr -a <socket> -n k8s.io <args>`.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_command(args).output().unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn channel(&self) -> Channel {
        containerd_client::connect(&self.socket).await.unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers a failed test left: kill and delete them so their shims exit.
        let quiet = |args: &[&str]| {
            self.ctr_command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let containers = self.ctr_command(&["containers", "ls", "-q"]).output();
        for id in containers
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            quiet(&["tasks", "kill", "-s", "SIGKILL", id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !quiet(&["tasks", "delete", id])
                && quiet(&["tasks", "ps", id])
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            quiet(&["containers", "delete", id]);
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Nothing should be mounted (snapshots are mounted only while in use), but never leave
        // a mount behind under the directory about to be removed.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p.starts_with(&root))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", &mount]).status();
        }
    }
}

pub async fn image_names(channel: &Channel) -> BTreeSet<String> {
    let mut client = ImagesClient::new(channel.clone());
    let response = client
        .list(with_namespace!(ListImagesRequest { filters: vec![] }, NS))
        .await
        .unwrap();
    response
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// Everything in the namespace with its update time: images, content, snapshots.
pub async fn state(channel: &Channel) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut images = ImagesClient::new(channel.clone());
    for image in images
        .list(with_namespace!(ListImagesRequest { filters: vec![] }, NS))
        .await
        .unwrap()
        .into_inner()
        .images
    {
        out.insert(format!(
            "image {} {:?} {:?}",
            image.name, image.target, image.updated_at
        ));
    }
    let mut content = ContentClient::new(channel.clone());
    let mut stream = content
        .list(with_namespace!(ListContentRequest { filters: vec![] }, NS))
        .await
        .unwrap()
        .into_inner();
    while let Some(page) = stream.message().await.unwrap() {
        for info in page.info {
            let labels: BTreeSet<_> = info.labels.into_iter().collect();
            out.insert(format!(
                "content {} {:?} {:?}",
                info.digest, info.updated_at, labels
            ));
        }
    }
    let mut snapshots = SnapshotsClient::new(channel.clone());
    let request = ListSnapshotsRequest {
        snapshotter: SNAPSHOTTER.into(),
        filters: vec![],
    };
    let mut stream = snapshots
        .list(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner();
    while let Some(page) = stream.message().await.unwrap() {
        for info in page.info {
            out.insert(format!(
                "snapshot {} {} {:?}",
                info.name, info.parent, info.updated_at
            ));
        }
    }
    out
}

/// Checks that the committed snapshot `chain_id` holds busybox, through a view's mounts.
pub async fn assert_snapshot_has_busybox(channel: &Channel, chain_id: &str) {
    let mut snapshots = SnapshotsClient::new(channel.clone());
    let request = StatSnapshotRequest {
        snapshotter: SNAPSHOTTER.into(),
        key: chain_id.into(),
    };
    let info = snapshots
        .stat(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.kind, Kind::Committed as i32);
    let request = ViewSnapshotRequest {
        snapshotter: SNAPSHOTTER.into(),
        key: "test-view".into(),
        parent: chain_id.into(),
        // A view without a lease or GC root may be collected by containerd's GC at any time
        // (an import ending its lease triggers one).
        labels: [(
            "containerd.io/gc.root".to_string(),
            "kubox-test".to_string(),
        )]
        .into(),
    };
    let mounts = snapshots
        .view(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    // A view of one committed layer is a read-only bind mount of that layer's directory.
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].r#type, "bind", "{mounts:?}");
    let source = PathBuf::from(&mounts[0].source);
    assert_eq!(
        std::fs::read(source.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_link(source.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    let request = RemoveSnapshotRequest {
        snapshotter: SNAPSHOTTER.into(),
        key: "test-view".into(),
    };
    snapshots
        .remove(with_namespace!(request, NS))
        .await
        .unwrap();
}

pub async fn content_labels(channel: &Channel, digest: &str) -> HashMap<String, String> {
    let mut content = ContentClient::new(channel.clone());
    let request = InfoRequest {
        digest: digest.into(),
    };
    content
        .info(with_namespace!(request, NS))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .labels
}
