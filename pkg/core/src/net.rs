//! Address ranges from configuration: CIDRs and port ranges; URL query strings.

use std::net::Ipv4Addr;

/// An IPv4 network such as 10.43.0.0/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`; the address is normalised to the network address.
    pub fn parse(s: &str) -> Result<Ipv4Cidr, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.43.0.0/16)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} in {s:?} is not a prefix length between 0 and 32"))?;
        Ok(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask_of(prefix)),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.addr)
    }

    /// The `n`th address of the network (1 = first usable).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a port range `30000-32767` (inclusive, low <= high).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range (expected e.g. 30000-32767)"))?;
    let lo: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} in {s:?} is not a port number"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} in {s:?} is not a port number"))?;
    if lo == 0 || lo > hi {
        return Err(format!(
            "{s:?} is not a valid port range (low must be between 1 and high)"
        ));
    }
    Ok((lo, hi))
}

/// The `key=value` pairs of a URL query string (`application/x-www-form-urlencoded`: `+` is a
/// space, `%XX` a byte), in order, repeated keys included.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Escapes a URL query component: every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// becomes `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (a space) of a URL query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_round_trip() {
        let raw = "2024-05-01T10:00:00+02:00 a/b&c=d";
        let q = format!("sinceTime={}&x=1+2&x=%ZZ", percent_encode(raw));
        assert_eq!(
            parse_query(&q),
            vec![
                ("sinceTime".to_string(), raw.to_string()),
                ("x".to_string(), "1 2".to_string()),
                ("x".to_string(), "%ZZ".to_string()),
            ]
        );
    }

    #[test]
    fn cidrs_parse_normalise_and_contain() {
        let c = Ipv4Cidr::parse("10.43.7.9/16").unwrap_or(Ipv4Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        });
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 43, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(c.nth(10), Some(Ipv4Addr::new(10, 43, 0, 10)));
        assert!(Ipv4Cidr::parse("10.43.0.0").is_err());
        assert!(Ipv4Cidr::parse("10.43.0.0/33").is_err());
        assert!(Ipv4Cidr::parse("banana/8").is_err());
    }

    #[test]
    fn port_ranges_parse_and_reject_nonsense() {
        assert_eq!(parse_port_range("30000-32767"), Ok((30000, 32767)));
        assert!(parse_port_range("32767-30000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("30000").is_err());
    }
}
