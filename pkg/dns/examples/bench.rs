//! `cargo run --release -p kubox-dns --example bench [-- N [CONCURRENCY]]`: queries/s and
//! latency of kubox-dns answering in-cluster names over UDP on loopback, from a store of
//! 1000 ClusterIP Services and 100 headless Services with 3 endpoints each (A, SRV, headless
//! A, PTR and NXDOMAIN questions in turn), against a UDP echo server in the same run (the
//! cost of the loopback round trip and the client itself) as the baseline.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use kubox_dns::{Handler, Listeners, Records};
use serde_json::json;
use tokio::net::UdpSocket;

const SERVICES: u32 = 1000;
const HEADLESS: u32 = 100;

fn store() -> Records {
    let r = Records::new("cluster.local");
    for i in 0..SERVICES {
        let ip = format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250);
        let svc = json!({"metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 20)},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
        r.apply_service(&serde_json::from_value(svc).unwrap_or_default());
    }
    for i in 0..HEADLESS {
        let svc = json!({"metadata": {"name": format!("hl-{i}"), "namespace": "data"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}});
        r.apply_service(&serde_json::from_value(svc).unwrap_or_default());
        let eps: Vec<_> = (0..3)
            .map(|j| json!({"addresses": [format!("10.42.{}.{}", i, 10 + j)], "conditions": {"ready": true}}))
            .collect();
        let slice = json!({"metadata": {"name": format!("hl-{i}-x"), "namespace": "data",
                "labels": {"kubernetes.io/service-name": format!("hl-{i}")}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]});
        match serde_json::from_value(slice) {
            Ok(s) => r.apply_slice(&s),
            Err(e) => eprintln!("bad slice: {e}"),
        }
    }
    r
}

/// The i-th question, encoded.
fn question(i: usize) -> Vec<u8> {
    let n = i as u32;
    let (name, t) = match i % 5 {
        0 => (
            format!(
                "svc-{}.ns-{}.svc.cluster.local.",
                n % SERVICES,
                n % SERVICES % 20
            ),
            RecordType::A,
        ),
        1 => (
            format!(
                "_http._tcp.svc-{}.ns-{}.svc.cluster.local.",
                n % SERVICES,
                n % SERVICES % 20
            ),
            RecordType::SRV,
        ),
        2 => (
            format!("hl-{}.data.svc.cluster.local.", n % HEADLESS),
            RecordType::A,
        ),
        3 => (
            format!(
                "{}.{}.43.10.in-addr.arpa.",
                1 + n % 250,
                1 + (n % SERVICES) / 250
            ),
            RecordType::PTR,
        ),
        _ => (
            format!("nope-{n}.default.svc.cluster.local."),
            RecordType::A,
        ),
    };
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(&name).unwrap_or_else(|_| Name::root()),
        t,
    ));
    m.to_vec().unwrap_or_default()
}

struct Run {
    qps: f64,
    p50: Duration,
    p99: Duration,
}

/// `n` questions over `concurrency` clients (one socket each, one question in flight).
async fn drive(server: SocketAddr, n: usize, concurrency: usize) -> std::io::Result<Run> {
    let questions: Arc<Vec<Vec<u8>>> = Arc::new((0..1000).map(question).collect());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let questions = questions.clone();
        let count = n / concurrency + usize::from(c < n % concurrency);
        tasks.spawn(async move {
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            sock.connect(server).await?;
            let mut buf = vec![0u8; 4096];
            let mut lat = Vec::with_capacity(count);
            for i in 0..count {
                let q = &questions[(c * 7919 + i) % questions.len()];
                let t = Instant::now();
                sock.send(q).await?;
                let got = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await;
                match got {
                    Ok(Ok(len)) if len >= 12 => lat.push(t.elapsed()),
                    _ => eprintln!("a query got no answer"),
                }
            }
            Ok::<_, std::io::Error>(lat)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.map_err(std::io::Error::other)??);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Run {
        qps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
    })
}

async fn echo_server() -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], peer).await;
        }
    });
    Ok(addr)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let concurrency: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .max(1);
    let t = Instant::now();
    let records = Arc::new(store());
    let built = t.elapsed();
    let listeners = Listeners::bind(&[(Ipv4Addr::LOCALHOST, 0).into()]).await?;
    let server = listeners.local_addrs()[0];
    tokio::spawn(kubox_dns::server::serve(
        listeners,
        Arc::new(Handler::new(records, vec![])),
        std::future::pending(),
    ));
    let echo = echo_server().await?;
    println!(
        "kubox-dns bench: {n} UDP queries, {concurrency} clients, store of {SERVICES} Services + {HEADLESS} headless x 3 endpoints (built in {} ms); baseline: UDP echo server",
        built.as_millis()
    );
    // Warm up both, then measure.
    drive(server, 2000, concurrency).await?;
    drive(echo, 2000, concurrency).await?;
    let dns = drive(server, n, concurrency).await?;
    let base = drive(echo, n, concurrency).await?;
    println!(
        "{:<10} {:>10} {:>9} {:>9}",
        "server", "queries/s", "p50 us", "p99 us"
    );
    for (name, r) in [("kubox-dns", &dns), ("udp echo", &base)] {
        println!(
            "{:<10} {:>10.0} {:>9} {:>9}",
            name,
            r.qps,
            us(r.p50),
            us(r.p99)
        );
    }
    println!("kubox-dns / echo queries/s: {:.3}", dns.qps / base.qps);
    Ok(())
}
