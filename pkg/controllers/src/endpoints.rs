//! Endpoints and EndpointSlice controllers: for every Service with a selector, the pods it
//! selects become `Endpoints` subsets (ready addresses, notReadyAddresses; terminating pods
//! only with `publishNotReadyAddresses`) and `EndpointSlice`s (ready/serving/terminating
//! conditions as upstream's podToEndpoint, one slice per distinct resolution of named ports,
//! at most 100 endpoints each). Services without a selector are left to their owners, and
//! their hand-written Endpoints are mirrored into EndpointSlices (upstream's
//! EndpointSliceMirroring controller, [`run_mirroring`]).

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
/// The mirroring controller's `managed-by` value.
pub const MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// On Endpoints the mirroring controller must leave alone (those this controller writes).
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's `--max-endpoints-per-slice` default.
const MAX_PER_SLICE: usize = 100;

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    futures::join!(run_selected(client.clone()), run_mirroring(client));
}

async fn run_selected(client: Client) {
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
            // Upstream's podToEndpoint: serving is the pod's readiness, ready never true
            // while terminating unless not-ready addresses are published.
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let serving = pods::is_ready(pod);
            let ready = (serving && !terminating) || publish_not_ready;
            Some(Member {
                pod,
                ip,
                ready,
                serving,
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
    let mut labels = service_labels(svc);
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    let desired = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": if subsets.is_empty() { Value::Null } else { json!(subsets) },
    });
    upsert(&api, &name, desired, &["subsets"]).await
}

/// The Service's labels, with upstream's headless label on headless Services.
fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// One EndpointSlice's content: address type, ports and endpoints.
#[derive(Debug, PartialEq)]
struct SliceContent {
    address_type: &'static str,
    ports: Value,
    endpoints: Vec<Value>,
}

fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// Splits endpoints sharing one port list into slices of at most [`MAX_PER_SLICE`] per
/// address type; no endpoints at all still gives one (empty) slice, as upstream's placeholder.
fn chunk(groups: Vec<(Value, Vec<Value>)>) -> Vec<SliceContent> {
    let mut out = Vec::new();
    for (ports, endpoints) in groups {
        let mut by_type: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        for e in endpoints {
            let t = address_type(e["addresses"][0].as_str().unwrap_or_default());
            by_type.entry(t).or_default().push(e);
        }
        for (t, eps) in by_type {
            for c in eps.chunks(MAX_PER_SLICE) {
                out.push(SliceContent {
                    address_type: t,
                    ports: ports.clone(),
                    endpoints: c.to_vec(),
                });
            }
        }
    }
    if out.is_empty() {
        out.push(SliceContent {
            address_type: "IPv4",
            ports: json!([]),
            endpoints: Vec::new(),
        });
    }
    out
}

async fn write_slice(
    client: &Client,
    svc: &Service,
    ports: &[ServicePort],
    members: &[Member<'_>],
) -> Result<(), Error> {
    let name = svc.name_any();
    // Pods whose named ports resolve alike share slices; a port a pod does not have is left
    // out of its slices (upstream's getEndpointPorts).
    let mut groups: BTreeMap<Vec<Option<i32>>, Vec<Value>> = BTreeMap::new();
    for m in members {
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
        groups.entry(m.ports.clone()).or_default().push(e);
    }
    let groups: Vec<(Value, Vec<Value>)> = groups
        .into_iter()
        .map(|(resolved, eps)| {
            let ports: Vec<Value> = ports
                .iter()
                .zip(resolved.iter())
                .filter_map(|(p, r)| {
                    let mut v = json!({"name": p.name.clone().unwrap_or_default(), "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()), "port": (*r)?});
                    if let Some(a) = &p.app_protocol {
                        v["appProtocol"] = json!(a);
                    }
                    Some(v)
                })
                .collect();
            (json!(ports), eps)
        })
        .collect();
    let mut labels = service_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let owner = serde_json::to_value(pods::controller_ref(svc))?;
    sync_slices(
        client,
        svc.namespace().unwrap_or_default(),
        &name,
        MANAGED_BY,
        labels,
        owner,
        chunk(groups),
    )
    .await
}

/// Makes the slices `managed_by` for Service `service` hold `want`: existing slices are
/// reused (those with the same ports and address type first), missing ones created under
/// `<service>-`, the rest deleted.
async fn sync_slices(
    client: &Client,
    ns: String,
    service: &str,
    managed_by: &str,
    labels: BTreeMap<String, String>,
    owner: Value,
    want: Vec<SliceContent>,
) -> Result<(), Error> {
    let api = raw_api(
        client,
        &ns,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
    );
    let sel = format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={managed_by}");
    let mut existing: Vec<Value> = api
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    existing.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let body = |slice_name: Option<&str>, c: &SliceContent| {
        let mut meta = json!({"namespace": ns, "labels": labels, "ownerReferences": [owner]});
        match slice_name {
            Some(n) => meta["name"] = json!(n),
            None => meta["generateName"] = json!(format!("{service}-")),
        }
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": meta,
            "addressType": c.address_type,
            "endpoints": c.endpoints,
            "ports": c.ports,
        })
    };
    // The existing slice each wanted one reuses: first one whose address type and ports
    // already match, then any left of its address type (a slice's type cannot change).
    let mut reuse: Vec<Option<Value>> = vec![None; want.len()];
    for same_ports in [true, false] {
        for (c, slot) in want.iter().zip(reuse.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let found = existing.iter().position(|e| {
                e["addressType"] == c.address_type
                    && (!same_ports || e.get("ports").unwrap_or(&json!([])) == &c.ports)
            });
            *slot = found.map(|i| existing.remove(i));
        }
    }
    for (c, slot) in want.iter().zip(&reuse) {
        match slot.as_ref().and_then(|e| e["metadata"]["name"].as_str()) {
            Some(n) => {
                upsert(
                    &api,
                    n,
                    body(Some(n), c),
                    &["endpoints", "ports", "metadata"],
                )
                .await?;
            }
            None => {
                let obj: DynamicObject = serde_json::from_value(body(None, c))?;
                api.create(&PostParams::default(), &obj).await?;
            }
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

/// Upstream's EndpointSliceMirroring controller: the Endpoints of a Service without a
/// selector (written by hand or by another controller) become EndpointSlices managed by
/// [`MIRRORING`], owned by the Endpoints, so the proxy and DNS, which read slices, see them.
/// Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` are not mirrored.
pub async fn run_mirroring(client: Client) {
    use k8s_openapi::api::core::v1::Endpoints;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    Controller::new(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Service>::all(client),
        watcher::Config::default(),
        |svc: Service| {
            let ns = svc.namespace().unwrap_or_default();
            Some(ObjectRef::<Endpoints>::new(&svc.name_any()).within(&ns))
        },
    )
    .run(mirror, crate::retry_soon, ctx)
    .for_each(|_| async {})
    .await;
}

async fn mirror(
    ep: Arc<k8s_openapi::api::core::v1::Endpoints>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    if ep.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let svc = Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    let selectorless = svc.as_ref().is_some_and(|s| {
        s.spec
            .as_ref()
            .and_then(|sp| sp.selector.as_ref())
            .is_none_or(|sel| sel.is_empty())
    });
    let skip = ep.labels().get(SKIP_MIRROR_LABEL).map(String::as_str) == Some("true");
    // Nothing to mirror (or not to be mirrored): no slices at all, not even a placeholder.
    let groups = mirrored(&ep);
    let want = if selectorless && !skip && !groups.is_empty() {
        chunk(groups)
    } else {
        Vec::new()
    };
    let mut labels = ep.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MIRRORING.into());
    let owner = serde_json::to_value(pods::controller_ref(ep.as_ref()))?;
    sync_slices(&ctx.client, ns, &name, MIRRORING, labels, owner, want).await?;
    Ok(Action::await_change())
}

/// The endpoints of each subset of `ep` grouped by their port list, as the mirroring
/// controller writes them: ready addresses ready, not-ready ones not.
fn mirrored(ep: &k8s_openapi::api::core::v1::Endpoints) -> Vec<(Value, Vec<Value>)> {
    let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<Value> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let mut v = json!({"name": p.name.clone().unwrap_or_default(), "port": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())});
                if let Some(a) = &p.app_protocol {
                    v["appProtocol"] = json!(a);
                }
                v
            })
            .collect();
        let ports = json!(ports);
        let addresses = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        let eps: Vec<Value> = addresses
            .map(|(a, ready)| {
                let mut e = json!({"addresses": [a.ip], "conditions": {"ready": ready}});
                if let Some(t) = &a.target_ref {
                    e["targetRef"] = serde_json::to_value(t).unwrap_or(Value::Null);
                }
                if let Some(h) = a.hostname.as_ref().filter(|h| !h.is_empty()) {
                    e["hostname"] = json!(h);
                }
                if let Some(n) = &a.node_name {
                    e["nodeName"] = json!(n);
                }
                e
            })
            .collect();
        match groups.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, all)) => all.extend(eps),
            None => groups.push((ports, eps)),
        }
    }
    groups.retain(|(_, eps)| !eps.is_empty());
    groups
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn endpoint(ip: &str) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": true}})
    }

    #[test]
    fn slices_hold_at_most_100_endpoints_of_one_address_type() {
        let ports = json!([{"name": "web", "port": 80, "protocol": "TCP"}]);
        let mut eps: Vec<Value> = (0..150)
            .map(|i| endpoint(&format!("10.0.{}.{}", i / 100, i % 100)))
            .collect();
        eps.push(endpoint("fd00::1"));
        let slices = chunk(vec![(ports.clone(), eps)]);
        let shape: Vec<(&str, usize)> = slices
            .iter()
            .map(|s| (s.address_type, s.endpoints.len()))
            .collect();
        assert_eq!(shape, [("IPv4", 100), ("IPv4", 50), ("IPv6", 1)]);
        assert!(slices.iter().all(|s| s.ports == ports));
        // Nothing selected: one empty placeholder.
        let empty = chunk(Vec::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());
    }

    #[test]
    fn mirrored_endpoints_group_subsets_by_ports() {
        let ep: k8s_openapi::api::core::v1::Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.2"}],
                 "ports": [{"name": "a", "port": 80}]},
                {"addresses": [{"ip": "10.0.0.3", "hostname": "h"}], "ports": [{"name": "a", "port": 80}]},
                {"addresses": [{"ip": "10.0.0.4"}], "ports": [{"name": "b", "port": 81, "protocol": "UDP"}]},
                {"ports": [{"name": "c", "port": 82}]},
            ]
        }))
        .unwrap();
        let groups = mirrored(&ep);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].0,
            json!([{"name": "a", "port": 80, "protocol": "TCP"}])
        );
        let ready: Vec<(Value, Value)> = groups[0]
            .1
            .iter()
            .map(|e| (e["addresses"][0].clone(), e["conditions"]["ready"].clone()))
            .collect();
        assert_eq!(
            ready,
            [
                (json!("10.0.0.1"), json!(true)),
                (json!("10.0.0.2"), json!(false)),
                (json!("10.0.0.3"), json!(true))
            ]
        );
        assert_eq!(groups[0].1[2]["hostname"], "h");
        assert_eq!(groups[1].0[0]["protocol"], "UDP");
    }
}
