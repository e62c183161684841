//! Kinds of the smaller API groups (networking, storage, policy, rbac, ...).

use serde_json::{Value, json};

use super::util::{
    age_cell, age_col, arr, boolean, col, format_label_selector, human, int, list_with_more,
    name_cell, name_col, s, st, st_or, wide,
};
use super::{Column, Printer};

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, row| Some(Printer { columns, row });
    match (group, kind) {
        ("coordination.k8s.io", "Lease") => p(lease_columns, lease_row),
        ("discovery.k8s.io", "EndpointSlice") => p(slice_columns, slice_row),
        ("networking.k8s.io", "Ingress") => p(ingress_columns, ingress_row),
        ("networking.k8s.io", "IngressClass") => p(ingress_class_columns, ingress_class_row),
        ("networking.k8s.io", "NetworkPolicy") => p(netpol_columns, netpol_row),
        ("policy", "PodDisruptionBudget") => p(pdb_columns, pdb_row),
        ("scheduling.k8s.io", "PriorityClass") => p(priority_columns, priority_row),
        ("node.k8s.io", "RuntimeClass") => p(runtime_class_columns, runtime_class_row),
        ("autoscaling", "HorizontalPodAutoscaler") => p(hpa_columns, hpa_row),
        ("certificates.k8s.io", "CertificateSigningRequest") => p(csr_columns, csr_row),
        ("rbac.authorization.k8s.io", "RoleBinding") => p(role_binding_columns, binding_row),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            p(cluster_role_binding_columns, binding_row)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            p(webhook_columns, webhook_row)
        }
        _ => None,
    }
}

fn lease_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        age_col(),
    ]
}

fn lease_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        s(obj.pointer("/spec/holderIdentity")),
        age_cell(obj),
    ]
}

fn slice_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice.",
        ),
        age_col(),
    ]
}

fn slice_row(obj: &Value) -> Vec<Value> {
    let ports: Vec<String> = arr(obj, "/ports")
        .iter()
        .map(|p| {
            match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".into(),
            }
        })
        .collect();
    let addrs: Vec<String> = arr(obj, "/endpoints")
        .iter()
        .flat_map(|e| {
            arr(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
        })
        .collect();
    vec![
        name_cell(obj),
        s(obj.get("addressType")),
        json!(list_with_more(&ports, 3, "<unset>")),
        json!(list_with_more(&addrs, 3, "<unset>")),
        age_cell(obj),
    ]
}

fn ingress_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Class",
            "string",
            "The name of the IngressClass resource that should be used for additional configuration",
        ),
        col(
            "Hosts",
            "string",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        col(
            "Address",
            "string",
            "Address is a list containing ingress points for the load-balancer",
        ),
        col("Ports", "string", "Ports of TLS configurations that open"),
        age_col(),
    ]
}

/// Upstream's `formatHosts`: up to three hosts, "*" when none.
fn ingress_hosts(obj: &Value) -> String {
    let rules = arr(obj, "/spec/rules");
    let mut list = Vec::new();
    let mut more = false;
    for r in rules {
        if list.len() == 3 {
            more = true;
        }
        if !more && !st(r, "/host").is_empty() {
            list.push(st(r, "/host"));
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len() - 3)
    } else {
        ret
    }
}

fn ingress_row(obj: &Value) -> Vec<Value> {
    let ports = if arr(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name_cell(obj),
        json!(st_or(obj, "/spec/ingressClassName", "<none>")),
        json!(ingress_hosts(obj)),
        json!(super::core::lb_ingress(obj, "/status/loadBalancer/ingress")),
        json!(ports),
        age_cell(obj),
    ]
}

fn ingress_class_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        age_col(),
    ]
}

fn ingress_class_row(obj: &Value) -> Vec<Value> {
    let params = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut kind = st(p, "/kind").to_string();
            if let Some(g) = p.get("apiGroup").and_then(Value::as_str) {
                kind = format!("{kind}.{g}");
            }
            format!("{kind}/{}", st(p, "/name"))
        }
    };
    vec![
        name_cell(obj),
        s(obj.pointer("/spec/controller")),
        json!(params),
        age_cell(obj),
    ]
}

fn netpol_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Pod-Selector",
            "string",
            "Selects the pods to which this NetworkPolicy object applies.",
        ),
        age_col(),
    ]
}

fn netpol_row(obj: &Value) -> Vec<Value> {
    let sel = format_label_selector(obj.pointer("/spec/podSelector"));
    vec![name_cell(obj), json!(sel), age_cell(obj)]
}

fn pdb_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        age_col(),
    ]
}

/// An IntOrString as Go's `String()`, "N/A" when absent.
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

fn pdb_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(int_or_string(obj.pointer("/spec/minAvailable"))),
        json!(int_or_string(obj.pointer("/spec/maxUnavailable"))),
        json!(int(obj, "/status/disruptionsAllowed")),
        age_cell(obj),
    ]
}

fn priority_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Value",
            "integer",
            "value represents the integer value of this priority class.",
        ),
        col(
            "Global-Default",
            "boolean",
            "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
        ),
        age_col(),
        col(
            "PreemptionPolicy",
            "string",
            "preemptionPolicy is the Policy for preempting pods with lower priority.",
        ),
    ]
}

fn priority_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(int(obj, "/value")),
        json!(boolean(obj, "/globalDefault").unwrap_or(false)),
        age_cell(obj),
        s(obj.get("preemptionPolicy")),
    ]
}

fn runtime_class_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Handler",
            "string",
            "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
        ),
        age_col(),
    ]
}

fn runtime_class_row(obj: &Value) -> Vec<Value> {
    vec![name_cell(obj), s(obj.get("handler")), age_cell(obj)]
}

fn hpa_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Reference",
            "string",
            "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
        ),
        col(
            "Targets",
            "string",
            "metrics contains the specifications for which to use to calculate the desired replica count.",
        ),
        col(
            "MinPods",
            "string",
            "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
        ),
        col(
            "MaxPods",
            "string",
            "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
        ),
        col(
            "Replicas",
            "string",
            "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
        ),
        age_col(),
    ]
}

/// A quantity at `ptr` of `v`, if set.
fn q(v: Option<&Value>, ptr: &str) -> Option<String> {
    match v?.pointer(ptr)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One metric of upstream's `formatHPAMetrics` (autoscaling/v2 JSON).
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    let typ = st(spec, "/type");
    let key = match typ {
        "External" => "external",
        "Pods" => "pods",
        "Object" => "object",
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        _ => return "<unknown type>".into(),
    };
    let spec = spec.get(key).unwrap_or(&Value::Null);
    let cur = status.and_then(|s| s.get(key));
    let target_avg = q(Some(spec), "/target/averageValue");
    match typ {
        "Pods" => format!(
            "{}/{}",
            q(cur, "/current/averageValue").unwrap_or_else(unknown),
            target_avg.unwrap_or_default()
        ),
        "External" | "Object" => match target_avg {
            Some(t) => format!(
                "{}/{t} (avg)",
                q(cur, "/current/averageValue").unwrap_or_else(unknown)
            ),
            None => format!(
                "{}/{}",
                q(cur, "/current/value").unwrap_or_else(unknown),
                q(Some(spec), "/target/value").unwrap_or_default()
            ),
        },
        _ => {
            let name = st(spec, "/name");
            match target_avg {
                Some(t) => format!(
                    "{name}: {}/{t}",
                    q(cur, "/current/averageValue").unwrap_or_else(unknown)
                ),
                None => {
                    let pct =
                        |v: Option<&Value>| v.and_then(Value::as_i64).map(|n| format!("{n}%"));
                    let current = pct(cur.and_then(|c| c.pointer("/current/averageUtilization")));
                    let target = pct(spec.pointer("/target/averageUtilization"));
                    format!(
                        "{name}: {}/{}",
                        current.unwrap_or_else(unknown),
                        target.unwrap_or_else(|| "<auto>".into())
                    )
                }
            }
        }
    }
}

/// Upstream's `formatHPAMetrics`: up to two metrics; autoscaling/v1's CPU target is handled too.
fn hpa_targets(obj: &Value) -> String {
    let specs = arr(obj, "/spec/metrics");
    if specs.is_empty() {
        if let Some(t) = obj
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            let cur = obj
                .pointer("/status/currentCPUUtilizationPercentage")
                .and_then(Value::as_i64)
                .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
            return format!("cpu: {cur}/{t}%");
        }
        return "<none>".into();
    }
    let statuses = arr(obj, "/status/currentMetrics");
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    let shown = list.iter().take(2).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > 2 {
        format!("{shown} + {} more...", list.len() - 2)
    } else {
        shown
    }
}

fn hpa_row(obj: &Value) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        st(obj, "/spec/scaleTargetRef/kind"),
        st(obj, "/spec/scaleTargetRef/name")
    );
    let min = obj
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name_cell(obj),
        json!(reference),
        json!(hpa_targets(obj)),
        json!(min),
        json!(int(obj, "/spec/maxReplicas")),
        json!(int(obj, "/status/currentReplicas")),
        age_cell(obj),
    ]
}

fn csr_columns() -> Vec<Column> {
    vec![
        name_col(),
        age_col(),
        col(
            "SignerName",
            "string",
            "signerName indicates the requested signer, and is a qualified name.",
        ),
        col(
            "Requestor",
            "string",
            "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block.",
        ),
        col(
            "RequestedDuration",
            "string",
            "expirationSeconds is the requested duration of validity of the issued certificate.",
        ),
        col(
            "Condition",
            "string",
            "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
        ),
    ]
}

/// Upstream's `extractCSRStatus`: "Approved,Issued", "Pending", "Denied", ...
fn csr_condition(obj: &Value) -> String {
    let has = |t: &str| {
        arr(obj, "/status/conditions")
            .iter()
            .any(|c| st(c, "/type") == t)
    };
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !st(obj, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn csr_row(obj: &Value) -> Vec<Value> {
    let duration = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map_or_else(|| "<none>".to_string(), human);
    vec![
        name_cell(obj),
        age_cell(obj),
        json!(st_or(obj, "/spec/signerName", "<none>")),
        s(obj.pointer("/spec/username")),
        json!(duration),
        json!(csr_condition(obj)),
    ]
}

fn binding_columns(what: &str) -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Role",
            "string",
            "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
        ),
        age_col(),
        wide("Users", "string", &format!("Users in the {what}")),
        wide("Groups", "string", &format!("Groups in the {what}")),
        wide(
            "ServiceAccounts",
            "string",
            &format!("ServiceAccounts in the {what}"),
        ),
    ]
}

fn role_binding_columns() -> Vec<Column> {
    binding_columns("roleBinding")
}

fn cluster_role_binding_columns() -> Vec<Column> {
    binding_columns("clusterRoleBinding")
}

fn binding_row(obj: &Value) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subj in arr(obj, "/subjects") {
        match st(subj, "/kind") {
            "User" => users.push(st(subj, "/name").to_string()),
            "Group" => groups.push(st(subj, "/name").to_string()),
            "ServiceAccount" => {
                sas.push(format!("{}/{}", st(subj, "/namespace"), st(subj, "/name")))
            }
            _ => {}
        }
    }
    let role = format!("{}/{}", st(obj, "/roleRef/kind"), st(obj, "/roleRef/name"));
    vec![
        name_cell(obj),
        json!(role),
        age_cell(obj),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

fn webhook_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Webhooks",
            "integer",
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        age_col(),
    ]
}

fn webhook_row(obj: &Value) -> Vec<Value> {
    vec![
        name_cell(obj),
        json!(arr(obj, "/webhooks").len()),
        age_cell(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_targets_show_utilization_and_unknown_current() {
        let hpa = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"averageValue": "100Mi"}}}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
        assert_eq!(hpa_targets(&hpa), "cpu: 12%/80%, <unknown>/1k + 1 more...");
        assert_eq!(
            hpa_targets(&json!({"spec": {"targetCPUUtilizationPercentage": 50}})),
            "cpu: <unknown>/50%"
        );
    }

    #[test]
    fn csr_condition_orders_denied_over_approved_and_adds_issued() {
        let csr = json!({"status": {"conditions": [{"type": "Approved"}], "certificate": "Zm9v"}});
        assert_eq!(csr_condition(&csr), "Approved,Issued");
        assert_eq!(csr_condition(&json!({})), "Pending");
    }

    #[test]
    fn role_bindings_list_subjects_by_kind() {
        let rb = json!({"roleRef": {"kind": "ClusterRole", "name": "admin"}, "subjects": [
            {"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "kube-system"}]});
        let row = binding_row(&rb);
        assert_eq!(row[1], json!("ClusterRole/admin"));
        assert_eq!(
            row[3..],
            [json!("alice"), json!("devs"), json!("kube-system/sa")]
        );
    }

    #[test]
    fn ingress_hosts_and_ports_follow_rules_and_tls() {
        let ing = json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}, {}, {"host": "d"}, {"host": "e"}], "tls": [{}]}});
        let row = ingress_row(&ing);
        assert_eq!(
            row[1..5],
            [
                json!("<none>"),
                json!("a,b,d + 2 more..."),
                json!(""),
                json!("80, 443")
            ]
        );
        assert_eq!(ingress_hosts(&json!({})), "*");
    }

    #[test]
    fn endpoint_slices_show_ports_and_addresses() {
        let es = json!({"addressType": "IPv4", "ports": [{"port": 80}, {"name": "x"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        let row = slice_row(&es);
        assert_eq!(
            row[1..4],
            [json!("IPv4"), json!("80,x"), json!("10.0.0.1,10.0.0.2")]
        );
        assert_eq!(slice_row(&json!({}))[2], json!("<unset>"));
    }
}
