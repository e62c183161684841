//! Node pressure: the kubelet's hard eviction signals and thresholds (`--eviction-hard`,
//! upstream's syntax and Linux defaults) behind the MemoryPressure, DiskPressure and
//! PIDPressure conditions. The node lifecycle controller turns those conditions into
//! `node.kubernetes.io/*-pressure:NoSchedule` taints, which the scheduler honours.
//!
//! Signals, as the kubelet computes them on a node without a cgroup-wide working set:
//! `memory.available` is `MemAvailable` from /proc/meminfo; `nodefs.*` are the filesystem of
//! the data dir, `imagefs.*` the one holding containerd's root; `pid.available` is
//! `kernel.pid_max` minus the running processes.

use std::path::{Path, PathBuf};

/// Upstream's default hard eviction thresholds on Linux.
pub const DEFAULT_EVICTION_HARD: &str =
    "imagefs.available<15%,memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "imagefs.inodesFree" => Signal::ImagefsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }
}

/// A threshold's value: an absolute quantity or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    Absolute(u128),
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
struct Threshold {
    signal: Signal,
    amount: Amount,
}

/// The hard eviction thresholds of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds(Vec<Threshold>);

impl Default for Thresholds {
    fn default() -> Self {
        // The constant is well formed (checked by a test); an empty set only loses pressure.
        DEFAULT_EVICTION_HARD
            .parse()
            .unwrap_or(Thresholds(Vec::new()))
    }
}

impl std::str::FromStr for Thresholds {
    type Err = String;

    /// Parses `signal<quantity` or `signal<N%` items separated by commas; empty means none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('<').ok_or_else(|| {
                format!("eviction threshold {item:?} must look like signal<quantity (only \"<\" is supported)")
            })?;
            let signal = Signal::parse(name.trim()).ok_or_else(|| {
                format!("unknown eviction signal {name:?}; known: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available")
            })?;
            let value = value.trim();
            let amount = match value.strip_suffix('%') {
                Some(p) => match p.parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Amount::Percent(p),
                    _ => {
                        return Err(format!(
                            "eviction threshold {item:?}: percentage must be between 0 and 100"
                        ));
                    }
                },
                None => match kubox_core::quantity::parse_milli(value) {
                    Some(m) if m >= 0 => Amount::Absolute((m as u128).div_ceil(1000)),
                    _ => {
                        return Err(format!(
                            "eviction threshold {item:?}: {value:?} is not a quantity"
                        ));
                    }
                },
            };
            out.retain(|t: &Threshold| t.signal != signal);
            out.push(Threshold { signal, amount });
        }
        Ok(Thresholds(out))
    }
}

/// How much of a resource is available out of a capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    available: u128,
    capacity: u128,
}

/// Which pressure conditions hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// Where the node's filesystems are.
#[derive(Debug, Clone)]
pub struct Filesystems {
    /// The kubelet's root (volumes, logs): the data dir.
    pub nodefs: PathBuf,
    /// containerd's root (images, writable layers).
    pub imagefs: PathBuf,
}

impl Thresholds {
    /// Evaluates the thresholds against the node's current signals.
    pub fn evaluate(&self, fs: &Filesystems) -> Pressure {
        self.evaluate_with(|s| observe(s, fs))
    }

    fn evaluate_with(&self, observe: impl Fn(Signal) -> Option<Observation>) -> Pressure {
        let mut p = Pressure::default();
        for t in &self.0 {
            let Some(o) = observe(t.signal) else { continue };
            let limit = match t.amount {
                Amount::Absolute(v) => v,
                Amount::Percent(pct) => (o.capacity as f64 * pct / 100.0) as u128,
            };
            if o.available < limit {
                match t.signal {
                    Signal::MemoryAvailable => p.memory = true,
                    Signal::PidAvailable => p.pid = true,
                    _ => p.disk = true,
                }
            }
        }
        p
    }
}

fn observe(signal: Signal, fs: &Filesystems) -> Option<Observation> {
    let statvfs = |path: &Path| nix::sys::statvfs::statvfs(path).ok();
    match signal {
        Signal::MemoryAvailable => {
            let info = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib = |key: &str| -> Option<u128> {
                info.lines()
                    .find(|l| l.starts_with(key))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u128>()
                    .ok()
                    .map(|v| v * 1024)
            };
            Some(Observation {
                available: kib("MemAvailable:")?,
                capacity: kib("MemTotal:")?,
            })
        }
        Signal::NodefsAvailable | Signal::ImagefsAvailable => {
            let path = if signal == Signal::NodefsAvailable {
                &fs.nodefs
            } else {
                &fs.imagefs
            };
            let s = statvfs(path)?;
            let unit = s.fragment_size() as u128;
            Some(Observation {
                available: s.blocks_available() as u128 * unit,
                capacity: s.blocks() as u128 * unit,
            })
        }
        Signal::NodefsInodesFree | Signal::ImagefsInodesFree => {
            let path = if signal == Signal::NodefsInodesFree {
                &fs.nodefs
            } else {
                &fs.imagefs
            };
            let s = statvfs(path)?;
            // Filesystems without inode accounting (btrfs, overlay on some kernels) report 0.
            (s.files() > 0).then(|| Observation {
                available: s.files_available() as u128,
                capacity: s.files() as u128,
            })
        }
        Signal::PidAvailable => {
            let max: u128 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let running = std::fs::read_dir("/proc")
                .ok()?
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u128;
            Some(Observation {
                available: max.saturating_sub(running),
                capacity: max,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults_parse() {
        let t: Thresholds = DEFAULT_EVICTION_HARD.parse().unwrap();
        assert_eq!(t.0.len(), 4);
        assert_eq!(t, Thresholds::default());
        assert!(t.0.contains(&Threshold {
            signal: Signal::MemoryAvailable,
            amount: Amount::Absolute(100 * 1024 * 1024),
        }));
    }

    #[test]
    fn bad_thresholds_say_what_is_wrong() {
        let e = "memory.available>1Gi".parse::<Thresholds>().unwrap_err();
        assert!(e.contains("signal<quantity"), "{e}");
        let e = "cpu.available<1".parse::<Thresholds>().unwrap_err();
        assert!(e.contains("unknown eviction signal"), "{e}");
        let e = "nodefs.available<120%".parse::<Thresholds>().unwrap_err();
        assert!(e.contains("between 0 and 100"), "{e}");
        let e = "memory.available<lots".parse::<Thresholds>().unwrap_err();
        assert!(e.contains("not a quantity"), "{e}");
        assert_eq!("".parse::<Thresholds>().unwrap().0.len(), 0);
    }

    #[test]
    fn a_signal_below_its_threshold_is_pressure_of_its_kind() {
        let t: Thresholds = "memory.available<1Gi,nodefs.available<10%,pid.available<100"
            .parse()
            .unwrap();
        let obs = |mem: u128, disk: u128, pids: u128| {
            move |s: Signal| {
                Some(match s {
                    Signal::MemoryAvailable => Observation {
                        available: mem,
                        capacity: 8 << 30,
                    },
                    Signal::PidAvailable => Observation {
                        available: pids,
                        capacity: 4096,
                    },
                    _ => Observation {
                        available: disk,
                        capacity: 1000,
                    },
                })
            }
        };
        assert_eq!(
            t.evaluate_with(obs(2 << 30, 500, 4000)),
            Pressure::default()
        );
        let p = t.evaluate_with(obs(512 << 20, 99, 50));
        assert_eq!(
            p,
            Pressure {
                memory: true,
                disk: true,
                pid: true
            }
        );
        // Exactly at the threshold is not below it.
        let p = t.evaluate_with(obs(1 << 30, 100, 100));
        assert_eq!(p, Pressure::default());
    }

    #[test]
    fn this_node_is_observable() {
        let dir = std::env::temp_dir();
        let fs = Filesystems {
            nodefs: dir.clone(),
            imagefs: dir,
        };
        for s in [
            Signal::MemoryAvailable,
            Signal::NodefsAvailable,
            Signal::ImagefsAvailable,
            Signal::PidAvailable,
        ] {
            let o = observe(s, &fs).unwrap();
            assert!(o.available <= o.capacity && o.capacity > 0, "{s:?}: {o:?}");
        }
    }
}
