//! Host ports (CNI portmap semantics): watches the pods bound to this node and keeps kubox's
//! host-port table (`kubox_network::hostports`) in step. Replaced at start (mappings of a
//! previous run go) and after every change, debounced; a deleted or finished pod's ports go.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kubox_network::hostports::{self, HostPort};
use tokio::sync::Notify;

/// The host ports of `pods` that have an IPv4 pod IP and are not finished.
pub fn model(pods: &[Arc<Pod>]) -> Vec<HostPort> {
    let mut out = Vec::new();
    for pod in pods {
        let (Some(spec), Some(status)) = (pod.spec.as_ref(), pod.status.as_ref()) else {
            continue;
        };
        if spec.host_network == Some(true)
            || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            continue;
        }
        let Some(pod_ip) = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        for port in spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
        {
            let (Some(host_port), Ok(container_port)) = (
                port.host_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0),
                u16::try_from(port.container_port),
            ) else {
                continue;
            };
            let host_ip = match port.host_ip.as_deref() {
                None | Some("" | "0.0.0.0") => None,
                Some(ip) => match ip.parse::<Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => continue, // an IPv6 hostIP: no IPv4 mapping
                },
            };
            out.push(HostPort {
                pod: name.clone(),
                protocol: port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                host_ip,
                host_port,
                pod_ip,
                container_port,
            });
        }
    }
    out
}

/// Runs until the task is dropped.
pub async fn run(client: Client, node: String) {
    let kick = Arc::new(Notify::new());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let pods = crate::proxy::watched::<Pod>(&client, config, &kick);
    let _ = pods.wait_until_ready().await;
    sync_loop(pods, kick).await;
}

async fn sync_loop(pods: Store<Pod>, kick: Arc<Notify>) {
    let mut applied: Option<String> = None;
    loop {
        let script = hostports::render(&model(&pods.state()));
        if applied.as_ref() != Some(&script) {
            match kubox_network::proxy::apply(&script) {
                Ok(()) => {
                    tracing::debug!("host port rules updated");
                    applied = Some(script);
                }
                Err(e) => tracing::warn!(error = %e, "programming host ports failed"),
            }
        }
        tokio::select! {
            _ = kick.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            // Retry a failed apply.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ports: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "default", "name": name},
                "spec": {"containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": phase, "podIP": "10.42.0.9"},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn container_ports_with_a_host_port_are_mapped() {
        let m = model(&[
            pod(
                "a",
                "Running",
                json!([
                    {"containerPort": 8080, "hostPort": 18080},
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "192.0.2.1"},
                    {"containerPort": 9090},
                ]),
            ),
            pod(
                "done",
                "Succeeded",
                json!([{"containerPort": 1, "hostPort": 2}]),
            ),
        ]);
        assert_eq!(
            m,
            vec![
                HostPort {
                    pod: "default/a".into(),
                    protocol: "tcp".into(),
                    host_ip: None,
                    host_port: 18080,
                    pod_ip: Ipv4Addr::new(10, 42, 0, 9),
                    container_port: 8080,
                },
                HostPort {
                    pod: "default/a".into(),
                    protocol: "udp".into(),
                    host_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    host_port: 5353,
                    pod_ip: Ipv4Addr::new(10, 42, 0, 9),
                    container_port: 53,
                },
            ]
        );
    }
}
