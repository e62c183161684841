//! The `kubox` binary: command-line parsing, the config file, logging, signals and exit codes.
//! Everything else lives in the `pkg/` crates and takes typed configuration.

mod config;
mod notify;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Exit code for bad flags and unusable values (as clap uses for usage errors).
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "kubox",
    version = version_string(),
    about = "A small, single-binary Kubernetes distribution",
    propagate_version = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const fn version_string() -> &'static str {
    concat!("v", env!("CARGO_PKG_VERSION"), " (Kubernetes v1.33.0)")
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (and, unless --disable-agent, the node agent).
    Server(Box<config::ServerArgs>),
    /// Run a node agent that joins a server (`--join https://SERVER:6443 --token TOKEN`).
    Agent(Box<config::AgentArgs>),
    /// Run kubectl against this server with the admin kubeconfig.
    #[command(disable_help_flag = true)]
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    // Multi-call: reached through a CNI bin-dir link (`bridge`, `loopback`), kubox is the
    // node's CNI plugin, invoked by containerd per the CNI spec.
    if let Some(plugin) = argv0_name().filter(|n| kubox_network::cni::PLUGINS.contains(&n.as_str()))
    {
        return run_cni(&plugin);
    }
    // Multi-call: reached through a `kubectl` link (install.sh makes one), kubox is
    // `kubox kubectl`.
    if argv0_name().as_deref() == Some("kubectl") {
        return run_kubectl(std::env::args_os().skip(1).collect());
    }
    let args = match config::args_with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("kubox: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Agent(args) => run_agent(*args),
        Command::Kubectl { args } => run_kubectl(args),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "kubox", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The file name kubox was invoked by.
fn argv0_name() -> Option<String> {
    std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    })
}

fn run_cni(plugin: &str) -> ExitCode {
    use std::io::Read;
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let code = kubox_network::cni::main(plugin, &env, &stdin, &mut std::io::stdout());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,rustls=warn,h2=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn run_server(args: config::ServerArgs) -> ExitCode {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("kubox: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Ready for systemd once the API server answers /readyz.
    let host = match cfg.bind_address {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        a => a,
    };
    let probe = notify::Probe {
        host,
        port: cfg.https_listen_port,
        path: "/readyz",
        ca_file: cfg.data_dir.join("server/tls/server-ca.crt"),
    };
    run_async(
        &args.log_level,
        probe,
        kubox_server::run(cfg, shutdown_signal()),
    )
}

fn run_agent(args: config::AgentArgs) -> ExitCode {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("kubox: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !is_root() {
        eprintln!(
            "kubox: kubox agent must run as root (it manages containerd, network interfaces and nftables); run it with sudo or from the systemd unit"
        );
        return ExitCode::FAILURE;
    }
    // Ready for systemd once the node is registered: the kubelet API, started right after
    // registration, answers /healthz on the node's address.
    let probe = notify::Probe {
        host: cfg
            .join
            .node_ips
            .first()
            .copied()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        port: cfg.kubelet_port,
        path: "/healthz",
        ca_file: cfg.join.data_dir.join("agent/tls/server-ca.crt"),
    };
    run_async(
        &args.log_level,
        probe,
        kubox_agent::join_and_run(cfg, shutdown_signal()),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Logging, the TLS provider and a runtime, then `main` to completion; under systemd
/// (`$NOTIFY_SOCKET`), `READY=1` once `ready` succeeds.
fn run_async<E: std::fmt::Display>(
    log_level: &str,
    ready: notify::Probe,
    main: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    init_logging(log_level);
    if let Err(e) = rustls::crypto::ring::default_provider().install_default() {
        tracing::debug!(?e, "a rustls crypto provider was already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kubox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let notify_socket = notify::socket();
    let result = runtime.block_on(async {
        let notifier = notify_socket
            .clone()
            .map(|socket| tokio::spawn(notify::ready_when(socket, ready)));
        let result = main.await;
        if let Some(n) = notifier {
            n.abort();
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubox: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
    }
    if let Some(socket) = notify::socket() {
        let _ = notify::send(&socket, "STOPPING=1");
    }
}

fn run_kubectl(args: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .or_else(|| std::env::var_os("KUBOX_WRITE_KUBECONFIG"))
        .unwrap_or_else(|| config::DEFAULT_KUBECONFIG.into());
    // Not this binary itself: kubox may be on PATH as `kubectl` (install.sh's link).
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let Some(kubectl) = find_in_path("kubectl", me.as_deref()) else {
        eprintln!(
            "kubox: kubectl was not found on PATH; install kubectl (https://kubernetes.io/docs/tasks/tools/) and try again"
        );
        return ExitCode::FAILURE;
    };
    let err = std::process::Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .exec();
    eprintln!("kubox: running kubectl failed: {err}");
    ExitCode::FAILURE
}

/// The first `prog` on PATH that is not `skip`.
fn find_in_path(prog: &str, skip: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            p.is_file() && (skip.is_none() || std::fs::canonicalize(p).ok().as_deref() != skip)
        })
}
