//! kubox's own CNI plugin (spec 1.0.0, also answering 0.3.0/0.3.1/0.4.0 configs): `bridge`
//! with built-in host-local IPAM, and `loopback`. The `kubox` binary reaches [`main`] when
//! it is exec'd through a link named after one of [`PLUGINS`].
//!
//! The bridge lives in the namespace the plugin runs in (the node's); each container gets a
//! veth pair whose host end (`veth` + 8 hex digits, see [`host_veth_name`]) is a port of the
//! bridge and whose other end is `CNI_IFNAME` inside `CNI_NETNS`. Allocations are files under
//! `<dataDir>/<network name>/`, in host-local's format, so state survives plugin upgrades.

mod bridge;
mod config;
pub(crate) mod error;
mod ipam;
mod loopback;
pub(crate) mod netlink;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use serde_json::{Value, json};

pub use bridge::host_veth_name;
use config::CniVersion;
use error::{CniError, GENERIC, INVALID_CONFIG, INVALID_ENV};

/// Plugin names (`argv[0]` file names) this module answers to.
pub const PLUGINS: &[&str] = &["bridge", "loopback"];

/// The CNI spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The CNI spec version this plugin implements (and answers VERSION in).
pub const CURRENT_VERSION: &str = "1.0.0";

/// A CNI command that acts on a container (VERSION is handled before these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it and free what it held.
    Del,
    /// Verify the attachment is as ADD left it.
    Check,
}

/// The container-related environment of one invocation.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS, when set and non-empty.
    pub netns: Option<String>,
    /// CNI_IFNAME.
    pub ifname: String,
}

impl Request {
    /// CNI_NETNS, or an invalid-environment error when it is missing.
    pub fn netns_required(&self) -> Result<&str, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_NETNS is required"))
    }
}

/// Opens a network namespace file (`/var/run/netns/X`, `/proc/PID/ns/net`).
pub(crate) fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(
            INVALID_ENV,
            format!("failed to open network namespace {path}"),
        )
        .details(e)
    })
}

/// One `ips` entry of a result, in the shape of `version`.
pub(crate) fn ip_entry(
    version: CniVersion,
    address: &str,
    gateway: Option<Ipv4Addr>,
    interface: usize,
) -> Value {
    let mut entry = serde_json::Map::new();
    if version.ips_have_version() {
        entry.insert("version".into(), json!("4"));
    }
    entry.insert("address".into(), json!(address));
    if let Some(gw) = gateway {
        entry.insert("gateway".into(), json!(gw.to_string()));
    }
    entry.insert("interface".into(), json!(interface));
    Value::Object(entry)
}

/// Runs one CNI invocation of `plugin` ("bridge" or "loopback"): CNI_COMMAND, CNI_CONTAINERID,
/// CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH come from `env`; the network config from `stdin`.
/// Writes the result (or a CNI error object {"cniVersion","code","msg","details"}) to `stdout`
/// and returns the process exit code (0 ok, 1 error). Never panics.
pub fn main(
    plugin: &str,
    env: &HashMap<String, String>,
    stdin: &[u8],
    stdout: &mut dyn Write,
) -> i32 {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| dispatch(plugin, env, stdin)))
        .unwrap_or_else(|_| Err(CniError::new(GENERIC, "the CNI plugin panicked")));
    match outcome {
        Ok(None) => 0,
        Ok(Some(result)) => match write_json(stdout, &result) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(e) => {
            let version = config::parse_version(stdin)
                .map(CniVersion::as_str)
                .unwrap_or(CURRENT_VERSION);
            let _ = write_json(stdout, &e.to_json(version));
            1
        }
    }
}

fn write_json(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The VERSION reply.
fn version_info() -> Value {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// Whether `id` is a valid container id (alphanumerics, then also `_`, `.`, `-`).
fn valid_container_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn dispatch(
    plugin: &str,
    env: &HashMap<String, String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let var = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let cmd = match var("CNI_COMMAND") {
        Some("VERSION") => return Ok(Some(version_info())),
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some(other) => {
            return Err(CniError::new(
                INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
            ));
        }
        None => return Err(CniError::new(INVALID_ENV, "CNI_COMMAND is required")),
    };
    let container_id = var("CNI_CONTAINERID")
        .ok_or_else(|| CniError::new(INVALID_ENV, "CNI_CONTAINERID is required"))?;
    if !valid_container_id(container_id) {
        return Err(CniError::new(
            INVALID_ENV,
            format!("invalid CNI_CONTAINERID {container_id:?}"),
        ));
    }
    let ifname =
        var("CNI_IFNAME").ok_or_else(|| CniError::new(INVALID_ENV, "CNI_IFNAME is required"))?;
    if !config::valid_ifname(ifname) {
        return Err(CniError::new(
            INVALID_ENV,
            format!("invalid CNI_IFNAME {ifname:?}"),
        ));
    }
    let req = Request {
        container_id: container_id.to_string(),
        netns: var("CNI_NETNS").map(str::to_string),
        ifname: ifname.to_string(),
    };
    match plugin {
        "bridge" => bridge::run(cmd, &req, stdin),
        "loopback" => loopback::run(cmd, &req, stdin),
        other => Err(CniError::new(
            INVALID_CONFIG,
            format!("unknown plugin {other:?}: this binary provides {PLUGINS:?}"),
        )),
    }
}

/// The conflist a node agent writes to its CNI conf dir (name "kubox", cniVersion "1.0.0"):
/// the bridge plugin with `bridge`, `isGateway: true`, `ipMasq: false`, `hairpinMode: true`,
/// `mtu`, and host-local style IPAM over `pod_cidr` keeping its state under `state_dir`,
/// with a default route. containerd runs loopback itself, so only the bridge is listed.
pub fn conflist(pod_cidr: &str, bridge: &str, mtu: u32, state_dir: &Path) -> String {
    let conf = json!({
        "cniVersion": CURRENT_VERSION,
        "name": "kubox",
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr}]],
                "dataDir": state_dir.to_string_lossy(),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    });
    // Serialising a `Value` cannot fail; fall back to the compact form all the same.
    serde_json::to_string_pretty(&conf).unwrap_or_else(|_| conf.to_string())
}

/// Creates the node's pod bridge as the first ADD of [`conflist`]'s network would (`bridge`
/// with `mtu`, up, holding the gateway `gateway/prefix`), so that node services can listen on
/// the gateway before any pod exists (the node-local cluster DNS does). Idempotent.
pub fn ensure_gateway(bridge: &str, mtu: u32, gateway: Ipv4Addr, prefix: u8) -> Result<(), String> {
    netlink::run(None, |h| async move {
        let link = netlink::ensure_bridge(&h, bridge, Some(mtu), false).await?;
        netlink::ensure_address(&h, link.header.index, gateway, prefix).await
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call(plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> (i32, Value) {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out = Vec::new();
        let code = main(plugin, &env, stdin, &mut out);
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (code, v)
    }

    #[test]
    fn version_command() {
        let (code, v) = call("bridge", &[("CNI_COMMAND", "VERSION")], b"");
        assert_eq!(code, 0);
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]})
        );
    }

    #[test]
    fn environment_errors() {
        let conf = br#"{"cniVersion":"0.4.0","name":"n","type":"loopback"}"#;
        let (code, v) = call("loopback", &[], conf);
        assert_eq!((code, v["code"].as_u64()), (1, Some(4)));
        assert_eq!(v["cniVersion"], "0.4.0");
        let (_, v) = call("loopback", &[("CNI_COMMAND", "FROB")], conf);
        assert_eq!(v["code"], 4);
        let (_, v) = call(
            "loopback",
            &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "lo")],
            conf,
        );
        assert_eq!(v["code"], 4);
        assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (_, v) = call("loopback", &base, conf);
        assert_eq!(v["code"], 4);
        assert!(v["msg"].as_str().unwrap().contains("CNI_NETNS"));
        let (_, v) = call(
            "loopback",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "../x"),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
        );
        assert_eq!(v["code"], 4);
        let (_, v) = call(
            "loopback",
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "a/b"),
            ],
            conf,
        );
        assert_eq!(v["code"], 4);
        let mut env = base.to_vec();
        env.push(("CNI_NETNS", "/nonexistent/netns"));
        let (_, v) = call("loopback", &env, conf);
        assert_eq!(v["code"], 4);
        assert!(v["details"].as_str().unwrap().contains("No such file"));
    }

    #[test]
    fn config_errors() {
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (code, v) = call("bridge", &env, b"not json");
        assert_eq!((code, v["code"].as_u64()), (1, Some(6)));
        assert_eq!(v["cniVersion"], "1.0.0");
        let (_, v) = call("bridge", &env, br#"{"cniVersion":"0.2.0","name":"n"}"#);
        assert_eq!(v["code"], 1);
        let (_, v) = call(
            "bridge",
            &env,
            br#"{"cniVersion":"0.3.1","name":"n","ipam":{"type":"dhcp"}}"#,
        );
        assert_eq!(
            (v["code"].as_u64(), v["cniVersion"].as_str()),
            (Some(7), Some("0.3.1"))
        );
        let (_, v) = call("macvlan", &env, br#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!(v["code"], 7);
    }

    #[test]
    fn loopback_del_is_a_noop_and_check_needs_040() {
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "lo"),
        ];
        let (code, v) = call("loopback", &env, br#"{"cniVersion":"1.0.0","name":"lo"}"#);
        assert_eq!((code, v), (0, Value::Null));
        let env = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "lo"),
            ("CNI_NETNS", "/proc/self/ns/net"),
        ];
        let (code, v) = call("loopback", &env, br#"{"cniVersion":"0.3.1","name":"lo"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
    }

    #[test]
    fn ip_entries_follow_the_version() {
        let gw = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            ip_entry(CniVersion::V031, "10.0.0.5/24", gw, 2),
            json!({"version":"4","address":"10.0.0.5/24","gateway":"10.0.0.1","interface":2})
        );
        assert_eq!(
            ip_entry(CniVersion::V100, "127.0.0.1/8", None, 0),
            json!({"address":"127.0.0.1/8","interface":0})
        );
    }

    #[test]
    fn conflist_shape() {
        let text = conflist(
            "10.42.1.0/24",
            "cni0",
            1450,
            Path::new("/var/lib/kubox/cni"),
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "kubox");
        let plugins = v["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1);
        let b = &plugins[0];
        assert_eq!(b["type"], "bridge");
        assert_eq!(b["bridge"], "cni0");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["ipMasq"], false);
        assert_eq!(b["hairpinMode"], true);
        assert_eq!(b["mtu"], 1450);
        assert_eq!(
            b["ipam"],
            json!({"type":"host-local","ranges":[[{"subnet":"10.42.1.0/24"}]],
                   "dataDir":"/var/lib/kubox/cni","routes":[{"dst":"0.0.0.0/0"}]})
        );
        // The plugin accepts what the agent writes (as containerd hands it one plugin).
        let mut one = b.clone();
        one["cniVersion"] = v["cniVersion"].clone();
        one["name"] = v["name"].clone();
        let conf = config::parse_bridge(one.to_string().as_bytes()).unwrap();
        assert_eq!(conf.bridge, "cni0");
        assert_eq!(conf.mtu, Some(1450));
        assert!(conf.is_gateway && conf.hairpin);
    }
}
