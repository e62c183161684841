//! Objects every cluster has from its first boot: the four system namespaces, the
//! `default/kubernetes` Service with Endpoints and EndpointSlice pointing at the API server,
//! the `kube-system/kube-dns` Service on the cluster DNS address (served by every node's
//! agent, see kubox-dns), k3s's default StorageClass `local-path` (served by the local-path
//! provisioner in kubox-controllers), and the bootstrap RBAC policy
//! (`embedded/rbac/bootstrap-policy.yaml`).

use crate::state::ApiState;
use crate::storage;
use kubox_core::meta;
use serde_json::{Value, json};

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn kubernetes_service(state: &ApiState) -> Value {
    let ip = state.config.kubernetes_service_ip.to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": state.config.port}],
            "clusterIP": ip,
            "clusterIPs": [ip],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    })
}

/// k3s's `kube-dns` Service (its CoreDNS manifest), on the reserved cluster DNS address.
fn kube_dns_service(state: &ApiState) -> Value {
    let ip = state.config.cluster_dns.to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "CoreDNS",
            },
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "selector": {"k8s-app": "kube-dns"},
            "ports": [
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53},
                {"name": "metrics", "protocol": "TCP", "port": 9153, "targetPort": 9153},
            ],
            "clusterIP": ip,
            "clusterIPs": [ip],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    })
}

fn endpoints(state: &ApiState) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [{
            "addresses": [{"ip": state.config.advertise_address.to_string()}],
            "ports": [{"name": "https", "port": state.config.port, "protocol": "TCP"}],
        }],
    })
}

fn endpoint_slice(state: &ApiState) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "generation": 1,
            "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
        },
        "addressType": if state.config.advertise_address.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [state.config.advertise_address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": state.config.port, "protocol": "TCP"}],
    })
}

/// Creates `obj` at `key` if missing.
async fn ensure_exists(
    state: &ApiState,
    key: &str,
    obj: &Value,
) -> Result<bool, kubox_store::Error> {
    if state.store.get(key).await?.is_some() {
        return Ok(false);
    }
    let bytes = serde_json::to_vec(obj).map_err(|e| kubox_store::Error::Database(e.to_string()))?;
    match state.store.create(key, bytes).await {
        Ok(_) => Ok(true),
        Err(kubox_store::Error::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps `key`'s `field` equal to `want`'s, creating the object if missing.
async fn ensure_field(
    state: &ApiState,
    key: &str,
    want: &Value,
    fields: &[&str],
) -> Result<(), kubox_store::Error> {
    match state.store.get(key).await? {
        None => {
            ensure_exists(state, key, want).await?;
        }
        Some(kv) => {
            let Ok(mut cur) = serde_json::from_slice::<Value>(&kv.value) else {
                return Ok(());
            };
            let mut changed = false;
            for f in fields {
                if cur.get(*f) != want.get(*f) {
                    cur[*f] = want[*f].clone();
                    changed = true;
                }
            }
            if changed {
                let bytes = serde_json::to_vec(&cur)
                    .map_err(|e| kubox_store::Error::Database(e.to_string()))?;
                state.store.update(key, bytes, kv.mod_revision).await?;
            }
        }
    }
    Ok(())
}

const BOOTSTRAP_POLICY: &str = include_str!("../../../embedded/rbac/bootstrap-policy.yaml");

/// The bootstrap RBAC objects as stored (apiVersion, bootstrapping label, autoupdate).
pub fn rbac_policy() -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(BOOTSTRAP_POLICY).unwrap_or_default();
    docs.into_iter()
        .map(|mut d| {
            d["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
            let m = &mut d["metadata"];
            m["labels"]["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
            m["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("true");
            d
        })
        .collect()
}

/// Appends to `cur[field]` the items of `want[field]` it lacks; true when something changed.
fn union_into(cur: &mut Value, want: &Value, field: &str) -> bool {
    let Some(wanted) = want.get(field).and_then(Value::as_array) else {
        return false;
    };
    if !cur.get(field).is_some_and(Value::is_array) {
        cur[field] = json!([]);
    }
    let mut changed = false;
    if let Some(have) = cur[field].as_array_mut() {
        for w in wanted {
            if !have.contains(w) {
                have.push(w.clone());
                changed = true;
            }
        }
    }
    changed
}

/// Creates missing bootstrap RBAC objects and, unless an object's autoupdate annotation is
/// "false", adds the rules/subjects it lacks (upstream's reconciliation keeps additions).
async fn ensure_rbac(state: &ApiState) -> Result<(), kubox_store::Error> {
    for mut want in rbac_policy() {
        let kind = want["kind"].as_str().unwrap_or_default().to_string();
        let name = meta::name(&want).unwrap_or_default().to_string();
        let ns = meta::namespace(&want).map(String::from);
        let plural = format!("{}s", kind.to_lowercase());
        let key = match &ns {
            Some(ns) => format!(
                "{}rbac.authorization.k8s.io/{plural}/{ns}/{name}",
                storage::PREFIX
            ),
            None => format!(
                "{}rbac.authorization.k8s.io/{plural}/{name}",
                storage::PREFIX
            ),
        };
        match state.store.get(&key).await? {
            None => {
                want["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                want["metadata"]["creationTimestamp"] = json!(meta::now_rfc3339());
                ensure_exists(state, &key, &want).await?;
            }
            Some(kv) => {
                let Ok(mut cur) = serde_json::from_slice::<Value>(&kv.value) else {
                    continue;
                };
                if cur.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
                    == Some(&json!("false"))
                {
                    continue;
                }
                let mut changed = false;
                for field in ["rules", "subjects"] {
                    changed |= union_into(&mut cur, &want, field);
                }
                if cur.get("aggregationRule") != want.get("aggregationRule")
                    && want.get("aggregationRule").is_some()
                {
                    cur["aggregationRule"] = want["aggregationRule"].clone();
                    changed = true;
                }
                if changed {
                    let bytes = serde_json::to_vec(&cur)
                        .map_err(|e| kubox_store::Error::Database(e.to_string()))?;
                    state.store.update(&key, bytes, kv.mod_revision).await?;
                }
            }
        }
    }
    Ok(())
}

/// The built-in PriorityClasses of every cluster.
fn priority_class(name: &str, value: i64, description: &str) -> Value {
    json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": meta::now_rfc3339()},
        "value": value,
        "globalDefault": false,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": description,
    })
}

/// k3s's default StorageClass: node-local directories from the local-path provisioner, bound
/// once a pod using the claim is scheduled. Created when missing (a deleted class comes back
/// at the next start, as k3s's manifests do).
fn local_path_storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": meta::now_rfc3339(),
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// Ensures the bootstrap objects exist and point at this API server.
pub async fn ensure(state: &ApiState) -> Result<(), kubox_store::Error> {
    ensure_rbac(state).await?;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        let key = format!(
            "{}scheduling.k8s.io/priorityclasses/{name}",
            storage::PREFIX
        );
        ensure_exists(state, &key, &priority_class(name, value, description)).await?;
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = format!("{}core/namespaces/{ns}", storage::PREFIX);
        if ensure_exists(state, &key, &namespace(ns)).await? {
            tracing::info!(namespace = ns, "created namespace");
        }
    }
    let key = format!("{}core/services/default/kubernetes", storage::PREFIX);
    ensure_exists(state, &key, &kubernetes_service(state)).await?;
    let key = format!(
        "{}storage.k8s.io/storageclasses/local-path",
        storage::PREFIX
    );
    if ensure_exists(state, &key, &local_path_storage_class()).await? {
        tracing::info!("created the local-path StorageClass");
    }
    let key = format!("{}core/services/kube-system/kube-dns", storage::PREFIX);
    if ensure_exists(state, &key, &kube_dns_service(state)).await? {
        tracing::info!(ip = %state.config.cluster_dns, "created the kube-dns Service");
    }
    let key = format!("{}core/endpoints/default/kubernetes", storage::PREFIX);
    ensure_field(state, &key, &endpoints(state), &["subsets"]).await?;
    let key = format!(
        "{}discovery.k8s.io/endpointslices/default/kubernetes",
        storage::PREFIX
    );
    ensure_field(
        state,
        &key,
        &endpoint_slice(state),
        &["endpoints", "ports", "addressType"],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bootstrap_policy_parses_and_grants_what_components_need() {
        let docs = super::rbac_policy();
        let names: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.pointer("/metadata/name").and_then(|v| v.as_str()))
            .collect();
        for want in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:node",
            "system:kube-scheduler",
            "system:kube-controller-manager",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for d in &docs {
            assert!(
                matches!(
                    d["kind"].as_str(),
                    Some("ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
                ),
                "{d}"
            );
            if let Some(rules) = d.get("rules") {
                let parsed: Vec<crate::rbac::PolicyRule> =
                    serde_json::from_value(rules.clone()).unwrap();
                assert!(parsed.iter().all(|r| !r.verbs.is_empty()), "{d}");
            }
        }
    }
}
