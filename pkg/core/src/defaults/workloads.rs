//! Workload defaults: apps/v1, batch/v1 and core/v1 ReplicationController.

use super::pod::pod_template_defaults;
use super::{ensure_obj, is_unset, obj_at, set_default, spec};
use crate::names::is_label_value;
use serde_json::{Map, Value, json};

fn template_defaults(spec: &mut Map<String, Value>) {
    pod_template_defaults(spec.get_mut("template"));
}

pub(crate) fn deployment(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "replicas", json!(1));
    let strategy = ensure_obj(s, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = ensure_obj(strategy, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!("25%"));
        set_default(ru, "maxSurge", json!("25%"));
    }
    set_default(s, "revisionHistoryLimit", json!(10));
    set_default(s, "progressDeadlineSeconds", json!(600));
    template_defaults(s);
}

pub(crate) fn replica_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "replicas", json!(1));
    template_defaults(s);
}

/// core/v1 ReplicationController: replicas 1, selector and labels from the template labels.
pub(crate) fn replication_controller(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    let Some(s) = spec(obj) else { return };
    set_default(s, "replicas", json!(1));
    if let Some(labels) = &template_labels
        && is_unset(s, "selector")
    {
        s.insert("selector".into(), labels.clone());
    }
    template_defaults(s);
    if let (Some(labels), Some(root)) = (template_labels, obj.as_object_mut()) {
        let meta = ensure_obj(root, "metadata");
        if is_unset(meta, "labels") {
            meta.insert("labels".into(), labels);
        }
    }
}

pub(crate) fn stateful_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "podManagementPolicy", json!("OrderedReady"));
    let us = ensure_obj(s, "updateStrategy");
    set_default(us, "type", json!("RollingUpdate"));
    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = ensure_obj(us, "rollingUpdate");
        set_default(ru, "partition", json!(0));
    }
    let retention = ensure_obj(s, "persistentVolumeClaimRetentionPolicy");
    set_default(retention, "whenDeleted", json!("Retain"));
    set_default(retention, "whenScaled", json!("Retain"));
    set_default(s, "replicas", json!(1));
    set_default(s, "revisionHistoryLimit", json!(10));
    if let Some(vcts) = s
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for t in vcts.iter_mut().filter_map(Value::as_object_mut) {
            set_default(ensure_obj(t, "spec"), "volumeMode", json!("Filesystem"));
            set_default(ensure_obj(t, "status"), "phase", json!("Pending"));
        }
    }
    template_defaults(s);
}

pub(crate) fn daemon_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    let us = ensure_obj(s, "updateStrategy");
    set_default(us, "type", json!("RollingUpdate"));
    if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = ensure_obj(us, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!(1));
        set_default(ru, "maxSurge", json!(0));
    }
    set_default(s, "revisionHistoryLimit", json!(10));
    template_defaults(s);
}

pub(crate) fn job(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    job_spec_defaults(s);
    template_defaults(s);
    copy_template_labels_to_metadata(obj);
}

fn job_spec_defaults(s: &mut Map<String, Value>) {
    if is_null(s, "completions") && is_null(s, "parallelism") {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    set_default(s, "parallelism", json!(1));
    if is_null(s, "backoffLimit") {
        let limit = if is_null(s, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        s.insert("backoffLimit".into(), json!(limit));
    }
    set_default(s, "completionMode", json!("NonIndexed"));
    set_default(s, "suspend", json!(false));
    if is_null(s, "podReplacementPolicy") {
        let policy = if is_null(s, "podFailurePolicy") {
            "TerminatingOrFailed"
        } else {
            "Failed"
        };
        s.insert("podReplacementPolicy".into(), json!(policy));
    }
}

fn is_null(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).is_none_or(Value::is_null)
}

/// Upstream's Job defaulting: empty `metadata.labels` become the template labels.
fn copy_template_labels_to_metadata(obj: &mut Value) {
    let Some(labels) = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
    else {
        return;
    };
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = ensure_obj(root, "metadata");
    if is_unset(meta, "labels") {
        meta.insert("labels".into(), labels);
    }
}

/// Generates a Job's selector and pod template labels from `metadata.uid` and `metadata.name`
/// (upstream's generateSelector), unless `spec.manualSelector` is true. Call after the uid is
/// assigned on create; also copies the template labels to empty `metadata.labels`.
pub fn job_selector_defaults(obj: &mut Value) {
    let Some(uid) = crate::meta::meta_str(obj, "uid").map(String::from) else {
        return;
    };
    let name = crate::meta::name(obj).unwrap_or("").to_string();
    let Some(s) = spec(obj) else { return };
    if s.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let template = ensure_obj(s, "template");
    let labels = ensure_obj(ensure_obj(template, "metadata"), "labels");
    set_default(labels, "batch.kubernetes.io/controller-uid", json!(uid));
    set_default(labels, "controller-uid", json!(uid));
    if is_label_value(&name) {
        set_default(labels, "batch.kubernetes.io/job-name", json!(name));
        set_default(labels, "job-name", json!(name));
    }
    let selector = ensure_obj(s, "selector");
    let match_labels = ensure_obj(selector, "matchLabels");
    set_default(
        match_labels,
        "batch.kubernetes.io/controller-uid",
        json!(uid),
    );
    copy_template_labels_to_metadata(obj);
}

pub(crate) fn cron_job(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_default(s, "concurrencyPolicy", json!("Allow"));
    set_default(s, "suspend", json!(false));
    set_default(s, "successfulJobsHistoryLimit", json!(3));
    set_default(s, "failedJobsHistoryLimit", json!(1));
    if let Some(jt) = obj_at(s, "jobTemplate")
        && let Some(js) = obj_at(jt, "spec")
    {
        template_defaults(js);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::defaults::{apply_defaults, job_selector_defaults};
    use serde_json::json;

    fn tmpl() -> serde_json::Value {
        json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    }

    #[test]
    fn deployment_gets_replicas_strategy_and_limits() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": tmpl()}});
        apply_defaults("apps", "v1", "Deployment", &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            s["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
    }

    #[test]
    fn recreate_deployments_get_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply_defaults("apps", "v1", "Deployment", &mut d);
        assert!(d["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn statefulset_gets_policies_and_claim_template_defaults() {
        let mut s = json!({"spec": {"template": tmpl(), "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}});
        apply_defaults("apps", "v1", "StatefulSet", &mut s);
        let sp = &s["spec"];
        assert_eq!(sp["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sp["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            sp["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(sp["replicas"], 1);
        assert_eq!(sp["revisionHistoryLimit"], 10);
        assert_eq!(
            sp["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(sp["volumeClaimTemplates"][0]["status"]["phase"], "Pending");
    }

    #[test]
    fn daemonset_gets_rolling_update_one_unavailable() {
        let mut d = json!({"spec": {"template": tmpl()}});
        apply_defaults("apps", "v1", "DaemonSet", &mut d);
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn replicaset_and_rc_default_replicas_and_rc_copies_labels() {
        let mut r = json!({"spec": {"template": tmpl()}});
        apply_defaults("apps", "v1", "ReplicaSet", &mut r);
        assert_eq!(r["spec"]["replicas"], 1);
        let mut rc = json!({"metadata": {"name": "r"}, "spec": {"template": tmpl()}});
        apply_defaults("", "v1", "ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
    }

    #[test]
    fn job_gets_counts_policies_and_generated_selector() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
        apply_defaults("batch", "v1", "Job", &mut j);
        job_selector_defaults(&mut j);
        let s = &j["spec"];
        assert_eq!(s["completions"], 1);
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert!(s.get("manualSelector").is_none());
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &s["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(j["metadata"]["labels"], *labels);
    }

    #[test]
    fn job_with_parallelism_keeps_completions_unset() {
        let mut j = json!({"spec": {"parallelism": 3}});
        apply_defaults("batch", "v1", "Job", &mut j);
        assert!(j["spec"].get("completions").is_none());
        assert_eq!(j["spec"]["parallelism"], 3);
    }

    #[test]
    fn manual_selector_jobs_are_not_given_a_selector() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        job_selector_defaults(&mut j);
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
    }

    #[test]
    fn cronjob_gets_policies_and_template_defaults_but_no_job_defaults() {
        let mut c = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}});
        apply_defaults("batch", "v1", "CronJob", &mut c);
        let s = &c["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        let js = &s["jobTemplate"]["spec"];
        assert_eq!(js["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert!(js.get("backoffLimit").is_none());
    }
}
