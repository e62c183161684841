//! Objects every cluster has from its first boot: the four system namespaces, the
//! `default/kubernetes` Service with Endpoints and EndpointSlice pointing at the API server,
//! and the `kube-system/kube-dns` Service on the cluster DNS address (served by every node's
//! agent, see kubox-dns).

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

/// Ensures the bootstrap objects exist and point at this API server.
pub async fn ensure(state: &ApiState) -> Result<(), kubox_store::Error> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = format!("{}core/namespaces/{ns}", storage::PREFIX);
        if ensure_exists(state, &key, &namespace(ns)).await? {
            tracing::info!(namespace = ns, "created namespace");
        }
    }
    let key = format!("{}core/services/default/kubernetes", storage::PREFIX);
    ensure_exists(state, &key, &kubernetes_service(state)).await?;
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
