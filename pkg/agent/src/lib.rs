//! kubox-agent: the node agent (kubelet semantics). It supervises containerd, registers the
//! Node and keeps its Lease, sets up the pod network of the node (kubox is its own CNI plugin)
//! and runs the pods bound to the node through CRI, reporting their status.
//!
//! Entry point: [`run`]. Modules: [`node`] (Node object, status, lease), [`pods`] (one worker
//! per pod), [`status`] (pod status from CRI), [`spec`] (pod → CRI configs), [`setup`] (CNI
//! links and conflist, forwarding, masquerade, airgap images), [`proxy`] (Service proxy),
//! [`hostports`] (pods' host ports), [`netpol`] (NetworkPolicy enforcement), [`overlay`] (the
//! multi-node pod network: flannel's VXLAN backend), [`pull`] (image
//! pulls: policies, pull secrets, back-off), [`static_pods`] (the file source and mirror pods),
//! [`pressure`] (eviction signals), [`join`] (`kubox agent --join`), [`kubelet`] (the kubelet
//! API: logs, exec, attach, port-forward), [`logs`] (container log rotation), [`volumes`],
//! [`env`].
//! The node-local cluster DNS (kubox-dns) listens on the pod bridge's gateway address.

pub mod env;
pub mod hostports;
pub mod join;
pub mod kubelet;
pub mod logs;
pub mod netpol;
pub mod node;
pub mod overlay;
pub mod pods;
pub mod pressure;
pub mod probes;
pub mod proxy;
pub mod pull;
pub mod setup;
pub mod spec;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod volumes;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kubox_containerd::cri::{Cri, api};
use kubox_containerd::supervisor::{Containerd, ContainerdConfig};
use serde_json::Value;

/// Everything the agent is told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// `--data-dir`: containerd root, CNI dirs, pod logs and volumes, airgap images.
    pub data_dir: PathBuf,
    /// containerd's state and socket, runc state.
    pub run_dir: PathBuf,
    pub cluster_cidr: String,
    /// The service CIDR (routed to the pod bridge so the node reaches ClusterIPs).
    pub service_cidr: (std::net::Ipv4Addr, u8),
    pub cluster_dns: String,
    pub cluster_domain: String,
    /// The `kubernetes` Service (ClusterIP, port) announced to pods.
    pub kubernetes_service: (String, u16),
    /// The kubox binary (CNI plugin links point at it).
    pub exe: PathBuf,
    /// The kubelet API (logs, exec, attach, port-forward for the API server).
    pub kubelet: kubelet::KubeletServing,
    /// What the operator set for this node.
    pub node: NodeOptions,
}

/// Node settings an operator gives `kubox server` and `kubox agent` alike.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--node-label`s the node registers with.
    pub labels: BTreeMap<String, String>,
    /// `--node-taint`s as JSON objects (`{"key","value","effect"}`).
    pub taints: Vec<Value>,
    /// `--eviction-hard`: the thresholds behind the node's pressure conditions.
    pub eviction_hard: pressure::Thresholds,
    /// Container log rotation.
    pub log_rotation: logs::LogRotation,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Containerd(#[from] kubox_containerd::supervisor::Error),
    #[error("cannot reach containerd: {0}")]
    Connect(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("cannot register node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("cannot use {path}: {message}")]
    Registries { path: String, message: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl AgentConfig {
    /// k3s's registry configuration file: mirrors, credentials and TLS of registries.
    pub fn registries_file(&self) -> PathBuf {
        self.data_dir
            .join("agent")
            .join("etc")
            .join("registries.yaml")
    }
    fn cni_bin_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("cni").join("bin")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.data_dir
            .join("agent")
            .join("etc")
            .join("cni")
            .join("net.d")
    }
}

/// `<data-dir>/agent/etc/registries.yaml` (k3s's format), or no registry configuration when
/// there is no such file.
fn read_registries(
    path: &std::path::Path,
) -> Result<kubox_containerd::registries::Registries, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(Error::Registries {
                path: path.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    let registries = kubox_containerd::registries::Registries::parse(&text).map_err(|message| {
        Error::Registries {
            path: path.display().to_string(),
            message,
        }
    })?;
    for w in registries.warnings() {
        tracing::warn!(file = %path.display(), "{w}");
    }
    tracing::info!(file = %path.display(), mirrors = registries.mirrors.len(), configs = registries.configs.len(), "registry configuration loaded");
    Ok(registries)
}

/// The name of this host (`/proc/sys/kernel/hostname`, lowercased), the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address other hosts would reach us on: the source address the kernel picks for an
/// outbound route. A UDP `connect` only looks up the route; nothing is sent.
pub fn primary_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// `kubox agent`: what a joining node is told on its command line.
#[derive(Debug, Clone)]
pub struct JoiningAgent {
    pub join: join::JoinConfig,
    pub run_dir: PathBuf,
    pub exe: PathBuf,
    /// Port of the kubelet API.
    pub kubelet_port: u16,
    pub node: NodeOptions,
}

/// Joins the cluster (retrying while the server cannot be reached), then runs the agent with
/// the node's own credentials until `shutdown` resolves.
pub async fn join_and_run(
    cfg: JoiningAgent,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let joined = loop {
        match join::join(&cfg.join).await {
            Ok(j) => break j,
            Err(join::JoinError::Refused(m)) => return Err(Error::Join(m)),
            Err(join::JoinError::Unreachable(m)) => {
                tracing::warn!("{m}; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
        }
    };
    tracing::info!(server = %cfg.join.server, node = %cfg.join.node_name, "joined the cluster");
    let kubeconfig = kube::config::Kubeconfig::read_from(&joined.kubeconfig)
        .map_err(|e| Error::Join(format!("reading {}: {e}", joined.kubeconfig.display())))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Join(format!("loading {}: {e}", joined.kubeconfig.display())))?;
    if let Ok(agent) = http::HeaderValue::from_str(&kubox_core::user_agent("kubelet")) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let client = Client::try_from(config)
        .map_err(|e| Error::Join(format!("building the API client: {e}")))?;
    let service_cidr = kubox_core::net::Ipv4Cidr::parse(&joined.service_cidr)
        .map_err(|e| Error::Join(format!("the server's service CIDR: {e}")))?;
    let agent = AgentConfig {
        node_name: cfg.join.node_name.clone(),
        node_ip: cfg
            .join
            .node_ips
            .first()
            .copied()
            .unwrap_or_else(primary_ip),
        data_dir: cfg.join.data_dir.clone(),
        run_dir: cfg.run_dir,
        cluster_cidr: joined.cluster_cidr,
        service_cidr: (service_cidr.addr, service_cidr.prefix),
        cluster_dns: joined.cluster_dns,
        cluster_domain: joined.cluster_domain,
        kubernetes_service: joined.kubernetes_service,
        exe: cfg.exe,
        kubelet: kubelet::KubeletServing {
            port: cfg.kubelet_port,
            ..joined.kubelet
        },
        node: cfg.node,
    };
    run(client, agent, shutdown).await
}

/// Runs the node agent until `shutdown` resolves. Running containers survive a restart of
/// the agent (and of containerd): the agent adopts them by their CRI labels.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    setup::link_cni_plugins(&cfg.cni_bin_dir(), &cfg.exe).map_err(io(&cfg.cni_bin_dir()))?;
    let registries = read_registries(&cfg.registries_file())?;
    let containerd = Containerd::start(ContainerdConfig {
        data_dir: cfg.data_dir.clone(),
        run_dir: cfg.run_dir.clone(),
        sandbox_image: kubox_containerd::pause::PAUSE_IMAGE.to_string(),
        cni_bin_dir: cfg.cni_bin_dir(),
        cni_conf_dir: cfg.cni_conf_dir(),
        registries,
    })
    .await?;
    let cri = Cri::connect(containerd.socket())
        .await
        .map_err(|e| Error::Connect(e.to_string()))?;
    let runtime_version = cri
        .runtime
        .clone()
        .version(api::VersionRequest {
            version: "v1".into(),
        })
        .await
        .map(|v| {
            let v = v.into_inner();
            format!("{}://{}", v.runtime_name, v.runtime_version)
        })
        .unwrap_or_else(|_| "containerd://unknown".into());
    let images_dir = cfg.data_dir.join("agent").join("images");
    let _ = std::fs::create_dir_all(&images_dir);
    let import = tokio::spawn(setup::import_images(cri.clone(), images_dir));

    let node = node::register(&client, &cfg)
        .await
        .map_err(|source| Error::Register {
            node: cfg.node_name.clone(),
            source,
        })?;
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        cri.clone(),
        cfg.clone(),
        runtime_version,
    ));
    let (local_dns, local_dns_rx) = tokio::sync::watch::channel(None);
    let network = tokio::spawn(network(client.clone(), cfg.clone(), node, local_dns));
    let pod_overlay = tokio::spawn(overlay::run(
        client.clone(),
        cfg.node_name.clone(),
        cfg.node_ip,
        setup::MTU,
    ));
    let proxy_cfg = kubox_network::proxy::Config {
        cluster_cidr: kubox_core::net::Ipv4Cidr::parse(&cfg.cluster_cidr)
            .ok()
            .map(|c| (c.addr, c.prefix)),
    };
    let service_proxy = tokio::spawn(proxy::run(
        client.clone(),
        cfg.node_name.clone(),
        proxy_cfg,
        proxy::LocalDns {
            cluster_dns: cfg.cluster_dns.parse().ok(),
            target: local_dns_rx,
        },
    ));
    let host_ports = tokio::spawn(hostports::run(client.clone(), cfg.node_name.clone()));
    let network_policies = tokio::spawn(netpol::run(client.clone(), cfg.node_name.clone()));
    let kubelet_api = tokio::spawn(kubelet::serve(
        cfg.kubelet.clone(),
        cfg.node_ip,
        cri.clone(),
        Arc::new(stats::Stats::new(
            cri.clone(),
            cfg.node_name.clone(),
            cfg.data_dir.clone(),
        )),
    ));
    let ctx = Arc::new(pods::Ctx {
        client: client.clone(),
        cri: cri.clone(),
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip.to_string(),
        dns: spec::DnsSettings {
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            host: spec::host_dns(&std::fs::read_to_string(RESOLV_CONF).unwrap_or_default()),
        },
        pods_dir: cfg.data_dir.join("agent").join("pods"),
        kubernetes_service: cfg.kubernetes_service.clone(),
        tokens: Default::default(),
        claims: Default::default(),
        recorder: kubox_events::Recorder::on_node(client.clone(), "kubelet", &cfg.node_name),
    });
    let log_rotation = tokio::spawn(logs::run(cri.clone(), cfg.node.log_rotation));
    let local_paths = tokio::spawn(volumes::clean_local_paths(
        client.clone(),
        cfg.node_name.clone(),
    ));
    tokio::select! {
        _ = watch_pods(client, cri, ctx, cfg.node_name.clone(), cfg.data_dir.join("agent").join("pod-manifests")) => {}
        _ = shutdown => {}
    }
    heartbeat.abort();
    network.abort();
    pod_overlay.abort();
    service_proxy.abort();
    host_ports.abort();
    network_policies.abort();
    kubelet_api.abort();
    local_paths.abort();
    log_rotation.abort();
    import.abort();
    containerd.stop().await;
    tracing::info!("node agent stopped");
    Ok(())
}

/// Sets up the node's pod network once node IPAM has given it a podCIDR (learnt from a watch
/// of the Node): the CNI config, the bridge with its gateway address, the node-local cluster
/// DNS on that address (announced on `local_dns` for the Service proxy), and keeps the service
/// CIDR routed to the bridge (checked every 2 s until that works, then every 30 s).
async fn network(
    client: Client,
    cfg: AgentConfig,
    node: Node,
    local_dns: tokio::sync::watch::Sender<Option<Ipv4Addr>>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    // The DNS task goes with this one (a JoinSet aborts its tasks when dropped).
    let mut dns_task = tokio::task::JoinSet::new();
    let mut dns: Option<Ipv4Addr> = None;
    let ipam_dir = cfg.data_dir.join("agent").join("cni").join("ipam");
    let watch_cfg = watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let mut updates = watcher(nodes, watch_cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut cidr = node.spec.and_then(|s| s.pod_cidr);
    let mut configured: Option<String> = None;
    let mut routed = false;
    loop {
        if let Some(c) = cidr.clone().filter(|c| configured.as_ref() != Some(c)) {
            if configured.is_none() {
                if let Err(e) = setup::enable_forwarding() {
                    tracing::warn!(error = %e, "enabling IP forwarding failed");
                }
                if let Err(e) = setup::masquerade(&cfg.cluster_cidr) {
                    tracing::warn!(error = %e, "installing the masquerade rule failed");
                }
            }
            match setup::write_conflist(&cfg.cni_conf_dir(), &c, &ipam_dir) {
                Ok(changed) => {
                    if changed {
                        tracing::info!(pod_cidr = %c, "pod network configured");
                    }
                    configured = Some(c);
                }
                Err(e) => tracing::warn!(error = %e, "writing the CNI config failed"),
            }
        }
        if let Some(gateway) = configured.as_deref().and_then(gateway_of)
            && dns != Some(gateway.0)
        {
            match kubox_network::cni::ensure_gateway(
                setup::BRIDGE,
                setup::MTU,
                gateway.0,
                gateway.1,
            ) {
                Ok(()) => {
                    dns_task.abort_all();
                    dns_task.spawn(cluster_dns(client.clone(), cfg.clone(), gateway.0));
                    dns = Some(gateway.0);
                    local_dns.send_replace(dns);
                }
                Err(e) => tracing::warn!(error = %e, "creating the pod bridge failed"),
            }
        }
        if configured.is_some() {
            let ok =
                kubox_network::proxy::ensure_service_route(cfg.service_cidr, setup::BRIDGE).is_ok();
            if ok && !routed {
                tracing::debug!("service CIDR routed to the pod bridge");
            }
            routed = ok;
        }
        let pending = configured.is_some() && dns.is_none();
        let wait = Duration::from_secs(if (routed && !pending) || configured.is_none() {
            30
        } else {
            2
        });
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(n)) => cidr = n.spec.and_then(|s| s.pod_cidr).or(cidr),
                Some(Err(e)) => tracing::debug!(error = %e, "node watch failed; retrying"),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The gateway (first address) of a podCIDR, with the prefix length.
fn gateway_of(pod_cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let net = kubox_core::net::Ipv4Cidr::parse(pod_cidr).ok()?;
    Some((net.nth(1)?, net.prefix))
}

/// The node's resolvers: where names outside the cluster domain go, and what dnsPolicy
/// Default pods start from.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Runs the node-local cluster DNS on `gateway:53` until aborted (binding again every 2 s
/// while that fails). The node's resolv.conf gives the upstreams; the cluster DNS address and
/// the gateway itself are left out of them (they would loop back here).
async fn cluster_dns(client: Client, cfg: AgentConfig, gateway: Ipv4Addr) {
    let cluster_dns: Option<IpAddr> = cfg.cluster_dns.parse().ok();
    let upstreams: Vec<SocketAddr> = std::fs::read_to_string(RESOLV_CONF)
        .map(|t| kubox_dns::upstreams_from_resolv_conf(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|a| Some(a.ip()) != cluster_dns && a.ip() != IpAddr::V4(gateway))
        .collect();
    if upstreams.is_empty() {
        tracing::warn!(
            resolv_conf = RESOLV_CONF,
            "no usable nameserver for the cluster DNS to forward to: names outside {} will get SERVFAIL",
            cfg.cluster_domain
        );
    }
    let dns_cfg = kubox_dns::DnsConfig {
        listen: vec![SocketAddr::new(IpAddr::V4(gateway), 53)],
        cluster_domain: cfg.cluster_domain.clone(),
        upstreams,
    };
    loop {
        match kubox_dns::run(client.clone(), dns_cfg.clone(), std::future::pending()).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cluster DNS cannot start; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How often sandboxes of pods no worker knows are looked for after the first list.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);

/// Feeds the pod workers from a watch of the pods bound to this node and from the static pod
/// manifests (read every 5 s; their mirror pods in the API are not run, only kept in step);
/// removes sandboxes of pods that no longer exist once a list is complete, and every
/// [`ORPHAN_SWEEP`] after the first (a teardown that failed, or a sweep that found containerd
/// still starting, is retried there).
async fn watch_pods(
    client: Client,
    cri: Cri,
    ctx: Arc<pods::Ctx>,
    node_name: String,
    manifests: std::path::PathBuf,
) {
    let mut workers = pods::Workers::new(ctx);
    let mut statics = static_pods::StaticPods::new(manifests, node_name.clone(), client.clone());
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut listing: Option<HashSet<String>> = None;
    // The static pods are known before the first list completes (their sandboxes are live).
    for pod in statics.reload().started {
        workers.update(pod);
    }
    let mut reread = tokio::time::interval(Duration::from_secs(5));
    let mut listed = false;
    let mut sweep = tokio::time::interval(ORPHAN_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = reread.tick() => {
                let changes = statics.reload();
                for pod in changes.started {
                    workers.update(pod);
                }
                for uid in changes.stopped {
                    workers.gone(&uid);
                }
                statics.sync_mirrors().await;
                continue;
            }
            _ = sweep.tick() => {
                if listed {
                    let known: HashSet<String> = workers.known().into_iter().collect();
                    remove_orphan_sandboxes(&cri, &known).await;
                }
                continue;
            }
        };
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))
                if static_pods::is_mirror(&p) =>
            {
                statics.observe(&p, false)
            }
            Ok(watcher::Event::Delete(p)) if static_pods::is_mirror(&p) => {
                statics.observe(&p, true)
            }
            Ok(watcher::Event::Apply(p)) => workers.update(Arc::new(p)),
            Ok(watcher::Event::Delete(p)) => workers.gone(&spec::pod_uid(&p)),
            Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(p)) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(spec::pod_uid(&p));
                }
                workers.update(Arc::new(p));
            }
            Ok(watcher::Event::InitDone) => {
                let mut live = listing.take().unwrap_or_default();
                live.extend(statics.uids().cloned());
                for uid in workers.known() {
                    if !live.contains(&uid) {
                        workers.gone(&uid);
                    }
                }
                remove_orphan_sandboxes(&cri, &live).await;
                listed = true;
            }
            Err(e) => tracing::debug!(error = %e, "pod watch failed; retrying"),
        }
    }
}

async fn remove_orphan_sandboxes(cri: &Cri, live: &HashSet<String>) {
    let mut rt = cri.runtime.clone();
    let list = match rt
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
    {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e.message(), "listing sandboxes failed; the next sweep retries");
            return;
        }
    };
    for s in list.into_inner().items {
        let Some(uid) = s.labels.get(spec::LABEL_POD_UID) else {
            continue;
        };
        if live.contains(uid) {
            continue;
        }
        tracing::info!(pod = ?s.metadata.as_ref().map(|m| format!("{}/{}", m.namespace, m.name)), "removing the sandbox of a pod that no longer exists");
        // Stopping tears the pod network down (CNI DEL: veth and IP lease); a failure is
        // retried by the next sweep.
        let removed = match rt
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await
        {
            Ok(_) => rt
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(sandbox = %s.id, error = %e.message(), "removing an orphaned sandbox failed; retrying later");
        }
    }
}
