//! kubox-controllers: the scheduler and the controllers of the control plane, each an API
//! client built on the `kube` runtime (watchers, reflectors, `Controller`). They see exactly the
//! API a remote client sees; `kubox-server` hands them a [`kube::Client`] whose transport calls
//! the API server in process.
//!
//! Entry points: [`run_controllers`], [`scheduler::run`]. One module per controller: [`scheduler`], `replicaset`, `replicationcontroller`, `deployment`, `job`, `cronjob`, `daemonset`, `statefulset`,
//! `endpoints` (Endpoints and EndpointSlices), `serviceaccount` (the `default` ServiceAccount
//! and the `kube-root-ca.crt` ConfigMap of every namespace), `gc` (ownerReference garbage
//! collection with background, foreground and orphan propagation), `podgc` (pods of deleted
//! nodes, unbound terminating pods, terminated pods beyond a threshold), `nodeipam` (podCIDRs),
//! `history` (ControllerRevisions of DaemonSets and StatefulSets), `servicelb` (LoadBalancer
//! ingress addresses, as k3s's servicelb), `clusterroleaggregation` (rules of aggregated
//! ClusterRoles such as admin/edit/view), `persistentvolume` (PV/PVC binding and reclaiming)
//! with `localpath` (k3s's local-path provisioner), `namespace` (empties and finalizes deleted
//! Namespaces), `nodelifecycle` (node health, condition taints, taint-based eviction),
//! `disruption` (PodDisruptionBudget status), `certificates` (CSR approving and signing),
//! `storageprotection` (PVC/PV in-use protection finalizers), `ephemeral` (claims of pods'
//! ephemeral volumes), `hpa` (HorizontalPodAutoscalers on metrics.k8s.io resource metrics).

pub mod certificates;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod ephemeral;
pub mod error;
pub use kubox_events as events;
pub mod gc;
pub mod history;
pub mod hpa;
pub mod job;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod scheduler;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod storageprotection;

pub use error::Error;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

/// What the controllers need to know about the cluster.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// The server CA bundle published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
    /// The cluster CIDR node IPAM carves /24 podCIDRs from.
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    /// Where local-path volumes go on every node: the server's `<data-dir>/storage` (k3s uses
    /// the fixed `/var/lib/rancher/k3s/storage`); agents create and remove the directories.
    pub local_path_dir: std::path::PathBuf,
    /// The node lifecycle controller's periods.
    pub node_lifecycle: nodelifecycle::NodeLifecycleConfig,
    /// The CSR signers' CA files and longest validity.
    pub csr_signing: certificates::SigningConfig,
    /// The HorizontalPodAutoscaler controller's periods.
    pub hpa: hpa::HpaConfig,
    /// The Job controller's pod failure back-off.
    pub job: job::JobConfig,
    /// The pod garbage collector's thresholds.
    pub pod_gc: podgc::PodGcConfig,
}

/// Starts every controller on `client` (the scheduler is started apart, with
/// [`scheduler::run`]); they run until the returned handles are aborted or the runtime stops.
pub fn run_controllers(client: Client, cfg: ControllersConfig) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(replicaset::run(client.clone())),
        tokio::spawn(replicationcontroller::run(client.clone())),
        tokio::spawn(deployment::run(client.clone())),
        tokio::spawn(job::run(client.clone(), cfg.job.clone())),
        tokio::spawn(cronjob::run(client.clone())),
        tokio::spawn(daemonset::run(client.clone())),
        tokio::spawn(statefulset::run(client.clone())),
        tokio::spawn(endpoints::run(client.clone())),
        tokio::spawn(serviceaccount::run(client.clone(), cfg.root_ca_pem.clone())),
        tokio::spawn(nodeipam::run(client.clone(), cfg.cluster_cidr)),
        tokio::spawn(clusterroleaggregation::run(client.clone())),
        tokio::spawn(servicelb::run(client.clone())),
        tokio::spawn(resourcequota::run(client.clone())),
        tokio::spawn(persistentvolume::run(
            client.clone(),
            persistentvolume::StorageConfig {
                local_path_dir: cfg.local_path_dir.clone(),
            },
        )),
        tokio::spawn(namespace::run(client.clone())),
        tokio::spawn(nodelifecycle::run(client.clone(), cfg.node_lifecycle)),
        tokio::spawn(disruption::run(client.clone())),
        tokio::spawn(certificates::run(client.clone(), cfg.csr_signing)),
        tokio::spawn(storageprotection::run(client.clone())),
        tokio::spawn(ephemeral::run(client.clone())),
        tokio::spawn(hpa::run(client.clone(), cfg.hpa)),
        tokio::spawn(podgc::run(client.clone(), cfg.pod_gc)),
        tokio::spawn(gc::run(client)),
    ]
}

/// What a workload controller's reconcile gets: its client and event recorder.
pub(crate) struct Ctx {
    pub client: Client,
    pub recorder: events::Recorder,
}

impl Ctx {
    pub(crate) fn new(client: &Client, component: &'static str) -> Arc<Ctx> {
        Arc::new(Ctx {
            client: client.clone(),
            recorder: events::Recorder::new(client.clone(), component),
        })
    }
}

/// The error policy of every controller here: log at debug, retry in 2 s.
pub(crate) fn retry_soon<K: ResourceExt, C>(obj: Arc<K>, err: &Error, _: Arc<C>) -> Action {
    tracing::debug!(object = %obj.name_any(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(2))
}
