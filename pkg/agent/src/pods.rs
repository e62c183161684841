//! Pod workers: one task per pod bound to this node drives CRI towards the pod's spec (sandbox,
//! init containers in order, containers, restarts with back-off, graceful termination) and
//! reports what CRI says as the pod's status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kubox_containerd::cri::{Cri, api};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::spec::{self, DnsSettings, LABEL_CONTAINER_NAME, LABEL_POD_UID};

/// What every worker shares.
pub struct Ctx {
    pub client: Client,
    pub cri: Cri,
    pub node_name: String,
    pub node_ip: String,
    pub dns: DnsSettings,
    /// `<data-dir>/agent/pods`: per-pod logs and volumes.
    pub pods_dir: std::path::PathBuf,
    /// The `kubernetes` Service address given to pods.
    pub kubernetes_service: (String, u16),
    /// Service-account tokens projected into pods, refreshed before they expire.
    pub tokens: crate::volumes::TokenCache,
    /// Host paths of the pods' claim volumes, resolved when the volumes are prepared.
    pub claims: crate::volumes::ClaimPaths,
    /// The node's events (`kubelet` on this node).
    pub recorder: kubox_events::Recorder,
}

/// What a pod worker is told: the latest pod object, or `None` once it is gone from the API
/// (tear everything down). A watch channel: only the newest state matters, none is dropped.
pub type PodState = Option<Arc<Pod>>;

const BACKOFF_START: Duration = Duration::from_secs(10);
/// Longest a postStart hook may run.
const POST_START_LIMIT: Duration = Duration::from_secs(120);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

struct Restart {
    backoff: Duration,
    not_before: Instant,
}

/// The desired-state loop of one pod.
pub async fn worker(ctx: Arc<Ctx>, mut rx: watch::Receiver<PodState>) {
    let mut w = Worker {
        ctx,
        restarts: HashMap::new(),
        waiting: HashMap::new(),
        last_status: Value::Null,
        volumes_synced: None,
        probes: HashMap::new(),
        pull_backoff: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<Arc<Pod>> = None;
    loop {
        let current = rx.borrow_and_update().clone();
        let Some(pod) = current else {
            if let Some(pod) = &last {
                let _ = w.stop_sandboxes(&spec::pod_uid(pod), 0).await;
                crate::volumes::cleanup(&w.ctx, &spec::pod_uid(pod));
            }
            return;
        };
        match w.sync(&pod).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(pod = ?pod.metadata.name, error = %e, "pod sync failed"),
        }
        last = Some(pod);
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The agent is going away: leave the containers running.
                    return;
                }
            }
            _ = tick.tick() => {}
        }
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    restarts: HashMap<String, Restart>,
    /// Why a container is not running yet (reason, message), by container name.
    waiting: HashMap<String, (String, String)>,
    last_status: Value,
    /// When the pod's content volumes were last written (rewritten every 10 s).
    volumes_synced: Option<Instant>,
    /// Probe results per container name.
    probes: HashMap<String, crate::probes::ProbeState>,
    /// Image pull back-off by image.
    pull_backoff: crate::pull::Backoffs,
}

type SyncResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The containers of a sandbox.
pub(crate) async fn containers_in(
    cri: &Cri,
    sandbox_id: &str,
) -> Result<Vec<api::Container>, tonic::Status> {
    Ok(cri
        .runtime
        .clone()
        .list_containers(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                pod_sandbox_id: sandbox_id.into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers)
}

fn latest_by_name(containers: &[api::Container]) -> HashMap<String, api::Container> {
    let mut out: HashMap<String, api::Container> = HashMap::new();
    for c in containers {
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
        let newer = out
            .get(&name)
            .is_none_or(|o| o.metadata.as_ref().map_or(0, |m| m.attempt) < attempt);
        if newer {
            out.insert(name, c.clone());
        }
    }
    out
}

/// The pod's ephemeral containers as containers (the same fields, fewer of them allowed),
/// each with its `targetContainerName`.
pub(crate) fn ephemeral_containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|e| {
            let target = e.target_container_name.clone().filter(|t| !t.is_empty());
            let mut v = serde_json::to_value(e).ok()?;
            v.as_object_mut()?.remove("targetContainerName");
            Some((serde_json::from_value(v).ok()?, target))
        })
        .collect()
}

fn state_of(c: &api::Container) -> api::ContainerState {
    api::ContainerState::try_from(c.state).unwrap_or(api::ContainerState::ContainerUnknown)
}

impl Worker {
    /// One pass; `Ok(true)` when the pod is finished with (deleted and cleaned up).
    async fn sync(&mut self, pod: &Pod) -> SyncResult<bool> {
        let uid = spec::pod_uid(pod);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            self.kill_pod(pod, grace).await?;
            self.report_terminal(pod).await?;
            crate::volumes::cleanup(&self.ctx, &uid);
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api
                .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(true);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Finished pods keep their status; their containers are stopped.
            self.stop_sandboxes(&uid, 0).await?;
            return Ok(false);
        }
        if self
            .volumes_synced
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            if let Err(message) = crate::volumes::prepare(&self.ctx, pod).await {
                for c in spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(spec.containers.iter())
                {
                    self.waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), message.clone()),
                    );
                }
                self.report(pod, None, "").await?;
                return Ok(false);
            }
            self.volumes_synced = Some(Instant::now());
        }
        let sandbox = self.ensure_sandbox(pod).await?;
        let Some((sandbox_id, sandbox_cfg, ip)) = sandbox else {
            self.report(pod, None, "").await?;
            return Ok(false);
        };
        let mut cri = self.ctx.cri.runtime.clone();
        let containers = containers_in(&self.ctx.cri, &sandbox_id).await?;
        let latest = latest_by_name(&containers);
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Init containers, in order, each to a successful exit.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            match latest.get(&c.name) {
                Some(cur) if state_of(cur) == api::ContainerState::ContainerExited => {
                    let code = self.exit_code(&cur.id).await?;
                    if code == 0 {
                        continue;
                    }
                    initialized = false;
                    if restart_policy != "Never" {
                        self.restart(pod, c, &sandbox_id, &sandbox_cfg, &ip, cur)
                            .await?;
                    }
                    break;
                }
                Some(cur) if state_of(cur) != api::ContainerState::ContainerUnknown => {
                    initialized = false;
                    break;
                }
                _ => {
                    initialized = false;
                    self.start_container(pod, c, 0, &sandbox_id, &sandbox_cfg, &ip)
                        .await?;
                    break;
                }
            }
        }
        if initialized {
            for c in &spec.containers {
                match latest.get(&c.name) {
                    None => {
                        self.start_container(pod, c, 0, &sandbox_id, &sandbox_cfg, &ip)
                            .await?;
                    }
                    Some(cur) if state_of(cur) == api::ContainerState::ContainerExited => {
                        let code = self.exit_code(&cur.id).await?;
                        let again = restart_policy == "Always"
                            || (restart_policy == "OnFailure" && code != 0);
                        if again {
                            self.restart(pod, c, &sandbox_id, &sandbox_cfg, &ip, cur)
                                .await?;
                        }
                    }
                    Some(cur) if state_of(cur) == api::ContainerState::ContainerCreated => {
                        let _ = cri
                            .start_container(api::StartContainerRequest {
                                container_id: cur.id.clone(),
                            })
                            .await;
                    }
                    Some(cur) => self.probe(pod, c, cur, &ip).await,
                }
            }
        }
        self.start_ephemeral(pod, &latest, &sandbox_id, &sandbox_cfg, &ip)
            .await?;
        self.report(pod, Some(&sandbox_id), &ip).await?;
        Ok(false)
    }

    /// Ephemeral (debug) containers: each started once, never restarted, whether or not the
    /// pod is initialized (as the kubelet does); one with a `targetContainerName` joins
    /// that container's PID namespace, so it sees its processes.
    async fn start_ephemeral(
        &mut self,
        pod: &Pod,
        latest: &HashMap<String, api::Container>,
        sandbox_id: &str,
        sandbox_cfg: &api::PodSandboxConfig,
        ip: &str,
    ) -> SyncResult<()> {
        for (c, target) in ephemeral_containers(pod) {
            if latest.contains_key(&c.name) {
                continue;
            }
            let mut cfg = sandbox_cfg.clone();
            if let Some(target) = target {
                let Some(t) = latest.get(&target) else {
                    self.waiting.insert(
                        c.name.clone(),
                        (
                            "ContainerCreating".into(),
                            format!("waiting for target container {target} to start"),
                        ),
                    );
                    continue;
                };
                if let Some(ns) = cfg
                    .linux
                    .as_mut()
                    .and_then(|l| l.security_context.as_mut())
                    .and_then(|s| s.namespace_options.as_mut())
                {
                    ns.pid = api::NamespaceMode::Target as i32;
                    ns.target_id = t.id.clone();
                }
            }
            self.start_container(pod, &c, 0, sandbox_id, &cfg, ip)
                .await?;
        }
        Ok(())
    }

    async fn exit_code(&self, id: &str) -> SyncResult<i32> {
        let st = self
            .ctx
            .cri
            .runtime
            .clone()
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        Ok(st.exit_code)
    }

    /// Runs the due probes of a running container; a failed liveness/startup probe kills it.
    async fn probe(&mut self, pod: &Pod, c: &Container, cur: &api::Container, ip: &str) {
        if state_of(cur) != api::ContainerState::ContainerRunning {
            return;
        }
        if c.startup_probe.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none() {
            return;
        }
        let state = self.probes.entry(c.name.clone()).or_insert_with(|| {
            crate::probes::ProbeState::new(cur.id.clone(), c.readiness_probe.is_some())
        });
        if state.container_id != cur.id {
            *state = crate::probes::ProbeState::new(cur.id.clone(), c.readiness_probe.is_some());
        }
        let verdict = crate::probes::probe(&self.ctx.cri, c, ip, state).await;
        if let crate::probes::Verdict::Kill(kind, message) = verdict {
            tracing::info!(pod = ?pod.metadata.name, container = %c.name, probe = kind, %message, "container failed its probe; killing it");
            let failed = format!("{kind} probe failed: {message}");
            container_event(&self.ctx, pod, c, "Warning", "Unhealthy", failed).await;
            let killing = format!(
                "Container {} failed {} probe, will be restarted",
                c.name,
                kind.to_lowercase()
            );
            container_event(&self.ctx, pod, c, "Normal", "Killing", killing).await;
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            let _ = self
                .ctx
                .cri
                .runtime
                .clone()
                .stop_container(api::StopContainerRequest {
                    container_id: cur.id.clone(),
                    timeout: grace,
                })
                .await;
            self.probes.remove(&c.name);
        }
    }

    /// Starts the next attempt of an exited container once its back-off has passed.
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox_id: &str,
        sandbox_cfg: &api::PodSandboxConfig,
        ip: &str,
        cur: &api::Container,
    ) -> SyncResult<()> {
        let now = Instant::now();
        // The first restart is immediate; then 10 s, doubling up to 5 min (kubelet's back-off).
        let entry = self.restarts.entry(c.name.clone()).or_insert(Restart {
            backoff: BACKOFF_START / 2,
            not_before: now,
        });
        if now < entry.not_before {
            let already = self
                .waiting
                .get(&c.name)
                .is_some_and(|(reason, _)| reason == "CrashLoopBackOff");
            if !already {
                let message = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name,
                    pod.metadata.name.clone().unwrap_or_default(),
                    pod.metadata.namespace.clone().unwrap_or_default(),
                    spec::pod_uid(pod)
                );
                container_event(&self.ctx, pod, c, "Warning", "BackOff", message).await;
            }
            self.waiting.insert(
                c.name.clone(),
                (
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={} pod={}",
                        entry.backoff.as_secs(),
                        c.name,
                        pod.metadata.name.clone().unwrap_or_default()
                    ),
                ),
            );
            return Ok(());
        }
        entry.backoff = (entry.backoff * 2).min(BACKOFF_MAX);
        entry.not_before = now + entry.backoff;
        let attempt = cur.metadata.as_ref().map_or(0, |m| m.attempt) + 1;
        self.start_container(pod, c, attempt, sandbox_id, sandbox_cfg, ip)
            .await?;
        // Keep only the previous attempt (for `kubectl logs --previous`).
        let mut cri = self.ctx.cri.runtime.clone();
        let all = containers_in(&self.ctx.cri, sandbox_id).await?;
        for old in all.iter().filter(|o| {
            o.metadata
                .as_ref()
                .is_some_and(|m| m.name == c.name && m.attempt + 1 < attempt)
        }) {
            let _ = cri
                .remove_container(api::RemoveContainerRequest {
                    container_id: old.id.clone(),
                })
                .await;
        }
        Ok(())
    }

    /// The pod's ready sandbox, created if missing: (id, config, pod IP). `None` while the
    /// sandbox cannot be made (the reason is recorded for the status).
    async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
    ) -> SyncResult<Option<(String, api::PodSandboxConfig, String)>> {
        let uid = spec::pod_uid(pod);
        let mut cri = self.ctx.cri.runtime.clone();
        let sandboxes = cri
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: [(LABEL_POD_UID.to_string(), uid.clone())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let attempt = sandboxes.len() as u32;
        let log_dir = self.ctx.pods_dir.join(&uid).join("logs");
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at);
        let (id, cfg) = match ready {
            Some(s) => {
                let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
                (
                    s.id.clone(),
                    spec::sandbox_config(
                        pod,
                        attempt,
                        &self.ctx.dns,
                        &log_dir.display().to_string(),
                    ),
                )
            }
            None => {
                // A sandbox that died takes its containers with it: clean up and start over.
                for s in &sandboxes {
                    let _ = cri
                        .stop_pod_sandbox(api::StopPodSandboxRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await;
                    let _ = cri
                        .remove_pod_sandbox(api::RemovePodSandboxRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await;
                }
                std::fs::create_dir_all(&log_dir)?;
                let cfg = spec::sandbox_config(
                    pod,
                    attempt,
                    &self.ctx.dns,
                    &log_dir.display().to_string(),
                );
                match cri
                    .run_pod_sandbox(api::RunPodSandboxRequest {
                        config: Some(cfg.clone()),
                        runtime_handler: String::new(),
                    })
                    .await
                {
                    Ok(r) => {
                        self.waiting.clear();
                        (r.into_inner().pod_sandbox_id, cfg)
                    }
                    Err(e) => {
                        let msg = format!("Failed to create pod sandbox: {}", e.message());
                        tracing::warn!(pod = ?pod.metadata.name, error = %e.message(), "creating the pod sandbox failed");
                        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                            self.waiting
                                .insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
                        }
                        return Ok(None);
                    }
                }
            }
        };
        let status = cri
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        let ip = if ip.is_empty() && pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            self.ctx.node_ip.clone()
        } else {
            ip
        };
        Ok(Some((id, cfg, ip)))
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox_cfg: &api::PodSandboxConfig,
        ip: &str,
    ) -> SyncResult<()> {
        let image = c.image.clone().unwrap_or_default();
        if let Err((reason, message)) =
            crate::pull::ensure_image(&self.ctx, &mut self.pull_backoff, pod, c).await
        {
            self.waiting.insert(c.name.clone(), (reason, message));
            return Ok(());
        }
        let env = match crate::env::environment(&self.ctx, pod, c, ip).await {
            Ok(env) => env,
            Err(message) => {
                self.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerConfigError".into(), message),
                );
                return Ok(());
            }
        };
        let expand = |v: &Vec<String>| v.iter().map(|s| spec::expand(s, &env)).collect::<Vec<_>>();
        let sc = c.security_context.clone().unwrap_or_default();
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let caps = sc.capabilities.clone().unwrap_or_default();
        let mut labels: HashMap<String, String> = sandbox_cfg.labels.clone();
        labels.retain(|k, _| k.starts_with("io.kubernetes."));
        labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            command: expand(&c.command.clone().unwrap_or_default()),
            args: expand(&c.args.clone().unwrap_or_default()),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: env
                .iter()
                .map(|(k, v)| api::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            labels,
            annotations: HashMap::new(),
            log_path: format!("{}/{}.log", c.name, attempt),
            mounts: crate::volumes::mounts(&self.ctx, pod, c),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(spec::linux_resources(c)),
                security_context: Some(api::LinuxContainerSecurityContext {
                    capabilities: Some(api::Capability {
                        add_capabilities: caps.add.unwrap_or_default(),
                        drop_capabilities: caps.drop.unwrap_or_default(),
                        ..Default::default()
                    }),
                    privileged: sc.privileged == Some(true),
                    run_as_user: sc
                        .run_as_user
                        .or(psc.run_as_user)
                        .map(|value| api::Int64Value { value }),
                    run_as_group: sc
                        .run_as_group
                        .or(psc.run_as_group)
                        .map(|value| api::Int64Value { value }),
                    readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                    no_new_privs: sc.allow_privilege_escalation == Some(false),
                    namespace_options: sandbox_cfg
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                    supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let mut cri = self.ctx.cri.runtime.clone();
        let created = cri
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_cfg.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => {
                let message = format!("Created container: {}", c.name);
                container_event(&self.ctx, pod, c, "Normal", "Created", message).await;
                r.into_inner().container_id
            }
            Err(e) => {
                self.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerError".into(), e.message().to_string()),
                );
                return Ok(());
            }
        };
        if let Err(e) = cri
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            self.waiting.insert(
                c.name.clone(),
                ("RunContainerError".into(), e.message().to_string()),
            );
            return Ok(());
        }
        self.waiting.remove(&c.name);
        let message = format!("Started container {}", c.name);
        container_event(&self.ctx, pod, c, "Normal", "Started", message).await;
        // postStart runs before the container counts as started; a failure kills it (it is
        // then restarted as its restart policy says).
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let (ok, message) =
                crate::probes::run_hook(&self.ctx.cri, c, h, ip, &id, POST_START_LIMIT).await;
            if !ok {
                let message = format!("PostStartHook failed: {message}");
                self.ctx
                    .recorder
                    .event(pod, "Warning", "FailedPostStartHook", message)
                    .await;
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                let _ = cri
                    .stop_container(api::StopContainerRequest {
                        container_id: id,
                        timeout: grace,
                    })
                    .await;
                return Ok(());
            }
        }
        tracing::debug!(pod = ?pod.metadata.name, container = %c.name, attempt, "started container");
        Ok(())
    }

    /// Runs the running containers' preStop hooks (together, within `grace` seconds), then
    /// stops every container (SIGTERM, then SIGKILL after the grace left, at least 2 s as
    /// upstream); the sandboxes stay for the final status ([`Self::report_terminal`]).
    async fn kill_pod(&mut self, pod: &Pod, grace: i64) -> SyncResult<()> {
        let uid = spec::pod_uid(pod);
        let started = Instant::now();
        if grace > 0 {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let limit = Duration::from_secs(grace as u64);
            let mut hooks = Vec::new();
            for (c, id) in self.running_containers(pod, &uid).await? {
                let message = format!("Stopping container {}", c.name);
                container_event(&self.ctx, pod, &c, "Normal", "Killing", message).await;
                let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
                    continue;
                };
                let (cri, ctx, ip) = (self.ctx.cri.clone(), self.ctx.clone(), ip.clone());
                hooks.push(async move {
                    let (ok, message) =
                        crate::probes::run_hook(&cri, &c, &h, &ip, &id, limit).await;
                    if !ok {
                        let message = format!("PreStopHook failed: {message}");
                        ctx.recorder
                            .event(pod, "Warning", "FailedPreStopHook", message)
                            .await;
                    }
                });
            }
            let _ = tokio::time::timeout(limit, futures::future::join_all(hooks)).await;
        }
        let left = (grace - started.elapsed().as_secs() as i64).max(if grace > 0 { 2 } else { 0 });
        self.stop_containers(&uid, left).await.map(|_| ())
    }

    /// A deleted pod's last status, as the kubelet writes it before the pod may go: a phase
    /// that is terminal (Succeeded only if every container succeeded) with the containers'
    /// exit codes, unless the pod already finished. Then its sandboxes go.
    async fn report_terminal(&mut self, pod: &Pod) -> SyncResult<()> {
        let uid = spec::pod_uid(pod);
        let sandboxes = self.stop_containers(&uid, 0).await?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let mut finished = matches!(phase, Some("Succeeded" | "Failed"));
        if !finished && sandboxes.is_empty() {
            // Nothing ran here, or an earlier worker already reported: ask the API.
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let current = api
                .get_opt(pod.metadata.name.as_deref().unwrap_or_default())
                .await?;
            finished = current.as_ref().is_none_or(|p| {
                p.metadata.uid != pod.metadata.uid
                    || matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
            });
        }
        if !finished {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let mut status =
                crate::status::compute(self, pod, sandboxes.first().map(String::as_str), &ip)
                    .await?;
            if status["phase"] != "Succeeded" {
                status["phase"] = json!("Failed");
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            match api
                .patch_status(
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
            {
                Ok(_) => self.last_status = status,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.stop_sandboxes(&uid, 0).await
    }

    /// The running containers of the pod with their specs and CRI ids.
    async fn running_containers(
        &self,
        pod: &Pod,
        uid: &str,
    ) -> SyncResult<Vec<(Container, String)>> {
        let spec = pod.spec.clone().unwrap_or_default();
        let sandboxes = self
            .ctx
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let mut out = Vec::new();
        for s in sandboxes {
            for c in containers_in(&self.ctx.cri, &s.id).await? {
                if state_of(&c) != api::ContainerState::ContainerRunning {
                    continue;
                }
                let name = c
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default();
                if let Some(spec_c) = spec.containers.iter().find(|sc| sc.name == name) {
                    out.push((spec_c.clone(), c.id.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Stops the pod's running containers (SIGTERM, SIGKILL after `grace` seconds); returns
    /// the ids of its sandboxes.
    async fn stop_containers(&mut self, uid: &str, grace: i64) -> SyncResult<Vec<String>> {
        let cri = self.ctx.cri.runtime.clone();
        let sandboxes = cri
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        for s in &sandboxes {
            let containers = containers_in(&self.ctx.cri, &s.id).await?;
            let stops = containers
                .iter()
                .filter(|c| state_of(c) == api::ContainerState::ContainerRunning)
                .map(|c| {
                    let mut cri = cri.clone();
                    let id = c.id.clone();
                    async move {
                        let _ = cri
                            .stop_container(api::StopContainerRequest {
                                container_id: id,
                                timeout: grace,
                            })
                            .await;
                    }
                });
            futures::future::join_all(stops).await;
        }
        Ok(sandboxes.into_iter().map(|s| s.id).collect())
    }

    /// Stops the pod's containers (see [`Self::stop_containers`]), then stops and removes its
    /// sandboxes.
    async fn stop_sandboxes(&mut self, uid: &str, grace: i64) -> SyncResult<()> {
        let mut cri = self.ctx.cri.runtime.clone();
        for id in self.stop_containers(uid, grace).await? {
            cri.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            cri.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
        Ok(())
    }

    /// Writes the pod's status from CRI's view, when it changed.
    async fn report(&mut self, pod: &Pod, sandbox_id: Option<&str>, ip: &str) -> SyncResult<()> {
        let status = crate::status::compute(self, pod, sandbox_id, ip).await?;
        if status == self.last_status {
            return Ok(());
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
        self.last_status = status;
        Ok(())
    }
}

/// What the status module needs from a worker.
pub(crate) trait View {
    fn ctx(&self) -> &Ctx;
    fn waiting(&self, container: &str) -> Option<(String, String)>;
    /// (ready, started) per the container's probes, for container `id`; None without probes.
    fn probed(&self, container: &str, id: &str) -> Option<(bool, bool)>;
}

/// Records an event about container `c` of `pod` (with its field path, as the kubelet does).
async fn container_event(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
    type_: &str,
    reason: &str,
    message: String,
) {
    let field = Some(crate::pull::field_path(pod, c));
    ctx.recorder
        .event_on(pod, field, type_, reason, message)
        .await;
}

impl View for Worker {
    fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    fn waiting(&self, container: &str) -> Option<(String, String)> {
        self.waiting.get(container).cloned()
    }
    fn probed(&self, container: &str, id: &str) -> Option<(bool, bool)> {
        self.probes
            .get(container)
            .filter(|p| p.container_id == id)
            .map(|p| (p.ready && p.startup_done, p.startup_done))
    }
}

/// Runs the workers of this node's pods: one task per pod uid, fed from the pod watch.
pub struct Workers {
    ctx: Arc<Ctx>,
    senders: HashMap<String, watch::Sender<PodState>>,
}

impl Workers {
    pub fn new(ctx: Arc<Ctx>) -> Workers {
        Workers {
            ctx,
            senders: HashMap::new(),
        }
    }

    pub fn update(&mut self, pod: Arc<Pod>) {
        let uid = spec::pod_uid(&pod);
        // Workers that finished (pod deleted and cleaned up) have dropped their receiver.
        self.senders.retain(|_, s| !s.is_closed());
        match self.senders.get(&uid) {
            Some(tx) => {
                tx.send_replace(Some(pod));
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod));
                tokio::spawn(worker(self.ctx.clone(), rx));
                self.senders.insert(uid, tx);
            }
        }
    }

    pub fn gone(&mut self, uid: &str) {
        if let Some(tx) = self.senders.remove(uid) {
            tx.send_replace(None);
            // Keep the channel open until the worker has seen it: it holds the receiver.
            tokio::spawn(async move { tx.closed().await });
        }
    }

    pub fn known(&self) -> Vec<String> {
        self.senders.keys().cloned().collect()
    }
}
