//! LIST with label/field selectors, paging (limit/continue) and resourceVersion semantics.

use super::{Ctx, json_response};
use crate::error::{ApiError, ApiResult};
use crate::storage;
use axum::response::Response;
use http::StatusCode;
use kubox_core::selectors::{FieldSelector, LabelSelector};
use serde_json::{Value, json};

/// Selectors of a list or watch request, checked against the resource's field labels.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""))?;
        fields.check_supported(crate::fieldlabels::supported(&ctx.def))?;
        Ok(Filter { labels, fields })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// One page of a list: the matching objects, the revision read at, and the continue state.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// Reads a page of objects following upstream's list semantics.
pub async fn read_page(ctx: &Ctx, filter: &Filter) -> ApiResult<Page> {
    let prefix = storage::prefix(&ctx.def, ctx.namespace());
    let limit = ctx
        .query
        .i64("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let rv_param = ctx.query.get("resourceVersion");
    let rv_match = ctx.query.get("resourceVersionMatch");
    let (mut revision, mut start_after) = (None, None);
    if let Some(token) = ctx.query.get("continue") {
        if rv_param.is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = storage::decode_continue(token, &prefix)?;
        if rv < ctx.state.store.compacted_revision() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        revision = Some(rv);
        start_after = Some(start);
    } else if let Some(rv) = rv_param {
        let n: i64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
        match rv_match {
            Some("Exact") => revision = Some(n),
            Some("NotOlderThan") | None => {
                if rv_match.is_none() && limit.is_some() && n != 0 {
                    revision = Some(n);
                } else if n > ctx.state.store.current_revision() {
                    return Err(kubox_store::Error::FutureRevision {
                        requested: n,
                        current: ctx.state.store.current_revision(),
                    }
                    .into());
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported resourceVersionMatch {other:?}; supported: Exact, NotOlderThan"
                )));
            }
        }
    } else if rv_match.is_some() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let chunk = limit.map(|l| l.max(50)).unwrap_or(500);
    let mut items = Vec::new();
    let mut read_rev = revision;
    loop {
        let res = ctx
            .state
            .store
            .list(&prefix, start_after.as_deref(), Some(chunk), read_rev)
            .await?;
        read_rev = Some(res.revision);
        let n = res.items.len();
        for (i, kv) in res.items.iter().enumerate() {
            let obj = storage::decode(&ctx.def, kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
            if limit.is_some_and(|l| items.len() >= l) {
                let more = i + 1 < n || res.more;
                let token = more.then(|| storage::encode_continue(res.revision, &kv.key));
                let remaining =
                    (more && filter.is_empty()).then(|| (n - i - 1) as i64 + res.remaining);
                return Ok(Page {
                    items,
                    revision: res.revision,
                    continue_token: token,
                    remaining,
                });
            }
        }
        if !res.more || n == 0 {
            return Ok(Page {
                items,
                revision: res.revision,
                continue_token: None,
                remaining: None,
            });
        }
        start_after = res.items.last().map(|kv| kv.key.clone());
    }
}

pub async fn list(ctx: &Ctx) -> ApiResult<Response> {
    let filter = Filter::from_ctx(ctx)?;
    let page = read_page(ctx, &filter).await?;
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(t) = &page.continue_token {
        metadata["continue"] = json!(t);
    }
    if let Some(r) = page.remaining.filter(|r| *r > 0) {
        metadata["remainingItemCount"] = json!(r);
    }
    let body = crate::negotiate::render_list(ctx, page.items, metadata)?;
    Ok(json_response(StatusCode::OK, &body))
}
