//! Shared state of the API server: the store, the resource registry, OpenAPI and configuration.

use kubox_core::resources::Registry;
use kubox_openapi::OpenApi;
use kubox_store::Backend;
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Typed configuration of the API server (the CLI builds it; nothing here reads env or argv).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Service CIDR, e.g. 10.43.0.0/16.
    pub service_cidr: (Ipv4Addr, u8),
    /// First service IP (the `kubernetes` Service), e.g. 10.43.0.1.
    pub kubernetes_service_ip: Ipv4Addr,
    /// Cluster DNS IP reserved for kube-system/kube-dns, e.g. 10.43.0.10.
    pub cluster_dns: Ipv4Addr,
    /// NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    pub cluster_domain: String,
    /// Address other nodes and pods reach the API server on.
    pub advertise_address: IpAddr,
    pub port: u16,
    /// PEM bundle served at /cacerts.
    pub server_ca_pem: String,
    /// tolerationSeconds of the not-ready/unreachable NoExecute tolerations the
    /// DefaultTolerationSeconds admission adds (upstream's flags, 300 s by default).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
    /// Users of the static token file (`--token-auth-file`), by token.
    pub static_tokens: HashMap<String, crate::authn::User>,
    /// `--service-account-extend-token-expiration`: pod-bound tokens asked for with
    /// 3607 s (kubelets' projected tokens) are valid a year, warning after the asked time.
    pub extend_token_expiration: bool,
    /// Signs and verifies service-account tokens (None: no tokens are issued or accepted).
    pub token_signer: Option<Arc<crate::tokens::TokenSigner>>,
    /// Admits agents at `/v1-kubox/join` (None: joining is off).
    pub join: Option<Arc<crate::join::JoinAuthority>>,
    /// How the API server reaches kubelets (pods' log, exec, attach, portforward): its own
    /// client certificate, trusting the server CA (None: those subresources answer 503).
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
}

/// A CRD's per-version serving details that the generic REST path needs.
#[derive(Debug, Clone, Default)]
pub struct CustomVersion {
    /// The version's openAPIV3Schema (structural), if any.
    pub schema: Option<Value>,
    /// additionalPrinterColumns of the version.
    pub printer_columns: Option<Value>,
    /// Whether unknown fields are kept at the root (x-kubernetes-preserve-unknown-fields).
    pub preserve_unknown: bool,
}

/// State shared by every request.
pub struct ApiState {
    pub store: Arc<dyn Backend>,
    pub registry: RwLock<Registry>,
    pub openapi: OpenApi,
    pub config: ApiConfig,
    /// (group, version, plural) -> CRD serving details.
    pub custom: RwLock<HashMap<(String, String, String), CustomVersion>>,
    /// Serializes Service IP / NodePort allocation.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// Bumped whenever the set of served resources changes (discovery caches key on it).
    pub discovery_generation: AtomicU64,
    /// The RBAC policy in memory (kept in step by `rbac::run`).
    pub rbac: crate::rbac::Rbac,
    /// Pods by node, for the Node authorizer (kept in step by `nodeauth::run`).
    pub node_graph: crate::nodeauth::NodeGraph,
    /// Admission webhook configurations (kept in step by `mirror::start`).
    pub webhooks: crate::webhooks::Webhooks,
    /// Recently verified bearer tokens.
    pub token_cache: crate::authn::TokenCache,
    /// The latest resource metrics of every node (kept by `metrics::scrape`).
    pub metrics: crate::metrics::Metrics,
    gc_running: AtomicBool,
}

impl ApiState {
    pub fn new(store: Arc<dyn Backend>, config: ApiConfig) -> Arc<ApiState> {
        let registry = Registry::builtin();
        let openapi = OpenApi::new(&registry);
        Arc::new(ApiState {
            store,
            registry: RwLock::new(registry),
            openapi,
            config,
            custom: RwLock::new(HashMap::new()),
            alloc_lock: tokio::sync::Mutex::new(()),
            discovery_generation: AtomicU64::new(1),
            rbac: Default::default(),
            node_graph: Default::default(),
            webhooks: Default::default(),
            token_cache: Default::default(),
            metrics: Default::default(),
            gc_running: AtomicBool::new(false),
        })
    }

    /// True once a garbage collector runs, so propagation finalizers will be processed.
    pub fn gc_running(&self) -> bool {
        self.gc_running.load(Ordering::Relaxed)
    }

    /// Called by the controller manager when its garbage collector starts.
    pub fn set_gc_running(&self, on: bool) {
        self.gc_running.store(on, Ordering::Relaxed);
    }

    /// A snapshot of the registry (never holds the lock across awaits).
    pub fn registry(&self) -> Registry {
        self.registry
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The CRD serving details for a custom resource version.
    pub fn custom_version(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<CustomVersion> {
        self.custom.read().ok().and_then(|m| {
            m.get(&(group.to_string(), version.to_string(), plural.to_string()))
                .cloned()
        })
    }
}
