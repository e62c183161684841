//! kubox-core: the API object model shared by every other crate. No IO.
//!
//! Entry points: [`resources::Registry`] (which resources exist, how they are named and stored),
//! [`selectors`] (label and field selectors), [`meta`] (metadata accessors on raw JSON objects),
//! [`printers`] (Table columns), [`defaults`] and [`validation`] (built-in type semantics).
//! Objects are kept as `serde_json::Value` on the generic path (storage, patching, tables, CRDs).

pub mod defaults;
pub mod error;
pub mod meta;
pub mod names;
pub mod net;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod selectors;
pub mod validation;

pub use error::{Error, Result};

/// The Kubernetes version kubox serves, as `/version`'s gitVersion.
pub const KUBE_GIT_VERSION: &str = concat!("v1.33.0+kubox-", env!("CARGO_PKG_VERSION"));

/// The User-Agent of one of kubox's own components, shaped as upstream's
/// (`kube-controller-manager/v1.33.0 (linux/amd64) kubernetes`): its first word is
/// the default field manager of the component's writes.
pub fn user_agent(program: &str) -> String {
    format!(
        "{program}/{KUBE_GIT_VERSION} (linux/{}) kubernetes/kubox",
        go_arch()
    )
}

/// This machine's architecture as Go names it (`kubernetes.io/arch`, nodeInfo).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
