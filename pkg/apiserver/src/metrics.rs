//! The resource metrics pipeline metrics-server gives a k3s cluster, built in: [`scrape`]
//! reads every node's kubelet `/metrics/resource` each resolution period (15 s, as
//! metrics-server) with the API server's kubelet client certificate and keeps the latest two
//! samples per node in memory; `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics
//! (`handlers/metrics.rs`) are computed from them: cpu is the rate of cumulative cpu time
//! between the two samples, memory the latest working set, as metrics-server does.

use crate::state::ApiState;
use crate::storage;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// metrics-server's default `--metric-resolution`.
pub const DEFAULT_RESOLUTION: Duration = Duration::from_secs(15);

/// One cumulative cpu reading and the working set at the same time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    pub cpu_seconds: f64,
    pub memory_bytes: f64,
}

/// Container key: (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// What one scrape of a kubelet gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub node: Option<Point>,
    /// Points with the container's start time (seconds), which must match across samples.
    pub containers: HashMap<ContainerKey, (Point, f64)>,
}

/// Usage over a window: cpu in nanocores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub timestamp_ms: i64,
    pub window_ms: i64,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// The latest two samples of every node.
#[derive(Default)]
pub struct Metrics {
    nodes: RwLock<HashMap<String, (Option<Batch>, Batch)>>,
}

impl Metrics {
    fn record(&self, node: &str, batch: Batch) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let prev = nodes.remove(node).map(|(_, latest)| latest);
        nodes.insert(node.to_string(), (prev, batch));
    }

    fn retain(&self, names: &[String]) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n, _| names.contains(n));
    }

    /// The node's own usage, once it was scraped twice.
    pub fn node(&self, node: &str) -> Option<Usage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let (prev, latest) = nodes.get(node)?;
        usage(prev.as_ref()?.node.as_ref()?, latest.node.as_ref()?)
    }

    /// The usage of each container of pod `ns/pod` (by name), once scraped twice.
    pub fn pod(&self, ns: &str, pod: &str) -> Vec<(String, Usage)> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (prev, latest) in nodes.values() {
            let Some(prev) = prev else { continue };
            for ((cns, cpod, name), (point, start)) in &latest.containers {
                if cns != ns || cpod != pod {
                    continue;
                }
                let before = prev
                    .containers
                    .get(&(cns.clone(), cpod.clone(), name.clone()))
                    .filter(|(_, s)| s == start);
                if let Some(u) = before.and_then(|(b, _)| usage(b, point)) {
                    out.push((name.clone(), u));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The cpu rate between two readings and the later working set; None unless time moved
/// forward and the counter did not go back (a restarted container).
pub fn usage(before: &Point, after: &Point) -> Option<Usage> {
    let window = after.time_ms - before.time_ms;
    if window <= 0 || after.cpu_seconds < before.cpu_seconds {
        return None;
    }
    let rate = (after.cpu_seconds - before.cpu_seconds) / (window as f64 / 1000.0);
    Some(Usage {
        timestamp_ms: after.time_ms,
        window_ms: window,
        cpu_nanocores: (rate * 1e9).round() as u64,
        memory_bytes: after.memory_bytes.max(0.0) as u64,
    })
}

/// One sample line of the Prometheus text format: name, labels, value, timestamp (ms).
type SampleLine<'a> = (&'a str, Vec<(String, String)>, f64, Option<i64>);

fn parse_line(line: &str) -> Option<SampleLine<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        };
        rest = &r[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value: f64 = fields.next()?.parse().ok()?;
    let ts = fields.next().and_then(|t| t.parse().ok());
    Some((name, labels, value, ts))
}

/// Reads kubelet's `/metrics/resource` text into a batch; samples without a timestamp get
/// `now_ms`.
pub fn parse_resource_metrics(text: &str, now_ms: i64) -> Batch {
    let mut batch = Batch::default();
    let mut starts: HashMap<ContainerKey, f64> = HashMap::new();
    for line in text.lines() {
        let Some((name, labels, value, ts)) = parse_line(line) else {
            continue;
        };
        let ts = ts.unwrap_or(now_ms);
        let label = |k: &str| {
            labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let key = || (label("namespace"), label("pod"), label("container"));
        match name {
            "node_cpu_usage_seconds_total" => {
                let p = batch.node.get_or_insert_with(Point::default);
                p.cpu_seconds = value;
                p.time_ms = ts;
            }
            "node_memory_working_set_bytes" => {
                batch.node.get_or_insert_with(Point::default).memory_bytes = value;
            }
            "container_cpu_usage_seconds_total" => {
                let e = batch.containers.entry(key()).or_default();
                e.0.cpu_seconds = value;
                e.0.time_ms = ts;
            }
            "container_memory_working_set_bytes" => {
                batch.containers.entry(key()).or_default().0.memory_bytes = value;
            }
            "container_start_time_seconds" => {
                starts.insert(key(), value);
            }
            _ => {}
        }
    }
    for (k, (_, start)) in batch.containers.iter_mut() {
        *start = starts.get(k).copied().unwrap_or(0.0);
    }
    // A container without a cpu reading cannot give a rate.
    batch.containers.retain(|_, (p, _)| p.time_ms > 0);
    batch
}

/// Scrapes every node's kubelet each `resolution` until the task is aborted.
pub async fn scrape(state: Arc<ApiState>, resolution: Duration) {
    let mut tick = tokio::time::interval(resolution);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let nodes = match list_nodes(&state).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: listing nodes failed");
                continue;
            }
        };
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        state.metrics.retain(&names);
        let timeout = resolution.mul_f32(0.9).max(Duration::from_secs(1));
        let scrapes = nodes.into_iter().map(|(name, node)| {
            let state = state.clone();
            async move {
                match tokio::time::timeout(timeout, scrape_node(&state, &node)).await {
                    Ok(Ok(batch)) => state.metrics.record(&name, batch),
                    Ok(Err(e)) => {
                        tracing::debug!(node = %name, error = %e, "metrics: scraping failed")
                    }
                    Err(_) => tracing::debug!(node = %name, "metrics: scraping timed out"),
                }
            }
        });
        futures::future::join_all(scrapes).await;
    }
}

async fn list_nodes(state: &ApiState) -> Result<Vec<(String, Value)>, String> {
    let def = state
        .registry()
        .lookup("", "v1", "nodes")
        .cloned()
        .ok_or("nodes are not registered")?;
    let res = state
        .store
        .list(&storage::prefix(&def, None), None, None, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(res
        .items
        .iter()
        .filter_map(|kv| storage::decode(&def, kv).ok())
        .filter_map(|n| Some((kubox_core::meta::name(&n)?.to_string(), n)))
        .collect())
}

async fn scrape_node(state: &ApiState, node: &Value) -> Result<Batch, String> {
    let addr = crate::kubelet::address_of(node).ok_or("no kubelet address")?;
    let resp = crate::kubelet::request(
        state,
        addr,
        Method::GET,
        "/metrics/resource",
        HeaderMap::new(),
    )
    .await
    .map_err(|e| e.message)?;
    if resp.status() != StatusCode::OK {
        return Err(format!("kubelet answered {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), 16 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    Ok(parse_resource_metrics(
        &String::from_utf8_lossy(&body),
        now_ms,
    ))
}

/// CPU as metrics-server writes it: nanocores, canonical (`250m`, `1234567n`).
pub fn cpu_quantity(nanocores: u64) -> String {
    kubox_core::validation::Quantity {
        nanos: i128::from(nanocores),
        format: kubox_core::validation::quantity::Format::DecimalSI,
    }
    .canonical()
}

/// Memory as metrics-server writes it: bytes, binary SI (`10240Ki`).
pub fn memory_quantity(bytes: u64) -> String {
    kubox_core::validation::Quantity {
        nanos: i128::from(bytes) * 1_000_000_000,
        format: kubox_core::validation::quantity::Format::BinarySI,
    }
    .canonical()
}

/// A Go `time.Duration` string of whole milliseconds (`15.004s`, `1m0.5s`), as metav1.Duration.
pub fn duration_string(ms: i64) -> String {
    let (m, rest) = (ms / 60_000, ms % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let s = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", s.trim_end_matches('0'))
    };
    if m > 0 { format!("{m}m{secs}") } else { secs }
}

/// The `timestamp`/`window`/`usage` of a metrics object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "timestamp": jiff::Timestamp::from_millisecond(u.timestamp_ms)
            .map(kubox_core::meta::format_time)
            .unwrap_or_default(),
        "window": duration_string(u.window_ms),
        "usage": {"cpu": cpu_quantity(u.cpu_nanocores), "memory": memory_quantity(u.memory_bytes)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="burn",namespace="default",pod="web-1"} 10.5 1700000000000
container_memory_working_set_bytes{container="burn",namespace="default",pod="web-1"} 1.048576e+06 1700000000000
container_start_time_seconds{container="burn",namespace="default",pod="web-1"} 1.69e+09 1700000000000
node_cpu_usage_seconds_total 100 1700000000000
node_memory_working_set_bytes 2.147483648e+09 1700000000000
resource_scrape_error 0
"#;

    #[test]
    fn kubelet_text_becomes_a_batch() {
        let b = parse_resource_metrics(TEXT, 5);
        let node = b.node.unwrap();
        assert_eq!(node.time_ms, 1_700_000_000_000);
        assert_eq!(node.cpu_seconds, 100.0);
        assert_eq!(node.memory_bytes, 2_147_483_648.0);
        let key = (
            "default".to_string(),
            "web-1".to_string(),
            "burn".to_string(),
        );
        let (p, start) = b.containers[&key];
        assert_eq!(
            (p.cpu_seconds, p.memory_bytes, start),
            (10.5, 1_048_576.0, 1.69e9)
        );
    }

    #[test]
    fn escaped_labels_parse() {
        let (name, labels, v, ts) = parse_line(r#"m{a="x\"y",b="z\\"} 2"#).unwrap();
        assert_eq!(name, "m");
        assert_eq!(
            labels,
            vec![("a".into(), "x\"y".into()), ("b".into(), "z\\".into())]
        );
        assert_eq!((v, ts), (2.0, None));
    }

    #[test]
    fn cpu_rates_come_from_two_samples_of_the_same_container() {
        let m = Metrics::default();
        m.record("n1", parse_resource_metrics(TEXT, 0));
        assert!(m.node("n1").is_none(), "one sample gives no rate");
        let later = TEXT
            .replace("10.5 1700000000000", "18 1700000015000")
            .replace(
                "node_cpu_usage_seconds_total 100 1700000000000",
                "node_cpu_usage_seconds_total 115 1700000015000",
            );
        m.record("n1", parse_resource_metrics(&later, 0));
        let node = m.node("n1").unwrap();
        assert_eq!(node.cpu_nanocores, 1_000_000_000);
        assert_eq!(node.window_ms, 15_000);
        let pod = m.pod("default", "web-1");
        assert_eq!(pod.len(), 1);
        assert_eq!(pod[0].1.cpu_nanocores, 500_000_000);
        assert_eq!(cpu_quantity(pod[0].1.cpu_nanocores), "500m");
        assert_eq!(memory_quantity(pod[0].1.memory_bytes), "1Mi");
        // A restarted container (new start time) has no rate until scraped twice again.
        m.record(
            "n1",
            parse_resource_metrics(&later.replace("1.69e+09", "1.7e+09"), 0),
        );
        assert!(m.pod("default", "web-1").is_empty());
    }

    #[test]
    fn quantities_and_windows_read_like_metrics_server() {
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(memory_quantity(1500), "1500");
        assert_eq!(duration_string(15_004), "15.004s");
        assert_eq!(duration_string(20_000), "20s");
        assert_eq!(duration_string(60_500), "1m0.5s");
    }
}
