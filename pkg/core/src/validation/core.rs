//! core/v1 Service, ConfigMap, Secret and PersistentVolumeClaim validation.

use super::pod::{int_or_name_port, port_number};
use super::quantity::{QUANTITY_FORMAT_ERROR, parse_quantity};
use super::{FieldError, child, immutable, index, key, one_of, s};
use crate::names::name_error;
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// Upstream's MaxSecretSize (also the ConfigMap limit).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

pub(crate) fn validate_service(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    one_of(
        errs,
        spec.get("type"),
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    one_of(
        errs,
        spec.get("sessionAffinity"),
        "spec.sessionAffinity",
        &["ClientIP", "None"],
    );
    let headless = s(spec, "clusterIP") == "None";
    let ports: &[Value] = spec
        .get("ports")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    if ty == "ExternalName" {
        let en = s(spec, "externalName");
        if en.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else if let Some(msg) = name_error(en.trim_end_matches('.'), false) {
            errs.push(FieldError::invalid_str("spec.externalName", en, &msg));
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        errs.push(FieldError::invalid_str(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {ty} services"),
        ));
    }
    let mut names = HashSet::new();
    let mut port_protos = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(&child(&pp, "name"), ""));
        } else if !name.is_empty() {
            if let Some(msg) = name_error(name, true) {
                errs.push(FieldError::invalid_str(&child(&pp, "name"), name, &msg));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(&child(&pp, "name"), &json!(name)));
            }
        }
        match p.get("port").and_then(Value::as_i64) {
            None => errs.push(FieldError::required(&child(&pp, "port"), "")),
            Some(_) => port_number(errs, p.get("port"), &child(&pp, "port")),
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        one_of(
            errs,
            p.get("protocol"),
            &child(&pp, "protocol"),
            &["SCTP", "TCP", "UDP"],
        );
        int_or_name_port(errs, p.get("targetPort"), &child(&pp, "targetPort"));
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if port != 0 && !port_protos.insert((port, proto.to_string())) {
            errs.push(FieldError::duplicate(
                &pp,
                &json!(format!("{port}/{proto}")),
            ));
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let old_ty = old_spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if ty != "ExternalName" && old_ty != "ExternalName" {
            let old_ip = s(old_spec, "clusterIP");
            let new_ip = s(spec, "clusterIP");
            // An omitted clusterIP keeps the allocated one (upstream patches it in before validation).
            if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
                errs.push(FieldError::invalid_str(
                    "spec.clusterIP",
                    new_ip,
                    "field is immutable",
                ));
            }
            let old_ips = old_spec.get("clusterIPs").and_then(Value::as_array);
            let new_ips = spec.get("clusterIPs").and_then(Value::as_array);
            if let (Some(o), Some(n)) = (old_ips, new_ips)
                && !n.is_empty()
                && o.first() != n.first()
            {
                let list: Vec<String> = n
                    .iter()
                    .map(|v| super::quote(v.as_str().unwrap_or("")))
                    .collect();
                errs.push(FieldError::invalid_raw(
                    "spec.clusterIPs[0]",
                    &format!("[]string{{{}}}", list.join(", ")),
                    "may not change once set",
                ));
            }
        }
    }
}

/// Upstream's IsConfigMapKey errors.
pub(crate) fn config_key_errors(k: &str) -> Vec<String> {
    let mut out = Vec::new();
    if k.len() > 253 {
        out.push("must be no more than 253 characters".into());
    }
    if k.is_empty()
        || !k
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c))
    {
        out.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into());
    }
    if k == "." {
        out.push("must not be '.'".into());
    } else if k == ".." {
        out.push("must not be '..'".into());
    } else if k.starts_with("..") {
        out.push("must not start with '..'".into());
    }
    out
}

fn entries(obj: &Value, field: &str) -> Map<String, Value> {
    obj.get(field)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Decoded length of a base64 string, without decoding it.
fn base64_len(s: &str) -> usize {
    let trimmed = s.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

fn immutable_data(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>, fields: &[&str]) {
    let Some(old) = old else { return };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let detail = "field is immutable when `immutable` is set";
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden("immutable", detail));
    }
    for f in fields {
        let norm = |v: Option<&Value>| {
            v.filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                .cloned()
        };
        if norm(obj.get(*f)) != norm(old.get(*f)) {
            errs.push(FieldError::forbidden(f, detail));
        }
    }
}

pub(crate) fn validate_config_map(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let data = entries(obj, "data");
    let binary = entries(obj, "binaryData");
    let mut total = 0;
    for (k, v) in &data {
        for msg in config_key_errors(k) {
            errs.push(FieldError::invalid_str(&key("data", k), k, &msg));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in &binary {
        for msg in config_key_errors(k) {
            errs.push(FieldError::invalid_str(&key("binaryData", k), k, &msg));
        }
        if data.contains_key(k) {
            errs.push(FieldError::invalid_str(
                &key("binaryData", k),
                k,
                "duplicate of key present in data",
            ));
        }
        total += v.as_str().map_or(0, base64_len);
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
    immutable_data(errs, obj, old, &["data", "binaryData"]);
}

fn require_key(errs: &mut Vec<FieldError>, data: &Map<String, Value>, k: &str) {
    if !data.contains_key(k) {
        errs.push(FieldError::required(&key("data", k), ""));
    }
}

/// Minimal standard base64 decoder (for dockerconfigjson checks).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

pub(crate) fn validate_secret(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let mut data = entries(obj, "data");
    let mut total = 0;
    for (k, v) in &data {
        for msg in config_key_errors(k) {
            errs.push(FieldError::invalid_str(&key("data", k), k, &msg));
        }
        total += v.as_str().map_or(0, base64_len);
    }
    // stringData is merged into data by the API server; its keys count too.
    for (k, v) in entries(obj, "stringData") {
        for msg in config_key_errors(&k) {
            errs.push(FieldError::invalid_str(&key("stringData", &k), &k, &msg));
        }
        total += v.as_str().map_or(0, str::len);
        data.insert(k, v);
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let ty = s(obj, "type");
    match ty {
        "kubernetes.io/tls" => {
            require_key(errs, &data, "tls.crt");
            require_key(errs, &data, "tls.key");
        }
        "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg" => {
            let k = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            require_key(errs, &data, k);
            let raw = obj
                .pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
                .and_then(base64_decode);
            if let Some(bytes) = raw
                && let Err(e) = serde_json::from_slice::<Value>(&bytes)
            {
                errs.push(FieldError::invalid_str(
                    &key("data", k),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
        "kubernetes.io/service-account-token" => {
            let ann =
                crate::meta::map_entry(obj, "annotations", "kubernetes.io/service-account.name");
            if ann.is_none_or(str::is_empty) {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            require_key(errs, &data, "username");
            require_key(errs, &data, "password");
        }
        "kubernetes.io/ssh-auth" => require_key(errs, &data, "ssh-privatekey"),
        _ => {}
    }
    if let Some(old) = old {
        immutable(errs, obj.get("type"), old.get("type"), "type");
    }
    immutable_data(errs, obj, old, &["data"]);
}

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn storage_request(v: &Value) -> Option<&Value> {
    v.pointer("/resources/requests/storage")
}

pub(crate) fn validate_pvc(errs: &mut Vec<FieldError>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let modes = spec.get("accessModes").and_then(Value::as_array);
    if modes.is_none_or(Vec::is_empty) && spec.get("dataSourceRef").is_none() {
        errs.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for (i, m) in modes.into_iter().flatten().enumerate() {
        one_of(errs, Some(m), &index("spec.accessModes", i), &ACCESS_MODES);
    }
    one_of(
        errs,
        spec.get("volumeMode"),
        "spec.volumeMode",
        &["Block", "Filesystem"],
    );
    match storage_request(spec) {
        None => errs.push(FieldError::required("spec.resources[storage]", "")),
        Some(q) => {
            let text = q
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| q.to_string());
            match parse_quantity(&text) {
                None => errs.push(FieldError::invalid_str(
                    "spec.resources[storage]",
                    &text,
                    QUANTITY_FORMAT_ERROR,
                )),
                Some(q) if q.nanos <= 0 => errs.push(FieldError::invalid_str(
                    "spec.resources[storage]",
                    &q.canonical(),
                    "must be greater than zero",
                )),
                Some(_) => {}
            }
        }
    }
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("volumeAttributesClassName");
            if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("requests");
            }
            // volumeName may be set once (binding).
            if old_spec.get("volumeName").is_none_or(Value::is_null) {
                m.remove("volumeName");
            }
        }
        v
    };
    if strip(spec) != strip(old_spec) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let q = |v: Option<&Value>| v.and_then(Value::as_str).and_then(parse_quantity);
    if let (Some(new_q), Some(old_q)) = (q(storage_request(spec)), q(storage_request(old_spec)))
        && new_q < old_q
    {
        let floor = old.and_then(|o| q(o.pointer("/status/capacity/storage")));
        match floor {
            Some(cap) if new_q > cap => {}
            Some(_) => errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            )),
            None => errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::validation::{FieldError, validate};
    use serde_json::{Value, json};

    fn fields(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|e| e.field.as_str()).collect()
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "d"}, "spec": spec})
    }

    #[test]
    fn service_ports_are_checked() {
        let e = validate(
            "",
            "v1",
            "Service",
            &svc(json!({"ports": [
            {"port": 0}, {"name": "b", "port": 80, "protocol": "ICMP", "targetPort": 70000}]})),
            None,
        );
        assert_eq!(
            fields(&e),
            vec![
                "spec.ports[0].name",
                "spec.ports[0].port",
                "spec.ports[1].protocol",
                "spec.ports[1].targetPort"
            ]
        );
        assert_eq!(
            e[1].message,
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        );
    }

    #[test]
    fn service_port_names_must_be_unique() {
        let e = validate(
            "",
            "v1",
            "Service",
            &svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
            None,
        );
        assert_eq!(e[0].message, "Duplicate value: \"a\"");
        assert_eq!(e[0].field, "spec.ports[1].name");
    }

    #[test]
    fn services_need_ports_unless_headless_or_external_name() {
        assert_eq!(
            fields(&validate("", "v1", "Service", &svc(json!({})), None)),
            vec!["spec.ports"]
        );
        assert!(
            validate(
                "",
                "v1",
                "Service",
                &svc(json!({"clusterIP": "None"})),
                None
            )
            .is_empty()
        );
        let e = validate(
            "",
            "v1",
            "Service",
            &svc(json!({"type": "ExternalName"})),
            None,
        );
        assert_eq!(fields(&e), vec!["spec.externalName"]);
    }

    #[test]
    fn service_cluster_ip_is_immutable_once_set() {
        let old = svc(
            json!({"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"], "ports": [{"port": 80}]}),
        );
        let same = svc(json!({"ports": [{"port": 81}]}));
        assert!(validate("", "v1", "Service", &same, Some(&old)).is_empty());
        let changed = svc(
            json!({"clusterIP": "10.43.0.6", "clusterIPs": ["10.43.0.6"], "ports": [{"port": 80}]}),
        );
        let e = validate("", "v1", "Service", &changed, Some(&old));
        assert_eq!(fields(&e), vec!["spec.clusterIP", "spec.clusterIPs[0]"]);
        assert_eq!(
            e[1].message,
            "Invalid value: []string{\"10.43.0.6\"}: may not change once set"
        );
    }

    fn cm(extra: Value) -> Value {
        let mut o = json!({"metadata": {"name": "c", "namespace": "d"}});
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    }

    #[test]
    fn config_map_keys_must_be_valid() {
        let e = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"data": {"ok.key": "1", "bad key": "2", "..x": "3"}})),
            None,
        );
        assert_eq!(fields(&e), vec!["data[bad key]", "data[..x]"]);
        assert!(e[1].message.ends_with("must not start with '..'"));
    }

    #[test]
    fn config_maps_are_limited_to_one_mib() {
        let e = validate(
            "",
            "v1",
            "ConfigMap",
            &cm(json!({"data": {"a": "x".repeat(1024 * 1024 + 1)}})),
            None,
        );
        assert_eq!(e[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn immutable_config_maps_reject_data_changes() {
        let old = cm(json!({"immutable": true, "data": {"a": "1"}}));
        let new = cm(json!({"immutable": true, "data": {"a": "2"}}));
        let e = validate("", "v1", "ConfigMap", &new, Some(&old));
        assert_eq!(fields(&e), vec!["data"]);
        assert_eq!(
            e[0].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
        let unset = cm(json!({"data": {"a": "1"}}));
        assert_eq!(
            fields(&validate("", "v1", "ConfigMap", &unset, Some(&old))),
            vec!["immutable"]
        );
    }

    #[test]
    fn typed_secrets_need_their_keys() {
        let e = validate(
            "",
            "v1",
            "Secret",
            &cm(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})),
            None,
        );
        assert_eq!(fields(&e), vec!["data[tls.key]"]);
        let e = validate(
            "",
            "v1",
            "Secret",
            &cm(
                json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm90IGpzb24="}}),
            ),
            None,
        );
        assert_eq!(fields(&e), vec!["data[.dockerconfigjson]"]);
        let ok = cm(
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}}),
        );
        assert!(validate("", "v1", "Secret", &ok, None).is_empty());
    }

    #[test]
    fn secret_type_is_immutable() {
        let old = cm(json!({"type": "Opaque"}));
        let e = validate(
            "",
            "v1",
            "Secret",
            &cm(json!({"type": "kubernetes.io/basic-auth", "data": {"username": "eA=="}})),
            Some(&old),
        );
        assert_eq!(fields(&e), vec!["type"]);
    }

    fn pvc(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec})
    }

    #[test]
    fn claims_need_access_modes_and_storage() {
        let e = validate("", "v1", "PersistentVolumeClaim", &pvc(json!({})), None);
        assert_eq!(
            fields(&e),
            vec!["spec.accessModes", "spec.resources[storage]"]
        );
        let ok = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert!(validate("", "v1", "PersistentVolumeClaim", &ok, None).is_empty());
    }

    #[test]
    fn claims_may_only_grow_storage_on_update() {
        let old = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        let grow = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}, "volumeName": "pv1"}),
        );
        assert!(validate("", "v1", "PersistentVolumeClaim", &grow, Some(&old)).is_empty());
        let shrink = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "500Mi"}}}),
        );
        assert_eq!(
            fields(&validate(
                "",
                "v1",
                "PersistentVolumeClaim",
                &shrink,
                Some(&old)
            )),
            vec!["spec.resources.requests.storage"]
        );
        let modes = pvc(
            json!({"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert_eq!(
            fields(&validate(
                "",
                "v1",
                "PersistentVolumeClaim",
                &modes,
                Some(&old)
            )),
            vec!["spec"]
        );
    }
}
