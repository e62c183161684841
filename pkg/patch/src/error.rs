//! Errors returned by every patch and apply entry point.

use crate::fieldset::describe_manager;

/// One field that another manager owns and an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`metadata.managedFields[].manager`).
    pub manager: String,
    /// The other manager's operation (`Apply` or `Update`).
    pub operation: String,
    /// The other manager's apiVersion (shown for `Update` managers).
    pub api_version: String,
    /// The other manager's subresource, empty for the main resource.
    pub subresource: String,
    /// Human path of the field, e.g. `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    /// The manager as upstream prints it: `"name"`, plus ` using v1` for updaters.
    pub fn manager_description(&self) -> String {
        describe_manager(
            &self.manager,
            &self.operation,
            &self.api_version,
            &self.subresource,
        )
    }

    /// The message of the matching `StatusCause` (`conflict with "x" using v1`).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// Error of a patch or apply. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The patch document itself is malformed (HTTP 400, reason `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well formed but cannot be applied (HTTP 422, reason `Invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Server-side apply conflicts (HTTP 409, reason `Conflict`).
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<Conflict>),
}

/// Server-side apply errors share the patch error type.
pub type ApplyError = Error;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// HTTP status code for a `metav1.Status` built from this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Invalid(_) => 422,
            Error::Conflict(_) => 409,
        }
    }

    /// `metav1.Status.reason` for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "BadRequest",
            Error::Invalid(_) => "Invalid",
            Error::Conflict(_) => "Conflict",
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

/// Upstream's apply conflict message (`Apply failed with 1 conflict: ...`).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager_description(),
            c.field
        );
    }
    let mut managers: Vec<String> = conflicts.iter().map(|c| c.manager_description()).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| &c.manager_description() == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}
