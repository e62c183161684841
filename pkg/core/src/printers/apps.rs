//! apps/v1 and batch/v1 kinds.

use serde_json::{Value, json};

use super::Column;
use super::util::{
    CONTAINERS_DESC, IMAGES_DESC, age_cell, age_col, arr, bool_ptr, boolean, col, condition_status,
    container_cells, format_label_selector, format_labels, human, int, name_cell, name_col, s,
    selector_string, since, st, wide,
};
use crate::meta;

/// `spec.replicas`, defaulting to 1 as upstream's defaulting does.
fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn workload_wide(selector_desc: &str) -> Vec<Column> {
    vec![
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide("Selector", "string", selector_desc),
    ]
}

const SELECTOR_DESC: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";

pub(super) fn deployment_columns() -> Vec<Column> {
    let mut cols = vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state"),
        col(
            "Up-to-date",
            "string",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        col(
            "Available",
            "string",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        age_col(),
    ];
    cols.extend(workload_wide(SELECTOR_DESC));
    cols
}

pub(super) fn deployment_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            replicas(obj)
        )),
        json!(int(obj, "/status/updatedReplicas")),
        json!(int(obj, "/status/availableReplicas")),
        age_cell(obj),
        names,
        images,
        json!(selector_string(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn replica_set_columns() -> Vec<Column> {
    let mut cols = vec![
        name_col(),
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replica set.",
        ),
        age_col(),
    ];
    cols.extend(workload_wide(
        "Selector is a label query over pods that should match the replica count.",
    ));
    cols
}

pub(super) fn replica_set_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(replicas(obj)),
        json!(int(obj, "/status/replicas")),
        json!(int(obj, "/status/readyReplicas")),
        age_cell(obj),
        names,
        images,
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn stateful_set_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state"),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
    ]
}

pub(super) fn stateful_set_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(format!(
            "{}/{}",
            int(obj, "/status/readyReplicas"),
            replicas(obj)
        )),
        age_cell(obj),
        names,
        images,
    ]
}

pub(super) fn daemon_set_columns() -> Vec<Column> {
    let mut cols = vec![
        name_col(),
        col(
            "Desired",
            "integer",
            "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
        ),
        col(
            "Current",
            "integer",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
        ),
        col(
            "Ready",
            "integer",
            "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
        ),
        col(
            "Up-to-date",
            "integer",
            "The total number of nodes that are running updated daemon pod",
        ),
        col(
            "Available",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
        ),
        col(
            "Node Selector",
            "string",
            "NodeSelector is a selector which must be true for the pod to fit on a node.",
        ),
        age_col(),
    ];
    cols.extend(workload_wide(
        "A label query over pods that are managed by the daemon set.",
    ));
    cols
}

pub(super) fn daemon_set_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(int(obj, "/status/desiredNumberScheduled")),
        json!(int(obj, "/status/currentNumberScheduled")),
        json!(int(obj, "/status/numberReady")),
        json!(int(obj, "/status/updatedNumberScheduled")),
        json!(int(obj, "/status/numberAvailable")),
        json!(format_labels(
            obj.pointer("/spec/template/spec/nodeSelector")
        )),
        age_cell(obj),
        names,
        images,
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn revision_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Controller", "string", "Controller of the object"),
        col(
            "Revision",
            "string",
            "Revision indicates the revision of the state represented by Data.",
        ),
        age_col(),
    ]
}

/// Upstream's `formatResourceName(GroupKind, name, true)` of the controller owner reference.
pub(super) fn controller_of(obj: &Value) -> String {
    let Some(owner) = arr(obj, "/metadata/ownerReferences")
        .iter()
        .find(|o| boolean(o, "/controller") == Some(true))
    else {
        return "<none>".into();
    };
    let api_version = st(owner, "/apiVersion");
    let group = match api_version.split_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = st(owner, "/kind");
    let name = st(owner, "/name");
    match (kind, group) {
        ("", "") => name.to_string(),
        (k, "") => format!("{}/{name}", k.to_lowercase()),
        (k, g) => format!("{}.{}/{name}", k.to_lowercase(), g.to_lowercase()),
    }
}

pub(super) fn revision_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(controller_of(obj)),
        json!(int(obj, "/revision")),
        age_cell(obj),
    ]
}

pub(super) fn job_columns() -> Vec<Column> {
    let mut cols = vec![
        name_col(),
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "The number of pods which reached phase Succeeded.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        age_col(),
    ];
    cols.extend(workload_wide(
        "A label query over pods that should match the pod count.",
    ));
    cols
}

/// Upstream's Job COMPLETIONS cell: "1/3", "0/1", or "2/1 of 4" for work queues.
pub(super) fn job_completions(obj: &Value) -> String {
    let succeeded = int(obj, "/status/succeeded");
    match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_condition(obj: &Value, type_: &str) -> bool {
    condition_status(obj, "/status/conditions", type_) == Some("True")
}

/// Upstream's Job STATUS cell.
pub(super) fn job_status(obj: &Value) -> &'static str {
    if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if meta::meta_str(obj, "deletionTimestamp").is_some() {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// Upstream's Job DURATION cell: "" before start, running time, or start-to-completion time.
pub(super) fn job_duration(obj: &Value) -> String {
    let start = obj.pointer("/status/startTime").and_then(Value::as_str);
    let end = obj
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(meta::parse_time);
    match (start, end) {
        (None, _) => String::new(),
        (Some(st), None) => since(Some(st)),
        (Some(st), Some(end)) => match meta::parse_time(st) {
            Some(start) => human(end.as_second() - start.as_second()),
            None => "<unknown>".into(),
        },
    }
}

pub(super) fn job_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(job_status(obj)),
        json!(job_completions(obj)),
        json!(job_duration(obj)),
        age_cell(obj),
        names,
        images,
        json!(format_label_selector(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn cron_job_columns() -> Vec<Column> {
    let mut cols = vec![
        name_col(),
        col(
            "Schedule",
            "string",
            "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
        ),
        col(
            "Timezone",
            "string",
            "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
        ),
        col(
            "Suspend",
            "boolean",
            "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
        ),
        col(
            "Active",
            "integer",
            "A list of pointers to currently running jobs.",
        ),
        col(
            "Last Schedule",
            "string",
            "Information when was the last time the job was successfully scheduled.",
        ),
        age_col(),
    ];
    cols.extend(workload_wide(
        "A label query over pods that should match the pod count.",
    ));
    cols
}

pub(super) fn cron_job_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/jobTemplate/spec/template/spec"));
    let last = match obj
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
    {
        Some(t) => since(Some(t)),
        None => "<none>".into(),
    };
    let tz = match obj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => "<none>".into(),
    };
    vec![
        name_cell(obj),
        s(obj.pointer("/spec/schedule")),
        json!(tz),
        bool_ptr(boolean(obj, "/spec/suspend")),
        json!(arr(obj, "/status/active").len()),
        json!(last),
        age_cell(obj),
        names,
        images,
        json!(format_label_selector(
            obj.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(cols: &[Column]) -> Vec<(&str, i32)> {
        cols.iter().map(|c| (c.name.as_str(), c.priority)).collect()
    }

    #[test]
    fn deployment_columns_match_kubectl() {
        assert_eq!(
            names(&deployment_columns()),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
        );
    }

    #[test]
    fn deployment_row_shows_ready_over_desired_and_wide_cells() {
        let d = json!({"metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let row = deployment_row(&d);
        assert_eq!(row[..4], [json!("web"), json!("2/3"), json!(3), json!(2)]);
        assert_eq!(
            row[5..],
            [json!("a,b"), json!("nginx,busybox"), json!("app=web")]
        );
    }

    #[test]
    fn job_completions_cover_fixed_and_work_queue_jobs() {
        assert_eq!(
            job_completions(&json!({"spec": {"completions": 3}, "status": {"succeeded": 1}})),
            "1/3"
        );
        assert_eq!(
            job_completions(&json!({"spec": {"parallelism": 4}, "status": {"succeeded": 2}})),
            "2/1 of 4"
        );
        assert_eq!(job_completions(&json!({"spec": {"parallelism": 1}})), "0/1");
    }

    #[test]
    fn job_status_and_duration_follow_conditions_and_times() {
        let j = json!({"status": {"startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:42Z",
            "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(job_status(&j), "Complete");
        assert_eq!(job_duration(&j), "42s");
        assert_eq!(job_status(&json!({})), "Running");
        assert_eq!(job_duration(&json!({})), "");
        let j = json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(job_status(&j), "Suspended");
    }

    #[test]
    fn job_columns_start_with_status_for_1_33() {
        let cols = job_columns();
        assert_eq!(
            names(&cols)[..5],
            [
                ("Name", 0),
                ("Status", 0),
                ("Completions", 0),
                ("Duration", 0),
                ("Age", 0)
            ]
        );
    }

    #[test]
    fn cron_jobs_show_unset_timezone_and_suspend() {
        let row = cron_job_row(&json!({"spec": {"schedule": "*/5 * * * *", "suspend": false}}));
        assert_eq!(
            row[1..6],
            [
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn controller_revisions_name_their_controller_with_group() {
        let cr = json!({"revision": 2, "metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "svclb", "controller": true}]}});
        assert_eq!(controller_of(&cr), "daemonset.apps/svclb");
        assert_eq!(revision_row(&cr)[2], json!(2));
    }
}
