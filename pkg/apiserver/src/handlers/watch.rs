//! WATCH: a chunked stream of JSON events pushed from the store's committing writer.
//!
//! Semantics follow upstream: no resourceVersion (or "0") first sends the current state as
//! synthetic ADDED events; a specific resourceVersion resumes after it; a compacted one gets
//! HTTP 200 and an in-stream ERROR event carrying a 410 Expired Status.

use super::Ctx;
use super::list::{Filter, Read, StoredFilter, read_page_with};
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Negotiated;
use crate::storage;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use kubox_store::{Event, EventKind};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an idle watch with allowWatchBookmarks gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

pub async fn watch(ctx: Ctx) -> ApiResult<Response> {
    let mut filter = Filter::from_ctx(&ctx)?;
    if let Some(name) = &ctx.info.name {
        filter
            .fields
            .terms
            .push(("metadata.name".into(), true, name.clone()));
    }
    let prefix = storage::prefix(&ctx.def, ctx.namespace());
    let rv_param = ctx.query.get("resourceVersion").map(String::from);
    let send_initial = match ctx.query.get("sendInitialEvents") {
        Some("true") => true,
        Some("false") => false,
        _ => rv_param.as_deref().is_none_or(|rv| rv == "0"),
    };
    let initial_end_bookmark = ctx.query.get("sendInitialEvents") == Some("true");
    if initial_end_bookmark && !ctx.query.bool("allowWatchBookmarks") {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![(
                "FieldValueForbidden".into(),
                "allowWatchBookmarks".into(),
                "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true".into(),
            )],
        ));
    }
    let bookmarks = ctx.query.bool("allowWatchBookmarks");
    let timeout = match ctx.query.i64("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);

    // Establish the starting point before answering, so errors can still be a plain status.
    let mut initial = Vec::new();
    let start_rev = if send_initial {
        let stored = StoredFilter::new(&filter, &ctx.def);
        let json = ctx.accept == Negotiated::Json;
        let page = read_page_with(&ctx_for_initial(&ctx), &filter, |kv| {
            if json {
                let (read, matches) = stored.read(kv)?;
                if !matches {
                    return Ok(None);
                }
                let mut out = Vec::new();
                read.write(&mut out)?;
                return Ok(Some(Obj::Json(out)));
            }
            let obj = storage::decode(&ctx.def, kv)?;
            Ok(filter.matches(&obj).then_some(Obj::Value(obj)))
        })
        .await?;
        initial = page.items;
        page.revision
    } else {
        match rv_param.as_deref().map(str::parse::<i64>) {
            Some(Ok(n)) => n,
            _ => return Err(ApiError::bad_request("invalid resourceVersion for watch")),
        }
    };
    let stream = ctx.state.store.watch(&prefix, start_rev).await;

    tokio::spawn(async move {
        let stored = StoredFilter::new(&filter, &ctx.def);
        let mut w = Writer {
            ctx: &ctx,
            tx: &tx,
            first: true,
        };
        for obj in initial {
            if !w.send("ADDED", obj).await {
                return;
            }
        }
        if initial_end_bookmark {
            let mut b = bookmark(&ctx, start_rev);
            b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            if !w.send_raw("BOOKMARK", b).await {
                return;
            }
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(kubox_store::Error::Compacted {
                requested,
                compacted,
            }) => {
                w.send_error(expired(requested, compacted)).await;
                return;
            }
            Err(e) => {
                w.send_error(ApiError::from(e)).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let mut last_rev = start_rev;
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    if bookmarks {
                        w.send_raw("BOOKMARK", bookmark(&ctx, last_rev)).await;
                    }
                    return;
                }
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    let rev = ctx.state.store.current_revision().max(last_rev);
                    if !w.send_raw("BOOKMARK", bookmark(&ctx, rev)).await {
                        return;
                    }
                }
                ev = stream.next() => match ev {
                    None => return,
                    Some(Err(kubox_store::Error::Compacted { requested, compacted })) => {
                        w.send_error(expired(requested, compacted)).await;
                        return;
                    }
                    Some(Err(e)) => {
                        w.send_error(ApiError::from(e)).await;
                        return;
                    }
                    Some(Ok(ev)) => {
                        last_rev = ev.kv.mod_revision;
                        match translate(&ctx, &filter, &stored, &ev) {
                            Ok(Some((ty, obj))) => {
                                if !w.send(ty, obj).await {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                w.send_error(e).await;
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// The initial state of a watch is read like a list, without paging parameters.
fn ctx_for_initial(ctx: &Ctx) -> Ctx {
    Ctx {
        state: ctx.state.clone(),
        info: ctx.info.clone(),
        def: ctx.def.clone(),
        query: crate::request::Query::parse(None),
        headers: ctx.headers.clone(),
        accept: ctx.accept.clone(),
        user: ctx.user.clone(),
        warnings: ctx.warnings.clone(),
        upgrade: None,
    }
}

fn expired(requested: i64, compacted: i64) -> ApiError {
    ApiError::gone(format!(
        "too old resource version: {requested} ({compacted})"
    ))
}

fn bookmark(ctx: &Ctx, rev: i64) -> Value {
    json!({
        "kind": ctx.def.kind,
        "apiVersion": ctx.def.api_version(),
        "metadata": {"resourceVersion": rev.to_string(), "creationTimestamp": null},
    })
}

/// The object of a watch event: its JSON already written (plain JSON watches, from the
/// stored bytes when no conversion applies), or to be rendered as negotiated.
enum Obj {
    Json(Vec<u8>),
    Value(Value),
}

/// Maps a store event to a watch event, applying selectors with upstream's transitions
/// (an object that stops matching is DELETED for this watcher, one that starts is ADDED).
fn translate(
    ctx: &Ctx,
    filter: &Filter,
    stored: &StoredFilter,
    ev: &Event,
) -> ApiResult<Option<(&'static str, Obj)>> {
    let (read, now) = if ctx.accept == Negotiated::Json {
        stored.read(&ev.kv)?
    } else {
        let obj = storage::decode(&ctx.def, &ev.kv)?;
        let now = filter.matches(&obj);
        (Read::Decoded(obj), now)
    };
    let before = match &ev.prev {
        Some(p) => stored.matches(p)?,
        None => false,
    };
    let ty = match ev.kind {
        EventKind::Create => now.then_some("ADDED"),
        EventKind::Delete => (now || before).then_some("DELETED"),
        EventKind::Update => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    };
    let Some(ty) = ty else {
        return Ok(None);
    };
    // Only sent objects are written out.
    let obj = match read {
        Read::Decoded(obj) if ctx.accept != Negotiated::Json => Obj::Value(obj),
        read => {
            let mut out = Vec::new();
            read.write(&mut out)?;
            Obj::Json(out)
        }
    };
    Ok(Some((ty, obj)))
}

struct Writer<'a> {
    ctx: &'a Ctx,
    tx: &'a mpsc::Sender<Result<Bytes, Infallible>>,
    first: bool,
}

impl Writer<'_> {
    /// Sends an object event, rendered as the client asked (object, Table row, metadata).
    async fn send(&mut self, ty: &str, obj: Obj) -> bool {
        let obj = match obj {
            Obj::Value(v) => v,
            Obj::Json(json) => {
                // What `send_raw` writes, with the object's JSON as it is.
                self.first = false;
                let mut line = Vec::with_capacity(json.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(ty.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(&json);
                line.extend_from_slice(b"}\n");
                return self.tx.send(Ok(Bytes::from(line))).await.is_ok();
            }
        };
        let rendered = match crate::negotiate::render_watch_object(self.ctx, obj, self.first) {
            Ok(o) => o,
            Err(e) => {
                self.send_error(e).await;
                return false;
            }
        };
        self.first = false;
        self.send_raw(ty, rendered).await
    }
    async fn send_raw(&mut self, ty: &str, obj: Value) -> bool {
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
    async fn send_error(&mut self, e: ApiError) -> bool {
        self.send_raw("ERROR", e.status()).await
    }
}
