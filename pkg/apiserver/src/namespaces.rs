//! Namespace termination: once a Namespace has a deletionTimestamp, everything in it is
//! deleted, then the `kubernetes` finalizer is removed and the Namespace goes away.
//! (The namespace controller of the control plane will take this over; until then the API
//! server does it so `kubectl delete namespace` completes.)

use crate::state::ApiState;
use crate::storage;
use kubox_core::meta;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Starts (idempotently) the background termination of namespace `name`.
pub fn start_termination(state: Arc<ApiState>, name: String) {
    tokio::spawn(async move {
        for round in 0u32.. {
            match terminate_round(&state, &name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "namespace termination round failed")
                }
            }
            let wait = Duration::from_millis(200 * u64::from(round.min(25) + 1));
            tokio::time::sleep(wait).await;
        }
    });
}

/// Resumes termination of every namespace that was terminating when the server stopped.
pub async fn resume_all(state: Arc<ApiState>) {
    let prefix = format!("{}core/namespaces/", storage::PREFIX);
    let Ok(res) = state.store.list(&prefix, None, None, None).await else {
        return;
    };
    for kv in res.items {
        let Ok(ns) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if ns
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
            && let Some(name) = meta::name(&ns)
        {
            start_termination(state.clone(), name.to_string());
        }
    }
}

/// One pass: deletes what can be deleted; true when the namespace itself is gone.
async fn terminate_round(state: &ApiState, name: &str) -> Result<bool, kubox_store::Error> {
    let storages: BTreeSet<String> = state
        .registry()
        .resources()
        .iter()
        .filter(|d| d.namespaced)
        .map(|d| d.storage.clone())
        .collect();
    let mut remaining = 0usize;
    for s in storages {
        let prefix = format!("{}{s}/{name}/", storage::PREFIX);
        let res = state.store.list(&prefix, None, None, None).await?;
        for kv in res.items {
            remaining += 1;
            let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
                let _ = state.store.delete(&kv.key, Some(kv.mod_revision)).await;
                continue;
            };
            if meta::finalizers(&obj).is_empty() {
                let _ = state.store.delete(&kv.key, Some(kv.mod_revision)).await;
            } else if obj
                .pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
            {
                meta::set_meta(&mut obj, "deletionTimestamp", json!(meta::now_rfc3339()));
                meta::set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
                if let Ok(bytes) = serde_json::to_vec(&obj) {
                    let _ = state.store.update(&kv.key, bytes, kv.mod_revision).await;
                }
            }
        }
    }
    let key = format!("{}core/namespaces/{name}", storage::PREFIX);
    let Some(kv) = state.store.get(&key).await? else {
        return Ok(true);
    };
    if remaining > 0 {
        return Ok(false);
    }
    let Ok(mut ns) = serde_json::from_slice::<Value>(&kv.value) else {
        return Ok(false);
    };
    if let Some(f) = ns
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|v| v != "kubernetes");
    }
    let spec_done = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if spec_done && meta::finalizers(&ns).is_empty() {
        state.store.delete(&key, Some(kv.mod_revision)).await?;
        tracing::info!(namespace = %name, "namespace deleted");
        return Ok(true);
    }
    if let Ok(bytes) = serde_json::to_vec(&ns) {
        let _ = state.store.update(&key, bytes, kv.mod_revision).await;
    }
    Ok(false)
}
