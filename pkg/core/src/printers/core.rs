//! Core (`""` group) kinds other than Pod.

use serde_json::{Value, json};

use super::Column;
use super::util::{
    CONTAINERS_DESC, IMAGES_DESC, age_cell, age_col, arr, col, container_cells, format_labels, int,
    join_host_port, map_len, name_cell, name_col, quantity, s, since, st, st_or, wide,
};

pub(super) fn pod_template_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Containers", "string", CONTAINERS_DESC),
        col("Images", "string", IMAGES_DESC),
        col("Pod Labels", "string", "The labels for the pod template."),
    ]
}

pub(super) fn pod_template_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/template/spec"));
    let labels = format_labels(obj.pointer("/template/metadata/labels"));
    vec![name_cell(obj), names, images, json!(labels)]
}

pub(super) fn rc_columns() -> Vec<Column> {
    vec![
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
            "The number of ready replicas for this replication controller.",
        ),
        age_col(),
        wide("Containers", "string", CONTAINERS_DESC),
        wide("Images", "string", IMAGES_DESC),
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template.",
        ),
    ]
}

pub(super) fn rc_row(obj: &Value) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name_cell(obj),
        json!(int(obj, "/spec/replicas")),
        json!(int(obj, "/status/replicas")),
        json!(int(obj, "/status/readyReplicas")),
        age_cell(obj),
        names,
        images,
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn service_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Type",
            "string",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
        ),
        col(
            "Cluster-IP",
            "string",
            "clusterIP is the IP address of the service and is usually assigned randomly.",
        ),
        col(
            "External-IP",
            "string",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        col(
            "Port(s)",
            "string",
            "The list of ports that are exposed by this service.",
        ),
        age_col(),
        wide(
            "Selector",
            "string",
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ]
}

/// Upstream's `makePortString`: "80/TCP", "80:30080/TCP", comma-joined.
pub(super) fn service_ports(obj: &Value) -> String {
    arr(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int(p, "/port");
            let proto = st_or(p, "/protocol", "TCP");
            match int(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Load-balancer ingress IPs (or hostnames), sorted and de-duplicated, comma-joined.
pub(super) fn lb_ingress(obj: &Value, ptr: &str) -> String {
    let mut set: Vec<&str> = arr(obj, ptr)
        .iter()
        .filter_map(|i| match (st(i, "/ip"), st(i, "/hostname")) {
            ("", "") => None,
            ("", h) => Some(h),
            (ip, _) => Some(ip),
        })
        .collect();
    set.sort_unstable();
    set.dedup();
    set.join(",")
}

/// Upstream's `getServiceExternalIP` (wide, as the server renders it).
pub(super) fn service_external_ip(obj: &Value) -> String {
    let external: Vec<&str> = arr(obj, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match st_or(obj, "/spec/type", "ClusterIP").as_str() {
        "ClusterIP" | "NodePort" if !external.is_empty() => external.join(","),
        "ClusterIP" | "NodePort" => "<none>".into(),
        "LoadBalancer" => {
            let lb = lb_ingress(obj, "/status/loadBalancer/ingress");
            if !external.is_empty() {
                let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => st(obj, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

pub(super) fn service_row(obj: &Value) -> Vec<Value> {
    let cluster_ip = arr(obj, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| obj.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let ports = match service_ports(obj) {
        p if p.is_empty() => "<none>".to_string(),
        p => p,
    };
    vec![
        name_cell(obj),
        json!(st_or(obj, "/spec/type", "ClusterIP")),
        json!(cluster_ip),
        json!(service_external_ip(obj)),
        json!(ports),
        age_cell(obj),
        json!(format_labels(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn endpoints_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Endpoints",
            "string",
            "The set of all endpoints is the union of all subsets.",
        ),
        age_col(),
    ]
}

/// Upstream's `formatEndpoints` with all ports.
pub(super) fn format_endpoints(obj: &Value) -> String {
    let subsets = arr(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let (mut list, mut count, mut more) = (Vec::new(), 0usize, false);
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(st(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(st(a, "/ip"), int(p, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

pub(super) fn endpoints_row(obj: &Value) -> Vec<Value> {
    vec![name_cell(obj), json!(format_endpoints(obj)), age_cell(obj)]
}

pub(super) fn node_columns() -> Vec<Column> {
    let addrs = "List of addresses reachable to the node.";
    vec![
        name_col(),
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        age_col(),
        col("Version", "string", "Kubelet Version reported by the node."),
        wide("Internal-IP", "string", addrs),
        wide("External-IP", "string", addrs),
        wide(
            "OS-Image",
            "string",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        wide(
            "Kernel-Version",
            "string",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        wide(
            "Container-Runtime",
            "string",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ]
}

/// Upstream's node STATUS: "Ready", "NotReady" or "Unknown", plus ",SchedulingDisabled".
pub(super) fn node_status(obj: &Value) -> String {
    let mut status = match super::util::condition_status(obj, "/status/conditions", "Ready") {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role` values.
pub(super) fn node_roles(obj: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                match v.as_str() {
                    Some(r) if !r.is_empty() => roles.push(r.to_string()),
                    _ => {}
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_address(obj: &Value, type_: &str) -> String {
    arr(obj, "/status/addresses")
        .iter()
        .find(|a| st(a, "/type") == type_)
        .map(|a| st(a, "/address").to_string())
        .unwrap_or_else(|| "<none>".into())
}

pub(super) fn node_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(node_status(obj)),
        json!(node_roles(obj)),
        age_cell(obj),
        s(obj.pointer("/status/nodeInfo/kubeletVersion")),
        json!(node_address(obj, "InternalIP")),
        json!(node_address(obj, "ExternalIP")),
        json!(st_or(obj, "/status/nodeInfo/osImage", "<unknown>")),
        json!(st_or(obj, "/status/nodeInfo/kernelVersion", "<unknown>")),
        json!(st_or(
            obj,
            "/status/nodeInfo/containerRuntimeVersion",
            "<unknown>"
        )),
    ]
}

pub(super) fn event_columns() -> Vec<Column> {
    vec![
        col(
            "Last Seen",
            "string",
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        col(
            "Type",
            "string",
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        col(
            "Reason",
            "string",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        col("Object", "string", "The object that this event is about."),
        wide(
            "Subobject",
            "string",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
        ),
        wide(
            "Source",
            "string",
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        col(
            "Message",
            "string",
            "A human-readable description of the status of this operation.",
        ),
        wide(
            "First Seen",
            "string",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        ),
        wide(
            "Count",
            "string",
            "The number of times this event has occurred.",
        ),
        Column {
            priority: 1,
            ..name_col()
        },
    ]
}

/// First non-empty string among JSON pointers.
fn first_str<'a>(obj: &'a Value, ptrs: &[&str]) -> &'a str {
    ptrs.iter()
        .map(|p| st(obj, p))
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

/// core/v1 and events.k8s.io/v1 Events (the latter's fields mapped as upstream converts them).
pub(super) fn event_row(obj: &Value) -> Vec<Value> {
    let first_ts = first_str(obj, &["/firstTimestamp", "/deprecatedFirstTimestamp"]);
    let first = if first_ts.is_empty() {
        since(Some(st(obj, "/eventTime")))
    } else {
        since(Some(first_ts))
    };
    let last_ts = first_str(obj, &["/lastTimestamp", "/deprecatedLastTimestamp"]);
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        since(Some(last_ts))
    };
    let mut count = match int(obj, "/count") {
        0 => int(obj, "/deprecatedCount"),
        c => c,
    };
    match obj.get("series").filter(|s| s.is_object()) {
        Some(series) => {
            last = since(Some(st(series, "/lastObservedTime")));
            count = int(series, "/count");
        }
        None if count == 0 => count = 1,
        None => {}
    }
    let involved = obj
        .get("involvedObject")
        .or_else(|| obj.get("regarding"))
        .unwrap_or(&Value::Null);
    let kind = st(involved, "/kind").to_lowercase();
    let target = match st(involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = first_str(
        obj,
        &[
            "/source/component",
            "/deprecatedSource/component",
            "/reportingComponent",
            "/reportingController",
        ],
    );
    let host = first_str(
        obj,
        &[
            "/source/host",
            "/deprecatedSource/host",
            "/reportingInstance",
        ],
    );
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    let message = first_str(obj, &["/message", "/note"]).trim();
    vec![
        json!(last),
        s(obj.get("type")),
        s(obj.get("reason")),
        json!(target),
        s(involved.get("fieldPath")),
        json!(source),
        json!(message),
        json!(first),
        json!(count),
        name_cell(obj),
    ]
}

pub(super) fn namespace_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "The status of the namespace"),
        age_col(),
    ]
}

pub(super) fn namespace_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(obj.pointer("/status/phase")),
        age_cell(obj),
    ]
}

pub(super) fn config_map_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Data",
            "string",
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        age_col(),
    ]
}

pub(super) fn config_map_row(obj: &Value) -> Vec<Value> {
    let n = map_len(obj, "/data") + map_len(obj, "/binaryData");
    vec![name_cell(obj), json!(n), age_cell(obj)]
}

pub(super) fn secret_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Type",
            "string",
            "Used to facilitate programmatic handling of secret data.",
        ),
        col(
            "Data",
            "string",
            "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        age_col(),
    ]
}

pub(super) fn secret_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(obj.get("type")),
        json!(map_len(obj, "/data")),
        age_cell(obj),
    ]
}

pub(super) fn service_account_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Secrets",
            "string",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        age_col(),
    ]
}

pub(super) fn service_account_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(arr(obj, "/secrets").len()),
        age_cell(obj),
    ]
}

pub(super) fn quota_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Request",
            "string",
            "Request represents a minimum amount of cpu/memory that a container may consume.",
        ),
        col(
            "Limit",
            "string",
            "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        ),
        age_col(),
    ]
}

pub(super) fn quota_row(obj: &Value) -> Vec<Value> {
    let mut names: Vec<&String> = obj
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    names.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for r in names {
        let used = quantity(obj.pointer("/status/used").and_then(|u| u.get(r.as_str())));
        let hard = quantity(obj.pointer("/status/hard").and_then(|h| h.get(r.as_str())));
        let cell = format!("{r}: {used}/{hard}");
        let mut pieces = r.split('.');
        if pieces.next() == Some("limits") && pieces.next().is_some() {
            limits.push(cell);
        } else {
            requests.push(cell);
        }
    }
    vec![
        name_cell(obj),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        age_cell(obj),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn service_ports_show_node_ports_and_protocols() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "nodePort": 30080, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(service_ports(&svc), "80:30080/TCP,53/UDP");
    }

    #[test]
    fn service_row_shows_none_for_missing_ports_and_external_ips() {
        let svc = json!({"metadata": {"name": "k"}, "spec": {"type": "ClusterIP",
            "clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"]}});
        let row = service_row(&svc);
        assert_eq!(
            row[1..5],
            [
                json!("ClusterIP"),
                json!("10.43.0.1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(row[6], json!("<none>"));
    }

    #[test]
    fn load_balancer_without_ingress_is_pending() {
        let svc =
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 443, "nodePort": 31443}]}});
        assert_eq!(service_external_ip(&svc), "<pending>");
        let svc = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer":
            {"ingress": [{"ip": "192.168.1.9"}, {"hostname": "lb.example"}]}}});
        assert_eq!(service_external_ip(&svc), "192.168.1.9,lb.example");
    }

    #[test]
    fn external_name_services_show_the_name() {
        let svc = json!({"spec": {"type": "ExternalName", "externalName": "db.example"}});
        assert_eq!(service_external_ip(&svc), "db.example");
    }

    #[test]
    fn node_status_combines_ready_and_cordon() {
        let node = json!({"spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}]}});
        assert_eq!(node_status(&node), "Ready,SchedulingDisabled");
        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(node_status(&node), "NotReady");
        assert_eq!(node_status(&json!({})), "Unknown");
    }

    #[test]
    fn node_roles_come_from_role_labels() {
        let node = json!({"metadata": {"labels": {
            "node-role.kubernetes.io/control-plane": "true",
            "node-role.kubernetes.io/master": "true",
            "kubernetes.io/role": "etcd", "other": "x"}}});
        assert_eq!(node_roles(&node), "control-plane,etcd,master");
        assert_eq!(node_roles(&json!({})), "<none>");
    }

    #[test]
    fn node_wide_cells_default_to_none_and_unknown() {
        let row = node_row(
            &json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1+k3s1"}}}),
        );
        assert_eq!(row[4], json!("v1.33.1+k3s1"));
        assert_eq!(
            row[5..],
            [
                json!("10.0.0.5"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
    }

    #[test]
    fn endpoints_list_three_and_count_the_rest() {
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 1 more..."
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
    }

    #[test]
    fn events_print_target_source_and_count() {
        let ev = json!({"metadata": {"name": "e1"}, "type": "Normal", "reason": "Pulled",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
            "source": {"component": "kubelet", "host": "node1"}, "message": " done \n"});
        let row = event_row(&ev);
        assert_eq!(row[0], json!("<unknown>"));
        assert_eq!(
            row[1..7],
            [
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{web}"),
                json!("kubelet, node1"),
                json!("done")
            ]
        );
        assert_eq!(row[8], json!(1));
        assert_eq!(row[9], json!("e1"));
    }

    #[test]
    fn events_k8s_io_events_use_regarding_and_note() {
        let ev = json!({"regarding": {"kind": "Node", "name": "n1"}, "note": "hi",
            "reportingController": "ctl", "series": {"count": 4, "lastObservedTime": "2020-01-01T00:00:00.000000Z"}});
        let row = event_row(&ev);
        assert_eq!(row[3], json!("node/n1"));
        assert_eq!(row[5], json!("ctl"));
        assert_eq!(row[6], json!("hi"));
        assert_eq!(row[8], json!(4));
        assert!(row[0].as_str().unwrap().ends_with('y'));
    }

    #[test]
    fn quotas_split_requests_and_limits() {
        let q = json!({"status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "3", "limits.cpu": "500m"}}});
        let row = quota_row(&q);
        assert_eq!(row[1], json!("pods: 3/10, requests.cpu: 0/1"));
        assert_eq!(row[2], json!("limits.cpu: 500m/2"));
    }
}
