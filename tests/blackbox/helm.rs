//! helm (v4, the client users install charts with) against kubox: install a chart made by
//! `helm create` and wait for it, upgrade, history, rollback, status, uninstall. helm stores
//! releases as Secrets (sent as protobuf bodies) and applies server-side.
//!
//! The helm binary comes from `KUBOX_TEST_HELM` (tests/run.sh fetches one when missing) or
//! `helm` on PATH. A [`StandInNode`] runs the pods, so `--wait` sees them ready.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{KUBECTL_NEW, Server, eventually};
use crate::controllers::{StandInNode, WAIT, json};

fn helm_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUBOX_TEST_HELM") {
        return PathBuf::from(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
        .expect("helm is needed: set KUBOX_TEST_HELM or put helm on PATH (tests/run.sh fetches it)")
}

struct Helm<'a> {
    s: &'a Server,
    home: &'a Path,
}

impl Helm<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(helm_bin())
            .args(args)
            .env("KUBECONFIG", self.s.kubeconfig())
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .current_dir(self.home)
            .output()
            .expect("run helm")
    }

    /// helm that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

fn replicas(s: &Server) -> (i64, i64) {
    let d = json(&s.k(KUBECTL_NEW, &["get", "deployment", "demo", "-o", "json"]));
    (
        d["spec"]["replicas"].as_i64().unwrap_or(-1),
        d["status"]["readyReplicas"].as_i64().unwrap_or(0),
    )
}

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls_a_chart() {
    let s = Server::start();
    let _node = StandInNode::start(&s, "node-a", 31);
    let home = tempfile::tempdir().unwrap();
    let helm = Helm {
        s: &s,
        home: home.path(),
    };
    helm.ok(&["create", "demo"]);
    let chart = home.path().join("demo");
    let chart = chart.to_str().unwrap();

    let out = helm.ok(&["install", "demo", chart, "--wait", "--timeout", "90s"]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(replicas(&s), (1, 1));
    // Every object of the chart is there, labelled as helm's.
    for obj in ["service/demo", "serviceaccount/demo", "deployment/demo"] {
        let o = json(&s.k(KUBECTL_NEW, &["get", obj, "-o", "json"]));
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        assert_eq!(
            o["metadata"]["annotations"]["meta.helm.sh/release-name"],
            "demo"
        );
    }
    let secrets = json(&s.k(
        KUBECTL_NEW,
        &["get", "secrets", "-l", "owner=helm,name=demo", "-o", "json"],
    ));
    assert_eq!(secrets["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(secrets["items"][0]["type"], "helm.sh/release.v1");

    let list = json(&helm.ok(&["list", "-o", "json"]));
    assert_eq!(list[0]["name"], "demo");
    assert_eq!(list[0]["status"], "deployed");

    helm.ok(&[
        "upgrade",
        "demo",
        chart,
        "--set",
        "replicaCount=3",
        "--wait",
        "--timeout",
        "90s",
    ]);
    assert_eq!(replicas(&s), (3, 3));
    assert_eq!(
        json(&helm.ok(&["get", "values", "demo", "-o", "json"]))["replicaCount"],
        3
    );

    helm.ok(&["rollback", "demo", "1", "--wait", "--timeout", "90s"]);
    eventually(WAIT, || (replicas(&s) == (1, 1)).then_some(()))
        .unwrap_or_else(|| panic!("rollback left {:?}", replicas(&s)));
    let history = json(&helm.ok(&["history", "demo", "-o", "json"]));
    let revisions: Vec<(i64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or(0),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [
            (1, "superseded".to_string()),
            (2, "superseded".to_string()),
            (3, "deployed".to_string())
        ]
    );
    let status = helm.ok(&["status", "demo"]);
    assert!(status.contains("REVISION: 3"), "{status}");

    helm.ok(&["uninstall", "demo", "--wait", "--timeout", "90s"]);
    for obj in ["service/demo", "serviceaccount/demo", "deployment/demo"] {
        let out = s.k_err(KUBECTL_NEW, &["get", obj]);
        assert!(out.contains("NotFound"), "{obj} after uninstall: {out}");
    }
    assert!(helm.ok(&["list", "-q"]).trim().is_empty());
}
