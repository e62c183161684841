//! Custom resource columns.
use super::Column;
use serde_json::Value;
/// Columns of a CRD version's `additionalPrinterColumns`.
pub fn custom_columns(additional_printer_columns: &Value) -> Vec<Column> { let _ = additional_printer_columns; vec![super::util::name_col()] }
/// Cells of a custom resource.
pub fn custom_row(columns_spec: &Value, obj: &Value) -> Vec<Value> { let _ = columns_spec; vec![super::util::name_cell(obj)] }
