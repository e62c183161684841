//! Host-local style IP address management: one file per allocated IP under
//! `<dataDir>/<network>/`, round-robin allocation, and a `lock` file held with flock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::config::Range;
use super::error::{CniError, GENERIC, TRY_AGAIN_LATER};

/// The file that remembers the last IP handed out (for range set 0), as host-local names it.
const LAST_RESERVED: &str = "last_reserved_ip.0";
/// The file every allocation or release locks (flock) for its whole duration.
const LOCK: &str = "lock";
/// host-local separates the container id from the ifname with this in IP files.
const LINE_BREAK: &str = "\r\n";

/// The on-disk allocation state of one network, locked for as long as it lives.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    /// Held open (and flocked) until the store is dropped.
    _lock: File,
}

impl Store {
    /// Opens (creating it if needed) the state dir of `network` under `data_dir` and takes
    /// its exclusive lock, waiting for any other invocation that holds it.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        let dir = data_dir.join(network);
        let lock = fs::create_dir_all(&dir)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(LOCK))
            })
            .map_err(|e| {
                CniError::generic(format!("failed to open IPAM state {}", dir.display()), e)
            })?;
        // Waiting is blocking, so a failure here (EINTR, ENOLCK) is transient.
        lock.lock()
            .map_err(|e| CniError::new(TRY_AGAIN_LATER, "failed to lock IPAM state").details(e))?;
        Ok(Self { dir, _lock: lock })
    }

    fn ip_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Whether `ip` is held by any container.
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.ip_path(ip).exists()
    }

    /// Records `ip` as held by (`id`, `ifname`); `Ok(false)` when it is already held.
    pub fn reserve(&self, ip: Ipv4Addr, id: &str, ifname: &str) -> io::Result<bool> {
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.ip_path(ip))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        };
        let written = f
            .write_all(format!("{id}{LINE_BREAK}{ifname}").as_bytes())
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(self.ip_path(ip));
            return Err(e);
        }
        fs::write(self.dir.join(LAST_RESERVED), ip.to_string())?;
        Ok(true)
    }

    /// The IP last handed out, if recorded.
    pub fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every (IP, owner text) pair on disk.
    fn entries(&self) -> io::Result<Vec<(Ipv4Addr, String)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(owner) => out.push((ip, owner)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The IPs held by (`id`, `ifname`), also matching host-local's old id-only files.
    pub fn find(&self, id: &str, ifname: &str) -> io::Result<Vec<Ipv4Addr>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, owner)| owner_matches(owner, id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Frees every IP held by (`id`, `ifname`), returning them.
    pub fn release(&self, id: &str, ifname: &str) -> io::Result<Vec<Ipv4Addr>> {
        let ips = self.find(id, ifname)?;
        for ip in &ips {
            self.release_ip(*ip)?;
        }
        Ok(ips)
    }

    /// Frees `ip` whoever holds it; freeing a free IP is not an error.
    pub fn release_ip(&self, ip: Ipv4Addr) -> io::Result<()> {
        match fs::remove_file(self.ip_path(ip)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn owner_matches(owner: &str, id: &str, ifname: &str) -> bool {
    let owner = owner.trim();
    match owner.split_once(LINE_BREAK) {
        Some((oid, oif)) => oid.trim() == id && oif.trim() == ifname,
        None => owner == id,
    }
}

/// The addresses of `ranges` in allocation order after `last`: round-robin from the
/// address following `last` (or from the first range's start), each address once,
/// skipping every range's gateway.
pub(crate) fn candidates(
    ranges: &[Range],
    last: Option<Ipv4Addr>,
) -> impl Iterator<Item = (Ipv4Addr, usize)> + '_ {
    let sizes: Vec<u64> = ranges
        .iter()
        .map(|r| u64::from(u32::from(r.end)) - u64::from(u32::from(r.start)) + 1)
        .collect();
    let total: u64 = sizes.iter().sum();
    // Position just after `last` in the flattened list of all ranges.
    let mut first = 0u64;
    if let Some(last) = last {
        let mut base = 0u64;
        for (r, size) in ranges.iter().zip(&sizes) {
            let n = u32::from(last);
            if n >= u32::from(r.start) && n <= u32::from(r.end) {
                first = (base + u64::from(n - u32::from(r.start)) + 1) % total.max(1);
                break;
            }
            base += size;
        }
    }
    (0..total)
        .map(move |i| {
            let mut pos = (first + i) % total;
            let mut idx = 0;
            while pos >= sizes[idx] {
                pos -= sizes[idx];
                idx += 1;
            }
            // `pos` < size of a range whose end is an Ipv4Addr, so this cannot overflow.
            let ip = Ipv4Addr::from(u32::from(ranges[idx].start).wrapping_add(pos as u32));
            (ip, idx)
        })
        .filter(|(ip, _)| ranges.iter().all(|r| r.gateway != *ip))
}

/// An address held for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// The address.
    pub ip: Ipv4Addr,
    /// Index of the range (of the config's range set) it belongs to.
    pub range: usize,
    /// False when the container already held it before this call.
    pub fresh: bool,
}

/// Hands (`id`, `ifname`) an address of `ranges`: the one it already holds if any,
/// else the next free one round-robin. The caller holds `store`, hence the lock.
pub(crate) fn allocate(
    store: &Store,
    ranges: &[Range],
    id: &str,
    ifname: &str,
) -> Result<Allocation, CniError> {
    let io_err = |e: io::Error| CniError::generic("failed to access IPAM state", e);
    for ip in store.find(id, ifname).map_err(io_err)? {
        if let Some(range) = ranges.iter().position(|r| r.subnet.contains(ip)) {
            return Ok(Allocation {
                ip,
                range,
                fresh: false,
            });
        }
    }
    for (ip, range) in candidates(ranges, store.last_reserved()) {
        if store.is_reserved(ip) {
            continue;
        }
        if store.reserve(ip, id, ifname).map_err(io_err)? {
            return Ok(Allocation {
                ip,
                range,
                fresh: true,
            });
        }
    }
    let spans: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    Err(CniError::new(
        GENERIC,
        format!("no IP addresses available in range set {}", spans.join(",")),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::config::Ipv4Net;
    use super::*;

    fn range(cidr: &str, start: u8, end: u8, gw: u8) -> Range {
        let subnet = Ipv4Net::parse(cidr).unwrap();
        let o = subnet.addr.octets();
        let ip = |last: u8| Ipv4Addr::new(o[0], o[1], o[2], last);
        Range {
            subnet,
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        }
    }

    fn ips(it: impl Iterator<Item = (Ipv4Addr, usize)>) -> Vec<String> {
        it.map(|(ip, _)| ip.to_string()).collect()
    }

    #[test]
    fn candidates_skip_gateway_and_wrap() {
        let r = [range("10.0.0.0/29", 1, 6, 1)];
        assert_eq!(
            ips(candidates(&r, None)),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(
            ips(candidates(&r, Some(Ipv4Addr::new(10, 0, 0, 4)))),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // A last IP outside every range restarts at the beginning.
        assert_eq!(
            ips(candidates(&r, Some(Ipv4Addr::new(192, 168, 0, 4))))[0],
            "10.0.0.2"
        );
    }

    #[test]
    fn candidates_span_ranges() {
        let r = [
            range("10.0.0.0/24", 10, 11, 1),
            range("10.0.1.0/24", 20, 21, 1),
        ];
        assert_eq!(
            candidates(&r, Some(Ipv4Addr::new(10, 0, 0, 11))).collect::<Vec<_>>(),
            [
                (Ipv4Addr::new(10, 0, 1, 20), 1),
                (Ipv4Addr::new(10, 0, 1, 21), 1),
                (Ipv4Addr::new(10, 0, 0, 10), 0),
                (Ipv4Addr::new(10, 0, 0, 11), 0),
            ]
        );
        // A /8 is walked lazily.
        let big = [Range {
            subnet: Ipv4Net::parse("10.0.0.0/8").unwrap(),
            start: Ipv4Addr::new(10, 0, 0, 1),
            end: Ipv4Addr::new(10, 255, 255, 254),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
        }];
        assert_eq!(
            candidates(&big, Some(Ipv4Addr::new(10, 255, 255, 254)))
                .next()
                .unwrap()
                .0,
            Ipv4Addr::new(10, 0, 0, 2)
        );
    }

    #[test]
    fn allocate_round_robin_release_and_exhaust() {
        let tmp = tempfile::tempdir().unwrap();
        let r = [range("10.0.0.0/29", 1, 6, 1)];
        let alloc = |id: &str| {
            let s = Store::open(tmp.path(), "net").unwrap();
            allocate(&s, &r, id, "eth0")
        };
        let a = alloc("a").unwrap();
        assert_eq!((a.ip, a.fresh), (Ipv4Addr::new(10, 0, 0, 2), true));
        // Asking again for the same container returns what it holds.
        let again = alloc("a").unwrap();
        assert_eq!((again.ip, again.fresh), (a.ip, false));
        let b = alloc("b").unwrap();
        assert_eq!(b.ip, Ipv4Addr::new(10, 0, 0, 3));
        let s = Store::open(tmp.path(), "net").unwrap();
        assert_eq!(s.release("a", "eth0").unwrap(), vec![a.ip]);
        assert!(s.release("a", "eth0").unwrap().is_empty());
        drop(s);
        // Round robin: the freed .2 is not reused before the range wraps.
        let c = alloc("c").unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(10, 0, 0, 4));
        for id in ["d", "e"] {
            alloc(id).unwrap();
        }
        let f = alloc("f").unwrap();
        assert_eq!(f.ip, Ipv4Addr::new(10, 0, 0, 2));
        let e = alloc("g").unwrap_err();
        assert!(e.msg.contains("no IP addresses available"), "{e:?}");
        let dir = tmp.path().join("net");
        let content = fs::read_to_string(dir.join("10.0.0.3")).unwrap();
        assert_eq!(content, "b\r\neth0");
        assert_eq!(
            fs::read_to_string(dir.join(LAST_RESERVED)).unwrap(),
            "10.0.0.2"
        );
    }

    #[test]
    fn owners_match_by_id_and_ifname() {
        assert!(owner_matches("abc\r\neth0", "abc", "eth0"));
        assert!(owner_matches("abc\r\neth0\n", "abc", "eth0"));
        assert!(!owner_matches("abc\r\neth1", "abc", "eth0"));
        assert!(owner_matches("abc", "abc", "eth0"));
        assert!(!owner_matches("abcd", "abc", "eth0"));
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "net").unwrap();
        assert!(s.reserve(Ipv4Addr::new(10, 0, 0, 9), "x", "eth1").unwrap());
        assert!(!s.reserve(Ipv4Addr::new(10, 0, 0, 9), "y", "eth0").unwrap());
        assert!(s.find("x", "eth0").unwrap().is_empty());
        assert_eq!(s.find("x", "eth1").unwrap(), [Ipv4Addr::new(10, 0, 0, 9)]);
    }

    #[test]
    fn concurrent_allocations_are_distinct() {
        let tmp = tempfile::tempdir().unwrap();
        let r = [range("10.0.0.0/24", 1, 254, 1)];
        let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (tmp, r) = (&tmp, &r);
                    s.spawn(move || {
                        (0..10)
                            .map(|i| {
                                let store = Store::open(tmp.path(), "net").unwrap();
                                allocate(&store, r, &format!("c{t}-{i}"), "eth0")
                                    .unwrap()
                                    .ip
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), got.len());
        assert_eq!(got.len(), 80);
    }
}
