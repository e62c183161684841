//! kubox-server: starts the control plane in one process.
//!
//! Entry point: [`run`] with a typed [`ServerConfig`] (built by `cmd/kubox` from flags, the
//! config file and `KUBOX_*` env; nothing here reads argv or env). Order of start-up: data dir
//! check, listening socket (so a busy port fails fast), first-boot PKI, SQLite datastore,
//! bootstrap objects, admin kubeconfig, then the HTTPS API until shutdown.

mod error;

pub use error::Error;
pub use kubox_controllers::hpa::HpaConfig;
pub use kubox_controllers::job::JobConfig;
pub use kubox_controllers::nodelifecycle::NodeLifecycleConfig;
pub use kubox_controllers::podgc::PodGcConfig;

use kubox_apiserver::authn::User;
use kubox_apiserver::{ApiConfig, ApiState};
use kubox_core::net::Ipv4Cidr;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything `kubox server` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: u32,
    pub https_listen_port: u16,
    pub bind_address: IpAddr,
    pub advertise_address: Option<IpAddr>,
    pub tls_sans: Vec<String>,
    pub node_name: Option<String>,
    pub node_ips: Vec<IpAddr>,
    pub token: Option<String>,
    pub cluster_cidr: Ipv4Cidr,
    pub service_cidr: Ipv4Cidr,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    pub service_node_port_range: (u16, u16),
    pub disable_agent: bool,
    pub disable: Vec<String>,
    pub disable_scheduler: bool,
    pub disable_controller_manager: bool,
    /// Runtime state (containerd's socket and state, runc state): `/run/kubox`.
    pub run_dir: PathBuf,
    /// The kubox binary (the node's CNI plugin links point at it).
    pub exe: PathBuf,
    /// Revisions of history kept for watches before compaction.
    pub datastore_history: i64,
    pub datastore_compact_interval: std::time::Duration,
    /// Port of the node agent's kubelet API.
    pub kubelet_port: u16,
    /// The embedded node agent's labels, taints, eviction thresholds and log rotation.
    pub node: kubox_agent::NodeOptions,
    /// The node lifecycle controller's periods.
    pub node_lifecycle: NodeLifecycleConfig,
    /// tolerationSeconds the DefaultTolerationSeconds admission gives pods (upstream: 300).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
    /// kube-apiserver's `--token-auth-file`: CSV `token,user,uid,"group1,group2"`.
    pub token_auth_file: Option<PathBuf>,
    /// kube-apiserver's `--service-account-extend-token-expiration` (default true).
    pub service_account_extend_token_expiration: bool,
    /// How often the built-in metrics-server scrapes kubelets (`--metric-resolution`, 15 s).
    pub metric_resolution: std::time::Duration,
    /// The HorizontalPodAutoscaler controller's sync period and downscale stabilization.
    pub hpa: kubox_controllers::hpa::HpaConfig,
    /// The Job controller's pod failure back-off (10 s doubling, at most 6 min).
    pub job: kubox_controllers::job::JobConfig,
    /// The pod garbage collector's thresholds.
    pub pod_gc: kubox_controllers::podgc::PodGcConfig,
}

impl ServerConfig {
    /// k3s's defaults.
    pub fn defaults() -> ServerConfig {
        ServerConfig {
            data_dir: PathBuf::from("/var/lib/kubox"),
            write_kubeconfig: PathBuf::from("/etc/kubox/kubox.yaml"),
            write_kubeconfig_mode: 0o600,
            https_listen_port: 6443,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertise_address: None,
            tls_sans: Vec::new(),
            node_name: None,
            node_ips: Vec::new(),
            token: None,
            cluster_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                prefix: 16,
            },
            service_cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            cluster_domain: "cluster.local".into(),
            service_node_port_range: (30000, 32767),
            disable_agent: false,
            disable: Vec::new(),
            disable_scheduler: false,
            disable_controller_manager: false,
            run_dir: PathBuf::from("/run/kubox"),
            exe: PathBuf::from("/usr/local/bin/kubox"),
            datastore_history: 10_000,
            datastore_compact_interval: std::time::Duration::from_secs(60),
            kubelet_port: kubox_agent::kubelet::DEFAULT_PORT,
            node: Default::default(),
            node_lifecycle: Default::default(),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            token_auth_file: None,
            service_account_extend_token_expiration: true,
            metric_resolution: kubox_apiserver::metrics::DEFAULT_RESOLUTION,
            hpa: Default::default(),
            job: Default::default(),
            pod_gc: Default::default(),
        }
    }

    /// Checks values that are individually valid but unusable together.
    pub fn check(&self) -> Result<(), Error> {
        if self.service_cidr.prefix > 28 {
            return Err(Error::Config(format!(
                "--service-cidr {} is too small: use a /28 or larger",
                self.service_cidr
            )));
        }
        if !self.service_cidr.contains(self.cluster_dns) {
            return Err(Error::Config(format!(
                "--cluster-dns {} is not inside --service-cidr {}",
                self.cluster_dns, self.service_cidr
            )));
        }
        if self.cluster_cidr.prefix > 24 {
            return Err(Error::Config(format!(
                "--cluster-cidr {} is too small: each node needs a /24, so use a /24 or larger",
                self.cluster_cidr
            )));
        }
        if self.cluster_cidr.contains(self.service_cidr.addr)
            || self.service_cidr.contains(self.cluster_cidr.addr)
        {
            return Err(Error::Config(format!(
                "--cluster-cidr {} and --service-cidr {} overlap",
                self.cluster_cidr, self.service_cidr
            )));
        }
        if self.cluster_domain.is_empty()
            || kubox_core::names::name_error(&self.cluster_domain, false).is_some()
        {
            return Err(Error::Config(format!(
                "--cluster-domain {:?} is not a valid DNS domain",
                self.cluster_domain
            )));
        }
        Ok(())
    }

    /// The first service IP, used by the `kubernetes` Service.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_cidr
            .nth(1)
            .unwrap_or(Ipv4Addr::new(10, 43, 0, 1))
    }
}

use kubox_agent::{hostname, primary_ip};

fn check_writable(dir: &Path) -> Result<(), Error> {
    let err = |source| Error::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".kubox-write-test");
    std::fs::write(&probe, b"ok").map_err(err)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Runs the server until `shutdown` resolves.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    cfg.check()?;
    let server_dir = cfg.data_dir.join("server");
    check_writable(&server_dir)?;

    let addr = SocketAddr::new(cfg.bind_address, cfg.https_listen_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                Error::PortInUse {
                    addr: cfg.bind_address.to_string(),
                    port: cfg.https_listen_port,
                }
            } else {
                Error::Listen {
                    addr: cfg.bind_address.to_string(),
                    port: cfg.https_listen_port,
                    source,
                }
            }
        })?;

    let node_ips = if cfg.node_ips.is_empty() {
        vec![primary_ip()]
    } else {
        cfg.node_ips.clone()
    };
    let advertise = cfg
        .advertise_address
        .or_else(|| node_ips.first().copied())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut all_ips = node_ips.clone();
    if !all_ips.contains(&advertise) {
        all_ips.push(advertise);
    }
    let tls_dir = server_dir.join("tls");
    let pki = kubox_pki::ensure_server_pki(&kubox_pki::ServerPkiConfig {
        data_dir: cfg.data_dir.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        service_ip: IpAddr::V4(cfg.kubernetes_service_ip()),
        hostname: cfg.node_name.clone().unwrap_or_else(hostname),
        node_ips: all_ips,
        tls_sans: cfg.tls_sans.clone(),
        token: cfg.token.clone(),
    })
    .map_err(|e| Error::Pki {
        path: tls_dir.clone(),
        message: e.to_string(),
    })?;
    let tls = kubox_pki::server_tls_config(&pki).map_err(|e| Error::Pki {
        path: tls_dir.clone(),
        message: e.to_string(),
    })?;

    // What the API server presents to kubelets (logs, exec, attach, port-forward), trusting
    // the server CA their serving certificates come from.
    let kubelet_client = kubox_pki::client_tls_config(
        &pki.file(kubox_pki::files::CLIENT_APISERVER),
        &pki.server_ca_pem,
        pki.apiserver_client_cert_pem(),
        pki.apiserver_client_key_pem(),
    )
    .map_err(|e| Error::Pki {
        path: tls_dir.clone(),
        message: e.to_string(),
    })?;

    let db_path = server_dir.join("db").join("state.db");
    let store = kubox_store::sqlite::SqliteBackend::open(
        &db_path,
        kubox_store::sqlite::SqliteOptions {
            history_window: cfg.datastore_history,
            compact_interval: cfg.datastore_compact_interval,
            ..Default::default()
        },
    )
    .map_err(|e| Error::Store {
        path: db_path.clone(),
        message: e.to_string(),
    })?;

    // Service-account tokens: upstream's issuer and the audiences k3s accepts.
    let issuer = format!("https://kubernetes.default.svc.{}", cfg.cluster_domain);
    let token_signer = kubox_apiserver::tokens::TokenSigner::new(
        pki.sa_signing_key_pem(),
        pki.sa_public_key_pem(),
        issuer.clone(),
        vec![issuer, "k3s".into()],
    )
    .map_err(|message| Error::Pki {
        path: pki.tls_dir.clone(),
        message,
    })?;
    let static_tokens = match &cfg.token_auth_file {
        None => Default::default(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| kubox_apiserver::authn::parse_token_file(&text))
            .map_err(|e| Error::Config(format!("--token-auth-file {}: {e}", path.display())))?,
    };
    let state = ApiState::new(
        store.clone(),
        ApiConfig {
            service_cidr: (cfg.service_cidr.addr, cfg.service_cidr.prefix),
            kubernetes_service_ip: cfg.kubernetes_service_ip(),
            cluster_dns: cfg.cluster_dns,
            node_port_range: cfg.service_node_port_range,
            cluster_domain: cfg.cluster_domain.clone(),
            advertise_address: advertise,
            port: cfg.https_listen_port,
            server_ca_pem: pki.server_ca_pem.clone(),
            default_not_ready_toleration_seconds: cfg.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: cfg.default_unreachable_toleration_seconds,
            token_signer: Some(std::sync::Arc::new(token_signer)),
            static_tokens,
            extend_token_expiration: cfg.service_account_extend_token_expiration,
            kubelet_client: Some(Arc::new(kubelet_client)),
            join: Some(std::sync::Arc::new(kubox_apiserver::join::JoinAuthority {
                pki: pki.clone(),
                token_secret: kubox_pki::parse_token(&pki.token)
                    .map(|t| t.password)
                    .unwrap_or_default(),
                agent_settings: serde_json::json!({
                    "clusterCIDR": cfg.cluster_cidr.to_string(),
                    "serviceCIDR": cfg.service_cidr.to_string(),
                    "clusterDNS": cfg.cluster_dns.to_string(),
                    "clusterDomain": cfg.cluster_domain,
                    "kubernetesService": {"ip": cfg.kubernetes_service_ip().to_string(), "port": 443},
                }),
            })),
        },
    );
    // k3s's packaged metrics-server, built in: off with `--disable metrics-server`.
    let metrics_server = !cfg.disable.iter().any(|d| d == "metrics-server");
    if !metrics_server && let Ok(mut reg) = state.registry.write() {
        reg.remove_group("metrics.k8s.io");
    }
    kubox_apiserver::bootstrap::ensure(&state)
        .await
        .map_err(|e| Error::Store {
            path: db_path.clone(),
            message: e.to_string(),
        })?;
    // The authorizers' in-memory views are loaded before any request is served.
    let store_err = |e: kubox_store::Error| Error::Store {
        path: db_path.clone(),
        message: e.to_string(),
    };
    kubox_apiserver::mirror::start(&state)
        .await
        .map_err(store_err)?;
    tokio::spawn(kubox_apiserver::crds::run(state.clone()));
    if metrics_server {
        tokio::spawn(kubox_apiserver::metrics::scrape(
            state.clone(),
            cfg.metric_resolution,
        ));
    }

    let server_url = format!("https://127.0.0.1:{}", cfg.https_listen_port);
    let (cert, key) = (
        pki.admin_cert_pem().to_string(),
        pki.admin_key_pem().to_string(),
    );
    kubox_pki::write_kubeconfig(
        &cfg.write_kubeconfig,
        cfg.write_kubeconfig_mode,
        &server_url,
        &pki.server_ca_pem,
        &cert,
        &key,
        "default",
    )
    .map_err(|e| Error::Kubeconfig {
        path: cfg.write_kubeconfig.clone(),
        message: e.to_string(),
    })?;
    tracing::info!(path = %cfg.write_kubeconfig.display(), "wrote admin kubeconfig");
    // The scheduler and controllers are API clients whose transport calls the API server in
    // process, each with its own identity.
    let local_client = |user: &str, program: &'static str| {
        kube::Client::new(
            kubox_apiserver::http::in_process(
                state.clone(),
                User::from_cert(user.into(), Vec::new()),
                program,
            ),
            "default",
        )
    };
    let mut components = Vec::new();
    if !cfg.disable_controller_manager {
        state.set_gc_running(true);
        components.extend(kubox_controllers::run_controllers(
            local_client("system:kube-controller-manager", "kube-controller-manager"),
            kubox_controllers::ControllersConfig {
                root_ca_pem: pki.server_ca_pem.clone(),
                cluster_cidr: (cfg.cluster_cidr.addr, cfg.cluster_cidr.prefix),
                local_path_dir: cfg.data_dir.join("storage"),
                node_lifecycle: cfg.node_lifecycle.clone(),
                csr_signing: csr_signing(&pki),
                hpa: cfg.hpa.clone(),
                job: cfg.job.clone(),
                pod_gc: cfg.pod_gc.clone(),
            },
        ));
    }
    if !cfg.disable_scheduler {
        components.push(tokio::spawn(kubox_controllers::scheduler::run(
            local_client("system:kube-scheduler", "kube-scheduler"),
        )));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tracing::info!(address = %addr, advertise = %advertise, "kubox server is listening");
    let serve = tokio::spawn(kubox_apiserver::http::serve(
        state.clone(),
        listener,
        Arc::new(tls),
        stopped(stop_rx.clone()),
    ));
    if !cfg.disable_agent {
        let node_name = cfg.node_name.clone().unwrap_or_else(hostname);
        let node_ip = node_ips.first().copied().unwrap_or(advertise);
        let mut sans = vec![node_name.clone(), "localhost".to_string()];
        sans.extend(node_ips.iter().map(|ip| ip.to_string()));
        let (cert_pem, key_pem) = pki
            .issue_serving_cert(&node_name, &sans, 365)
            .map_err(|e| Error::Pki {
                path: tls_dir.clone(),
                message: format!("issuing the kubelet serving certificate: {e}"),
            })?;
        let agent_cfg = kubox_agent::AgentConfig {
            node_name: node_name.clone(),
            node_ip,
            data_dir: cfg.data_dir.clone(),
            run_dir: cfg.run_dir.clone(),
            cluster_cidr: cfg.cluster_cidr.to_string(),
            service_cidr: (cfg.service_cidr.addr, cfg.service_cidr.prefix),
            cluster_dns: cfg.cluster_dns.to_string(),
            cluster_domain: cfg.cluster_domain.clone(),
            kubernetes_service: (cfg.kubernetes_service_ip().to_string(), 443),
            exe: cfg.exe.clone(),
            kubelet: kubox_agent::kubelet::KubeletServing {
                port: cfg.kubelet_port,
                cert_pem,
                key_pem,
                client_ca_pem: pki.client_ca_pem.clone(),
            },
            node: control_plane_node(&cfg.node),
        };
        let client = kube::Client::new(
            kubox_apiserver::http::in_process(
                state.clone(),
                User::from_cert(
                    format!("system:node:{node_name}"),
                    vec!["system:nodes".into()],
                ),
                "kubelet",
            ),
            "default",
        );
        if let Err(e) = kubox_agent::run(client, agent_cfg, stopped(stop_rx.clone())).await {
            for c in &components {
                c.abort();
            }
            serve.abort();
            return Err(Error::Agent(e.to_string()));
        }
    }
    let _ = serve.await;
    for c in components {
        c.abort();
    }
    tracing::info!("kubox server stopped");
    drop(store);
    Ok(())
}

/// The CSR signers' CA files, as k3s passes them to kube-controller-manager
/// (`--cluster-signing-*`): the client CA for both client signers, the server CA for
/// kubelet serving certificates; one year at most, as `--cluster-signing-duration`.
/// The server's own node: the operator's settings plus k3s's control-plane role labels.
fn control_plane_node(options: &kubox_agent::NodeOptions) -> kubox_agent::NodeOptions {
    let mut node = options.clone();
    for role in ["control-plane", "master"] {
        node.labels
            .insert(format!("node-role.kubernetes.io/{role}"), "true".into());
    }
    node
}

fn csr_signing(pki: &kubox_pki::ServerPki) -> kubox_controllers::certificates::SigningConfig {
    use kubox_controllers::certificates::SignerFiles;
    use kubox_pki::files;
    let pair = |base: &str| SignerFiles {
        cert: pki.file(&format!("{base}.crt")),
        key: pki.file(&format!("{base}.key")),
    };
    kubox_controllers::certificates::SigningConfig {
        kube_apiserver_client: pair(files::CLIENT_CA),
        kube_apiserver_client_kubelet: pair(files::CLIENT_CA),
        kubelet_serving: pair(files::SERVER_CA),
        duration: std::time::Duration::from_secs(365 * 24 * 3600),
    }
}
