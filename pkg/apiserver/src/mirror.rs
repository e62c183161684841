//! In-memory views of stored objects that the request path consults without store reads (the
//! RBAC policy, the Node authorizer's pod graph, admission webhook configurations): each is
//! loaded before the first request is served and kept in step by one store watch of its
//! prefix, reloaded whole if the watch falls behind compaction.

use crate::state::ApiState;
use futures::StreamExt;
use kubox_store::EventKind;
use serde_json::Value;
use std::sync::Arc;

/// A view of every object under [`Mirror::PREFIXES`].
pub trait Mirror: Send + Sync + 'static {
    const PREFIXES: &'static [&'static str];
    /// What the view holds, for log lines.
    const WHAT: &'static str;
    /// The object at `key` is now `obj` (None: deleted).
    fn apply(&self, key: &str, obj: Option<&Value>);
    /// Forgets everything (before a reload).
    fn clear(&self);
}

/// Loads every object of `M` into `view`; returns the revision to watch from (that of the
/// first list: replaying a later prefix's events from it converges to the same state).
async fn load<M: Mirror>(state: &ApiState, view: &M) -> Result<i64, kubox_store::Error> {
    let mut first = None;
    for prefix in M::PREFIXES {
        let res = state.store.list(prefix, None, None, None).await?;
        for kv in &res.items {
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                view.apply(&kv.key, Some(&obj));
            }
        }
        first.get_or_insert(res.revision);
    }
    Ok(first.unwrap_or(0))
}

/// Follows changes under `prefix` after `from` until the store closes.
async fn follow<M: Mirror>(
    state: Arc<ApiState>,
    view: fn(&ApiState) -> &M,
    prefix: &'static str,
    mut from: i64,
) {
    loop {
        let r = async {
            let mut events = state.store.watch(prefix, from).await?;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                from = ev.kv.mod_revision;
                match ev.kind {
                    EventKind::Delete => view(&state).apply(&ev.kv.key, None),
                    _ => {
                        if let Ok(obj) = serde_json::from_slice::<Value>(&ev.kv.value) {
                            view(&state).apply(&ev.kv.key, Some(&obj));
                        }
                    }
                }
            }
            Ok::<(), kubox_store::Error>(())
        }
        .await;
        match r {
            Ok(()) => return,
            Err(kubox_store::Error::Compacted { .. }) => {
                view(&state).clear();
                match load(&state, view(&state)).await {
                    Ok(rev) => from = rev,
                    Err(e) => tracing::warn!(error = %e, view = M::WHAT, "reloading failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, view = M::WHAT, "watch ended; restarting"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn start_one<M: Mirror>(
    state: &Arc<ApiState>,
    view: fn(&ApiState) -> &M,
) -> Result<(), kubox_store::Error> {
    let rev = load(state, view(state)).await?;
    for prefix in M::PREFIXES {
        tokio::spawn(follow(state.clone(), view, prefix, rev));
    }
    Ok(())
}

/// Loads every view and keeps them in step (call before serving requests).
pub async fn start(state: &Arc<ApiState>) -> Result<(), kubox_store::Error> {
    start_one(state, |s| &s.rbac).await?;
    start_one(state, |s| &s.node_graph).await?;
    start_one(state, |s| &s.webhooks).await?;
    Ok(())
}
