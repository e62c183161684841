//! The command line: version, completion, bad flags (exit 2), config file and env precedence,
//! and plain-sentence failures for a busy port or an unwritable data dir.
use crate::common::{KUBECTL_NEW, Server, free_port, kubox_bin};
use std::process::Command;

fn kubox(args: &[&str]) -> std::process::Output {
    Command::new(kubox_bin())
        .args(args)
        .env("KUBOX_CONFIG", "/dev/null")
        .output()
        .expect("run kubox")
}

#[test]
fn version_and_completion_work() {
    let out = kubox(&["--version"]);
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with("kubox v") && v.contains("Kubernetes v1.33"),
        "{v}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = kubox(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("kubox"),
            "{shell}"
        );
    }
}

#[test]
fn bad_flags_and_values_exit_2_with_one_sentence() {
    for args in [
        vec!["server", "--no-such-flag"],
        vec!["server", "--cluster-cidr", "banana"],
        vec!["server", "--https-listen-port", "0"],
        vec!["server", "--service-node-port-range", "40000-30000"],
        vec!["server", "--write-kubeconfig-mode", "999"],
        vec!["server", "--cluster-dns", "10.99.0.10"],
    ] {
        let out = kubox(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn unknown_config_file_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "no-such-key: 1\n").unwrap();
    let out = Command::new(kubox_bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-key"));
}

#[test]
fn busy_port_is_reported_plainly() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = kubox(&[
        "server",
        "--disable-agent",
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        &port,
        "--data-dir",
        data.to_str().unwrap(),
        "--write-kubeconfig",
        dir.path().join("k.yaml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains(&port),
        "{err}"
    );
}

#[test]
fn unwritable_data_dir_is_reported_plainly() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory is needed cannot be written into, even by root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let data = blocker.join("data");
    let port = free_port().to_string();
    let out = kubox(&[
        "server",
        "--disable-agent",
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        &port,
        "--data-dir",
        data.to_str().unwrap(),
        "--write-kubeconfig",
        dir.path().join("k.yaml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data directory") && err.contains("not writable"),
        "{err}"
    );
}

#[test]
fn config_file_sets_flags_and_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("config.yaml");
    let kubeconfig = dir.path().join("from-config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "https-listen-port: {port}\nbind-address: 127.0.0.1\ndisable-agent: true\nwrite-kubeconfig: {}\nwrite-kubeconfig-mode: \"0640\"\ntls-san: [kubox.example, 10.9.9.9]\nlog-level: warn\ncluster-domain: wrong.local\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(kubox_bin())
        .args([
            "server",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--cluster-domain",
            "cluster.local",
        ])
        .spawn()
        .unwrap();
    let ready = crate::common::eventually(std::time::Duration::from_secs(30), || {
        kubeconfig.exists().then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready.is_some(),
        "the kubeconfig path from the config file was not written"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let pem = std::fs::read(data.join("server/tls/serving-kube-apiserver.crt")).unwrap();
    let text = String::from_utf8_lossy(&pem);
    assert!(text.contains("BEGIN CERTIFICATE"));
}

#[test]
fn kubox_kubectl_uses_the_admin_kubeconfig() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        crate::common::kubectl_path(KUBECTL_NEW),
        dir.path().join("kubectl"),
    )
    .unwrap();
    let out = Command::new(kubox_bin())
        .args(["kubectl", "get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));
    let out = Command::new(kubox_bin())
        .args(["kubectl", "version"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubectl was not found"));
}
