//! Service ClusterIP and NodePort allocation from the configured ranges.
//!
//! The allocation lock is held from choosing until the caller has written the object, so two
//! Services can never be given (or ask for) the same address or port.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::storage;
use kubox_core::meta;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use tokio::sync::MutexGuard;

/// Held until the object carrying the allocation is stored.
pub type AllocGuard<'a> = Option<MutexGuard<'a, ()>>;

fn is_service(ctx: &Ctx) -> bool {
    ctx.def.group.is_empty() && ctx.def.kind == "Service"
}

/// What other Services already hold.
struct InUse {
    ips: HashSet<Ipv4Addr>,
    ports: HashSet<i64>,
}

async fn in_use(ctx: &Ctx, except: Option<&str>) -> ApiResult<InUse> {
    let prefix = format!("{}core/services/", storage::PREFIX);
    let res = ctx.state.store.list(&prefix, None, None, None).await?;
    let mut u = InUse {
        ips: HashSet::new(),
        ports: HashSet::new(),
    };
    for kv in res.items {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if except.is_some_and(|uid| meta::meta_str(&svc, "uid") == Some(uid)) {
            continue;
        }
        for ip in svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(Ok(a)) = ip.as_str().map(str::parse::<Ipv4Addr>) {
                u.ips.insert(a);
            }
        }
        if let Some(Ok(a)) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(str::parse::<Ipv4Addr>)
        {
            u.ips.insert(a);
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                u.ports.insert(n);
            }
        }
    }
    Ok(u)
}

fn invalid(ctx: &Ctx, obj: &Value, field: &str, msg: String) -> ApiError {
    ApiError::invalid(
        &ctx.def.kind,
        &ctx.def.group,
        meta::name(obj).unwrap_or_default(),
        vec![("FieldValueInvalid".into(), field.into(), msg)],
    )
}

fn needs_cluster_ip(obj: &Value) -> bool {
    obj.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName")
}

fn needs_node_ports(obj: &Value) -> bool {
    matches!(
        obj.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

/// The Service that may hold a reserved address: (namespace, name).
fn reserved_for(ctx: &Ctx, ip: Ipv4Addr) -> Option<(&'static str, &'static str)> {
    if ip == ctx.state.config.kubernetes_service_ip {
        Some(("default", "kubernetes"))
    } else if ip == ctx.state.config.cluster_dns {
        Some(("kube-system", "kube-dns"))
    } else {
        None
    }
}

fn in_range(ctx: &Ctx, ip: Ipv4Addr) -> bool {
    let (net, bits) = ctx.state.config.service_cidr;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    let (n, a) = (u32::from(net) & mask, u32::from(ip));
    a & mask == n && a != n && a != n | !mask
}

fn range_text(ctx: &Ctx) -> String {
    let (net, bits) = ctx.state.config.service_cidr;
    format!("{net}/{bits}")
}

fn pick_ip(ctx: &Ctx, used: &InUse) -> Option<Ipv4Addr> {
    let (net, bits) = ctx.state.config.service_cidr;
    let size = 1u64 << (32 - u32::from(bits).min(32));
    if size < 4 {
        return None;
    }
    let base = u64::from(u32::from(net));
    let start = uuid::Uuid::new_v4().as_u128() as u64 % (size - 2);
    (0..size - 2)
        .map(|i| (start + i) % (size - 2) + 1)
        .find_map(|off| {
            let ip = Ipv4Addr::from((base + off) as u32);
            (!used.ips.contains(&ip) && reserved_for(ctx, ip).is_none()).then_some(ip)
        })
}

fn pick_port(ctx: &Ctx, used: &HashSet<i64>) -> Option<i64> {
    let (lo, hi) = ctx.state.config.node_port_range;
    let span = i64::from(hi) - i64::from(lo) + 1;
    if span <= 0 {
        return None;
    }
    let start = (uuid::Uuid::new_v4().as_u128() % span as u128) as i64;
    (0..span)
        .map(|i| i64::from(lo) + (start + i) % span)
        .find(|p| !used.contains(p))
}

/// Assigns the ClusterIP and NodePorts of a new Service; refuses taken or out-of-range ones.
pub async fn on_create<'a>(ctx: &'a Ctx, obj: &mut Value) -> ApiResult<AllocGuard<'a>> {
    if !is_service(ctx) {
        return Ok(None);
    }
    let guard = ctx.state.alloc_lock.lock().await;
    let used = in_use(ctx, None).await?;
    assign(ctx, None, obj, &used)?;
    Ok(Some(guard))
}

/// Keeps or assigns a Service's ClusterIP and NodePorts across an update (type changes).
pub async fn on_update<'a>(
    ctx: &'a Ctx,
    old: &Value,
    new: &mut Value,
) -> ApiResult<AllocGuard<'a>> {
    if !is_service(ctx) || ctx.info.subresource.is_some() {
        return Ok(None);
    }
    let guard = ctx.state.alloc_lock.lock().await;
    let uid = meta::meta_str(old, "uid").map(String::from);
    let used = in_use(ctx, uid.as_deref()).await?;
    assign(ctx, Some(old), new, &used)?;
    Ok(Some(guard))
}

fn assign(ctx: &Ctx, old: Option<&Value>, obj: &mut Value, used: &InUse) -> ApiResult<()> {
    let ns = meta::namespace(obj).unwrap_or_default().to_string();
    let name = meta::name(obj).unwrap_or_default().to_string();
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    if needs_cluster_ip(obj) {
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from);
        let ip = if requested.is_empty() {
            match old_ip {
                Some(ip) => ip,
                None => pick_ip(ctx, used)
                    .ok_or_else(|| {
                        ApiError::new(
                            500,
                            "InternalError",
                            "failed to allocate a serviceIP: range is full",
                        )
                    })?
                    .to_string(),
            }
        } else if requested == "None" {
            requested
        } else {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(ctx, obj, "spec.clusterIPs[0]", format!("Invalid value: {requested:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
            })?;
            if old_ip.as_deref() != Some(requested.as_str()) {
                if !in_range(ctx, ip) {
                    return Err(invalid(
                        ctx,
                        obj,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: []string{{{requested:?}}}: failed to allocate IP {requested}: provided IP is not in the valid range. The range of valid IPs is {}",
                            range_text(ctx)
                        ),
                    ));
                }
                let reserved_ok =
                    reserved_for(ctx, ip).is_none_or(|(rns, rname)| rns == ns && rname == name);
                if used.ips.contains(&ip) || !reserved_ok {
                    return Err(invalid(
                        ctx,
                        obj,
                        "spec.clusterIPs",
                        format!(
                            "Invalid value: []string{{{requested:?}}}: failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    ));
                }
            }
            requested
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    } else if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    let needs_ports = needs_node_ports(obj);
    // `allocateLoadBalancerNodePorts: false`: only node ports asked for (or held) are kept.
    let allocate_missing = !(obj.pointer("/spec/type").and_then(Value::as_str)
        == Some("LoadBalancer")
        && obj.pointer("/spec/allocateLoadBalancerNodePorts") == Some(&json!(false)));
    let mut taken = used.ports.clone();
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (lo, hi) = ctx.state.config.node_port_range;
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            if !needs_ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
                continue;
            }
            let requested = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0);
            let previous = old_ports
                .iter()
                .find(|op| {
                    op.get("port") == p.get("port") && op.get("protocol") == p.get("protocol")
                })
                .and_then(|op| op.get("nodePort"))
                .and_then(Value::as_i64);
            let port = match requested {
                Some(n) if Some(n) == previous => n,
                Some(n) => {
                    if n < i64::from(lo) || n > i64::from(hi) {
                        return Err(port_error(
                            ctx,
                            &name,
                            i,
                            n,
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    }
                    if taken.contains(&n) {
                        return Err(port_error(
                            ctx,
                            &name,
                            i,
                            n,
                            "provided port is already allocated".into(),
                        ));
                    }
                    n
                }
                None => match previous {
                    Some(n) => n,
                    None if !allocate_missing => {
                        if let Some(m) = p.as_object_mut() {
                            m.remove("nodePort");
                        }
                        continue;
                    }
                    None => pick_port(ctx, &taken).ok_or_else(|| {
                        ApiError::new(
                            500,
                            "InternalError",
                            "failed to allocate a nodePort: range is full",
                        )
                    })?,
                },
            };
            taken.insert(port);
            p["nodePort"] = json!(port);
        }
    }
    Ok(())
}

fn port_error(ctx: &Ctx, name: &str, i: usize, n: i64, why: String) -> ApiError {
    ApiError::invalid(
        &ctx.def.kind,
        &ctx.def.group,
        name,
        vec![(
            "FieldValueInvalid".into(),
            format!("spec.ports[{i}].nodePort"),
            format!("Invalid value: {n}: {why}"),
        )],
    )
}
