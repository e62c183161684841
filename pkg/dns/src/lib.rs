//! kubox-dns: the cluster DNS (what CoreDNS's `kubernetes` and `forward` plugins give a k3s
//! cluster), in-process. Records for Services, their endpoints and pods come from watches of
//! Services and EndpointSlices; every other name is forwarded to the node's upstream
//! resolvers. The node agent runs one on each node, on the pod bridge's gateway address.
//!
//! Modules: [`records`] (the record store, no IO), [`server`] (wire format through
//! hickory-proto, UDP/TCP serving, truncation), [`forward`] (upstreams), [`watch`] (feeds the
//! store). Entry point: [`run`].

pub mod forward;
pub mod records;
pub mod server;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use records::Records;
pub use server::{Handler, Listeners};

/// How long [`run`] waits for the first lists before answering anyway (as CoreDNS does).
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// What the DNS server is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP are served on each.
    pub listen: Vec<SocketAddr>,
    /// e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster (none: those get SERVFAIL).
    pub upstreams: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: Vec::new(),
            cluster_domain: "cluster.local".into(),
            upstreams: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The `nameserver` entries of a resolv.conf, as port-53 socket addresses (link-local IPv6
/// with a zone and anything unparsable are skipped).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            let addr = SocketAddr::new(ip, 53);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// Binds the listen addresses, watches Services and EndpointSlices through `client` and
/// answers until `shutdown` resolves. Fails only when a listen address cannot be bound.
pub async fn run(
    client: kube::Client,
    cfg: DnsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listeners = Listeners::bind(&cfg.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
    let records = Arc::new(Records::new(&cfg.cluster_domain));
    let (tasks, mut synced) = watch::spawn(&client, &records);
    let _abort = AbortOnDrop(tasks);
    if tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s))
        .await
        .is_err()
    {
        tracing::warn!("cluster DNS serving before Services and EndpointSlices were listed");
    }
    tracing::info!(listen = ?listeners.local_addrs(), upstreams = ?cfg.upstreams, domain = %cfg.cluster_domain, "cluster DNS serving");
    server::serve(
        listeners,
        Arc::new(Handler::new(records, cfg.upstreams)),
        shutdown,
    )
    .await;
    Ok(())
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
