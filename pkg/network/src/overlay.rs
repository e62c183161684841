//! The multi-node pod network: what flannel's `vxlan` backend (k3s's default) sets up on a
//! node, over rtnetlink.
//!
//! Each node has one VXLAN device, [`DEVICE`] (`flannel.1`: VNI 1, UDP 8472, local = the node
//! IP, no learning), holding `<podCIDR network>/32`. For every other node (its podCIDR, the
//! MAC of its `flannel.1` — the VTEP — and its public IP) the device gets:
//! - a permanent neighbour entry `<podCIDR network> lladdr <VtepMAC>` (no ARP over the
//!   overlay),
//! - a permanent FDB entry `<VtepMAC> dst <public ip>` (where VXLAN packets for that MAC go),
//! - a route `<podCIDR> via <podCIDR network> dev flannel.1 onlink`.
//!
//! [`sync_peers`] makes the device's entries exactly those of the peers it is given (stale
//! ones of an earlier run or of a node gone go). kubox owns `flannel.1`: everything on it is
//! kubox's, nothing else is touched.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::cni::error::CniError;
use crate::cni::netlink;

/// The VXLAN device, flannel's name for VNI 1.
pub const DEVICE: &str = "flannel.1";
/// flannel's VNI.
pub const VNI: u32 = 1;
/// flannel's UDP port (the Linux kernel's historical VXLAN port).
pub const PORT: u16 = 8472;

/// A MAC address.
pub type Mac = [u8; 6];

/// Why the overlay device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The kernel has no VXLAN support (no `vxlan` module).
    #[error("the kernel does not support VXLAN devices: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Netlink(String),
}

/// Another node, as the overlay needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its podCIDR (network address, prefix length).
    pub subnet: (Ipv4Addr, u8),
    /// The MAC of its `flannel.1`.
    pub vtep_mac: Mac,
    /// Where its VXLAN packets go (its node IP).
    pub public_ip: Ipv4Addr,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC kubox gives a new `flannel.1`: locally administered, unicast, derived from the node
/// IP, so it is the same after a reboot (peers' entries stay right) and distinct per node.
pub fn vtep_mac_for(node_ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = node_ip.octets();
    [0x0e, 0x6b, a, b, c, d]
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

/// What the existing device's VXLAN settings must be for it to be kept.
fn vxlan_matches(link: &netlink_packet_route::link::LinkMessage, local: Ipv4Addr) -> bool {
    let Some(data) = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    }) else {
        return false;
    };
    let has = |want: &InfoVxlan| data.contains(want);
    has(&InfoVxlan::Id(VNI))
        && has(&InfoVxlan::Local(local))
        && has(&InfoVxlan::Port(PORT))
        && has(&InfoVxlan::Learning(false))
}

fn link_kind(link: &netlink_packet_route::link::LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn link_mtu(link: &netlink_packet_route::link::LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn link_mac(link: &netlink_packet_route::link::LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => mac_of(b),
        _ => None,
    })
}

/// Makes [`DEVICE`] what this node needs — VXLAN VNI 1, port 8472, `local`, no learning, `mtu`,
/// `<subnet network>/32` its only IPv4 address, up — and returns its MAC. A device that is
/// already right is kept as it is (its entries and the pods' traffic are not disturbed); one
/// with other VXLAN settings is replaced.
pub fn ensure_device(
    local: Ipv4Addr,
    subnet: (Ipv4Addr, u8),
    mtu: u32,
) -> Result<Mac, OverlayError> {
    let res = netlink::run(None, move |h| async move {
        let existing = netlink::link_by_name(&h, DEVICE).await?;
        if let Some(link) = &existing
            && (link_kind(link) != Some(&InfoKind::Vxlan) || !vxlan_matches(link, local))
        {
            tracing::info!(
                device = DEVICE,
                "replacing the overlay device: its settings differ"
            );
            netlink::delete_link(&h, DEVICE).await?;
        }
        let link = match existing.filter(|l| vxlan_matches(l, local)) {
            Some(l) => l,
            None => {
                let msg = LinkVxlan::new(DEVICE, VNI)
                    .local(local)
                    .port(PORT)
                    .learning(false)
                    .mtu(mtu)
                    .address(vtep_mac_for(local).to_vec())
                    .build();
                match h.link().add(msg).execute().await {
                    Err(e) if netlink::errno(&e) != Some(libc::EEXIST) => {
                        let code = if netlink::errno(&e) == Some(libc::EOPNOTSUPP) {
                            UNSUPPORTED
                        } else {
                            crate::cni::error::GENERIC
                        };
                        return Err(
                            CniError::new(code, format!("failed to create {DEVICE}")).details(e)
                        );
                    }
                    _ => {}
                }
                netlink::require_link(&h, DEVICE).await?
            }
        };
        let index = link.header.index;
        if link_mtu(&link) != Some(mtu) || !netlink::is_up(&link) {
            h.link()
                .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
                .execute()
                .await
                .map_err(netlink::nl_err(format_args!("set {DEVICE} up")))?;
        }
        // The subnet's network address is the device's only address (a podCIDR that changed
        // leaves none of the old one).
        for (ip, prefix) in netlink::ipv4_addresses(&h, index).await? {
            if (ip, prefix) != (subnet.0, 32) {
                netlink::delete_address(&h, index, ip, prefix).await?;
            }
        }
        netlink::ensure_address(&h, index, subnet.0, 32).await?;
        link_mac(&link).ok_or_else(|| {
            CniError::new(crate::cni::error::GENERIC, format!("{DEVICE} has no MAC"))
        })
    });
    res.map_err(|e| {
        if e.code == UNSUPPORTED {
            OverlayError::Unsupported(describe(e))
        } else {
            OverlayError::Netlink(describe(e))
        }
    })
}

/// An error code private to this module: creating a VXLAN device was refused as unsupported.
const UNSUPPORTED: u32 = 1000;

/// The error with its cause (a `CniError` displays only its message).
fn describe(e: CniError) -> String {
    if e.details.is_empty() {
        e.msg
    } else {
        format!("{}: {}", e.msg, e.details)
    }
}

/// What [`sync_peers`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

/// The entries [`DEVICE`] holds (or should hold).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entries {
    /// Routes: (subnet, gateway).
    pub routes: BTreeSet<((Ipv4Addr, u8), Ipv4Addr)>,
    /// Neighbours: (address, MAC).
    pub neighbours: BTreeSet<(Ipv4Addr, Mac)>,
    /// FDB: (MAC, remote IP).
    pub fdb: BTreeSet<(Mac, Ipv4Addr)>,
}

impl Entries {
    /// The entries `peers` need.
    pub fn of(peers: &[Peer]) -> Entries {
        let mut e = Entries::default();
        for p in peers {
            e.routes.insert((p.subnet, p.subnet.0));
            e.neighbours.insert((p.subnet.0, p.vtep_mac));
            e.fdb.insert((p.vtep_mac, p.public_ip));
        }
        e
    }
}

/// Makes [`DEVICE`]'s routes, neighbours and FDB entries exactly those `peers` need: adds the
/// missing ones (FDB, neighbour, route, as flannel orders them) and removes the others (route
/// first). Fails if the device does not exist.
pub fn sync_peers(peers: &[Peer]) -> Result<SyncReport, String> {
    let want = Entries::of(peers);
    netlink::run(None, move |h| async move {
        let link = netlink::require_link(&h, DEVICE).await?;
        let index = link.header.index;
        let have = current(&h, index).await?;
        let mut report = SyncReport::default();
        // Removals first, so that a changed peer (new MAC or address) ends with one entry.
        for (subnet, gw) in have.routes.difference(&want.routes) {
            let msg = route_message(*subnet, *gw, index);
            match h.route().del(msg).execute().await {
                Err(e) if netlink::errno(&e) != Some(libc::ESRCH) => {
                    return Err(netlink::nl_err(format_args!(
                        "delete route {}/{} via {gw}",
                        subnet.0, subnet.1
                    ))(e));
                }
                _ => report.removed += 1,
            }
        }
        for (ip, mac) in have.neighbours.difference(&want.neighbours) {
            del_neighbour(&h, neighbour_message(index, *ip, mac)).await?;
            report.removed += 1;
        }
        for (mac, dst) in have.fdb.difference(&want.fdb) {
            del_neighbour(&h, fdb_message(index, mac, *dst)).await?;
            report.removed += 1;
        }
        for (mac, dst) in want.fdb.difference(&have.fdb) {
            add_neighbour(&h, fdb_message(index, mac, *dst)).await?;
            report.added += 1;
        }
        for (ip, mac) in want.neighbours.difference(&have.neighbours) {
            add_neighbour(&h, neighbour_message(index, *ip, mac)).await?;
            report.added += 1;
        }
        for (subnet, gw) in want.routes.difference(&have.routes) {
            let msg = route_message(*subnet, *gw, index);
            // `replace`: a route to the subnet with another gateway must not make this fail.
            h.route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(netlink::nl_err(format_args!(
                    "add route {}/{} via {gw} dev {DEVICE}",
                    subnet.0, subnet.1
                )))?;
            report.added += 1;
        }
        Ok(report)
    })
    .map_err(describe)
}

/// The routes, permanent neighbours and FDB entries [`DEVICE`] (link `index`) holds now.
pub fn entries() -> Result<Entries, String> {
    netlink::run(None, |h| async move {
        let link = netlink::require_link(&h, DEVICE).await?;
        current(&h, link.header.index).await
    })
    .map_err(describe)
}

async fn current(h: &Handle, index: u32) -> Result<Entries, CniError> {
    let mut e = Entries::default();
    let routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(netlink::nl_err("list routes"))?;
    for r in routes {
        if r.header.table != RouteHeader::RT_TABLE_MAIN
            || !r.attributes.contains(&RouteAttribute::Oif(index))
        {
            continue;
        }
        let dst = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let gw = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let subnet = (
            dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
            r.header.destination_prefix_length,
        );
        // A route out of flannel.1 without a gateway is none of kubox's; it goes too (the
        // device is kubox's), as the "gateway" 0.0.0.0 never matches a wanted one.
        e.routes
            .insert((subnet, gw.unwrap_or(Ipv4Addr::UNSPECIFIED)));
    }
    for family in [AddressFamily::Inet, AddressFamily::Bridge] {
        let msgs: Vec<NeighbourMessage> = h
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(netlink::nl_err("list neighbours"))?;
        for m in msgs {
            // Permanent entries, whatever other state bits they carry (iproute2's `bridge fdb
            // add` sets NUD_NOARP too).
            let permanent = u16::from(m.header.state) & u16::from(NeighbourState::Permanent) != 0;
            if m.header.ifindex != index || !permanent {
                continue;
            }
            let lladdr = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => mac_of(b),
                _ => None,
            });
            // FDB entries (family bridge) come with their IPv4 destination as raw bytes.
            let dst = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                }
                _ => None,
            });
            match (family, lladdr, dst) {
                (AddressFamily::Inet, Some(mac), Some(ip)) => {
                    e.neighbours.insert((ip, mac));
                }
                (AddressFamily::Bridge, Some(mac), Some(ip)) => {
                    e.fdb.insert((mac, ip));
                }
                _ => {}
            }
        }
    }
    Ok(e)
}

fn route_message(subnet: (Ipv4Addr, u8), gw: Ipv4Addr, index: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet.0, subnet.1)
        .gateway(gw)
        .output_interface(index)
        .onlink()
        // As flannel's routes (`ip route` shows no `proto`).
        .protocol(RouteProtocol::Boot)
        .build()
}

fn neighbour_message(index: u32, ip: Ipv4Addr, mac: &Mac) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
    ];
    m
}

/// `bridge fdb … self permanent`: the VXLAN device's own forwarding database.
fn fdb_message(index: u32, mac: &Mac, dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    m
}

async fn add_neighbour(h: &Handle, msg: NeighbourMessage) -> Result<(), CniError> {
    let mut req = h
        .neighbours()
        .add(msg.header.ifindex, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    *req.message_mut() = msg;
    req.replace()
        .execute()
        .await
        .map_err(netlink::nl_err(format_args!(
            "add a neighbour entry to {DEVICE}"
        )))
}

async fn del_neighbour(h: &Handle, msg: NeighbourMessage) -> Result<(), CniError> {
    match h.neighbours().del(msg).execute().await {
        Err(e) if !matches!(netlink::errno(&e), Some(libc::ENOENT | libc::ESRCH)) => Err(
            netlink::nl_err(format_args!("delete a neighbour entry of {DEVICE}"))(e),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn macs_round_trip_and_are_derived_from_the_node_ip() {
        let mac = vtep_mac_for(Ipv4Addr::new(192, 168, 230, 2));
        assert_eq!(format_mac(&mac), "0e:6b:c0:a8:e6:02");
        assert_eq!(parse_mac("0E:6b:c0:a8:e6:02"), Some(mac));
        // Locally administered, unicast.
        assert_eq!(mac[0] & 0b11, 0b10);
        for bad in [
            "",
            "0e:6b:c0:a8:e6",
            "0e:6b:c0:a8:e6:02:01",
            "0e:6b:c0:a8:e6:zz",
            "e:6b:c0:a8:e6:022",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_of_peers() {
        let p = Peer {
            subnet: (Ipv4Addr::new(10, 42, 1, 0), 24),
            vtep_mac: [0x0e, 0x6b, 1, 2, 3, 4],
            public_ip: Ipv4Addr::new(192, 168, 230, 2),
        };
        let e = Entries::of(&[p]);
        assert_eq!(
            e.routes.into_iter().collect::<Vec<_>>(),
            vec![(
                (Ipv4Addr::new(10, 42, 1, 0), 24),
                Ipv4Addr::new(10, 42, 1, 0)
            )]
        );
        assert_eq!(
            e.neighbours.into_iter().collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(10, 42, 1, 0), p.vtep_mac)]
        );
        assert_eq!(
            e.fdb.into_iter().collect::<Vec<_>>(),
            vec![(p.vtep_mac, p.public_ip)]
        );
    }
}

/// The device and its entries in a network namespace of the test's own (needs root; skipped
/// without it).
#[cfg(test)]
mod kernel_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn index() -> u32 {
        netlink::run(None, |h| async move {
            Ok(netlink::require_link(&h, DEVICE).await?.header.index)
        })
        .unwrap()
    }

    #[test]
    fn device_is_kept_when_right_and_entries_follow_the_peers() {
        std::thread::spawn(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                eprintln!("skipped: cannot make a network namespace (not root)");
                return;
            }
            let local = Ipv4Addr::new(192, 168, 77, 1);
            let subnet = (Ipv4Addr::new(10, 42, 0, 0), 24);
            let mac = match ensure_device(local, subnet, 1450) {
                Err(OverlayError::Unsupported(e)) => {
                    eprintln!("skipped: {e}");
                    return;
                }
                r => r.unwrap(),
            };
            assert_eq!(mac, vtep_mac_for(local));
            let first = index();
            // Already right: kept as it is.
            assert_eq!(ensure_device(local, subnet, 1450).unwrap(), mac);
            assert_eq!(index(), first);

            let peer = Peer {
                subnet: (Ipv4Addr::new(10, 42, 1, 0), 24),
                vtep_mac: [0x0e, 0x6b, 192, 168, 77, 2],
                public_ip: Ipv4Addr::new(192, 168, 77, 2),
            };
            // A stale FDB entry as iproute2 writes it (NUD_NOARP besides NUD_PERMANENT).
            let st = std::process::Command::new("bridge")
                .args(["fdb", "append", "0e:6b:00:00:00:63", "dst", "192.168.77.99"])
                .args(["dev", DEVICE, "self", "permanent"])
                .status()
                .unwrap();
            assert!(st.success());
            let r = sync_peers(&[peer]).unwrap();
            assert_eq!(
                r,
                SyncReport {
                    added: 3,
                    removed: 1
                }
            );
            assert_eq!(entries().unwrap(), Entries::of(&[peer]));
            assert_eq!(sync_peers(&[peer]).unwrap(), SyncReport::default());
            // The peer changes its VTEP (a rebuilt device elsewhere): one entry each.
            let moved = Peer {
                vtep_mac: [0x0e, 0x6b, 192, 168, 77, 3],
                ..peer
            };
            sync_peers(&[moved]).unwrap();
            assert_eq!(entries().unwrap(), Entries::of(&[moved]));
            sync_peers(&[]).unwrap();
            assert_eq!(entries().unwrap(), Entries::default());

            // Other VXLAN settings: replaced.
            let other = Ipv4Addr::new(192, 168, 77, 9);
            assert_eq!(
                ensure_device(other, subnet, 1450).unwrap(),
                vtep_mac_for(other)
            );
            assert_ne!(index(), first);
        })
        .join()
        .unwrap();
    }
}
