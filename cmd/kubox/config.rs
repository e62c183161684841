//! `kubox server` flags, their `KUBOX_*` environment variables and `/etc/kubox/config.yaml`.
//!
//! Precedence, as k3s: a flag on the command line, then its environment variable, then the
//! config file, then the default. The config file's keys are the long flag names
//! (`write-kubeconfig-mode: "0644"`, `tls-san: [a, b]`, `disable-agent: true`).

use clap::{Args, CommandFactory};
use kubox_core::net::{Ipv4Cidr, parse_port_range};
use kubox_server::ServerConfig;
use serde_json::Value;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/kubox/config.yaml";
pub const DEFAULT_KUBECONFIG: &str = "/etc/kubox/kubox.yaml";

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    Ipv4Cidr::parse(s)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a file mode (expected octal such as 0600 or 0644)"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?} is not a port number between 1 and 65535"))
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Config file whose keys are these flags' long names.
    #[arg(long, short = 'c', env = "KUBOX_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Folder to hold state.
    #[arg(
        long,
        short = 'd',
        env = "KUBOX_DATA_DIR",
        default_value = "/var/lib/kubox"
    )]
    pub data_dir: PathBuf,
    /// Write the admin kubeconfig to this file.
    #[arg(long, short = 'o', env = "KUBOX_KUBECONFIG_OUTPUT", default_value = DEFAULT_KUBECONFIG)]
    pub write_kubeconfig: PathBuf,
    /// Mode of the written kubeconfig (octal).
    #[arg(long, env = "KUBOX_KUBECONFIG_MODE", default_value = "0600", value_parser = parse_mode)]
    pub write_kubeconfig_mode: u32,
    /// HTTPS listen port of the API server.
    #[arg(long, env = "KUBOX_HTTPS_LISTEN_PORT", default_value = "6443", value_parser = parse_port)]
    pub https_listen_port: u16,
    /// Address the API server binds to.
    #[arg(long, env = "KUBOX_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address the API server advertises to cluster members (default: node-ip).
    #[arg(long, env = "KUBOX_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,
    /// Extra hostname or IP for the serving certificate (repeatable).
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Shared secret nodes join with.
    #[arg(long, short = 't', env = "KUBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Pod network (each node gets a /24).
    #[arg(long, env = "KUBOX_CLUSTER_CIDR", default_value = "10.42.0.0/16", value_parser = parse_cidr)]
    pub cluster_cidr: Ipv4Cidr,
    /// Service ClusterIP range.
    #[arg(long, env = "KUBOX_SERVICE_CIDR", default_value = "10.43.0.0/16", value_parser = parse_cidr)]
    pub service_cidr: Ipv4Cidr,
    /// Cluster DNS service IP.
    #[arg(long, env = "KUBOX_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: Ipv4Addr,
    /// Cluster domain.
    #[arg(long, env = "KUBOX_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// NodePort range.
    #[arg(long, env = "KUBOX_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (u16, u16),
    /// Run only the control plane, without the node agent.
    #[arg(long, env = "KUBOX_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// Do not run the scheduler (pods stay Pending unless another scheduler binds them).
    #[arg(long, env = "KUBOX_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,
    /// Do not run the controllers (ReplicaSet, Deployment, Endpoints, garbage collector, ...).
    #[arg(long, env = "KUBOX_DISABLE_CONTROLLER_MANAGER")]
    pub disable_controller_manager: bool,
    /// Do not run these packaged components (repeatable: coredns, servicelb, traefik, local-storage, metrics-server).
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Directory for runtime state: containerd's socket and state, runc state.
    #[arg(long, hide = true, env = "KUBOX_RUN_DIR", default_value = "/run/kubox")]
    pub run_dir: PathBuf,
    /// Revisions of history the datastore keeps for watches before compacting (tests, tuning).
    #[arg(long, hide = true, default_value = "10000")]
    pub datastore_history: i64,
    /// Seconds between datastore compactions (tests, tuning).
    #[arg(long, hide = true, default_value = "60")]
    pub datastore_compact_interval: u64,
    /// How often the node lifecycle controller checks node health (Go duration).
    #[arg(long, hide = true, default_value = "5s", value_parser = go_duration)]
    pub node_monitor_period: std::time::Duration,
    /// Silence after which a node's Ready condition becomes Unknown and it is tainted unreachable.
    #[arg(long, hide = true, default_value = "40s", value_parser = go_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// Silence allowed to a registered node that has not posted Ready yet.
    #[arg(long, hide = true, default_value = "1m", value_parser = go_duration)]
    pub node_startup_grace_period: std::time::Duration,
    /// tolerationSeconds of the not-ready:NoExecute toleration added to every pod without one.
    #[arg(long, hide = true, default_value = "300")]
    pub default_not_ready_toleration_seconds: i64,
    /// tolerationSeconds of the unreachable:NoExecute toleration added to every pod without one.
    #[arg(long, hide = true, default_value = "300")]
    pub default_unreachable_toleration_seconds: i64,
    /// Static bearer tokens: a CSV file of `token,user,uid,"group1,group2"` (kube-apiserver's --token-auth-file).
    #[arg(long, env = "KUBOX_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Pod-bound tokens requested for 3607 s (kubelets' projected tokens) are valid a year,
    /// with a warn-after time at the requested expiry (kube-apiserver's flag of that name).
    #[arg(long, hide = true, default_value = "true", action = clap::ArgAction::Set)]
    pub service_account_extend_token_expiration: bool,
    /// How often the built-in metrics-server scrapes every kubelet (metrics-server's flag).
    #[arg(long, hide = true, default_value = "15s", value_parser = go_duration)]
    pub metric_resolution: std::time::Duration,
    /// How often the HorizontalPodAutoscaler controller syncs each autoscaler.
    #[arg(long, hide = true, default_value = "15s", value_parser = go_duration)]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How far back the autoscaler looks for a higher recommendation before scaling down.
    #[arg(long, hide = true, default_value = "5m", value_parser = go_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// The Job controller's first delay before replacing a failed pod, doubled per failure
    /// (a constant upstream: kube-controller-manager has no such flag).
    #[arg(long, hide = true, default_value = "10s", value_parser = go_duration)]
    pub job_pod_failure_backoff: std::time::Duration,
    /// The Job controller's longest delay before replacing a failed pod.
    #[arg(long, hide = true, default_value = "6m", value_parser = go_duration)]
    pub job_pod_failure_max_backoff: std::time::Duration,
    /// Terminated pods kept before the pod garbage collector deletes the oldest (0: never).
    #[arg(long, default_value = "12500")]
    pub terminated_pod_gc_threshold: usize,
    /// How long a node must be gone before its pods are deleted (a constant upstream).
    #[arg(long, hide = true, default_value = "40s", value_parser = go_duration)]
    pub pod_gc_orphan_quarantine: std::time::Duration,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "KUBOX_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
}

/// The node's own settings, the same for `kubox server` (its embedded agent) and `kubox agent`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node name (default: the hostname).
    #[arg(long, env = "KUBOX_NODE_NAME")]
    pub node_name: Option<String>,
    /// IP address(es) to advertise for the node.
    #[arg(
        long = "node-ip",
        short = 'i',
        env = "KUBOX_NODE_IP",
        value_delimiter = ','
    )]
    pub node_ip: Vec<IpAddr>,
    /// Label to register the node with (key=value; repeatable).
    #[arg(long = "node-label", value_parser = parse_label)]
    pub node_label: Vec<(String, String)>,
    /// Taint to register the node with (key[=value]:Effect; repeatable).
    #[arg(long = "node-taint", value_parser = parse_taint)]
    pub node_taint: Vec<Value>,
    /// Port of the node's kubelet API (logs, exec, attach, port-forward).
    #[arg(long, env = "KUBOX_KUBELET_PORT", default_value = "10250", value_parser = parse_port)]
    pub kubelet_port: u16,
    /// Hard eviction thresholds behind the node's pressure conditions (kubelet syntax).
    #[arg(long, default_value = kubox_agent::pressure::DEFAULT_EVICTION_HARD, value_parser = parse_thresholds)]
    pub eviction_hard: kubox_agent::pressure::Thresholds,
    #[command(flatten)]
    pub container_logs: ContainerLogArgs,
}

impl NodeArgs {
    fn options(&self) -> kubox_agent::NodeOptions {
        kubox_agent::NodeOptions {
            labels: self.node_label.iter().cloned().collect(),
            taints: self.node_taint.clone(),
            eviction_hard: self.eviction_hard.clone(),
            log_rotation: self.container_logs.to_config(),
        }
    }
}

/// Container log rotation: kubelet's settings of the same names (k3s passes them as
/// `--kubelet-arg`), hidden flags of `kubox server` and `kubox agent`.
#[derive(Args, Debug, Clone)]
pub struct ContainerLogArgs {
    /// Size a container's log file reaches before it is rotated (a quantity: 10Mi, 512Ki).
    #[arg(long, hide = true, default_value = "10Mi", value_parser = parse_size)]
    pub container_log_max_size: u64,
    /// Log files kept per container, the current one included (at least 2).
    #[arg(long, hide = true, default_value = "5", value_parser = clap::value_parser!(u32).range(2..))]
    pub container_log_max_files: u32,
    /// How often container log sizes are checked (Go duration).
    #[arg(long, hide = true, default_value = "10s", value_parser = go_duration)]
    pub container_log_monitor_interval: std::time::Duration,
}

impl ContainerLogArgs {
    fn to_config(&self) -> kubox_agent::logs::LogRotation {
        kubox_agent::logs::LogRotation {
            max_size: self.container_log_max_size,
            max_files: self.container_log_max_files,
            interval: self.container_log_monitor_interval,
        }
    }
}

/// A size in bytes written as a quantity (`10Mi`, `500Ki`, `1G`, `4096`).
fn parse_size(s: &str) -> Result<u64, String> {
    kubox_core::validation::parse_quantity(s)
        .filter(|q| q.nanos > 0)
        .and_then(|q| u64::try_from((q.nanos + 999_999_999) / 1_000_000_000).ok())
        .ok_or_else(|| format!("invalid size {s:?} (examples: 10Mi, 512Ki)"))
}

/// A Go duration flag value (`40s`, `1m30s`), as upstream's controller-manager flags take.
fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    kubox_core::validation::parse_go_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (examples: 40s, 1m30s, 500ms)"))
}

impl ServerArgs {
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let cfg = ServerConfig {
            data_dir: self.data_dir.clone(),
            write_kubeconfig: self.write_kubeconfig.clone(),
            write_kubeconfig_mode: self.write_kubeconfig_mode,
            https_listen_port: self.https_listen_port,
            bind_address: self.bind_address,
            advertise_address: self.advertise_address,
            tls_sans: self.tls_san.clone(),
            node_name: self.node.node_name.clone(),
            node_ips: self.node.node_ip.clone(),
            token: self.token.clone(),
            cluster_cidr: self.cluster_cidr,
            service_cidr: self.service_cidr,
            cluster_dns: self.cluster_dns,
            cluster_domain: self.cluster_domain.clone(),
            service_node_port_range: self.service_node_port_range,
            disable_agent: self.disable_agent,
            disable: self.disable.clone(),
            disable_scheduler: self.disable_scheduler,
            disable_controller_manager: self.disable_controller_manager,
            run_dir: self.run_dir.clone(),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/kubox")),
            datastore_history: self.datastore_history.max(1),
            datastore_compact_interval: std::time::Duration::from_secs(
                self.datastore_compact_interval.max(1),
            ),
            kubelet_port: self.node.kubelet_port,
            node: self.node.options(),
            node_lifecycle: kubox_server::NodeLifecycleConfig {
                monitor_period: self.node_monitor_period,
                grace_period: self.node_monitor_grace_period,
                startup_grace_period: self.node_startup_grace_period,
            },
            default_not_ready_toleration_seconds: self.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds: self.default_unreachable_toleration_seconds,
            token_auth_file: self.token_auth_file.clone(),
            service_account_extend_token_expiration: self.service_account_extend_token_expiration,
            metric_resolution: self
                .metric_resolution
                .max(std::time::Duration::from_secs(1)),
            hpa: kubox_server::HpaConfig {
                sync_period: self
                    .horizontal_pod_autoscaler_sync_period
                    .max(std::time::Duration::from_secs(1)),
                downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
            },
            job: kubox_server::JobConfig {
                pod_failure_backoff: self.job_pod_failure_backoff,
                pod_failure_max_backoff: self.job_pod_failure_max_backoff,
            },
            pod_gc: kubox_server::PodGcConfig {
                terminated_threshold: self.terminated_pod_gc_threshold,
                orphan_quarantine: self.pod_gc_orphan_quarantine,
            },
        };
        cfg.check().map_err(|e| e.to_string())?;
        if !cfg.data_dir.is_absolute() {
            return Err(format!(
                "--data-dir {} must be an absolute path",
                cfg.data_dir.display()
            ));
        }
        Ok(cfg)
    }
}

/// The config file named by `--config`/`-c`/`KUBOX_CONFIG`, and whether it was asked for.
fn config_path(args: &[OsString]) -> (PathBuf, bool) {
    let mut it = args.iter().map(|a| a.to_string_lossy().to_string());
    while let Some(a) = it.next() {
        if a == "--config" || a == "-c" {
            if let Some(v) = it.next() {
                return (PathBuf::from(v), true);
            }
        } else if let Some(v) = a.strip_prefix("--config=") {
            return (PathBuf::from(v), true);
        }
    }
    match std::env::var_os("KUBOX_CONFIG") {
        Some(v) => (PathBuf::from(v), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// Long flag names of `kubox server` with their env vars and whether they take values.
fn subcommand_flags(name: &str) -> Vec<(String, Option<String>, bool)> {
    let cmd = crate::Cli::command();
    let Some(server) = cmd.find_subcommand(name) else {
        return Vec::new();
    };
    server
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let env = a.get_env().map(|e| e.to_string_lossy().to_string());
            Some((long, env, a.get_action().takes_values()))
        })
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Inserts the config file's settings as flags right after `server`, so that command-line
/// flags (which come later) win. Keys whose env var is set are skipped (env beats file).
pub fn args_with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(pos) = args.iter().position(|a| a == "server" || a == "agent") else {
        return Ok(args);
    };
    let subcommand = args[pos].to_string_lossy().to_string();
    if args[1..pos]
        .iter()
        .any(|a| !a.to_string_lossy().starts_with('-'))
    {
        return Ok(args);
    }
    let (path, explicit) = config_path(&args[pos + 1..]);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(args),
        Err(e) => {
            return Err(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ));
        }
    };
    let doc: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(&text)
            .map_err(|e| format!("the config file {} is not valid YAML: {e}", path.display()))?
    };
    let Value::Object(map) = doc else {
        return Err(format!(
            "the config file {} must be a YAML mapping of flag names to values",
            path.display()
        ));
    };
    let flags = subcommand_flags(&subcommand);
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in map {
        let Some((long, env, takes_value)) = flags.iter().find(|(l, _, _)| *l == key) else {
            return Err(format!(
                "unknown key {key:?} in the config file {}: keys are `kubox {subcommand}` flag names without dashes",
                path.display()
            ));
        };
        if long == "config" {
            continue;
        }
        if env.as_ref().is_some_and(|e| std::env::var_os(e).is_some()) {
            continue;
        }
        if !takes_value {
            match value {
                Value::Bool(true) => injected.push(format!("--{long}").into()),
                Value::Bool(false) | Value::Null => {}
                other => {
                    return Err(format!(
                        "{key:?} in the config file {} must be true or false, not {other}",
                        path.display()
                    ));
                }
            }
            continue;
        }
        let values: Vec<String> = match &value {
            Value::Array(items) => items.iter().filter_map(scalar).collect(),
            Value::Null => Vec::new(),
            other => match scalar(other) {
                Some(s) => vec![s],
                None => {
                    return Err(format!(
                        "{key:?} in the config file {} must be a string, number or list",
                        path.display()
                    ));
                }
            },
        };
        for v in values {
            injected.push(format!("--{long}={v}").into());
        }
    }
    let mut out: Vec<OsString> = args[..=pos].to_vec();
    out.extend(injected);
    out.extend(args[pos + 1..].iter().cloned());
    Ok(out)
}

/// `kubox agent` flags (k3s agent's names), also settable in the config file and as `KUBOX_*`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Config file whose keys are these flags' long names.
    #[arg(long, short = 'c', env = "KUBOX_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, short = 's', visible_alias = "server", env = "KUBOX_URL")]
    pub join: Option<String>,
    /// The join token (the server's <data-dir>/server/token).
    #[arg(long, short = 't', env = "KUBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long, env = "KUBOX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Folder to hold state.
    #[arg(
        long,
        short = 'd',
        env = "KUBOX_DATA_DIR",
        default_value = "/var/lib/kubox"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
    #[arg(long, hide = true, env = "KUBOX_RUN_DIR", default_value = "/run/kubox")]
    pub run_dir: PathBuf,
    /// Log level.
    #[arg(long, env = "KUBOX_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
}

fn parse_thresholds(s: &str) -> Result<kubox_agent::pressure::Thresholds, String> {
    s.parse()
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not a label (expected key=value)"))?;
    let key_ok = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            kubox_core::names::is_dns1123_subdomain(prefix)
                && kubox_core::names::is_qualified_name_part(name)
        }
        None => kubox_core::names::is_qualified_name_part(k),
    };
    if !key_ok || !kubox_core::names::is_label_value(v) {
        return Err(format!("{s:?} is not a valid label"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_taint(s: &str) -> Result<Value, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not a taint (expected key[=value]:Effect)"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "{s:?}: the taint effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(format!("{s:?}: the taint needs a key"));
    }
    let mut t = serde_json::json!({"key": key, "effect": effect});
    if !value.is_empty() {
        t["value"] = serde_json::json!(value);
    }
    Ok(t)
}

impl AgentArgs {
    pub fn to_config(&self) -> Result<kubox_agent::JoiningAgent, String> {
        let server = self.join.clone().ok_or(
            "kubox agent needs the server to join: --join https://SERVER:6443 (or KUBOX_URL)",
        )?;
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(
                    "kubox agent needs the join token: --token TOKEN (or KUBOX_TOKEN), from the server's <data-dir>/server/token".into(),
                );
            }
        };
        if !server.starts_with("https://") {
            return Err(format!("--join {server:?} must be an https:// URL"));
        }
        if !self.data_dir.is_absolute() {
            return Err(format!(
                "--data-dir {} must be an absolute path",
                self.data_dir.display()
            ));
        }
        let node_name = self
            .node
            .node_name
            .clone()
            .unwrap_or_else(kubox_agent::hostname);
        if !kubox_core::names::is_dns1123_subdomain(&node_name) {
            return Err(format!(
                "--node-name {node_name:?} must be a lowercase RFC 1123 subdomain"
            ));
        }
        let node_ips = if self.node.node_ip.is_empty() {
            vec![kubox_agent::primary_ip()]
        } else {
            self.node.node_ip.clone()
        };
        Ok(kubox_agent::JoiningAgent {
            join: kubox_agent::join::JoinConfig {
                server,
                token,
                node_name,
                node_ips,
                data_dir: self.data_dir.clone(),
            },
            run_dir: self.run_dir.clone(),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/kubox")),
            kubelet_port: self.node.kubelet_port,
            node: self.node.options(),
        })
    }
}
