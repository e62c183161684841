//! Watcher registry (fed by the writer after each commit) and the watch stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::{Error, Event, WatchStream};

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

/// All live watchers. Lock it to register a watcher atomically with reading the current revision.
#[derive(Default)]
pub(crate) struct Registry {
    watchers: Vec<Watcher>,
}

impl Registry {
    pub(crate) fn add(&mut self, prefix: &str, tx: mpsc::Sender<Event>, lagged: Arc<AtomicBool>) {
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
            lagged,
        });
    }

    /// Hands committed events (in revision order) to every matching watcher without blocking.
    /// A watcher whose buffer is full is marked lagged and dropped; closed ones are removed.
    pub(crate) fn broadcast(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            for ev in events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)) {
                match w.tx.try_send(ev.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        w.lagged.store(true, Ordering::SeqCst);
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            !w.tx.is_closed()
        });
    }

    /// Drops every watcher (their streams end with [`Error::Closed`]).
    pub(crate) fn clear(&mut self) {
        self.watchers.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.watchers.len()
    }
}

/// Replayed history followed by live events with revision > `floor`. The stream ends with
/// [`Error::WatcherLagged`] if the watcher was dropped for being slow, [`Error::Closed`] if the
/// store shut down.
pub(crate) fn stream(
    replay: Vec<Event>,
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    floor: i64,
) -> WatchStream {
    use futures::StreamExt;
    let live = futures::stream::unfold(Some((rx, lagged)), move |state| async move {
        let (mut rx, lagged) = state?;
        loop {
            match rx.recv().await {
                Some(ev) if ev.kv.mod_revision <= floor => continue,
                Some(ev) => return Some((Ok(ev), Some((rx, lagged)))),
                None => {
                    let err = if lagged.load(Ordering::SeqCst) {
                        Error::WatcherLagged
                    } else {
                        Error::Closed
                    };
                    return Some((Err(err), None));
                }
            }
        }
    });
    Box::pin(futures::stream::iter(replay.into_iter().map(Ok)).chain(live))
}
