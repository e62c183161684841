//! rtnetlink helpers, and running netlink work inside a given network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that opened it, so each unit of
//! work runs on its own short-lived OS thread: it enters the target namespace (if any) with
//! `setns`, builds a current-thread tokio runtime and opens a fresh rtnetlink connection.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::config::Ipv4Net;
use super::error::CniError;

/// Runs `f` with a fresh rtnetlink handle on a new thread, inside the network namespace
/// `netns` (an open `/var/run/netns/X` or `/proc/PID/ns/net`), or inside the caller's
/// namespace when `None`. Never panics: a panic of the worker becomes an error.
pub(crate) fn run<T, F, Fut>(netns: Option<&File>, f: F) -> Result<T, CniError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, CniError>>,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            if let Some(ns) = netns {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| CniError::generic("failed to enter the network namespace", e))?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CniError::generic("failed to start a tokio runtime", e))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| CniError::generic("failed to open a netlink socket", e))?;
                let conn = tokio::spawn(conn);
                let out = f(handle).await;
                conn.abort();
                out
            })
        });
        worker.join().unwrap_or_else(|_| {
            Err(CniError::new(
                super::error::GENERIC,
                "netlink worker panicked",
            ))
        })
    })
}

/// The positive errno of a netlink error reply, if `e` is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Wraps a netlink error with what was being done.
pub(crate) fn nl_err(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::generic(format!("failed to {what}"), e)
}

/// The link named `name`, or `None` when there is none.
pub(crate) async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format_args!("look up link {name}"))(e)),
    }
}

/// The link named `name`, or an error saying it is missing.
pub(crate) async fn require_link(h: &Handle, name: &str) -> Result<LinkMessage, CniError> {
    link_by_name(h, name)
        .await?
        .ok_or_else(|| CniError::new(super::error::GENERIC, format!("link {name} does not exist")))
}

/// The link's MAC address as `aa:bb:cc:dd:ee:ff` (empty when it has none).
pub(crate) fn mac(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(bytes) => Some(
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// The index of the link's controller (its bridge), if it is enslaved.
pub(crate) fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) if *i != 0 => Some(*i),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub(crate) fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// Sets the link with `index` up (optionally enslaving it to `controller`).
pub(crate) async fn set_up(
    h: &Handle,
    index: u32,
    controller: Option<u32>,
) -> Result<(), CniError> {
    let mut msg = LinkUnspec::new_with_index(index).up();
    if let Some(c) = controller {
        msg = msg.controller(c);
    }
    h.link()
        .set(msg.build())
        .execute()
        .await
        .map_err(nl_err(format_args!("set link {index} up")))
}

/// Returns the bridge `name`, creating it (with `mtu`) if missing, and sets it up.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: Option<u32>,
    promisc: bool,
) -> Result<LinkMessage, CniError> {
    if link_by_name(h, name).await?.is_none() {
        let mut msg = LinkBridge::new(name);
        if let Some(m) = mtu {
            msg = msg.mtu(m);
        }
        match h.link().add(msg.build()).execute().await {
            // A concurrent invocation may have created it first.
            Err(e) if errno(&e) != Some(libc::EEXIST) => {
                return Err(nl_err(format_args!("create bridge {name}"))(e));
            }
            _ => {}
        }
    }
    let bridge = require_link(h, name).await?;
    if kind(&bridge) != Some(&InfoKind::Bridge) {
        return Err(CniError::new(
            super::error::GENERIC,
            format!("link {name} already exists and is not a bridge"),
        ));
    }
    if !is_up(&bridge) || promisc {
        let mut msg = LinkUnspec::new_with_index(bridge.header.index).up();
        if promisc {
            msg = msg.promiscuous(true);
        }
        h.link()
            .set(msg.build())
            .execute()
            .await
            .map_err(nl_err(format_args!("set bridge {name} up")))?;
    }
    Ok(bridge)
}

/// The address messages of the link with `index`.
async fn address_messages(h: &Handle, index: u32) -> Result<Vec<AddressMessage>, CniError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err(format_args!("list addresses of link {index}")))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .collect())
}

/// The IPv4 addresses (with prefix lengths) of the link with `index`.
pub(crate) async fn ipv4_addresses(
    h: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, CniError> {
    Ok(address_messages(h, index)
        .await?
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// Gives the link with `index` the address `ip/prefix` unless it already has it.
pub(crate) async fn ensure_address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), CniError> {
    if ipv4_addresses(h, index).await?.contains(&(ip, prefix)) {
        return Ok(());
    }
    match h
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
    {
        Err(e) if errno(&e) != Some(libc::EEXIST) => {
            Err(nl_err(format_args!("add address {ip}/{prefix}"))(e))
        }
        _ => Ok(()),
    }
}

/// Removes the address `ip/prefix` from the link with `index` (nothing when it lacks it).
pub(crate) async fn delete_address(
    h: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<(), CniError> {
    for m in address_messages(h, index).await? {
        let matches = m.header.prefix_len == prefix
            && m.attributes
                .contains(&AddressAttribute::Local(IpAddr::V4(ip)));
        if !matches {
            continue;
        }
        match h.address().del(m).execute().await {
            Err(e) if errno(&e) != Some(libc::EADDRNOTAVAIL) => {
                return Err(nl_err(format_args!("delete address {ip}/{prefix}"))(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates a veth pair: `host` in the current namespace and `peer` directly inside the
/// namespace `netns`, both with `mtu` when given.
pub(crate) async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    mtu: Option<u32>,
    netns: &File,
) -> Result<(), CniError> {
    let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(netns.as_raw_fd());
    let mut msg = LinkVeth::new(host, peer);
    if let Some(m) = mtu {
        peer_msg = peer_msg.mtu(m);
        msg = msg.mtu(m);
    }
    let msg = msg.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
    h.link()
        .add(msg.build())
        .execute()
        .await
        .map_err(nl_err(format_args!("create veth pair {host} / {peer}")))
}

/// Turns on hairpin mode of the bridge port with `index`.
pub(crate) async fn set_hairpin(h: &Handle, index: u32) -> Result<(), CniError> {
    h.link()
        .set_port(LinkBridgePort::new(index).hairpin(true).build())
        .execute()
        .await
        .map_err(nl_err(format_args!("set hairpin mode on link {index}")))
}

/// Deletes the link `name`; `Ok(false)` when it did not exist.
pub(crate) async fn delete_link(h: &Handle, name: &str) -> Result<bool, CniError> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl_err(format_args!("delete link {name}"))(e)),
    }
}

/// Adds the route `dst` via `gw` out of the link with `index` (an existing one is kept).
pub(crate) async fn add_route(
    h: &Handle,
    dst: Ipv4Net,
    gw: Ipv4Addr,
    index: u32,
) -> Result<(), CniError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.addr, dst.prefix)
        .gateway(gw)
        .output_interface(index)
        .build();
    match h.route().add(msg).execute().await {
        Err(e) if errno(&e) != Some(libc::EEXIST) => {
            Err(nl_err(format_args!("add route {dst} via {gw}"))(e))
        }
        _ => Ok(()),
    }
}

/// Turns on IPv4 forwarding in the calling thread's network namespace, if it is off.
pub(crate) fn enable_ipv4_forwarding() -> Result<(), CniError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let cur = std::fs::read_to_string(PATH)
        .map_err(|e| CniError::generic("failed to read net.ipv4.ip_forward", e))?;
    if cur.trim() != "1" {
        std::fs::write(PATH, "1")
            .map_err(|e| CniError::generic("failed to enable net.ipv4.ip_forward", e))?;
    }
    Ok(())
}
