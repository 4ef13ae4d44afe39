//! The watch caches (reflector stores) of MayastorPools and Nodes, and the
//! helpers over them that the wiring and the sweep share: waiting for a
//! first complete list, and which pools a change matters to.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::crd::MayastorPool;
use crate::registry::{NodeChange, NodeRegistry};

/// Waits until `store` has its first complete list. `Store::wait_until_ready`
/// wakes only the last of several concurrent waiters (one shared oneshot
/// receiver), so each waiter here looks again every 50 ms.
pub async fn wait_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(50), store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_) => continue,
        }
    }
}

/// The pools whose (cached or spec) node is `node`; all pools when `None`.
pub fn pools_on(store: &Store<MayastorPool>, node: Option<&str>) -> Vec<ObjectRef<MayastorPool>> {
    store
        .state()
        .iter()
        .filter(|p| node.is_none_or(|n| p.effective_node() == n))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The pools a registry change matters to.
pub fn pools_for(store: &Store<MayastorPool>, change: &NodeChange) -> Vec<ObjectRef<MayastorPool>> {
    match &change.pools {
        None => pools_on(store, Some(&change.node)),
        Some(names) => store
            .state()
            .iter()
            .filter(|p| {
                p.effective_node() == change.node && names.iter().any(|n| *n == p.name_any())
            })
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect(),
    }
}

/// The MayastorPool cache and the stream of changed pools that feeds it;
/// `on_delete` sees each deletion the watch reports.
pub fn watch_pools(
    api: Api<MayastorPool>,
    on_delete: impl Fn(&MayastorPool) + Send + 'static,
) -> (
    Store<MayastorPool>,
    impl Stream<Item = Result<MayastorPool, watcher::Error>> + Send,
) {
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(pool)) = event {
                on_delete(pool);
            }
        })
        .applied_objects();
    (store, stream)
}

/// The Node cache and the stream of touched Nodes that feeds it.
pub fn watch_nodes(
    api: Api<Node>,
) -> (
    Store<Node>,
    impl Stream<Item = Result<Node, watcher::Error>> + Send,
) {
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// A registry change (register, deregister, deadline, new pool list) wakes
/// the pools of that node; a lagged receiver wakes all pools.
pub fn node_triggers(
    registry: &NodeRegistry,
    pools: Store<MayastorPool>,
) -> impl Stream<Item = ObjectRef<MayastorPool>> + use<> {
    stream::unfold(registry.subscribe(), move |mut rx| {
        let pools = pools.clone();
        async move {
            use tokio::sync::broadcast::error::RecvError;
            match rx.recv().await {
                Ok(change) => {
                    let woken = pools_for(&pools, &change);
                    tracing::debug!(node = %change.node, pools = woken.len(), "registry change wakes pools");
                    Some((woken, rx))
                }
                Err(RecvError::Lagged(missed)) => {
                    let woken = pools_on(&pools, None);
                    tracing::warn!(missed, pools = woken.len(), "registry changes missed: waking every pool");
                    Some((woken, rx))
                }
                Err(RecvError::Closed) => None,
            }
        }
    })
    .flat_map(stream::iter)
}
