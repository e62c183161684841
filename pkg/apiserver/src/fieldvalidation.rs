//! `fieldValidation=Strict|Warn|Ignore`: unknown fields in request bodies.

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use serde_json::Value;

/// Checks `obj` for fields its schema does not know. Strict refuses them with 400, as
/// upstream's strict decoding does; Warn (the default) accepts them with a warning per field
/// for the client; Ignore accepts silently (pruning happens on storage).
pub fn check(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let mode = ctx.query.get("fieldValidation").unwrap_or("Warn");
    match mode {
        "Strict" => {}
        "Ignore" => return Ok(()),
        "Warn" => {
            let unknown = unknown_fields(ctx, obj);
            if let Ok(mut w) = ctx.warnings.lock() {
                w.extend(
                    unknown
                        .iter()
                        .map(|f| format!("unknown field {:?}", f.trim_start_matches('.'))),
                );
            }
            return Ok(());
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
            )));
        }
    }
    let unknown = unknown_fields(ctx, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {:?}", f.trim_start_matches('.')))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

/// Dotted paths of the fields of `obj` that its kind's schema does not define.
pub fn unknown_fields(ctx: &Ctx, obj: &Value) -> Vec<String> {
    if ctx.def.custom {
        return match ctx
            .state
            .custom_version(&ctx.def.group, &ctx.def.version, &ctx.def.plural)
        {
            Some(cv) => match &cv.schema {
                Some(schema) => crate::crds::schema::unknown_fields(schema, obj),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
    }
    let (g, v, k) = match ctx.info.subresource.as_deref() {
        Some("scale") => (
            "autoscaling".to_string(),
            "v1".to_string(),
            "Scale".to_string(),
        ),
        _ => (
            ctx.def.group.clone(),
            ctx.def.version.clone(),
            ctx.def.kind.clone(),
        ),
    };
    ctx.state.openapi.unknown_fields(&g, &v, &k, obj)
}
