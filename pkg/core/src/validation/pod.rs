//! Pod, PodSpec, container, probe, volume and PodTemplateSpec validation.

use super::meta::validate_labels;
use super::quantity::{QUANTITY_FORMAT_ERROR, parse_quantity};
use super::{FieldError, child, index, key, non_negative, one_of, s};
use crate::names::{is_dns1123_subdomain, name_error};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// Upstream's IsValidPortName (IANA_SVC_NAME) errors.
pub(crate) fn port_name_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 15 {
        out.push("must be no more than 15 characters".into());
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if name.contains("--") {
        out.push("must not contain consecutive hyphens".into());
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        out.push("must not begin or end with a hyphen".into());
    }
    out
}

/// Validates a port number field (1-65535) when present.
pub(crate) fn port_number(errs: &mut Vec<FieldError>, v: Option<&Value>, field: &str) {
    if let Some(n) = v.and_then(Value::as_i64)
        && !(1..=65535).contains(&n)
    {
        errs.push(FieldError::invalid(field, &json!(n), PORT_RANGE));
    }
}

/// An int-or-string port: a number 1-65535 or an IANA service name.
pub(crate) fn int_or_name_port(errs: &mut Vec<FieldError>, v: Option<&Value>, field: &str) {
    match v {
        Some(Value::Number(_)) => port_number(errs, v, field),
        Some(Value::String(name)) => {
            for msg in port_name_errors(name) {
                errs.push(FieldError::invalid_str(field, name, &msg));
            }
        }
        _ => {}
    }
}

fn dns_label(errs: &mut Vec<FieldError>, v: &str, field: &str) {
    if let Some(msg) = name_error(v, true) {
        errs.push(FieldError::invalid_str(field, v, &msg));
    }
}

/// A Pod: metadata is validated by the caller; spec here, plus update rules.
pub(crate) fn validate_pod(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(errs, spec, "spec");
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        validate_pod_spec_update(errs, spec, old_spec);
    } else if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
}

/// A PodTemplateSpec at `path`; `restart` (if non-empty) lists the allowed restartPolicy values.
pub(crate) fn validate_template(
    errs: &mut Vec<FieldError>,
    t: Option<&Value>,
    path: &str,
    restart: &[&str],
) {
    let Some(t) = t.filter(|t| t.is_object()) else {
        errs.push(FieldError::required(path, ""));
        return;
    };
    if let Some(meta) = t.get("metadata") {
        validate_labels(errs, meta.get("labels"), &child(path, "metadata.labels"));
    }
    let spec_path = child(path, "spec");
    let spec = t.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(errs, spec, &spec_path);
    if !restart.is_empty() {
        let rp = spec.get("restartPolicy").cloned().unwrap_or(json!(""));
        if !rp.as_str().is_some_and(|r| restart.contains(&r)) {
            errs.push(FieldError::not_supported(
                &child(&spec_path, "restartPolicy"),
                &rp,
                restart,
            ));
        }
    }
}

/// Upstream's ValidatePodSpec (the commonly hit subset).
pub(crate) fn validate_pod_spec(errs: &mut Vec<FieldError>, spec: &Value, path: &str) {
    let volumes = validate_volumes(errs, spec.get("volumes"), &child(path, "volumes"));
    let containers = spec.get("containers").and_then(Value::as_array);
    let mut names = HashSet::new();
    match containers {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                validate_container(
                    errs,
                    c,
                    &index(&child(path, "containers"), i),
                    &volumes,
                    &mut names,
                    true,
                );
            }
        }
        _ => errs.push(FieldError::required(&child(path, "containers"), "")),
    }
    if let Some(cs) = spec.get("initContainers").and_then(Value::as_array) {
        for (i, c) in cs.iter().enumerate() {
            validate_container(
                errs,
                c,
                &index(&child(path, "initContainers"), i),
                &volumes,
                &mut names,
                false,
            );
        }
    }
    validate_ephemeral_containers(errs, spec, path, &volumes, &mut names);
    one_of(
        errs,
        spec.get("restartPolicy"),
        &child(path, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
    );
    one_of(
        errs,
        spec.get("dnsPolicy"),
        &child(path, "dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        errs.push(FieldError::invalid(
            &child(path, "activeDeadlineSeconds"),
            &json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    validate_labels(errs, spec.get("nodeSelector"), &child(path, "nodeSelector"));
    let sa = s(spec, "serviceAccountName");
    if !sa.is_empty()
        && !is_dns1123_subdomain(sa)
        && let Some(msg) = name_error(sa, false)
    {
        errs.push(FieldError::invalid_str(
            &child(path, "serviceAccountName"),
            sa,
            &msg,
        ));
    }
    for f in ["hostname", "subdomain"] {
        let v = s(spec, f);
        if !v.is_empty() {
            dns_label(errs, v, &child(path, f));
        }
    }
}

/// Validates `volumes`, returning the declared names.
fn validate_volumes(
    errs: &mut Vec<FieldError>,
    vols: Option<&Value>,
    path: &str,
) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in vols
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = index(path, i);
        let name = s(v, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&child(&p, "name"), ""));
        } else {
            dns_label(errs, name, &child(&p, "name"));
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(&child(&p, "name"), &json!(name)));
            }
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        match sources.as_slice() {
            [] => errs.push(FieldError::required(&p, "must specify a volume type")),
            [_] => {}
            [_, second, ..] => errs.push(FieldError::forbidden(
                &child(&p, second),
                "may not specify more than 1 volume type",
            )),
        }
    }
    names
}

/// Fields an ephemeral (debug) container may not have: it never restarts, is never probed
/// and gets no resources of its own.
const NOT_FOR_EPHEMERAL: [&str; 8] = [
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// `spec.ephemeralContainers`: container rules (names unique across every list), the fields
/// only regular containers have, and a `targetContainerName` naming one of the pod's.
fn validate_ephemeral_containers(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
) {
    let targets: HashSet<&str> = arr(spec, "containers")
        .iter()
        .chain(arr(spec, "initContainers"))
        .map(|c| s(c, "name"))
        .collect();
    for (i, c) in arr(spec, "ephemeralContainers").iter().enumerate() {
        let p = index(&child(path, "ephemeralContainers"), i);
        validate_container(errs, c, &p, volumes, names, false);
        for f in NOT_FOR_EPHEMERAL {
            let set = c.get(f).is_some_and(|v| {
                !(v.is_null() || v.as_object().is_some_and(|o| o.is_empty()))
                    && v.as_array().is_none_or(|a| !a.is_empty())
            });
            if set {
                errs.push(FieldError::forbidden(
                    &child(&p, f),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        let target = s(c, "targetContainerName");
        if !target.is_empty() && !targets.contains(target) {
            errs.push(FieldError::not_found(
                &child(&p, "targetContainerName"),
                &json!(target),
            ));
        }
    }
}

/// The `ephemeralcontainers` subresource's own rule: ephemeral containers are only ever
/// added; one already in the pod may be neither removed nor changed.
pub(crate) fn validate_ephemeral_update(errs: &mut Vec<FieldError>, new: &Value, old: &Value) {
    let new_list = new
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let old_list = old
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for o in old_list {
        let name = s(o, "name");
        let why = match new_list.iter().find(|n| s(n, "name") == name) {
            None => "removed",
            Some(n) if n != o => "changed",
            Some(_) => continue,
        };
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            &format!("existing ephemeral containers {name:?} may not be {why}"),
        ));
    }
}

fn validate_container(
    errs: &mut Vec<FieldError>,
    c: &Value,
    p: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    regular: bool,
) {
    let name = s(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&child(p, "name"), ""));
    } else {
        dns_label(errs, name, &child(p, "name"));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&child(p, "name"), &json!(name)));
        }
    }
    let image = s(c, "image");
    if image.is_empty() {
        errs.push(FieldError::required(&child(p, "image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid_str(
            &child(p, "image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    one_of(
        errs,
        c.get("imagePullPolicy"),
        &child(p, "imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
    );
    one_of(
        errs,
        c.get("terminationMessagePolicy"),
        &child(p, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
    );
    validate_ports(errs, c.get("ports"), &child(p, "ports"));
    validate_env(errs, c.get("env"), &child(p, "env"));
    validate_resources(errs, c.get("resources"), &child(p, "resources"));
    validate_mounts(
        errs,
        c.get("volumeMounts"),
        &child(p, "volumeMounts"),
        volumes,
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = c.get(probe).filter(|v| v.is_object()) {
            let pp = child(p, probe);
            if !regular && c.get("restartPolicy").and_then(Value::as_str) != Some("Always") {
                errs.push(FieldError::forbidden(
                    &pp,
                    "may not be set for init containers without restartPolicy=Always",
                ));
                continue;
            }
            validate_probe(errs, pr, &pp, probe != "readinessProbe");
        }
    }
    if let Some(l) = c.get("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = l.get(hook).filter(|v| v.is_object()) {
                validate_handler(
                    errs,
                    h,
                    &child(&child(p, "lifecycle"), hook),
                    &["exec", "httpGet", "tcpSocket", "sleep"],
                );
            }
        }
    }
}

fn validate_ports(errs: &mut Vec<FieldError>, ports: Option<&Value>, path: &str) {
    let mut names = HashSet::new();
    for (i, port) in ports
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = index(path, i);
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = port_name_errors(name);
            for msg in &msgs {
                errs.push(FieldError::invalid_str(&child(&p, "name"), name, msg));
            }
            if msgs.is_empty() && !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(&child(&p, "name"), &json!(name)));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errs.push(FieldError::required(&child(&p, "containerPort"), "")),
            Some(_) => port_number(errs, port.get("containerPort"), &child(&p, "containerPort")),
        }
        if port
            .get("hostPort")
            .and_then(Value::as_i64)
            .is_some_and(|n| n != 0)
        {
            port_number(errs, port.get("hostPort"), &child(&p, "hostPort"));
        }
        one_of(
            errs,
            port.get("protocol"),
            &child(&p, "protocol"),
            &["SCTP", "TCP", "UDP"],
        );
    }
}

fn validate_env(errs: &mut Vec<FieldError>, env: Option<&Value>, path: &str) {
    for (i, e) in env
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = index(path, i);
        let name = s(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&child(&p, "name"), ""));
        } else if !name.bytes().all(|c| (32..=126).contains(&c) && c != b'=') {
            errs.push(FieldError::invalid_str(
                &child(&p, "name"),
                name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        let Some(vf) = e.get("valueFrom").filter(|v| v.is_object()) else {
            continue;
        };
        let vp = child(&p, "valueFrom");
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
            "fileKeyRef",
        ];
        let n = sources
            .iter()
            .filter(|k| vf.get(**k).is_some_and(|v| !v.is_null()))
            .count();
        if n == 0 {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if !s(e, "value").is_empty() {
            errs.push(FieldError::invalid_str(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        if let Some(fr) = vf.get("fieldRef")
            && s(fr, "fieldPath").is_empty()
        {
            errs.push(FieldError::required(
                &child(&child(&vp, "fieldRef"), "fieldPath"),
                "",
            ));
        }
        for r in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(kr) = vf.get(r)
                && s(kr, "key").is_empty()
            {
                errs.push(FieldError::required(&child(&child(&vp, r), "key"), ""));
            }
        }
    }
}

/// Parses a resource map, reporting unparsable and negative quantities.
fn quantities(
    errs: &mut Vec<FieldError>,
    m: Option<&Value>,
    path: &str,
) -> BTreeMap<String, super::Quantity> {
    let mut out = BTreeMap::new();
    for (name, v) in m.and_then(Value::as_object).into_iter().flatten() {
        let fp = key(path, name);
        let text = match v {
            Value::String(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        match parse_quantity(&text) {
            None => errs.push(FieldError::invalid_str(&fp, &text, QUANTITY_FORMAT_ERROR)),
            Some(q) if q.is_negative() => errs.push(FieldError::invalid_str(
                &fp,
                &q.canonical(),
                "must be greater than or equal to 0",
            )),
            Some(q) => {
                out.insert(name.clone(), q);
            }
        }
    }
    out
}

/// Resource requirements: quantities parse, are non-negative, and requests ≤ limits.
pub(crate) fn validate_resources(errs: &mut Vec<FieldError>, r: Option<&Value>, path: &str) {
    let Some(r) = r else { return };
    let limits = quantities(errs, r.get("limits"), &child(path, "limits"));
    let requests = quantities(errs, r.get("requests"), &child(path, "requests"));
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            errs.push(FieldError::invalid_str(
                &child(path, "requests"),
                &req.canonical(),
                &format!(
                    "must be less than or equal to {name} limit of {}",
                    lim.canonical()
                ),
            ));
        }
    }
}

fn validate_mounts(
    errs: &mut Vec<FieldError>,
    mounts: Option<&Value>,
    path: &str,
    volumes: &HashSet<String>,
) {
    let mut paths = HashSet::new();
    for (i, m) in mounts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = index(path, i);
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&child(&p, "name"), ""));
        } else if !volumes.contains(name) {
            errs.push(FieldError::not_found(&child(&p, "name"), &json!(name)));
        }
        let mp = s(m, "mountPath");
        if mp.is_empty() {
            errs.push(FieldError::required(&child(&p, "mountPath"), ""));
        } else if !paths.insert(mp.to_string()) {
            errs.push(FieldError::invalid_str(
                &child(&p, "mountPath"),
                mp,
                "must be unique",
            ));
        }
    }
}

fn validate_handler(errs: &mut Vec<FieldError>, h: &Value, path: &str, kinds: &[&str]) {
    let present: Vec<&&str> = kinds
        .iter()
        .filter(|k| h.get(**k).is_some_and(|v| !v.is_null()))
        .collect();
    match present.as_slice() {
        [] => errs.push(FieldError::required(path, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(
            &child(path, second),
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(g) = h.get("httpGet") {
        let gp = child(path, "httpGet");
        match g.get("port") {
            None | Some(Value::Null) => errs.push(FieldError::required(&child(&gp, "port"), "")),
            port => int_or_name_port(errs, port, &child(&gp, "port")),
        }
        one_of(
            errs,
            g.get("scheme"),
            &child(&gp, "scheme"),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(t) = h.get("tcpSocket") {
        int_or_name_port(
            errs,
            t.get("port"),
            &child(&child(path, "tcpSocket"), "port"),
        );
    }
    if let Some(e) = h.get("exec")
        && e.get("command")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(
            &child(&child(path, "exec"), "command"),
            "",
        ));
    }
}

fn validate_probe(errs: &mut Vec<FieldError>, p: &Value, path: &str, success_must_be_one: bool) {
    validate_handler(errs, p, path, &["exec", "httpGet", "tcpSocket", "grpc"]);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(errs, p.get(f), &child(path, f));
    }
    if success_must_be_one
        && let Some(n) = p.get("successThreshold").and_then(Value::as_i64)
        && n != 1
    {
        errs.push(FieldError::invalid(
            &child(path, "successThreshold"),
            &json!(n),
            "must be 1",
        ));
    }
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream's ValidatePodUpdate spec rules.
fn validate_pod_spec_update(errs: &mut Vec<FieldError>, new: &Value, old: &Value) {
    // activeDeadlineSeconds may be set or decreased, never unset or increased.
    if let Some(o) = old.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        match new.get("activeDeadlineSeconds").and_then(Value::as_i64) {
            None => errs.push(FieldError::invalid_str(
                "spec.activeDeadlineSeconds",
                "",
                "must not update from a positive integer to nil value",
            )),
            Some(n) if n > o => errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                &json!(n),
                "must be less than or equal to previous value",
            )),
            _ => {}
        }
    }
    // Existing tolerations must stay (tolerationSeconds may change).
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new_tols: Vec<Value> = arr(new, "tolerations").iter().map(strip).collect();
    for t in arr(old, "tolerations") {
        if !new_tols.contains(&strip(t)) {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // Scheduling gates may only be removed.
    let old_gates = arr(old, "schedulingGates");
    for g in arr(new, "schedulingGates") {
        if !old_gates.contains(g) {
            errs.push(FieldError::forbidden(
                "spec.schedulingGates",
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    s(g, "name")
                ),
            ));
        }
    }
    // Everything else must be unchanged.
    let mut masked = new.clone();
    if let Some(m) = masked.as_object_mut() {
        for f in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
            match old.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        for list in ["containers", "initContainers"] {
            let old_list = arr(old, list);
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (i, c) in cs.iter_mut().enumerate() {
                    if let (Some(cm), Some(img)) = (
                        c.as_object_mut(),
                        old_list.get(i).and_then(|o| o.get("image")),
                    ) {
                        cm.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    if &masked != old {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::validation::{FieldError, validate};
    use serde_json::{Value, json};

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn errs(spec: Value) -> Vec<FieldError> {
        validate("", "v1", "Pod", &pod(spec), None)
    }

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_minimal_pod_is_valid() {
        assert!(errs(json!({"containers": [{"name": "c", "image": "nginx"}]})).is_empty());
    }

    #[test]
    fn pods_need_containers_with_unique_names_and_images() {
        assert_eq!(fields(&errs(json!({}))), vec!["spec.containers"]);
        let e = errs(json!({"containers": [{"name": "c", "image": "x"}, {"name": "c"}]}));
        assert_eq!(
            fields(&e),
            vec!["spec.containers[1].name", "spec.containers[1].image"]
        );
        assert_eq!(e[0].message, "Duplicate value: \"c\"");
        assert_eq!(e[1].message, "Required value");
    }

    #[test]
    fn container_ports_are_range_checked() {
        let e = errs(json!({"containers": [{"name": "c", "image": "x", "ports": [
            {"containerPort": 70000}, {"containerPort": 80, "protocol": "ICMP"}, {"containerPort": 81, "name": "Bad"}]}]}));
        assert_eq!(e[0].field, "spec.containers[0].ports[0].containerPort");
        assert_eq!(
            e[0].message,
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            e[1].message,
            "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(e[2].field, "spec.containers[0].ports[2].name");
    }

    #[test]
    fn env_names_and_value_sources_are_checked() {
        let e = errs(json!({"containers": [{"name": "c", "image": "x", "env": [
            {"name": "A=B"}, {"name": ""}, {"name": "X", "valueFrom": {}}]}]}));
        assert_eq!(
            fields(&e),
            vec![
                "spec.containers[0].env[0].name",
                "spec.containers[0].env[1].name",
                "spec.containers[0].env[2].valueFrom"
            ]
        );
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let e = errs(
            json!({"containers": [{"name": "c", "image": "x", "resources": {
            "limits": {"cpu": "500m"}, "requests": {"cpu": "0.6", "memory": "lots"}}}]}),
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "spec.containers[0].resources.requests[memory]");
        assert_eq!(e[1].field, "spec.containers[0].resources.requests");
        assert_eq!(
            e[1].message,
            "Invalid value: \"600m\": must be less than or equal to cpu limit of 500m"
        );
    }

    #[test]
    fn probes_need_exactly_one_handler() {
        let e = errs(json!({"containers": [{"name": "c", "image": "x",
            "livenessProbe": {}, "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}]}));
        assert_eq!(e[0].field, "spec.containers[0].livenessProbe");
        assert_eq!(e[0].message, "Required value: must specify a handler type");
        assert_eq!(e[1].field, "spec.containers[0].readinessProbe.tcpSocket");
        assert_eq!(e[1].reason, "FieldValueForbidden");
    }

    #[test]
    fn liveness_success_threshold_must_be_one() {
        let e = errs(json!({"containers": [{"name": "c", "image": "x",
            "livenessProbe": {"httpGet": {"port": 80}, "successThreshold": 2}}]}));
        assert_eq!(e[0].message, "Invalid value: 2: must be 1");
    }

    #[test]
    fn volume_mounts_must_name_declared_volumes() {
        let e = errs(
            json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}, {"name": "b"}],
            "containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "zz", "mountPath": "/x"}]}]}),
        );
        assert_eq!(
            fields(&e),
            vec![
                "spec.volumes[1].name",
                "spec.volumes[2]",
                "spec.containers[0].volumeMounts[0].name"
            ]
        );
        assert_eq!(e[2].message, "Not found: \"zz\"");
    }

    #[test]
    fn restart_and_dns_policies_are_enumerated() {
        let e = errs(
            json!({"restartPolicy": "Sometimes", "dnsPolicy": "X", "containers": [{"name": "c", "image": "x"}]}),
        );
        assert_eq!(fields(&e), vec!["spec.restartPolicy", "spec.dnsPolicy"]);
    }

    #[test]
    fn pod_updates_may_change_only_images_and_additive_fields() {
        let old = pod(
            json!({"containers": [{"name": "c", "image": "a"}], "tolerations": [{"key": "k", "operator": "Exists"}]}),
        );
        let ok = pod(
            json!({"containers": [{"name": "c", "image": "b"}], "activeDeadlineSeconds": 5,
            "tolerations": [{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]}),
        );
        assert!(validate("", "v1", "Pod", &ok, Some(&old)).is_empty());
        let bad = pod(
            json!({"containers": [{"name": "c", "image": "a", "command": ["x"]}], "tolerations": []}),
        );
        let e = validate("", "v1", "Pod", &bad, Some(&old));
        assert_eq!(fields(&e), vec!["spec.tolerations", "spec"]);
        assert!(
            e[1].message
                .starts_with("Forbidden: pod updates may not change fields")
        );
    }
}
