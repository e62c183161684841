//! Resource usage of the node and its pods, as kubelet's `/stats/summary` (the Summary API,
//! `stats/v1alpha1`) and `/metrics/resource` (Prometheus text with upstream's STABLE metric
//! names) give it. Containers come from CRI `ListContainerStats` (cpu, memory, writable
//! layer), pods add what `ListPodSandboxStats` says of their network when containerd answers
//! it; the node's own figures come from `/proc` (cpu time, memory, network devices) and the
//! filesystem of the agent's data dir.
//!
//! CPU rates (`usageNanoCores`) are the difference of cumulative cpu time between this sample
//! and the previous one taken at least a second earlier, as cadvisor's housekeeping gives
//! kubelet; the first sample of a container falls back to the rate CRI reports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use kubox_containerd::cri::{Cri, api};
use serde_json::{Value, json};

use crate::spec::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// Cumulative cpu time at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    /// Nanoseconds since the epoch.
    pub time: i64,
    pub usage_core_nano_seconds: u64,
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    pub time: i64,
    pub working_set_bytes: u64,
    pub usage_bytes: u64,
    pub rss_bytes: u64,
    pub available_bytes: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    pub time: i64,
    /// The first is the default interface.
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fs {
    pub time: i64,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    pub start_time: i64,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub rootfs_used_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start_time: i64,
    pub containers: Vec<ContainerSample>,
    pub network: Option<Network>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    pub name: String,
    pub start_time: i64,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub network: Option<Network>,
    pub fs: Option<Fs>,
}

/// One look at the node and its running pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub node: NodeSample,
    pub pods: Vec<PodSample>,
}

/// A cpu reading: time, cumulative usage, and the rate computed then.
type Reading = (i64, u64, Option<u64>);

/// Takes samples; remembers previous cpu readings to turn cumulative time into rates.
pub struct Stats {
    cri: Cri,
    node_name: String,
    root_dir: PathBuf,
    /// Previous cpu reading by container id ("" for the node).
    previous: Mutex<HashMap<String, Reading>>,
}

impl Stats {
    pub fn new(cri: Cri, node_name: String, root_dir: PathBuf) -> Stats {
        Stats {
            cri,
            node_name,
            root_dir,
            previous: Mutex::new(HashMap::new()),
        }
    }

    /// The rate of `id`'s cpu since its previous reading at least a second ago (that
    /// reading's rate when the previous one is more recent, `fallback` for a first reading).
    fn rate(&self, id: &str, time: i64, usage: u64, fallback: Option<u64>) -> Option<u64> {
        let mut prev = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        match prev.get(id).copied() {
            Some((t, _, r)) if time - t < 1_000_000_000 => r.or(fallback),
            Some((t, u, _)) if usage >= u && time > t => {
                let rate = ((u128::from(usage - u) * 1_000_000_000) / (time - t) as u128) as u64;
                prev.insert(id.to_string(), (time, usage, Some(rate)));
                Some(rate)
            }
            _ => {
                prev.insert(id.to_string(), (time, usage, fallback));
                fallback
            }
        }
    }

    /// Samples the node and every running container.
    pub async fn sample(&self) -> Result<Sample, tonic::Status> {
        let now = now_nanos();
        let mut rt = self.cri.runtime.clone();
        let sandboxes = rt
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    state: Some(api::PodSandboxStateValue {
                        state: api::PodSandboxState::SandboxReady as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let containers = self.cri.running_containers().await?;
        let stats = rt
            .list_container_stats(api::ListContainerStatsRequest { filter: None })
            .await?
            .into_inner()
            .stats;
        // Pod network figures: not every containerd answers this.
        let sandbox_stats: HashMap<String, api::PodSandboxStats> = rt
            .list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
            .await
            .map(|r| r.into_inner().stats)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
            .collect();
        let stats_by_id: HashMap<&str, &api::ContainerStats> = stats
            .iter()
            .filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s)))
            .collect();
        let mut pods = Vec::new();
        for sb in &sandboxes {
            let label = |k: &str| sb.labels.get(k).cloned().unwrap_or_default();
            let mut pod = PodSample {
                namespace: label(LABEL_POD_NAMESPACE),
                name: label(LABEL_POD_NAME),
                uid: label(LABEL_POD_UID),
                start_time: sb.created_at,
                containers: Vec::new(),
                network: sandbox_stats
                    .get(&sb.id)
                    .and_then(|s| s.linux.as_ref())
                    .and_then(|l| l.network.as_ref())
                    .map(network_from_cri),
            };
            if pod.name.is_empty() {
                continue;
            }
            for c in containers.iter().filter(|c| c.pod_sandbox_id == sb.id) {
                let name = c
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default();
                let s = stats_by_id.get(c.id.as_str());
                let cpu = s.and_then(|s| s.cpu.as_ref()).map(|cpu| {
                    let time = if cpu.timestamp > 0 {
                        cpu.timestamp
                    } else {
                        now
                    };
                    let usage = value(&cpu.usage_core_nano_seconds);
                    Cpu {
                        time,
                        usage_core_nano_seconds: usage,
                        usage_nano_cores: self.rate(
                            &c.id,
                            time,
                            usage,
                            cpu.usage_nano_cores.as_ref().map(|v| v.value),
                        ),
                    }
                });
                let memory = s.and_then(|s| s.memory.as_ref()).map(|m| Memory {
                    time: if m.timestamp > 0 { m.timestamp } else { now },
                    working_set_bytes: value(&m.working_set_bytes),
                    usage_bytes: value(&m.usage_bytes),
                    rss_bytes: value(&m.rss_bytes),
                    available_bytes: m.available_bytes.as_ref().map(|v| v.value),
                    page_faults: value(&m.page_faults),
                    major_page_faults: value(&m.major_page_faults),
                });
                pod.containers.push(ContainerSample {
                    name,
                    start_time: c.created_at,
                    cpu,
                    memory,
                    rootfs_used_bytes: s
                        .and_then(|s| s.writable_layer.as_ref())
                        .and_then(|w| w.used_bytes.as_ref())
                        .map(|v| v.value),
                });
            }
            pod.containers.sort_by(|a, b| a.name.cmp(&b.name));
            pods.push(pod);
        }
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let node_cpu = proc_cpu_nanos().map(|usage| Cpu {
            time: now,
            usage_core_nano_seconds: usage,
            usage_nano_cores: self.rate("", now, usage, None),
        });
        let node = NodeSample {
            name: self.node_name.clone(),
            start_time: boot_time_nanos().unwrap_or(0),
            cpu: node_cpu,
            memory: std::fs::read_to_string("/proc/meminfo").ok().map(|m| {
                node_memory(
                    &m,
                    &std::fs::read_to_string("/proc/vmstat").unwrap_or_default(),
                    now,
                )
            }),
            network: std::fs::read_to_string("/proc/net/dev")
                .ok()
                .map(|d| Network {
                    time: now,
                    interfaces: net_dev(&d),
                }),
            fs: nix::sys::statvfs::statvfs(&self.root_dir).ok().map(|s| {
                let frag = s.fragment_size();
                Fs {
                    time: now,
                    capacity_bytes: s.blocks() * frag,
                    available_bytes: s.blocks_available() * frag,
                    used_bytes: (s.blocks() - s.blocks_free()) * frag,
                    inodes: s.files(),
                    inodes_free: s.files_free(),
                }
            }),
        };
        // Forget containers that are gone.
        {
            let mut prev = self.previous.lock().unwrap_or_else(|e| e.into_inner());
            prev.retain(|id, _| id.is_empty() || containers.iter().any(|c| &c.id == id));
        }
        Ok(Sample { node, pods })
    }
}

fn value(v: &Option<api::UInt64Value>) -> u64 {
    v.as_ref().map_or(0, |v| v.value)
}

fn now_nanos() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0)
}

fn network_from_cri(n: &api::NetworkUsage) -> Network {
    let iface = |i: &api::NetworkInterfaceUsage| Interface {
        name: i.name.clone(),
        rx_bytes: value(&i.rx_bytes),
        rx_errors: value(&i.rx_errors),
        tx_bytes: value(&i.tx_bytes),
        tx_errors: value(&i.tx_errors),
    };
    let mut interfaces: Vec<Interface> = n.default_interface.iter().map(iface).collect();
    interfaces.extend(
        n.interfaces
            .iter()
            .filter(|i| {
                n.default_interface
                    .as_ref()
                    .is_none_or(|d| d.name != i.name)
            })
            .map(iface),
    );
    Network {
        time: n.timestamp,
        interfaces,
    }
}

/// /proc/stat counts in USER_HZ, which Linux fixes at 100 on every architecture kubox runs on.
const USER_HZ: u64 = 100;

/// Busy cpu time of the node from the first line of /proc/stat (user, nice, system, irq,
/// softirq, steal), in nanoseconds.
fn proc_cpu_nanos() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    cpu_busy_ticks(&stat).map(|t| t.saturating_mul(1_000_000_000 / USER_HZ))
}

fn cpu_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some([0, 1, 2, 5, 6, 7].iter().filter_map(|i| f.get(*i)).sum())
}

fn boot_time_nanos() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    secs.checked_mul(1_000_000_000)
}

/// The node's memory as kubelet reports its root cgroup: usage is what is not free, the
/// working set leaves out inactive file pages, available is what the working set leaves.
fn node_memory(meminfo: &str, vmstat: &str, now: i64) -> Memory {
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let count = |key: &str| -> u64 {
        vmstat
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let total = kib("MemTotal");
    let usage = total.saturating_sub(kib("MemFree"));
    let working_set = usage.saturating_sub(kib("Inactive(file)"));
    Memory {
        time: now,
        working_set_bytes: working_set,
        usage_bytes: usage,
        rss_bytes: kib("AnonPages"),
        available_bytes: Some(total.saturating_sub(working_set)),
        page_faults: count("pgfault"),
        major_page_faults: count("pgmajfault"),
    }
}

/// Interfaces of /proc/net/dev but loopback; the first one that carried traffic leads.
fn net_dev(dev: &str) -> Vec<Interface> {
    let mut list: Vec<Interface> = dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(Interface {
                name: name.trim().to_string(),
                rx_bytes: *f.first()?,
                rx_errors: *f.get(2)?,
                tx_bytes: *f.get(8)?,
                tx_errors: *f.get(10)?,
            })
        })
        .filter(|i| i.name != "lo")
        .collect();
    list.sort_by_key(|i| i.rx_bytes == 0 && i.tx_bytes == 0);
    list
}

fn time(ns: i64) -> Value {
    crate::spec::time_from_nanos(ns).map_or(Value::Null, Value::from)
}

fn cpu_json(c: &Cpu) -> Value {
    let mut v = json!({"time": time(c.time), "usageCoreNanoSeconds": c.usage_core_nano_seconds});
    if let Some(r) = c.usage_nano_cores {
        v["usageNanoCores"] = json!(r);
    }
    v
}

fn memory_json(m: &Memory) -> Value {
    let mut v = json!({
        "time": time(m.time),
        "usageBytes": m.usage_bytes,
        "workingSetBytes": m.working_set_bytes,
        "rssBytes": m.rss_bytes,
        "pageFaults": m.page_faults,
        "majorPageFaults": m.major_page_faults,
    });
    if let Some(a) = m.available_bytes {
        v["availableBytes"] = json!(a);
    }
    v
}

fn network_json(n: &Network) -> Value {
    let iface = |i: &Interface| json!({"name": i.name, "rxBytes": i.rx_bytes, "rxErrors": i.rx_errors, "txBytes": i.tx_bytes, "txErrors": i.tx_errors});
    let mut v = n.interfaces.first().map(iface).unwrap_or_else(|| json!({}));
    v["time"] = time(n.time);
    v["interfaces"] = n.interfaces.iter().map(iface).collect();
    v
}

fn fs_json(f: &Fs) -> Value {
    json!({
        "time": time(f.time),
        "availableBytes": f.available_bytes,
        "capacityBytes": f.capacity_bytes,
        "usedBytes": f.used_bytes,
        "inodesFree": f.inodes_free,
        "inodes": f.inodes,
        "inodesUsed": f.inodes.saturating_sub(f.inodes_free),
    })
}

/// Sums the containers' cpu and memory into the pod's.
fn pod_totals(p: &PodSample) -> (Option<Cpu>, Option<Memory>) {
    let cpus: Vec<&Cpu> = p.containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    let mems: Vec<&Memory> = p
        .containers
        .iter()
        .filter_map(|c| c.memory.as_ref())
        .collect();
    let cpu = (!cpus.is_empty()).then(|| Cpu {
        time: cpus.iter().map(|c| c.time).max().unwrap_or(0),
        usage_core_nano_seconds: cpus.iter().map(|c| c.usage_core_nano_seconds).sum(),
        usage_nano_cores: cpus.iter().map(|c| c.usage_nano_cores).sum(),
    });
    let memory = (!mems.is_empty()).then(|| Memory {
        time: mems.iter().map(|m| m.time).max().unwrap_or(0),
        working_set_bytes: mems.iter().map(|m| m.working_set_bytes).sum(),
        usage_bytes: mems.iter().map(|m| m.usage_bytes).sum(),
        rss_bytes: mems.iter().map(|m| m.rss_bytes).sum(),
        available_bytes: None,
        page_faults: mems.iter().map(|m| m.page_faults).sum(),
        major_page_faults: mems.iter().map(|m| m.major_page_faults).sum(),
    });
    (cpu, memory)
}

fn put(obj: &mut Value, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        obj[key] = v;
    }
}

/// The Summary API document (`GET /stats/summary`).
pub fn summary(s: &Sample) -> Value {
    let mut node = json!({
        "nodeName": s.node.name,
        "systemContainers": [],
        "startTime": time(s.node.start_time),
    });
    put(&mut node, "cpu", s.node.cpu.as_ref().map(cpu_json));
    put(&mut node, "memory", s.node.memory.as_ref().map(memory_json));
    put(
        &mut node,
        "network",
        s.node.network.as_ref().map(network_json),
    );
    put(&mut node, "fs", s.node.fs.as_ref().map(fs_json));
    if let Some(fs) = &s.node.fs {
        node["runtime"] = json!({"imageFs": fs_json(fs), "containerFs": fs_json(fs)});
    }
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut v = json!({"name": c.name, "startTime": time(c.start_time)});
                    put(&mut v, "cpu", c.cpu.as_ref().map(cpu_json));
                    put(&mut v, "memory", c.memory.as_ref().map(memory_json));
                    if let Some(used) = c.rootfs_used_bytes {
                        v["rootfs"] =
                            json!({"time": time(c.cpu.map_or(0, |c| c.time)), "usedBytes": used});
                    }
                    v
                })
                .collect();
            let (cpu, memory) = pod_totals(p);
            let mut v = json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "startTime": time(p.start_time),
                "containers": containers,
            });
            put(&mut v, "cpu", cpu.as_ref().map(cpu_json));
            put(&mut v, "memory", memory.as_ref().map(memory_json));
            put(&mut v, "network", p.network.as_ref().map(network_json));
            v
        })
        .collect();
    json!({"node": node, "pods": pods})
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// kubelet's `/metrics/resource` (Prometheus text format 0.0.4, sample times in ms).
pub fn resource_metrics(s: &Sample) -> String {
    use std::fmt::Write;
    let ms = |ns: i64| ns / 1_000_000;
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(out, "{name}{l}");
        }
    };
    let containers = |f: &dyn Fn(&ContainerSample) -> Option<String>| -> Vec<String> {
        s.pods
            .iter()
            .flat_map(|p| {
                p.containers.iter().filter_map(move |c| {
                    f(c).map(|v| {
                        format!(
                            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {v}",
                            label(&c.name),
                            label(&p.namespace),
                            label(&p.name)
                        )
                    })
                })
            })
            .collect()
    };
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        containers(&|c| {
            c.cpu
                .map(|c| format!("{} {}", secs(c.usage_core_nano_seconds), ms(c.time)))
        }),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
        containers(&|c| {
            c.memory
                .map(|m| format!("{} {}", m.working_set_bytes, ms(m.time)))
        }),
    );
    family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
        containers(&|c| {
            (c.start_time > 0).then(|| {
                format!(
                    "{} {}",
                    c.start_time as f64 / 1e9,
                    ms(c.cpu.map_or(c.start_time, |c| c.time))
                )
            })
        }),
    );
    let node = &s.node;
    family(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        node.cpu
            .iter()
            .map(|c| format!(" {} {}", secs(c.usage_core_nano_seconds), ms(c.time)))
            .collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
        node.memory
            .iter()
            .map(|m| format!(" {} {}", m.working_set_bytes, ms(m.time)))
            .collect(),
    );
    let pods = |f: &dyn Fn(&PodSample) -> Option<String>| -> Vec<String> {
        s.pods
            .iter()
            .filter_map(|p| {
                f(p).map(|v| {
                    format!(
                        "{{namespace=\"{}\",pod=\"{}\"}} {v}",
                        label(&p.namespace),
                        label(&p.name)
                    )
                })
            })
            .collect()
    };
    family(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
        pods(&|p| {
            pod_totals(p)
                .0
                .map(|c| format!("{} {}", secs(c.usage_core_nano_seconds), ms(c.time)))
        }),
    );
    family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
        pods(&|p| {
            pod_totals(p)
                .1
                .map(|m| format!("{} {}", m.working_set_bytes, ms(m.time)))
        }),
    );
    family(
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        vec![" 0".to_string()],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        let cpu = Cpu {
            time: 1_700_000_000_000_000_000,
            usage_core_nano_seconds: 2_500_000_000,
            usage_nano_cores: Some(250_000_000),
        };
        let memory = Memory {
            time: 1_700_000_000_000_000_000,
            working_set_bytes: 4096,
            usage_bytes: 8192,
            rss_bytes: 1024,
            ..Default::default()
        };
        Sample {
            node: NodeSample {
                name: "n1".into(),
                start_time: 1_600_000_000_000_000_000,
                cpu: Some(cpu),
                memory: Some(memory),
                ..Default::default()
            },
            pods: vec![PodSample {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                start_time: 1_650_000_000_000_000_000,
                containers: vec![
                    ContainerSample {
                        name: "a".into(),
                        start_time: 1_650_000_000_000_000_000,
                        cpu: Some(cpu),
                        memory: Some(memory),
                        rootfs_used_bytes: Some(10),
                    },
                    ContainerSample {
                        name: "b".into(),
                        start_time: 1_650_000_000_000_000_000,
                        cpu: Some(cpu),
                        memory: Some(memory),
                        rootfs_used_bytes: None,
                    },
                ],
                network: None,
            }],
        }
    }

    #[test]
    fn summary_has_upstream_shape_and_pod_totals() {
        let s = summary(&sample());
        assert_eq!(s["node"]["nodeName"], "n1");
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 250_000_000);
        assert_eq!(s["node"]["startTime"], "2020-09-13T12:26:40Z");
        let pod = &s["pods"][0];
        assert_eq!(pod["podRef"]["name"], "web");
        assert_eq!(pod["containers"][0]["memory"]["workingSetBytes"], 4096);
        assert_eq!(pod["containers"][0]["rootfs"]["usedBytes"], 10);
        assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 5_000_000_000u64);
        assert_eq!(pod["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(pod["memory"]["workingSetBytes"], 8192);
    }

    #[test]
    fn resource_metrics_use_upstream_names() {
        let text = resource_metrics(&sample());
        assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"a\",namespace=\"default\",pod=\"web\"} 2.5 1700000000000\n"
        ));
        assert!(text.contains("node_cpu_usage_seconds_total 2.5 1700000000000\n"));
        assert!(text.contains("node_memory_working_set_bytes 4096 1700000000000\n"));
        assert!(text.contains("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 5 "));
        assert!(
            text.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 8192 ")
        );
        assert!(text.contains("container_start_time_seconds{container=\"b\""));
        assert!(text.ends_with("resource_scrape_error 0\n"));
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            cpu_busy_ticks("cpu  100 1 50 1000 7 3 2 4 0 0\ncpu0 1 2 3\n"),
            Some(160)
        );
        let m = node_memory(
            "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\nAnonPages:  300 kB\n",
            "pgfault 12\npgmajfault 3\n",
            5,
        );
        assert_eq!(m.usage_bytes, 800 * 1024);
        assert_eq!(m.working_set_bytes, 700 * 1024);
        assert_eq!(m.available_bytes, Some(300 * 1024));
        assert_eq!(
            (m.rss_bytes, m.page_faults, m.major_page_faults),
            (300 * 1024, 12, 3)
        );
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth9: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n  eth0: 100 2 1 0 0 0 0 0 200 3 4 0 0 0 0 0\n";
        let list = net_dev(dev);
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0],
            Interface {
                name: "eth0".into(),
                rx_bytes: 100,
                rx_errors: 1,
                tx_bytes: 200,
                tx_errors: 4
            }
        );
    }
}
