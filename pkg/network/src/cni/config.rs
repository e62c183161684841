//! Decoding and validation of the network config a runtime passes on stdin.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::error::{CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG};

/// The data dir host-local uses when the config names none.
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// The bridge name used when the config names none.
pub(crate) const DEFAULT_BRIDGE: &str = "cni0";

/// A CNI spec version this plugin speaks; replies are written in the config's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CniVersion {
    /// 0.3.0
    V030,
    /// 0.3.1
    V031,
    /// 0.4.0
    V040,
    /// 1.0.0
    V100,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 4] = [Self::V030, Self::V031, Self::V040, Self::V100];

    /// Parses a version string; `None` when unsupported.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The version as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V030 => "0.3.0",
            Self::V031 => "0.3.1",
            Self::V040 => "0.4.0",
            Self::V100 => "1.0.0",
        }
    }

    /// Whether result `ips` entries carry the pre-1.0 `"version": "4"` field.
    pub fn ips_have_version(self) -> bool {
        self < Self::V100
    }

    /// Whether the CHECK command exists in this version (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= Self::V040
    }
}

/// Reads only `cniVersion` from a config, for plugins that need nothing else (loopback).
pub(crate) fn parse_version(stdin: &[u8]) -> Result<CniVersion, CniError> {
    #[derive(Deserialize)]
    struct Base {
        #[serde(rename = "cniVersion", default)]
        cni_version: String,
    }
    let base: Base = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE_FAILURE, "failed to decode network config").details(e))?;
    CniVersion::parse(&base.cni_version).ok_or_else(|| {
        CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI version {:?}: this plugin supports {}",
                base.cni_version,
                CniVersion::ALL.map(CniVersion::as_str).join(", ")
            ),
        )
    })
}

/// An IPv4 network: an address masked to its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Net {
    /// The network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n`, clearing host bits. IPv6 networks are refused with a clear error.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (missing /prefix)"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (bad address)"))?;
        let IpAddr::V4(ip) = ip else {
            return Err(format!("{s:?}: IPv6 is not supported by this plugin"));
        };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?} is not a CIDR (bad prefix length)"))?;
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(ip) & Self::mask_bits(prefix)),
            prefix,
        })
    }

    fn mask_bits(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The broadcast (last) address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !Self::mask_bits(self.prefix))
    }

    /// Whether `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_bits(self.prefix) == u32::from(self.addr)
    }

    /// Whether this is the default route's network, 0.0.0.0/0.
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One allocatable range of a subnet: host-local's `{subnet, rangeStart, rangeEnd, gateway}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    /// The subnet the addresses belong to.
    pub subnet: Ipv4Net,
    /// The first address that may be handed out.
    pub start: Ipv4Addr,
    /// The last address that may be handed out.
    pub end: Ipv4Addr,
    /// The gateway (never handed out); the bridge's address when the plugin is a gateway.
    pub gateway: Ipv4Addr,
}

/// A route to install in the container: `dst` via `gw` (the range's gateway when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The destination network.
    pub dst: Ipv4Net,
    /// The next hop; `None` means the allocated range's gateway.
    pub gw: Option<Ipv4Addr>,
}

/// The validated IPAM section (host-local semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ipam {
    /// The ranges of the (single) range set, tried in order.
    pub ranges: Vec<Range>,
    /// Routes to add in the container.
    pub routes: Vec<Route>,
    /// Where allocations are persisted (`<data_dir>/<network name>/`).
    pub data_dir: PathBuf,
}

/// The validated config of the bridge plugin.
#[derive(Debug, Clone)]
pub(crate) struct BridgeConf {
    /// The config's version; replies are written in it.
    pub version: CniVersion,
    /// The network name (also the IPAM state sub-directory).
    pub name: String,
    /// The bridge device name.
    pub bridge: String,
    /// Whether the bridge gets the gateway address.
    pub is_gateway: bool,
    /// Whether the container gets a default route via the gateway.
    pub is_default_gateway: bool,
    /// Whether the host veth gets hairpin mode on the bridge.
    pub hairpin: bool,
    /// Whether the bridge is put in promiscuous mode.
    pub promisc: bool,
    /// The MTU of the veth pair (and of a newly created bridge); kernel default when `None`.
    pub mtu: Option<u32>,
    /// The IPAM section.
    pub ipam: Ipam,
    /// The `dns` section, echoed in the result.
    pub dns: Value,
    /// The previous result (CHECK), if any.
    pub prev_result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default)]
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    dns: Option<Value>,
    #[serde(default)]
    prev_result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    data_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
}

/// Whether `name` is usable as a Linux interface name (1..=15 bytes, no `/`, `:` or space).
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Parses and validates the bridge plugin's config.
pub(crate) fn parse_bridge(stdin: &[u8]) -> Result<BridgeConf, CniError> {
    let version = parse_version(stdin)?;
    let raw: RawConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE_FAILURE, "failed to decode network config").details(e))?;
    if raw.name.is_empty() || raw.name == "." || raw.name == ".." || raw.name.contains(['/', '\0'])
    {
        return Err(invalid(format!("invalid network name {:?}", raw.name)));
    }
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    if !valid_ifname(&bridge) {
        return Err(invalid(format!("invalid bridge name {bridge:?}")));
    }
    if raw.ip_masq {
        return Err(invalid(
            "ipMasq is not supported by kubox's bridge plugin (masquerading is the node agent's job)",
        ));
    }
    let mtu = raw.mtu.filter(|m| *m != 0);
    if let Some(m) = mtu
        && !(68..=65535).contains(&m)
    {
        return Err(invalid(format!("invalid mtu {m}")));
    }
    let ipam = parse_ipam(raw.ipam.ok_or_else(|| invalid("missing ipam section"))?)?;
    Ok(BridgeConf {
        version,
        name: raw.name,
        bridge,
        is_gateway: raw.is_gateway || raw.is_default_gateway,
        is_default_gateway: raw.is_default_gateway,
        hairpin: raw.hairpin_mode,
        promisc: raw.promisc_mode,
        mtu,
        ipam,
        dns: raw
            .dns
            .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        prev_result: raw.prev_result,
    })
}

fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr, CniError> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err(invalid(format!(
            "{field} {s:?}: IPv6 is not supported by this plugin"
        ))),
        Err(_) => Err(invalid(format!("{field} {s:?} is not an IP address"))),
    }
}

fn parse_ipam(raw: RawIpam) -> Result<Ipam, CniError> {
    if raw.kind != "host-local" {
        return Err(invalid(format!(
            "unsupported ipam type {:?}: only host-local is built in",
            raw.kind
        )));
    }
    let mut sets = raw.ranges;
    if sets.is_empty() {
        let subnet = raw
            .subnet
            .ok_or_else(|| invalid("ipam needs ranges (or a subnet)"))?;
        sets.push(vec![RawRange {
            subnet,
            range_start: raw.range_start,
            range_end: raw.range_end,
            gateway: raw.gateway,
        }]);
    }
    if sets.len() != 1 {
        return Err(invalid(
            "ipam: exactly one range set is supported (one IPv4 address per container)",
        ));
    }
    let mut ranges = Vec::new();
    for r in sets.into_iter().flatten() {
        let range = parse_range(r)?;
        if let Some(other) = ranges.iter().find(|o: &&Range| {
            u32::from(o.start) <= u32::from(range.end) && u32::from(range.start) <= u32::from(o.end)
        }) {
            return Err(invalid(format!(
                "ipam ranges {}-{} and {}-{} overlap",
                other.start, other.end, range.start, range.end
            )));
        }
        ranges.push(range);
    }
    if ranges.is_empty() {
        return Err(invalid("ipam range set is empty"));
    }
    let routes = raw
        .routes
        .into_iter()
        .map(|r| {
            Ok(Route {
                dst: Ipv4Net::parse(&r.dst).map_err(|e| invalid(format!("ipam route: {e}")))?,
                gw: r
                    .gw
                    .as_deref()
                    .map(|g| parse_ip("route gw", g))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, CniError>>()?;
    let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()));
    Ok(Ipam {
        ranges,
        routes,
        data_dir,
    })
}

fn parse_range(r: RawRange) -> Result<Range, CniError> {
    let subnet = Ipv4Net::parse(&r.subnet).map_err(|e| invalid(format!("ipam subnet: {e}")))?;
    if subnet.prefix > 30 {
        return Err(invalid(format!(
            "ipam subnet {subnet} is too small (prefix must be /30 or shorter)"
        )));
    }
    let net = u32::from(subnet.addr);
    let bcast = u32::from(subnet.broadcast());
    let inside = |field: &str, ip: Ipv4Addr| {
        let n = u32::from(ip);
        if n <= net || n >= bcast {
            Err(invalid(format!(
                "{field} {ip} is not a usable address of {subnet}"
            )))
        } else {
            Ok(ip)
        }
    };
    let start = match r.range_start.as_deref() {
        Some(s) => inside("rangeStart", parse_ip("rangeStart", s)?)?,
        None => Ipv4Addr::from(net + 1),
    };
    let end = match r.range_end.as_deref() {
        Some(s) => inside("rangeEnd", parse_ip("rangeEnd", s)?)?,
        None => Ipv4Addr::from(bcast - 1),
    };
    if u32::from(start) > u32::from(end) {
        return Err(invalid(format!(
            "rangeStart {start} is after rangeEnd {end}"
        )));
    }
    let gateway = match r.gateway.as_deref() {
        Some(s) => inside("gateway", parse_ip("gateway", s)?)?,
        None => Ipv4Addr::from(net + 1),
    };
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn conf(version: &str, ipam: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"{version}","name":"kubox","type":"bridge","bridge":"kbr0",
                "isGateway":true,"hairpinMode":true,"mtu":1450,"ipam":{ipam}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn parses_versions() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
            let c = parse_bridge(&conf(
                v,
                r#"{"type":"host-local","ranges":[[{"subnet":"10.42.1.0/24"}]]}"#,
            ))
            .unwrap();
            assert_eq!(c.version.as_str(), v);
        }
        assert!(CniVersion::V031.ips_have_version());
        assert!(!CniVersion::V100.ips_have_version());
        assert!(!CniVersion::V031.has_check());
        assert!(CniVersion::V040.has_check());
        let e = parse_version(br#"{"cniVersion":"0.2.0"}"#).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        let e = parse_version(br#"{"name":"x"}"#).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        let e = parse_version(b"{not json").unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
    }

    #[test]
    fn defaults_of_a_range() {
        let c = parse_bridge(&conf(
            "1.0.0",
            r#"{"type":"host-local","ranges":[[{"subnet":"10.42.1.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/tmp/x"}"#,
        ))
        .unwrap();
        assert_eq!(c.bridge, "kbr0");
        assert!(c.is_gateway && c.hairpin && !c.is_default_gateway);
        assert_eq!(c.mtu, Some(1450));
        let r = &c.ipam.ranges[0];
        assert_eq!(r.subnet.to_string(), "10.42.1.0/24");
        assert_eq!(r.start, Ipv4Addr::new(10, 42, 1, 1));
        assert_eq!(r.end, Ipv4Addr::new(10, 42, 1, 254));
        assert_eq!(r.gateway, Ipv4Addr::new(10, 42, 1, 1));
        assert_eq!(c.ipam.routes.len(), 1);
        assert!(c.ipam.routes[0].dst.is_default());
        assert_eq!(c.ipam.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.dns, serde_json::json!({}));
    }

    #[test]
    fn legacy_subnet_and_explicit_bounds() {
        let c = parse_bridge(&conf(
            "0.3.1",
            r#"{"type":"host-local","subnet":"10.1.2.7/28","rangeStart":"10.1.2.4","rangeEnd":"10.1.2.9","gateway":"10.1.2.14"}"#,
        ))
        .unwrap();
        let r = &c.ipam.ranges[0];
        assert_eq!(r.subnet.to_string(), "10.1.2.0/28");
        assert_eq!(r.start, Ipv4Addr::new(10, 1, 2, 4));
        assert_eq!(r.end, Ipv4Addr::new(10, 1, 2, 9));
        assert_eq!(r.gateway, Ipv4Addr::new(10, 1, 2, 14));
        assert_eq!(c.ipam.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = [
            r#"{"type":"dhcp"}"#,
            r#"{"type":"host-local"}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"fd00::/64"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/31"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.3"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.0.0/25"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.1.0/24"}]]}"#,
            r#"{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]],"routes":[{"dst":"nope"}]}"#,
        ];
        for ipam in bad {
            let e = parse_bridge(&conf("1.0.0", ipam)).unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG, "{ipam}: {e:?}");
        }
        let e = parse_bridge(br#"{"cniVersion":"1.0.0","name":"","ipam":{}}"#).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = parse_bridge(br#"{"cniVersion":"1.0.0","name":"n","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}"#).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = parse_bridge(br#"{"cniVersion":"1.0.0","name":"n","bridge":"a-very-long-bridge-name","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}"#).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        let e = parse_bridge(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":"x"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
    }

    #[test]
    fn ipv4_net_math() {
        let n = Ipv4Net::parse("10.42.0.0/16").unwrap();
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 42, 255, 255));
        assert!(n.contains(Ipv4Addr::new(10, 42, 3, 4)));
        assert!(!n.contains(Ipv4Addr::new(10, 43, 0, 1)));
        let d = Ipv4Net::parse("0.0.0.0/0").unwrap();
        assert!(d.is_default() && d.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(d.broadcast(), Ipv4Addr::BROADCAST);
        assert!(Ipv4Net::parse("10.0.0.0/33").is_err());
        assert!(Ipv4Net::parse("10.0.0.0").is_err());
        assert!(valid_ifname("eth0") && !valid_ifname("") && !valid_ifname("a/b"));
        assert!(!valid_ifname("0123456789abcdef"));
    }
}
