//! kubox-patch: Kubernetes patch semantics on `serde_json::Value` objects.
//!
//! Entry points:
//! - [`json_patch`]: RFC 6902 JSON patch (`application/json-patch+json`).
//! - [`merge_patch`]: RFC 7396 JSON merge patch (`application/merge-patch+json`).
//! - [`strategic_merge_patch`]: strategic merge patch with directives
//!   (`application/strategic-merge-patch+json`), driven by a [`PatchSchema`].
//! - [`apply`]: server-side apply (`application/apply-patch+yaml`) with
//!   `metadata.managedFields` tracking and conflict detection.
//! - [`record_update`]: managed-fields bookkeeping for non-apply writes.
//! - [`static_schema`]: built-in patch metadata for common core/apps/batch kinds.

mod apply;
mod error;
mod fieldset;
mod json;
mod managed;
mod schema;
mod smp;
mod ssa;
mod static_schema;

pub use apply::{Writer, apply, record_update};
pub use error::{ApplyError, Conflict, Error, Result, conflict_message};
pub use json::{json_patch, merge_patch};
pub use schema::{ListMeta, ListType, NoSchema, PatchSchema};
pub use smp::strategic_merge_patch;
pub use static_schema::{StaticSchema, static_schema};
