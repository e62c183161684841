//! The `bridge` plugin: a Linux bridge in the node's namespace, a veth pair per container,
//! and host-local style IPAM.

use std::fs::File;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::config::{BridgeConf, Ipv4Net, Range, parse_bridge};
use super::error::{CniError, GENERIC, INCOMPATIBLE_VERSION, UNKNOWN_CONTAINER};
use super::ipam::{self, Store};
use super::netlink;
use super::{Command, Request, ip_entry, open_netns};

/// The host-side veth name of (`container_id`, `ifname`): `veth` + 8 hex digits of a hash,
/// the same on every call so DEL and CHECK find what ADD made.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits, folded to 32.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("veth{:08x}", (h ^ (h >> 32)) as u32)
}

/// Runs one bridge command; `Ok(Some(result))` is printed on stdout.
pub(crate) fn run(cmd: Command, req: &Request, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let conf = parse_bridge(stdin)?;
    match cmd {
        Command::Add => add(req, &conf).map(Some),
        Command::Del => del(req, &conf).map(|()| None),
        Command::Check => check(req, &conf).map(|()| None),
    }
}

fn store_err(e: std::io::Error) -> CniError {
    CniError::generic("failed to access IPAM state", e)
}

fn open_store(conf: &BridgeConf) -> Result<Store, CniError> {
    Store::open(&conf.ipam.data_dir, &conf.name)
}

/// What ADD did on the host side, for the result.
struct HostSide {
    bridge_mac: String,
    veth_mac: String,
}

fn add(req: &Request, conf: &BridgeConf) -> Result<Value, CniError> {
    let netns_path = req.netns_required()?;
    let netns = open_netns(netns_path)?;
    let alloc = {
        let store = open_store(conf)?;
        ipam::allocate(&store, &conf.ipam.ranges, &req.container_id, &req.ifname)?
    };
    let range = &conf.ipam.ranges[alloc.range];
    let host_veth = host_veth_name(&req.container_id, &req.ifname);
    let wired = setup_host(conf, range, &host_veth, &req.ifname, &netns).and_then(|host| {
        let routes = container_routes(conf, range);
        let mac = setup_container(&netns, &req.ifname, alloc.ip, range, &routes)?;
        Ok((host, mac, routes))
    });
    let (host, container_mac, routes) = match wired {
        Ok(w) => w,
        Err(e) => {
            // Undo: the veth (its peer goes with it) and a fresh allocation.
            let _ = netlink::run(None, |h| async move {
                netlink::delete_link(&h, &host_veth).await
            });
            if alloc.fresh
                && let Ok(store) = open_store(conf)
            {
                let _ = store.release_ip(alloc.ip);
            }
            return Err(e);
        }
    };
    let v = conf.version;
    Ok(json!({
        "cniVersion": v.as_str(),
        "interfaces": [
            {"name": conf.bridge, "mac": host.bridge_mac},
            {"name": host_veth, "mac": host.veth_mac},
            {"name": req.ifname, "mac": container_mac, "sandbox": netns_path},
        ],
        "ips": [ip_entry(
            v,
            &format!("{}/{}", alloc.ip, range.subnet.prefix),
            Some(range.gateway),
            2,
        )],
        "routes": routes
            .iter()
            .map(|(dst, gw)| json!({"dst": dst.to_string(), "gw": gw.to_string()}))
            .collect::<Vec<_>>(),
        "dns": conf.dns,
    }))
}

/// The routes to install in the container: the IPAM routes (next hop defaulting to the
/// gateway), plus a default route when `isDefaultGateway` asks for one.
fn container_routes(conf: &BridgeConf, range: &Range) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = conf
        .ipam
        .routes
        .iter()
        .map(|r| (r.dst, r.gw.unwrap_or(range.gateway)))
        .collect();
    if conf.is_default_gateway && !routes.iter().any(|(dst, _)| dst.is_default()) {
        let default = Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        };
        routes.push((default, range.gateway));
    }
    routes
}

/// Node side of ADD: the bridge (with the gateway address), the veth pair, the port.
fn setup_host(
    conf: &BridgeConf,
    range: &Range,
    host_veth: &str,
    ifname: &str,
    netns: &File,
) -> Result<HostSide, CniError> {
    netlink::run(None, |h| async move {
        let bridge = netlink::ensure_bridge(&h, &conf.bridge, conf.mtu, conf.promisc).await?;
        let bridge_index = bridge.header.index;
        if conf.is_gateway {
            netlink::ensure_address(&h, bridge_index, range.gateway, range.subnet.prefix).await?;
            netlink::enable_ipv4_forwarding()?;
        }
        // A leftover of an earlier ADD of the same container: start afresh.
        netlink::delete_link(&h, host_veth).await?;
        netlink::create_veth(&h, host_veth, ifname, conf.mtu, netns).await?;
        let veth = netlink::require_link(&h, host_veth).await?;
        netlink::set_up(&h, veth.header.index, Some(bridge_index)).await?;
        if conf.hairpin {
            netlink::set_hairpin(&h, veth.header.index).await?;
        }
        // The bridge may take a port's MAC when its first port joins: read it now.
        let bridge = netlink::require_link(&h, &conf.bridge).await?;
        Ok(HostSide {
            bridge_mac: netlink::mac(&bridge),
            veth_mac: netlink::mac(&veth),
        })
    })
}

/// Container side of ADD: ifname up with its address and routes; returns its MAC.
fn setup_container(
    netns: &File,
    ifname: &str,
    ip: Ipv4Addr,
    range: &Range,
    routes: &[(Ipv4Net, Ipv4Addr)],
) -> Result<String, CniError> {
    netlink::run(Some(netns), |h| async move {
        let link = netlink::require_link(&h, ifname).await?;
        let index = link.header.index;
        netlink::set_up(&h, index, None).await?;
        netlink::ensure_address(&h, index, ip, range.subnet.prefix).await?;
        for (dst, gw) in routes {
            netlink::add_route(&h, *dst, *gw, index).await?;
        }
        Ok(netlink::mac(&link))
    })
}

/// DEL: delete the host veth (its peer goes with it), then free the IP. Anything already
/// gone is fine.
fn del(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    let host_veth = host_veth_name(&req.container_id, &req.ifname);
    netlink::run(None, |h| async move {
        netlink::delete_link(&h, &host_veth).await
    })?;
    let store = open_store(conf)?;
    store
        .release(&req.container_id, &req.ifname)
        .map_err(store_err)?;
    Ok(())
}

/// The IPv4 addresses a previous result gave to `ifname` (interface indexes resolved).
fn prev_result_ips(prev: &Value, ifname: &str) -> Vec<(Ipv4Addr, u8)> {
    let ifaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| {
            ip["interface"]
                .as_u64()
                .and_then(|i| ifaces.get(usize::try_from(i).ok()?))
                .is_none_or(|iface| iface["name"] == ifname)
        })
        .filter_map(|ip| {
            let (addr, prefix) = ip["address"].as_str()?.split_once('/')?;
            Some((addr.parse().ok()?, prefix.parse().ok()?))
        })
        .collect()
}

/// CHECK: the allocation exists, the container has it on ifname (up), and the host veth
/// is a port of the bridge.
fn check(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    if !conf.version.has_check() {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "CHECK is not supported by cniVersion {}",
                conf.version.as_str()
            ),
        ));
    }
    let netns = open_netns(req.netns_required()?)?;
    let held = open_store(conf)?
        .find(&req.container_id, &req.ifname)
        .map_err(store_err)?;
    let Some((ip, range)) = held.iter().find_map(|ip| {
        conf.ipam
            .ranges
            .iter()
            .find(|r| r.subnet.contains(*ip))
            .map(|r| (*ip, r))
    }) else {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!(
                "no IP address is allocated to container {} interface {}",
                req.container_id, req.ifname
            ),
        ));
    };
    let want = (ip, range.subnet.prefix);
    if let Some(prev) = &conf.prev_result {
        let prev_ips = prev_result_ips(prev, &req.ifname);
        if !prev_ips.is_empty() && !prev_ips.contains(&want) {
            return Err(CniError::new(
                GENERIC,
                format!("prevResult addresses {prev_ips:?} do not match the allocation {ip}"),
            ));
        }
    }
    let ifname = req.ifname.as_str();
    netlink::run(Some(&netns), |h| async move {
        let link = netlink::require_link(&h, ifname).await?;
        if !netlink::is_up(&link) {
            return Err(CniError::new(GENERIC, format!("{ifname} is down")));
        }
        let addrs = netlink::ipv4_addresses(&h, link.header.index).await?;
        if !addrs.contains(&want) {
            return Err(CniError::new(
                GENERIC,
                format!("{ifname} does not have its address {}/{}", want.0, want.1),
            ));
        }
        Ok(())
    })?;
    let host_veth = host_veth_name(&req.container_id, &req.ifname);
    netlink::run(None, |h| async move {
        let bridge = netlink::require_link(&h, &conf.bridge).await?;
        let veth = netlink::require_link(&h, &host_veth).await?;
        if netlink::controller(&veth) != Some(bridge.header.index) {
            return Err(CniError::new(
                GENERIC,
                format!("{host_veth} is not a port of bridge {}", conf.bridge),
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn veth_names_are_stable_and_short() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn routes_default_to_the_gateway() {
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","isDefaultGateway":true,
            "ipam":{"type":"host-local","subnet":"10.0.0.0/24",
            "routes":[{"dst":"10.1.0.0/16","gw":"10.0.0.254"},{"dst":"10.2.0.0/16"}]}}"#;
        let conf = parse_bridge(stdin).unwrap();
        assert!(conf.is_gateway);
        let routes = container_routes(&conf, &conf.ipam.ranges[0]);
        let shown: Vec<String> = routes.iter().map(|(d, g)| format!("{d} {g}")).collect();
        assert_eq!(
            shown,
            [
                "10.1.0.0/16 10.0.0.254",
                "10.2.0.0/16 10.0.0.1",
                "0.0.0.0/0 10.0.0.1"
            ]
        );
    }

    #[test]
    fn prev_result_ips_for_the_interface() {
        let prev = json!({
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 2},
                {"address": "10.9.0.5/24", "interface": 0},
                {"address": "bogus"}
            ]
        });
        assert_eq!(
            prev_result_ips(&prev, "eth0"),
            [(Ipv4Addr::new(10, 0, 0, 5), 24)]
        );
    }
}
