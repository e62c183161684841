//! Pod rows.
use super::{util, Column};
use serde_json::Value;
pub(super) fn columns() -> Vec<Column> { vec![util::name_col()] }
pub(super) fn row(obj: &Value) -> Vec<Value> { vec![util::name_cell(obj)] }
