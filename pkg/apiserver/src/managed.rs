//! managedFields bookkeeping and the patch schema (merge keys, list types) of a resource.

use crate::handlers::Ctx;
use kubox_openapi::OpenApi;
use kubox_patch::{ListMeta, ListType, PatchSchema};
use serde_json::Value;

/// Patch metadata of a built-in kind, read from its OpenAPI schema.
struct OpenApiSchema {
    openapi: OpenApi,
    group: String,
    version: String,
    kind: String,
}

impl PatchSchema for OpenApiSchema {
    fn field_meta(&self, path: &[&str]) -> Option<ListMeta> {
        let m = self
            .openapi
            .field_meta(&self.group, &self.version, &self.kind, path)?;
        let strategy = m.patch_strategy.unwrap_or_default();
        Some(ListMeta {
            strategy_merge: strategy.split(',').any(|s| s == "merge"),
            retain_keys: strategy.split(',').any(|s| s == "retainKeys"),
            merge_key: m.patch_merge_key,
            list_type: match m.list_type.as_deref() {
                Some("atomic") => Some(ListType::Atomic),
                Some("set") => Some(ListType::Set),
                Some("map") => Some(ListType::Map),
                _ => None,
            },
            map_keys: m.list_map_keys,
        })
    }
}

/// The schema patches and managedFields of the request's resource follow.
pub fn schema_for(ctx: &Ctx) -> Box<dyn PatchSchema> {
    if ctx.def.custom {
        return Box::new(kubox_patch::NoSchema);
    }
    Box::new(OpenApiSchema {
        openapi: ctx.state.openapi.clone(),
        group: ctx.def.group.clone(),
        version: ctx.def.version.clone(),
        kind: ctx.def.kind.clone(),
    })
}

/// Records a non-apply write by `manager` in `new`'s managedFields. An empty manager records nothing.
pub fn record(ctx: &Ctx, old: Option<&Value>, new: &mut Value, manager: &str, operation: &str) {
    if manager.is_empty() {
        return;
    }
    let schema = schema_for(ctx);
    let (api_version, now) = (ctx.def.api_version(), kubox_core::meta::now_rfc3339());
    kubox_patch::record_update(
        old,
        new,
        &writer(ctx, manager, &api_version, &now),
        operation,
        schema.as_ref(),
    );
}

/// The request's writer: `manager` writing `api_version` (through the request's subresource).
pub fn writer<'a>(
    ctx: &'a Ctx,
    manager: &'a str,
    api_version: &'a str,
    now: &'a str,
) -> kubox_patch::Writer<'a> {
    kubox_patch::Writer {
        manager,
        api_version,
        subresource: ctx.info.subresource.as_deref().unwrap_or_default(),
        now,
    }
}
