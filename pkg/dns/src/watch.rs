//! Feeds [`Records`] from watches of Services and EndpointSlices (no polling): events are
//! applied as they come; a (re)list replaces the whole set, so objects deleted while the
//! watch was down go too.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::records::Records;

/// Starts both watches; the receiver turns true once both have listed everything once.
pub fn spawn(
    client: &Client,
    records: &Arc<Records>,
) -> (Vec<tokio::task::JoinHandle<()>>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = move || {
        if listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 2 {
            let _ = tx.send(true);
        }
    };
    let (d1, d2) = (done.clone(), done);
    let r1 = records.clone();
    let services = tokio::spawn(feed::<Service>(
        Api::all(client.clone()),
        move |ev, r: &Records| match ev {
            Ev::Apply(s) => r.apply_service(&s),
            Ev::Delete(s) => r.delete_service(&s),
            Ev::Replace(all) => r.replace_services(&all),
        },
        r1,
        d1,
    ));
    let r2 = records.clone();
    let slices = tokio::spawn(feed::<EndpointSlice>(
        Api::all(client.clone()),
        move |ev, r: &Records| match ev {
            Ev::Apply(s) => r.apply_slice(&s),
            Ev::Delete(s) => r.delete_slice(&s),
            Ev::Replace(all) => r.replace_slices(&all),
        },
        r2,
        d2,
    ));
    (vec![services, slices], rx)
}

enum Ev<K> {
    Apply(K),
    Delete(K),
    Replace(Vec<K>),
}

async fn feed<K>(
    api: Api<K>,
    apply: impl Fn(Ev<K>, &Records),
    records: Arc<Records>,
    first_list: impl FnOnce(),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut first_list = Some(first_list);
    let mut listing: Option<Vec<K>> = None;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(o)) => apply(Ev::Apply(o), &records),
            Ok(watcher::Event::Delete(o)) => apply(Ev::Delete(o), &records),
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(o)) => listing.get_or_insert_default().push(o),
            Ok(watcher::Event::InitDone) => {
                apply(Ev::Replace(listing.take().unwrap_or_default()), &records);
                if let Some(f) = first_list.take() {
                    f();
                }
            }
            Err(e) => tracing::debug!(error = %e, "DNS watch failed; retrying"),
        }
    }
}
