//! LimitRange defaults and bounds, and ResourceQuota charging and release, with kubectl.
use crate::common::{KUBECTL_NEW, Server, eventually};
use serde_json::Value;
use std::time::Duration;

fn pod(name: &str, resources: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"busybox"{resources}}}]}}}}"#
    )
}

#[test]
fn limit_ranges_default_and_bound_and_quotas_charge_and_release() {
    let s = Server::start();
    s.k(KUBECTL_NEW, &["create", "namespace", "team"]);
    // Pods need their service account (the ServiceAccount admission checks it).
    assert!(s.default_service_account_within("team", Duration::from_secs(20)));
    s.k_in(
        KUBECTL_NEW,
        &["-n", "team", "apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"limits"},"spec":{"limits":[
                {"type":"Container","default":{"cpu":"500m"},"defaultRequest":{"cpu":"200m"},"max":{"cpu":"1"}}]}},
            {"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"compute"},"spec":{"hard":{
                "pods":"2","requests.cpu":"500m","count/configmaps":"2"}}}]}"#,
    );
    let ns = |args: &[&str]| {
        let mut a = vec!["-n", "team"];
        a.extend_from_slice(args);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let create = |name: &str, res: &str| {
        let args = ns(&["create", "-f", "-", "-o", "json"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.kubectl_stdin(KUBECTL_NEW, &args, &pod(name, res))
    };
    // Defaults from the LimitRange, recorded in the annotation.
    let out = create("p1", "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p1: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &p1["spec"]["containers"][0]["resources"];
    assert_eq!(r["requests"]["cpu"], "200m", "{p1}");
    assert_eq!(r["limits"]["cpu"], "500m", "{p1}");
    assert!(
        p1["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .unwrap_or_default()
            .contains("cpu request for container c"),
        "{p1}"
    );
    // Above the LimitRange's max.
    let out = create("big", r#","resources":{"limits":{"cpu":"2"}}"#);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("maximum cpu usage per Container is 1, but limit is 2"),
        "{e}"
    );
    // The quota: a second pod fits (400m of 500m), a third does not.
    let out = create("p2", "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = create("p3", "");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("exceeded quota: compute"), "{e}");
    assert!(e.contains("limited: pods=2,requests.cpu=500m"), "{e}");
    let used = eventually(Duration::from_secs(20), || {
        let q: Value = serde_json::from_str(&s.k(
            KUBECTL_NEW,
            &[
                "-n",
                "team",
                "get",
                "resourcequota",
                "compute",
                "-o",
                "json",
            ],
        ))
        .unwrap();
        (q["status"]["used"]["pods"] == "2" && q["status"]["used"]["requests.cpu"] == "400m")
            .then_some(q)
    });
    assert!(used.is_some(), "status.used never showed the two pods");
    let described = s.k(KUBECTL_NEW, &["-n", "team", "describe", "quota", "compute"]);
    assert!(described.contains("requests.cpu"), "{described}");
    // Object counts.
    s.k(KUBECTL_NEW, &["-n", "team", "create", "configmap", "c1"]);
    let e = s.k_err(KUBECTL_NEW, &["-n", "team", "create", "configmap", "c2"]);
    assert!(e.contains("exceeded quota"), "{e}");
    // Deleting a pod frees its share once the quota controller recounts.
    s.k(
        KUBECTL_NEW,
        &[
            "-n",
            "team",
            "delete",
            "pod",
            "p1",
            "--grace-period=0",
            "--force",
        ],
    );
    let admitted = eventually(Duration::from_secs(30), || {
        create("p3", "").status.success().then_some(())
    });
    assert!(admitted.is_some(), "the freed quota was never released");
}
