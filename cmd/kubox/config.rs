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
    /// Node name (default: hostname).
    #[arg(long, env = "KUBOX_NODE_NAME")]
    pub node_name: Option<String>,
    /// IP address of this node (repeatable).
    #[arg(
        long = "node-ip",
        short = 'i',
        env = "KUBOX_NODE_IP",
        value_delimiter = ','
    )]
    pub node_ip: Vec<IpAddr>,
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
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "KUBOX_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
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
            node_name: self.node_name.clone(),
            node_ips: self.node_ip.clone(),
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
fn server_flags() -> Vec<(String, Option<String>, bool)> {
    let cmd = crate::Cli::command();
    let Some(server) = cmd.find_subcommand("server") else {
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
    let Some(pos) = args.iter().position(|a| a == "server") else {
        return Ok(args);
    };
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
    let flags = server_flags();
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in map {
        let Some((long, env, takes_value)) = flags.iter().find(|(l, _, _)| *l == key) else {
            return Err(format!(
                "unknown key {key:?} in the config file {}: keys are `kubox server` flag names without dashes",
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
