//! A container's environment as kubelet builds it: the service variables of the pod's
//! namespace, `envFrom`, then `env` (ConfigMap/Secret keys, downward API fields, resource
//! values), `$(VAR)` references expanded.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, ListParams};

use crate::pods::Ctx;
use crate::spec;

/// The container's environment: service variables, then envFrom, then env (later wins),
/// `$(VAR)` references expanded.
pub async fn environment(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    ip: &str,
) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let client = &ctx.client;
    let mut env = BTreeMap::new();
    let (host, port) = &ctx.kubernetes_service;
    service_env(
        &mut env,
        "kubernetes",
        host,
        &[(Some("https".to_string()), *port as i32, "TCP".to_string())],
    );
    if pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false)
        && let Ok(list) = Api::<Service>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
    {
        for svc in list.items {
            let spec = svc.spec.unwrap_or_default();
            let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
                continue;
            };
            let name = svc.metadata.name.unwrap_or_default();
            if name == "kubernetes" && ns == "default" {
                continue;
            }
            let ports: Vec<(Option<String>, i32, String)> = spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.name, p.port, p.protocol.unwrap_or_else(|| "TCP".into())))
                .collect();
            service_env(&mut env, &name, &ip, &ports);
        }
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
            {
                Ok(Some(cm)) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
                _ if r.optional == Some(true) => {}
                _ => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
            {
                Ok(Some(s)) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        env.insert(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                _ if r.optional == Some(true) => {}
                _ => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            spec::expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, ip, &ctx.node_ip)
            } else if let Some(r) = &from.config_map_key_ref {
                let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get_opt(&r.name)
                    .await
                    .ok()
                    .flatten();
                match cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            r.key, r.name
                        ));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let s = Api::<Secret>::namespaced(client.clone(), &ns)
                    .get_opt(&r.name)
                    .await
                    .ok()
                    .flatten();
                match s.and_then(|s| s.data.and_then(|d| d.get(&r.key).cloned())) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {ns}/{}",
                            r.key, r.name
                        ));
                    }
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(c, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }
    Ok(env)
}

/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]` and the docker-link style variables.
pub fn service_env(
    env: &mut BTreeMap<String, String>,
    name: &str,
    ip: &str,
    ports: &[(Option<String>, i32, String)],
) {
    let n = name.to_uppercase().replace('-', "_");
    env.insert(format!("{n}_SERVICE_HOST"), ip.into());
    let Some((_, first, first_proto)) = ports.first() else {
        return;
    };
    env.insert(format!("{n}_SERVICE_PORT"), first.to_string());
    env.insert(
        format!("{n}_PORT"),
        format!("{}://{ip}:{first}", first_proto.to_lowercase()),
    );
    for (pname, port, proto) in ports {
        if let Some(pn) = pname.as_deref().filter(|p| !p.is_empty()) {
            env.insert(
                format!("{n}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                port.to_string(),
            );
        }
        let p = proto.to_uppercase();
        let base = format!("{n}_PORT_{port}_{p}");
        env.insert(
            base.clone(),
            format!("{}://{ip}:{port}", proto.to_lowercase()),
        );
        env.insert(format!("{base}_PROTO"), proto.to_lowercase());
        env.insert(format!("{base}_PORT"), port.to_string());
        env.insert(format!("{base}_ADDR"), ip.into());
    }
}

/// A downward-API field (`metadata.name`, `status.podIP`, `metadata.labels['app']`, ...).
pub fn field_value(pod: &Pod, path: &str, ip: &str, node_ip: &str) -> String {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let pick = |m: &Option<BTreeMap<String, String>>, key: &str| {
        m.as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    };
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return pick(&meta.labels, key);
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return pick(&meta.annotations, key);
    }
    match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip.into(),
        "status.hostIP" | "status.hostIPs" => node_ip.into(),
        _ => String::new(),
    }
}

/// `limits.cpu`, `requests.memory`, ... of a container as env values (cpu rounded up to cores).
pub fn resource_value(c: &Container, resource: &str) -> String {
    let res = c.resources.clone().unwrap_or_default();
    let (map, key) = match resource.split_once('.') {
        Some(("limits", k)) => (res.limits, k),
        Some(("requests", k)) => (res.requests, k),
        _ => return String::new(),
    };
    let milli = map
        .and_then(|m| m.get(key).cloned())
        .and_then(|q| kubox_core::quantity::parse_milli(&q.0));
    match (key, milli) {
        ("cpu", Some(m)) => ((m + 999) / 1000).max(1).to_string(),
        (_, Some(m)) => (m / 1000).to_string(),
        ("cpu", None) => num_cpus().to_string(),
        _ => "0".into(),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
