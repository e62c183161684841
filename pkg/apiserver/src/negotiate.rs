//! Content negotiation: plain JSON, meta.k8s.io Table, and PartialObjectMetadata(List).

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use http::HeaderMap;
use kubox_core::printers::{self, Column};
use serde_json::{Map, Value, json};

/// What the client asked to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    Json,
    Table,
    Metadata,
    MetadataList,
}

/// One media range of an Accept header: type and parameters.
struct MediaRange {
    mime: String,
    params: Vec<(String, String)>,
}

impl MediaRange {
    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_accept(value: &str) -> Vec<MediaRange> {
    value
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';').map(str::trim);
            let mime = it.next()?.to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let params = it
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            Some(MediaRange { mime, params })
        })
        .collect()
}

/// Picks the first acceptable representation; 406 when only unsupported ones are acceptable.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Negotiated> {
    let accept = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if accept.trim().is_empty() {
        return Ok(Negotiated::Json);
    }
    let ranges = parse_accept(&accept);
    for r in &ranges {
        let json_like = matches!(
            r.mime.as_str(),
            "application/json" | "application/*" | "*/*" | "application/yaml"
        );
        if !json_like {
            continue;
        }
        match (r.param("as"), r.param("g"), r.param("v")) {
            (None, _, _) => return Ok(Negotiated::Json),
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => {
                return Ok(Negotiated::Table);
            }
            (Some("PartialObjectMetadata"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => {
                return Ok(Negotiated::Metadata);
            }
            (Some("PartialObjectMetadataList"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => {
                return Ok(Negotiated::MetadataList);
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml; \
         the request asked for {accept:?}"
    )))
}

/// Renders one object as negotiated.
pub fn render_object(ctx: &Ctx, obj: Value) -> ApiResult<Value> {
    match ctx.accept {
        Negotiated::Json => Ok(obj),
        Negotiated::Metadata | Negotiated::MetadataList => Ok(partial_metadata(&obj)),
        Negotiated::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            Ok(table(ctx, vec![obj], json!({"resourceVersion": rv}), true))
        }
    }
}

/// Renders a list as negotiated; `metadata` is the ListMeta.
pub fn render_list(ctx: &Ctx, items: Vec<Value>, metadata: Value) -> ApiResult<Value> {
    match ctx.accept {
        Negotiated::Json => Ok(json!({
            "kind": ctx.def.list_kind(),
            "apiVersion": ctx.def.api_version(),
            "metadata": metadata,
            "items": items,
        })),
        Negotiated::Metadata | Negotiated::MetadataList => Ok(json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        })),
        Negotiated::Table => Ok(table(ctx, items, metadata, true)),
    }
}

/// Renders the object of a watch event; Tables carry column definitions in the first event only.
pub fn render_watch_object(ctx: &Ctx, obj: Value, first: bool) -> ApiResult<Value> {
    match ctx.accept {
        Negotiated::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            Ok(table(ctx, vec![obj], json!({"resourceVersion": rv}), first))
        }
        _ => render_object(ctx, obj),
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Column definitions and cell function for the request's resource.
fn columns(ctx: &Ctx) -> (Vec<Column>, Option<Value>) {
    if ctx.def.custom
        && let Some(spec) = ctx
            .state
            .custom_version(&ctx.def.group, &ctx.def.version, &ctx.def.plural)
            .and_then(|c| c.printer_columns)
            .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
    {
        return (printers::custom_columns(&spec), Some(spec));
    }
    (printers::table_columns(&ctx.def.group, &ctx.def.kind), None)
}

fn table(ctx: &Ctx, items: Vec<Value>, metadata: Value, with_columns: bool) -> Value {
    let (cols, custom) = columns(ctx);
    let include = ctx
        .query
        .get("includeObject")
        .unwrap_or("Metadata")
        .to_string();
    let rows: Vec<Value> = items
        .into_iter()
        .map(|obj| {
            let cells = match &custom {
                Some(spec) => printers::custom_row(spec, &obj),
                None => printers::table_row(&ctx.def.group, &ctx.def.kind, &obj),
            };
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include.as_str() {
                "None" => {}
                "Object" => {
                    row.insert("object".into(), obj);
                }
                _ => {
                    row.insert("object".into(), partial_metadata(&obj));
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [],
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(
            cols.iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.type_,
                        "format": c.format,
                        "description": c.description,
                        "priority": c.priority,
                    })
                })
                .collect(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_str(accept).unwrap_or(http::HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn kubectl_get_accept_header_negotiates_a_table() {
        let h = headers(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        );
        assert_eq!(negotiate(&h).ok(), Some(Negotiated::Table));
    }

    #[test]
    fn plain_and_missing_accept_negotiate_json() {
        assert_eq!(
            negotiate(&headers("application/json")).ok(),
            Some(Negotiated::Json)
        );
        assert_eq!(negotiate(&HeaderMap::new()).ok(), Some(Negotiated::Json));
        assert_eq!(negotiate(&headers("*/*")).ok(), Some(Negotiated::Json));
    }

    #[test]
    fn protobuf_only_accept_is_not_acceptable() {
        let e = negotiate(&headers("application/vnd.kubernetes.protobuf")).err();
        assert_eq!(e.map(|e| e.code), Some(406));
    }

    #[test]
    fn protobuf_first_falls_back_to_json() {
        let h = headers("application/vnd.kubernetes.protobuf, application/json");
        assert_eq!(negotiate(&h).ok(), Some(Negotiated::Json));
    }
}
