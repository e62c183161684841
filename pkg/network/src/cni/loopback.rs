//! The `loopback` plugin: brings `lo` up inside the container's network namespace.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::config::parse_version;
use super::error::{CniError, GENERIC, INCOMPATIBLE_VERSION};
use super::netlink;
use super::{Command, Request, ip_entry, open_netns};

/// Runs one loopback command; `Ok(Some(result))` is printed on stdout.
pub(crate) fn run(cmd: Command, req: &Request, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let version = parse_version(stdin)?;
    match cmd {
        Command::Add => {
            let netns_path = req.netns_required()?;
            let netns = open_netns(netns_path)?;
            netlink::run(Some(&netns), |h| async move {
                let lo = netlink::require_link(&h, "lo").await?;
                netlink::set_up(&h, lo.header.index, None).await
            })?;
            Ok(Some(json!({
                "cniVersion": version.as_str(),
                "interfaces": [{"name": "lo", "sandbox": netns_path}],
                "ips": [ip_entry(version, "127.0.0.1/8", None::<Ipv4Addr>, 0)],
                "dns": {},
            })))
        }
        // The namespace (and its lo) goes away with the sandbox: nothing to undo.
        Command::Del => Ok(None),
        Command::Check => {
            if !version.has_check() {
                return Err(CniError::new(
                    INCOMPATIBLE_VERSION,
                    format!("CHECK is not supported by cniVersion {}", version.as_str()),
                ));
            }
            let netns = open_netns(req.netns_required()?)?;
            netlink::run(Some(&netns), |h| async move {
                let lo = netlink::require_link(&h, "lo").await?;
                if netlink::is_up(&lo) {
                    Ok(None)
                } else {
                    Err(CniError::new(GENERIC, "lo is down"))
                }
            })
        }
    }
}
