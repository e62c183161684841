//! Translating a pod into CRI configs (sandbox and containers) and CRI state back into pod
//! status pieces. Pure functions: tested without containerd.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use kubox_containerd::cri::api;
use kubox_core::quantity::parse_milli;

/// Labels kubelet puts on CRI objects; the agent finds its sandboxes and containers by them.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// DNS settings every ClusterFirst pod gets.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub cluster_dns: String,
    pub cluster_domain: String,
    /// The node's own resolv.conf (see [`host_dns`]): the base of dnsPolicy Default when the
    /// pod adds a dnsConfig, and search domains appended to the ClusterFirst ones (kubelet's
    /// `--resolv-conf`).
    pub host: api::DnsConfig,
}

/// The nameservers, search domains (the last `search` or `domain` line) and options of a
/// resolv.conf.
pub fn host_dns(resolv_conf: &str) -> api::DnsConfig {
    let mut cfg = api::DnsConfig::default();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => cfg.servers.extend(words.next().map(str::to_string)),
            Some("search" | "domain") => cfg.searches = words.map(str::to_string).collect(),
            Some("options") => cfg.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    cfg
}

pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The sandbox config of `pod` (attempt = how many sandboxes it had before).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    dns: &DnsSettings,
    log_dir: &str,
) -> api::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(LABEL_POD_NAME.into(), name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), ns.clone());
    labels.insert(LABEL_POD_UID.into(), pod_uid(pod));
    let host_network = spec.host_network == Some(true);
    let hostname = match (&spec.hostname, host_network) {
        (_, true) => String::new(),
        (Some(h), _) if !h.is_empty() => h.clone(),
        _ => name.chars().take(63).collect(),
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| api::PortMapping {
            protocol: protocol(p.protocol.as_deref()) as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mode = |host: bool| {
        if host {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        }
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name,
            uid: pod_uid(pod),
            namespace: ns.clone(),
            attempt,
        }),
        hostname,
        log_directory: log_dir.to_string(),
        dns_config: dns_config(pod, dns),
        port_mappings,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: mode(host_network),
                    pid: if spec.share_process_namespace == Some(true) {
                        api::NamespaceMode::Pod as i32
                    } else if spec.host_pid == Some(true) {
                        api::NamespaceMode::Node as i32
                    } else {
                        api::NamespaceMode::Container as i32
                    },
                    ipc: mode(spec.host_ipc == Some(true)),
                    ..Default::default()
                }),
                run_as_user: psc.run_as_user.map(|v| api::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| api::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

fn protocol(p: Option<&str>) -> api::Protocol {
    match p {
        Some("UDP") => api::Protocol::Udp,
        Some("SCTP") => api::Protocol::Sctp,
        _ => api::Protocol::Tcp,
    }
}

/// resolv.conf settings per dnsPolicy, as kubelet's: ClusterFirst (default) → cluster DNS with
/// the search path `<ns>.svc.<domain> svc.<domain> <domain>` (then the node's search domains)
/// and `ndots:5`; Default → the node's own (None for CRI, which copies the node's file, unless
/// a dnsConfig adds to it); None → only dnsConfig. A dnsConfig's nameservers and searches are
/// appended (duplicates dropped), its options override by name.
pub fn dns_config(pod: &Pod, dns: &DnsSettings) -> Option<api::DnsConfig> {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network == Some(true);
    let cluster_first =
        (policy == "ClusterFirst" && !host_network) || policy == "ClusterFirstWithHostNet";
    let mut cfg = match policy {
        _ if cluster_first => api::DnsConfig {
            servers: vec![dns.cluster_dns.clone()],
            searches: [
                format!("{ns}.svc.{}", dns.cluster_domain),
                format!("svc.{}", dns.cluster_domain),
                dns.cluster_domain.clone(),
            ]
            .into_iter()
            .chain(dns.host.searches.iter().cloned())
            .collect(),
            options: vec!["ndots:5".into()],
        },
        "None" => api::DnsConfig::default(),
        // Default: the node's own resolv.conf.
        _ if spec.dns_config.is_none() => return None,
        _ => dns.host.clone(),
    };
    if let Some(extra) = spec.dns_config {
        cfg.servers.extend(extra.nameservers.unwrap_or_default());
        cfg.searches.extend(extra.searches.unwrap_or_default());
        for o in extra.options.unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            cfg.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            cfg.options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    for list in [&mut cfg.servers, &mut cfg.searches] {
        let mut seen = std::collections::HashSet::new();
        list.retain(|x| seen.insert(x.clone()));
    }
    Some(cfg)
}

/// Expands `$(VAR)` references as kubelet does (`$$(VAR)` escapes; unknown ones stay).
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// CPU and memory limits as cgroup settings (shares from requests, quota from limits).
pub fn linux_resources(c: &Container) -> api::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|q| parse_milli(&q.0))
        };
    let cpu_request = get(&res.requests, "cpu").or(get(&res.limits, "cpu"));
    let cpu_limit = get(&res.limits, "cpu");
    let mem_limit = get(&res.limits, "memory");
    let period: i64 = 100_000;
    api::LinuxContainerResources {
        cpu_period: if cpu_limit.is_some() { period } else { 0 },
        cpu_quota: cpu_limit
            .map(|m| ((m as i64) * period / 1000).max(1000))
            .unwrap_or(0),
        cpu_shares: cpu_request
            .map(|m| ((m as i64) * 1024 / 1000).max(2))
            .unwrap_or(2),
        memory_limit_in_bytes: mem_limit.map(|m| (m / 1000) as i64).unwrap_or(0),
        ..Default::default()
    }
}

/// Nanoseconds since the epoch (CRI timestamps) as RFC 3339.
pub fn time_from_nanos(ns: i64) -> Option<String> {
    if ns <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(kubox_core::meta::format_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap_or_default()
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            cluster_dns: "10.43.0.10".into(),
            cluster_domain: "cluster.local".into(),
            host: host_dns("nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
        }
    }

    #[test]
    fn cluster_first_pods_get_cluster_dns_and_search_path() {
        let p =
            pod(json!({"metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": []}}));
        let cfg = dns_config(&p, &dns()).unwrap_or_default();
        assert_eq!(cfg.servers, vec!["10.43.0.10"]);
        assert_eq!(
            cfg.searches,
            vec![
                "web.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(cfg.options, vec!["ndots:5"]);
        let custom = pod(
            json!({"metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]}}}),
        );
        let cfg = dns_config(&custom, &dns()).unwrap_or_default();
        assert_eq!(cfg.servers, vec!["1.1.1.1"]);
        assert_eq!(cfg.options, vec!["ndots:2"]);
        // Default: the node's file as CRI copies it, or its settings plus a dnsConfig.
        let node_default = pod(
            json!({"metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(dns_config(&node_default, &dns()), None);
        let host_net = pod(
            json!({"metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": [], "hostNetwork": true}}),
        );
        assert_eq!(dns_config(&host_net, &dns()), None);
        let added = pod(
            json!({"metadata": {"name": "a", "namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "Default",
            "dnsConfig": {"nameservers": ["192.0.2.53", "192.0.2.54"], "searches": ["x.example"]}}}),
        );
        let cfg = dns_config(&added, &dns()).unwrap_or_default();
        assert_eq!(cfg.servers, vec!["192.0.2.53", "192.0.2.54"]);
        assert_eq!(cfg.searches, vec!["corp.example", "x.example"]);
        assert_eq!(cfg.options, vec!["edns0"]);
    }

    #[test]
    fn variable_references_expand_like_kubelet() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn limits_become_cgroup_quota_and_requests_shares() {
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}))
        .unwrap_or_default();
        let r = linux_resources(&c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    }
}
