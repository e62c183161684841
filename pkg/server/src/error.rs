//! Start-up failures of the server, each phrased as one sentence an operator can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "port {port} on {addr} is already in use: stop the other process or pass --https-listen-port"
    )]
    PortInUse { addr: String, port: u16 },
    #[error("cannot listen on {addr}:{port}: {source}")]
    Listen {
        addr: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("the data directory {} is not writable ({source}): run as root or pass --data-dir with a writable directory", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificates under {}: {message}", path.display())]
    Pki { path: PathBuf, message: String },
    #[error("the datastore {} could not be opened: {message}", path.display())]
    Store { path: PathBuf, message: String },
    #[error("could not write the kubeconfig {}: {message}; pass --write-kubeconfig with a writable path", path.display())]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the node agent failed: {0} (or run the control plane only with --disable-agent)")]
    Agent(String),
}

impl Error {
    /// Start-up errors are not retryable by waiting: the operator must change something.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
