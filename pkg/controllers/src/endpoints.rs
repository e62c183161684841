//! Endpoints and EndpointSlice controller: for every Service with a selector, the pods it
//! selects become `Endpoints` subsets (ready addresses, notReadyAddresses) and one
//! `EndpointSlice` per address family (ready/serving/terminating conditions, named ports
//! resolved per pod, `publishNotReadyAddresses`). Services without a selector are left to
//! their owners.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::pods;

pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| {
                let labels = pod.labels().clone();
                let ns = pod.namespace();
                services
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == ns)
                    .filter(|s| {
                        s.spec
                            .as_ref()
                            .and_then(|sp| sp.selector.as_ref())
                            .is_some_and(|sel| {
                                !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                            })
                    })
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, crate::retry_soon, ctx)
        .for_each(|_| async {})
        .await;
}

/// The container port a service port's targetPort names in `pod`, or the number itself.
pub fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find_map(|cp| {
                    (cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.clone().unwrap_or_else(|| "TCP".into()) == proto)
                        .then_some(cp.container_port)
                })
        }
    }
}

struct Member<'a> {
    pod: &'a Pod,
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// `spec.hostname` of a pod whose `spec.subdomain` names the Service (a StatefulSet's
    /// pods): its DNS name under the Service.
    hostname: Option<String>,
    /// Resolved port per service port (same order as the Service's ports).
    ports: Vec<Option<i32>>,
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(spec) = svc.spec.clone() else {
        return Ok(Action::await_change());
    };
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let sel: String = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pod_list = pod_api
        .list(&ListParams::default().labels(&sel))
        .await?
        .items;
    pod_list.sort_by_key(|p| p.name_any());
    let ports = spec.ports.clone().unwrap_or_default();
    let members: Vec<Member<'_>> = pod_list
        .iter()
        .filter_map(|pod| {
            let ip = pod
                .status
                .as_ref()?
                .pod_ip
                .clone()
                .filter(|ip| !ip.is_empty())?;
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return None;
            }
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let serving = pods::is_ready(pod);
            let ready = (serving && !terminating) || publish_not_ready;
            Some(Member {
                pod,
                ip,
                ready,
                serving: serving || publish_not_ready,
                terminating,
                hostname: pod
                    .spec
                    .as_ref()
                    .filter(|s| s.subdomain.as_deref() == svc.metadata.name.as_deref())
                    .and_then(|s| s.hostname.clone())
                    .filter(|h| !h.is_empty()),
                ports: ports.iter().map(|p| resolve_target_port(p, pod)).collect(),
            })
        })
        .collect();
    write_endpoints(&ctx.client, &svc, &ports, &members).await?;
    write_slice(&ctx.client, &svc, &ports, &members).await?;
    Ok(Action::await_change())
}

fn target_ref(pod: &Pod) -> Value {
    json!({"kind": "Pod", "namespace": pod.namespace(), "name": pod.name_any(), "uid": pod.uid()})
}

fn address(m: &Member<'_>) -> Value {
    let mut a = json!({"ip": m.ip, "targetRef": target_ref(m.pod)});
    if let Some(h) = &m.hostname {
        a["hostname"] = json!(h);
    }
    if let Some(node) = m.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        a["nodeName"] = json!(node);
    }
    a
}

async fn write_endpoints(
    client: &Client,
    svc: &Service,
    ports: &[ServicePort],
    members: &[Member<'_>],
) -> Result<(), Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    // Pods whose named ports resolve alike share a subset.
    // resolved ports → (ready addresses, not-ready addresses)
    type Addresses = (Vec<Value>, Vec<Value>);
    let mut subsets: BTreeMap<Vec<Option<i32>>, Addresses> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.terminating || m.ready) {
        let entry = subsets.entry(m.ports.clone()).or_default();
        if m.ready {
            entry.0.push(address(m));
        } else {
            entry.1.push(address(m));
        }
    }
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(resolved, (ready, not_ready))| {
            let eps: Vec<Value> = ports
                .iter()
                .zip(resolved.iter())
                .filter_map(|(p, r)| {
                    let mut v = json!({"port": (*r)?, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
                    if let Some(n) = &p.name {
                        v["name"] = json!(n);
                    }
                    if let Some(a) = &p.app_protocol {
                        v["appProtocol"] = json!(a);
                    }
                    Some(v)
                })
                .collect();
            let mut s = json!({"ports": eps});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let api = raw_api(client, &ns, "", "v1", "Endpoints", "endpoints");
    let labels = svc.labels().clone();
    let desired = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": if subsets.is_empty() { Value::Null } else { json!(subsets) },
    });
    upsert(&api, &name, desired, &["subsets"]).await
}

async fn write_slice(
    client: &Client,
    svc: &Service,
    ports: &[ServicePort],
    members: &[Member<'_>],
) -> Result<(), Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api = raw_api(
        client,
        &ns,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
    );
    let sel = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let existing: Vec<Value> = api
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    // One port list per slice: pods whose named ports resolve differently would need more
    // slices; the first resolution wins (what a single-template workload always gives).
    let resolved: Vec<Option<i32>> = members
        .first()
        .map(|m| m.ports.clone())
        .unwrap_or_else(|| vec![None; ports.len()]);
    let slice_ports: Vec<Value> = ports
        .iter()
        .zip(resolved.iter())
        .map(|(p, r)| {
            let mut v = json!({"name": p.name.clone().unwrap_or_default(), "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
            if let Some(r) = r {
                v["port"] = json!(r);
            }
            if let Some(a) = &p.app_protocol {
                v["appProtocol"] = json!(a);
            }
            v
        })
        .collect();
    let endpoints: Vec<Value> = members
        .iter()
        .filter(|m| m.ports == resolved)
        .map(|m| {
            let mut e = json!({
                "addresses": [m.ip],
                "conditions": {"ready": m.ready, "serving": m.serving, "terminating": m.terminating},
                "targetRef": target_ref(m.pod),
            });
            if let Some(h) = &m.hostname {
                e["hostname"] = json!(h);
            }
            if let Some(node) = m.pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                e["nodeName"] = json!(node);
            }
            e
        })
        .collect();
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let owner = pods::controller_ref(svc);
    let body = |slice_name: Option<String>| {
        let mut meta = json!({"namespace": ns, "labels": labels, "ownerReferences": [owner]});
        match slice_name {
            Some(n) => meta["name"] = json!(n),
            None => meta["generateName"] = json!(format!("{name}-")),
        }
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": slice_ports,
        })
    };
    let mut existing = existing.into_iter();
    match existing.next() {
        Some(first) => {
            let slice_name = first["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            upsert(
                &api,
                &slice_name,
                body(Some(slice_name.clone())),
                &["endpoints", "ports", "metadata"],
            )
            .await?;
        }
        None => {
            let obj: DynamicObject = serde_json::from_value(body(None))?;
            api.create(&PostParams::default(), &obj).await?;
        }
    }
    for extra in existing {
        let n = extra["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match api.delete(&n, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A raw-JSON API handle for a built-in kind (objects are never round-tripped through structs).
pub(crate) fn raw_api(
    client: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Creates `desired`, or replaces the existing object's `fields` with desired's when they
/// differ (a null or absent field in `desired` removes it).
pub(crate) async fn upsert(
    api: &Api<DynamicObject>,
    name: &str,
    desired: Value,
    fields: &[&str],
) -> Result<(), Error> {
    match api.get_opt(name).await? {
        None => {
            let obj: DynamicObject = serde_json::from_value(desired)?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(current) => {
            let mut current = serde_json::to_value(current)?;
            let mut changed = false;
            for f in fields {
                let want = desired.get(*f).cloned().unwrap_or(Value::Null);
                if *f == "metadata" {
                    for k in ["labels", "ownerReferences"] {
                        if current["metadata"][k] != want[k] {
                            current["metadata"][k] = want[k].clone();
                            changed = true;
                        }
                    }
                } else if want.is_null() {
                    if let Some(obj) = current.as_object_mut() {
                        changed |= obj.remove(*f).is_some();
                    }
                } else if current.get(*f) != Some(&want) {
                    current[*f] = want;
                    changed = true;
                }
            }
            if changed {
                let obj: DynamicObject = serde_json::from_value(current)?;
                api.replace(name, &PostParams::default(), &obj).await?;
            }
            Ok(())
        }
    }
}
