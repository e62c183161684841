//! RFC 6902 JSON patch and RFC 7396 JSON merge patch.

use serde_json::Value;

use crate::error::{Error, Result};

/// Apply an RFC 6902 JSON patch (`application/json-patch+json`) to `doc`.
///
/// A body that is not a list of operations is a 400; an operation that cannot
/// be applied (missing path, failed `test`) is a 422 carrying the reason.
pub fn json_patch(doc: &Value, patch_bytes: &[u8]) -> Result<Value> {
    let patch: json_patch::Patch = serde_json::from_slice(patch_bytes)
        .map_err(|e| Error::bad(format!("error decoding JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.0).map_err(|e| Error::invalid(e.to_string()))?;
    Ok(out)
}

/// Apply an RFC 7396 JSON merge patch (`application/merge-patch+json`).
///
/// Kubernetes objects are JSON objects, so the patch must be one too.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value> {
    if !patch.is_object() {
        return Err(Error::bad(
            "invalid JSON merge patch: the patch must be a JSON object",
        ));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_applies_add_replace_and_remove() {
        let doc = json!({"spec": {"replicas": 1, "paused": true}});
        let ops = br#"[{"op":"replace","path":"/spec/replicas","value":3},
            {"op":"add","path":"/spec/minReadySeconds","value":5},
            {"op":"remove","path":"/spec/paused"}]"#;
        let out = json_patch(&doc, ops).unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 3, "minReadySeconds": 5}}));
    }

    #[test]
    fn json_patch_failed_test_op_is_an_invalid_error_with_a_message() {
        let doc = json!({"a": 1});
        let err = json_patch(&doc, br#"[{"op":"test","path":"/a","value":2}]"#).unwrap_err();
        assert_eq!(err.status_code(), 422);
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn json_patch_rejects_a_body_that_is_not_an_operation_list() {
        let err = json_patch(&json!({}), br#"{"op":"add"}"#).unwrap_err();
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn json_patch_on_a_missing_path_fails() {
        let err = json_patch(&json!({}), br#"[{"op":"remove","path":"/x"}]"#).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
    }

    #[test]
    fn merge_patch_merges_maps_and_null_deletes() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}});
        let out = merge_patch(&doc, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
        );
    }

    #[test]
    fn merge_patch_requires_an_object() {
        assert!(merge_patch(&json!({}), &json!([1])).is_err());
    }
}
