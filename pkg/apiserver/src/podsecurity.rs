//! PodSecurity admission (the Pod Security Standards): a namespace's
//! `pod-security.kubernetes.io/enforce` level (privileged, baseline, restricted) refuses pods
//! that violate it; its `warn` level, and the enforce level for workloads with pod templates,
//! answer with upstream's `would violate PodSecurity "<level>:latest": ...` warnings.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use kubox_core::meta;
use serde_json::{Value, json};

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn level_rank(level: &str) -> u8 {
    match level {
        "restricted" => 2,
        "baseline" => 1,
        _ => 0,
    }
}

/// `containers "a", "b"` or `container "a"`.
fn containers(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn all_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|g| spec[*g].as_array().into_iter().flatten())
        .collect()
}

fn name(c: &Value) -> String {
    c["name"].as_str().unwrap_or_default().to_string()
}

/// The violations of `level` by a pod spec (and its pod metadata), in upstream's wording.
pub fn violations(level: &str, spec: &Value) -> Vec<String> {
    let rank = level_rank(level);
    let mut out = Vec::new();
    if rank == 0 {
        return out;
    }
    let cs = all_containers(spec);
    let sc = |c: &Value, k: &str| c["securityContext"][k].clone();
    // Baseline.
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    let privileged: Vec<String> = cs
        .iter()
        .filter(|c| sc(c, "privileged") == true)
        .map(|c| name(c))
        .collect();
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers(&privileged)
        ));
    }
    let mut caps = Vec::new();
    for c in &cs {
        for cap in c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let cap = cap.as_str().unwrap_or_default();
            if !BASELINE_CAPS.contains(&cap) && !caps.contains(&format!("{cap:?}")) {
                caps.push(format!("{cap:?}"));
            }
        }
    }
    let cap_users: Vec<String> = cs
        .iter()
        .filter(|c| {
            c["securityContext"]["capabilities"]["add"]
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|x| !BASELINE_CAPS.contains(&x.as_str().unwrap_or_default()))
                })
        })
        .map(|c| name(c))
        .collect();
    if !cap_users.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            containers(&cap_users),
            caps.join(", ")
        ));
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| format!("{:?}", v["name"].as_str().unwrap_or_default()))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!(
            "hostPath volumes ({noun} {})",
            host_paths.join(", ")
        ));
    }
    let mut host_ports = Vec::new();
    let mut port_users = Vec::new();
    for c in &cs {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(hp) = p["hostPort"].as_i64().filter(|h| *h != 0) {
                host_ports.push(hp.to_string());
                if !port_users.contains(&name(c)) {
                    port_users.push(name(c));
                }
            }
        }
    }
    if !host_ports.is_empty() {
        let noun = if host_ports.len() == 1 {
            "hostPort"
        } else {
            "hostPorts"
        };
        out.push(format!(
            "hostPort ({} uses {noun} {})",
            containers(&port_users),
            host_ports.join(", ")
        ));
    }
    let unmasked: Vec<String> = cs
        .iter()
        .filter(|c| sc(c, "procMount") == "Unmasked")
        .map(|c| name(c))
        .collect();
    if !unmasked.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            containers(&unmasked)
        ));
    }
    let unsafe_sysctls: Vec<String> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(|n| format!("{n:?}"))
        .collect();
    if !unsafe_sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", unsafe_sysctls.join(", ")));
    }
    let pod_seccomp = spec["securityContext"]["seccompProfile"]["type"].as_str();
    let unconfined: Vec<String> = cs
        .iter()
        .filter(|c| c["securityContext"]["seccompProfile"]["type"] == "Unconfined")
        .map(|c| name(c))
        .collect();
    if pod_seccomp == Some("Unconfined") || !unconfined.is_empty() {
        let who = if unconfined.is_empty() {
            "pod".to_string()
        } else if pod_seccomp == Some("Unconfined") {
            format!("pod and {}", containers(&unconfined))
        } else {
            containers(&unconfined)
        };
        out.push(format!(
            "seccompProfile ({who} must not set securityContext.seccompProfile.type to \"Unconfined\")"
        ));
    }
    if rank < 2 {
        return out;
    }
    // Restricted.
    let restricted_vols: Vec<(String, String)> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let kind = v
                .as_object()?
                .keys()
                .find(|k| k.as_str() != "name")?
                .clone();
            (!RESTRICTED_VOLUMES.contains(&kind.as_str()))
                .then(|| (v["name"].as_str().unwrap_or_default().to_string(), kind))
        })
        .collect();
    if !restricted_vols.is_empty() {
        let parts: Vec<String> = restricted_vols
            .iter()
            .map(|(n, k)| format!("volume {n:?} uses restricted volume type {k:?}"))
            .collect();
        out.push(format!("restricted volume types ({})", parts.join(", ")));
    }
    let escalating: Vec<String> = cs
        .iter()
        .filter(|c| sc(c, "allowPrivilegeEscalation") != false)
        .map(|c| name(c))
        .collect();
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            containers(&escalating)
        ));
    }
    let no_drop: Vec<String> = cs
        .iter()
        .filter(|c| {
            !c["securityContext"]["capabilities"]["drop"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "ALL"))
        })
        .map(|c| name(c))
        .collect();
    let bad_add: Vec<String> = cs
        .iter()
        .filter(|c| {
            c["securityContext"]["capabilities"]["add"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x != "NET_BIND_SERVICE"))
        })
        .map(|c| name(c))
        .collect();
    if !no_drop.is_empty() || !bad_add.is_empty() {
        let mut parts = Vec::new();
        if !no_drop.is_empty() {
            parts.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers(&no_drop)
            ));
        }
        if !bad_add.is_empty() {
            parts.push(format!(
                "{} must not include capabilities other than \"NET_BIND_SERVICE\" in securityContext.capabilities.add",
                containers(&bad_add)
            ));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    let pod_non_root = spec["securityContext"]["runAsNonRoot"] == true;
    let root_ok: Vec<String> = cs
        .iter()
        .filter(|c| {
            let v = sc(c, "runAsNonRoot");
            v == false || (v.is_null() && !pod_non_root)
        })
        .map(|c| name(c))
        .collect();
    if spec["securityContext"]["runAsNonRoot"] == false || !root_ok.is_empty() {
        let who = if root_ok.is_empty() {
            "pod".to_string()
        } else {
            format!("pod or {}", containers(&root_ok))
        };
        out.push(format!(
            "runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)"
        ));
    }
    let root_users: Vec<String> = cs
        .iter()
        .filter(|c| sc(c, "runAsUser") == 0)
        .map(|c| name(c))
        .collect();
    if spec["securityContext"]["runAsUser"] == 0 || !root_users.is_empty() {
        let who = if root_users.is_empty() {
            "pod".to_string()
        } else {
            containers(&root_users)
        };
        out.push(format!("runAsUser=0 ({who} must not set runAsUser=0)"));
    }
    let pod_ok = matches!(pod_seccomp, Some("RuntimeDefault" | "Localhost"));
    let unset: Vec<String> = cs
        .iter()
        .filter(|c| {
            let t = c["securityContext"]["seccompProfile"]["type"].as_str();
            !matches!(t, Some("RuntimeDefault" | "Localhost")) && (t.is_some() || !pod_ok)
        })
        .filter(|c| c["securityContext"]["seccompProfile"]["type"] != "Unconfined")
        .map(|c| name(c))
        .collect();
    if !unset.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            containers(&unset)
        ));
    }
    out
}

/// The pod spec inside an object: a Pod's, or a workload's template.
fn pod_spec(ctx: &Ctx, obj: &Value) -> Option<Value> {
    match (ctx.def.group.as_str(), ctx.def.plural.as_str()) {
        ("", "pods") => Some(obj["spec"].clone()),
        ("batch", "cronjobs") => {
            Some(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone())
        }
        ("apps", _) | ("batch", "jobs") | ("", "replicationcontrollers") | ("", "podtemplates") => {
            let t = if ctx.def.plural == "podtemplates" {
                &obj["template"]["spec"]
            } else {
                &obj["spec"]["template"]["spec"]
            };
            t.is_object().then(|| t.clone())
        }
        _ => None,
    }
}

/// PodSecurity for a created or updated object.
pub async fn admit(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let Some(ns) = ctx.namespace() else {
        return Ok(());
    };
    if ctx.info.subresource.is_some() {
        return Ok(());
    }
    let Some(spec) = pod_spec(ctx, obj) else {
        return Ok(());
    };
    let Some(ns_obj) = crate::storage::get_stored(&ctx.state, "core/namespaces", None, ns).await?
    else {
        return Ok(());
    };
    let label = |mode: &str| {
        ns_obj
            .pointer(&format!(
                "/metadata/labels/pod-security.kubernetes.io~1{mode}"
            ))
            .and_then(Value::as_str)
            .unwrap_or("privileged")
            .to_string()
    };
    let (enforce, warn) = (label("enforce"), label("warn"));
    let is_pod = ctx.def.group.is_empty() && ctx.def.plural == "pods";
    let found = violations(&enforce, &spec);
    if !found.is_empty() && is_pod {
        let pod_name = meta::name(obj).unwrap_or_default();
        return Err(ApiError::forbidden(format!(
            "pods {pod_name:?} is forbidden: violates PodSecurity \"{enforce}:latest\": {}",
            found.join(", ")
        ))
        .with_details(json!({"name": pod_name, "kind": "pods"})));
    }
    // Warnings: the warn level for pods; the stricter of warn and enforce for templates.
    let level = if !is_pod && level_rank(&enforce) > level_rank(&warn) {
        enforce
    } else {
        warn
    };
    let found = violations(&level, &spec);
    if !found.is_empty()
        && let Ok(mut w) = ctx.warnings.lock()
    {
        w.push(format!(
            "would violate PodSecurity \"{level}:latest\": {}",
            found.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_and_restricted_find_upstreams_violations() {
        let spec = json!({"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]});
        let b = violations("baseline", &spec);
        assert_eq!(b[0], "host namespaces (hostNetwork=true)");
        assert_eq!(
            b[1],
            "privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        assert_eq!(b[2], "hostPath volumes (volume \"h\")");
        assert_eq!(b[3], "hostPort (container \"c\" uses hostPort 8080)");
        assert!(violations("privileged", &spec).is_empty());
        let plain =
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]});
        assert!(violations("baseline", &plain).is_empty());
        let r = violations("restricted", &plain);
        assert_eq!(
            r,
            vec![
                "allowPrivilegeEscalation != false (containers \"a\", \"b\" must set securityContext.allowPrivilegeEscalation=false)",
                "unrestricted capabilities (containers \"a\", \"b\" must set securityContext.capabilities.drop=[\"ALL\"])",
                "runAsNonRoot != true (pod or containers \"a\", \"b\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or containers \"a\", \"b\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ]
        );
        let good = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "a", "image": "x", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]});
        assert!(
            violations("restricted", &good).is_empty(),
            "{:?}",
            violations("restricted", &good)
        );
    }
}
