//! The CNI error object a failed invocation prints, with the spec's well-known codes.

use serde_json::{Value, json};

/// CNI error code: the config's cniVersion is not one this plugin speaks.
pub(crate) const INCOMPATIBLE_VERSION: u32 = 1;
/// CNI error code: a container is unknown or does not exist.
pub(crate) const UNKNOWN_CONTAINER: u32 = 3;
/// CNI error code: a required environment variable is missing or invalid.
pub(crate) const INVALID_ENV: u32 = 4;
/// CNI error code: the network config on stdin could not be decoded.
pub(crate) const DECODE_FAILURE: u32 = 6;
/// CNI error code: the network config decoded but is not valid.
pub(crate) const INVALID_CONFIG: u32 = 7;
/// CNI error code: a transient failure; the runtime may retry later.
pub(crate) const TRY_AGAIN_LATER: u32 = 11;
/// CNI error code: any other failure.
pub(crate) const GENERIC: u32 = 999;

/// A failure of one CNI invocation, printed as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub(crate) struct CniError {
    /// The CNI error code (see the constants of this module).
    pub code: u32,
    /// A short human-readable message.
    pub msg: String,
    /// Longer details (the underlying cause), may be empty.
    pub details: String,
}

impl CniError {
    /// Builds an error with `code` and `msg` and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Builds a generic (999) error whose details are the cause's text.
    pub fn generic(msg: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::new(GENERIC, msg).details(cause)
    }

    /// Returns the error with `cause` as its details.
    pub fn details(mut self, cause: impl std::fmt::Display) -> Self {
        self.details = cause.to_string();
        self
    }

    /// Renders the CNI error object for a reply in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_all_fields() {
        let e = CniError::generic("failed to add veth", "file exists");
        let v = e.to_json("0.4.0");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 999);
        assert_eq!(v["msg"], "failed to add veth");
        assert_eq!(v["details"], "file exists");
        assert_eq!(e.to_string(), "failed to add veth");
    }
}
