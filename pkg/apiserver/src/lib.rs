//! kubox-apiserver: the Kubernetes REST API over HTTPS.
//!
//! Entry points: [`state::ApiState::new`] (store + configuration), [`bootstrap::ensure`]
//! (system namespaces, the `kubernetes` Service, the bootstrap RBAC policy), [`crds::run`]
//! (serves CRDs as they come and go), [`mirror::start`] (the authorizers'
//! in-memory views), and [`http::serve`] (the TLS listener). Requests are routed in [`http`]:
//! health, version and `/cacerts` are anonymous; everything else is authenticated ([`authn`]:
//! client certificates, service-account and bootstrap tokens) and authorized ([`authz`]); discovery ([`discovery`]) and OpenAPI are served from
//! the registry; resource paths go to the verb handlers in [`handlers`], which keep objects
//! as raw JSON and store them through the `kubox_store::Backend` seam.

pub mod admission;
pub mod allocate;
pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod crds;
pub mod csr;
pub mod discovery;
pub mod error;
pub mod fieldlabels;
pub mod fieldvalidation;
pub mod handlers;
pub mod http;
pub mod join;
pub mod kubelet;
pub mod managed;
pub mod metrics;
pub mod mirror;
pub mod negotiate;
pub mod nodeauth;
pub mod podsecurity;
pub mod quota;
pub mod rawjson;
pub mod rbac;
pub mod request;
pub mod reviews;
pub mod spdy;
pub mod state;
pub mod storage;
pub mod tokens;
pub mod webhooks;

pub use error::{ApiError, ApiResult};
pub use state::{ApiConfig, ApiState};
