//! kubox-pki: the cluster's certificate authorities, certificates, join tokens
//! and kubeconfigs.
//!
//! Entry points:
//! - [`ensure_server_pki`] creates (first boot) or loads/renews (later boots)
//!   everything under `<data_dir>/server/`, returning a [`ServerPki`] that can
//!   also issue further client/serving certificates.
//! - [`server_tls_config`] builds the apiserver's rustls config (ring provider,
//!   optional client certificates verified against the client CA).
//! - [`identity_from_cert_der`] maps a client certificate to user/groups.
//! - [`write_kubeconfig`] writes an admin-style kubeconfig atomically.
//! - [`parse_token`] / [`ca_hash`] handle `K10<hash>::<user>:<pass>` join tokens.
mod certs;
pub mod csr;
pub mod error;
mod fsutil;
mod kubeconfig;
mod server;
mod tls;
mod token;

pub mod client;
pub use error::{Error, Result};
pub use kubeconfig::{render_kubeconfig, write_kubeconfig};
pub use server::{ServerPki, ServerPkiConfig, ensure_server_pki, files};
pub use tls::{
    Identity, client_tls_config, identity_from_cert_der, server_tls_config, serving_tls_config,
};
pub use token::{JoinToken, ca_hash, parse_token};

#[cfg(test)]
mod tests;
