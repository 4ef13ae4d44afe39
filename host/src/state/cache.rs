//! The watch caches (reflector stores) of MayastorPools and Nodes, and the
//! helpers over them that the wiring and the sweep share: waiting for a
//! first complete list, the pools of one node, and which pools a change
//! matters to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

use crate::nodes::registry::{NodeChange, NodeRegistry};
use crate::state::crd::MayastorPool;

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

/// The MayastorPool cache: the reflector's store, and which pools each
/// (effective) node has. What a reconcile compares its pool with are the
/// pools of its node; reading them from a list of all pools cost a copy and
/// a compare of every pool per reconcile (at 5,000 pools that was most of
/// the idle operator's CPU).
#[derive(Clone)]
pub struct PoolCache {
    store: Store<MayastorPool>,
    by_node: Arc<RwLock<ByNode>>,
}

/// Feeds a [`PoolCache`]: each watch event goes to the store and the index.
pub struct PoolCacheWriter {
    store: Writer<MayastorPool>,
    by_node: Arc<RwLock<ByNode>>,
}

/// An empty cache and its writer.
pub fn pool_cache() -> (PoolCache, PoolCacheWriter) {
    let (store, writer) = reflector::store();
    let by_node = Arc::<RwLock<ByNode>>::default();
    (
        PoolCache {
            store,
            by_node: by_node.clone(),
        },
        PoolCacheWriter {
            store: writer,
            by_node,
        },
    )
}

impl PoolCache {
    /// The reflector's store (the controller's and the sweep's view).
    pub fn store(&self) -> &Store<MayastorPool> {
        &self.store
    }

    /// Every pool.
    pub fn all(&self) -> Vec<Arc<MayastorPool>> {
        self.store.state()
    }

    /// The pools whose (cached or spec) node is `node`.
    pub fn on_node(&self, node: &str) -> Vec<Arc<MayastorPool>> {
        let by_node = self.by_node.read().unwrap_or_else(|e| e.into_inner());
        by_node
            .pools
            .get(node)
            .into_iter()
            .flatten()
            // The store may be an event ahead of the index or behind it:
            // a pool it no longer holds is gone, one on another node moved.
            .filter_map(|r| self.store.get(r))
            .filter(|p| p.effective_node() == node)
            .collect()
    }

    /// References to the pools of `node`; of all pools when `None`.
    pub fn refs_on(&self, node: Option<&str>) -> Vec<ObjectRef<MayastorPool>> {
        let pools = match node {
            Some(node) => self.on_node(node),
            None => self.all(),
        };
        pools
            .iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// The pools a registry change matters to: those it names, of its node.
    pub fn refs_for(&self, change: &NodeChange) -> Vec<ObjectRef<MayastorPool>> {
        let mut refs = self.refs_on(Some(&change.node));
        if let Some(names) = &change.pools {
            refs.retain(|r| names.contains(&r.name));
        }
        refs
    }
}

impl PoolCacheWriter {
    /// Applies one watch event to the store, then to the index.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<MayastorPool>) {
        self.store.apply_watcher_event(event);
        self.by_node
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(event);
    }
}

/// Pool references by effective node, kept as the store keeps its objects:
/// a relist replaces the whole index once it is complete.
#[derive(Default)]
struct ByNode {
    pools: HashMap<String, HashSet<ObjectRef<MayastorPool>>>,
    node_of: HashMap<ObjectRef<MayastorPool>, String>,
    /// The relist in progress, if any: what it has listed so far.
    relist: Option<Vec<(ObjectRef<MayastorPool>, String)>>,
}

impl ByNode {
    fn apply(&mut self, event: &watcher::Event<MayastorPool>) {
        use watcher::Event;
        match event {
            Event::Apply(pool) => {
                let r = ObjectRef::from_obj(pool);
                self.remove(&r);
                self.insert(r, pool.effective_node().to_string());
            }
            Event::Delete(pool) => self.remove(&ObjectRef::from_obj(pool)),
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(pool) => {
                if let Some(listed) = &mut self.relist {
                    listed.push((ObjectRef::from_obj(pool), pool.effective_node().to_string()));
                }
            }
            Event::InitDone => {
                if let Some(listed) = self.relist.take() {
                    self.pools.clear();
                    self.node_of.clear();
                    for (r, node) in listed {
                        self.insert(r, node);
                    }
                }
            }
        }
    }

    fn insert(&mut self, r: ObjectRef<MayastorPool>, node: String) {
        self.pools
            .entry(node.clone())
            .or_default()
            .insert(r.clone());
        self.node_of.insert(r, node);
    }

    fn remove(&mut self, r: &ObjectRef<MayastorPool>) {
        let Some(node) = self.node_of.remove(r) else {
            return;
        };
        if let Some(set) = self.pools.get_mut(&node) {
            set.remove(r);
            if set.is_empty() {
                self.pools.remove(&node);
            }
        }
    }
}

/// The MayastorPool cache and the stream of changed pools that feeds it;
/// `on_delete` sees each deletion the watch reports.
pub fn watch_pools(
    api: Api<MayastorPool>,
    on_delete: impl Fn(&MayastorPool) + Send + 'static,
) -> (
    PoolCache,
    impl Stream<Item = Result<MayastorPool, watcher::Error>> + Send,
) {
    let (cache, mut writer) = pool_cache();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(forget_managed_fields)
        // The cache is written before the controller sees the event, so a
        // reconcile's view of its node holds every event up to its own.
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply_watcher_event(event);
                if let watcher::Event::Delete(pool) = event {
                    on_delete(pool);
                }
            }
        })
        .applied_objects();
    (cache, stream)
}

/// Nothing here reads managedFields: not keeping them is most of a cached
/// object's memory.
fn forget_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
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
        .modify(forget_managed_fields)
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// A registry change (register, deregister, deadline, new pool list) wakes
/// the pools of that node; a lagged receiver wakes all pools.
pub fn node_triggers(
    registry: &NodeRegistry,
    pools: PoolCache,
) -> impl Stream<Item = ObjectRef<MayastorPool>> + use<> {
    stream::unfold(registry.subscribe(), move |mut rx| {
        let pools = pools.clone();
        async move {
            use tokio::sync::broadcast::error::RecvError;
            match rx.recv().await {
                Ok(change) => {
                    let woken = pools.refs_for(&change);
                    tracing::debug!(node = %change.node, pools = woken.len(), "registry change wakes pools");
                    Some((woken, rx))
                }
                Err(RecvError::Lagged(missed)) => {
                    let woken = pools.refs_on(None);
                    tracing::warn!(missed, pools = woken.len(), "registry changes missed: waking every pool");
                    Some((woken, rx))
                }
                Err(RecvError::Closed) => None,
            }
        }
    })
    .flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::state::crd::{MayastorPoolSpec, MayastorPoolStatus};

    fn pool(name: &str, spec_node: &str, cached_node: Option<&str>) -> MayastorPool {
        let mut p = MayastorPool::new(
            name,
            MayastorPoolSpec {
                node: spec_node.into(),
                disks: vec![format!("/dev/{name}")],
            },
        );
        p.metadata.namespace = Some("mayastor".into());
        p.status = cached_node.map(|n| MayastorPoolStatus {
            node: Some(n.into()),
            ..Default::default()
        });
        p
    }

    /// A cache after a first list of `pools`.
    fn listed(pools: impl IntoIterator<Item = MayastorPool>) -> (PoolCache, PoolCacheWriter) {
        let (cache, mut writer) = pool_cache();
        writer.apply_watcher_event(&Event::Init);
        for p in pools {
            writer.apply_watcher_event(&Event::InitApply(p));
        }
        writer.apply_watcher_event(&Event::InitDone);
        (cache, writer)
    }

    fn names(pools: Vec<Arc<MayastorPool>>) -> Vec<String> {
        let mut names: Vec<String> = pools.iter().map(|p| p.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn pools_are_found_by_their_effective_node_through_every_kind_of_event() {
        let (cache, mut writer) = pool_cache();
        writer.apply_watcher_event(&Event::Init);
        for p in [
            pool("a", "n1", None),
            pool("b", "n1", None),
            pool("c", "n2", None),
        ] {
            writer.apply_watcher_event(&Event::InitApply(p));
        }
        // Until the list is complete the index is the one before it (empty).
        assert!(cache.on_node("n1").is_empty());
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(cache.on_node("n1")), ["a", "b"]);
        assert_eq!(names(cache.on_node("n2")), ["c"]);
        assert!(cache.on_node("n3").is_empty());

        // The spec moves b before it is created; the status caches a's node
        // (the spec's node no longer counts for a).
        writer.apply_watcher_event(&Event::Apply(pool("b", "n2", None)));
        writer.apply_watcher_event(&Event::Apply(pool("a", "n3", Some("n1"))));
        assert_eq!(names(cache.on_node("n1")), ["a"]);
        assert_eq!(names(cache.on_node("n2")), ["b", "c"]);
        assert!(cache.on_node("n3").is_empty());

        writer.apply_watcher_event(&Event::Delete(pool("c", "n2", None)));
        assert_eq!(names(cache.on_node("n2")), ["b"]);
        assert_eq!(names(cache.all()), ["a", "b"]);

        // A relist that no longer holds b replaces the index as a whole.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(pool("a", "n3", Some("n1"))));
        writer.apply_watcher_event(&Event::InitDone);
        assert!(cache.on_node("n2").is_empty());
        assert_eq!(names(cache.on_node("n1")), ["a"]);
        assert_eq!(cache.refs_on(None).len(), 1);
    }

    #[test]
    fn a_registry_change_wakes_the_pools_it_names_on_its_node_only() {
        let (cache, _writer) = listed([
            pool("a", "n1", None),
            pool("b", "n1", None),
            pool("a2", "n2", None),
        ]);
        let change = |pools: Option<Vec<&str>>| NodeChange {
            node: "n1".into(),
            pools: pools.map(|p| p.into_iter().map(String::from).collect()),
        };
        let mut all = cache.refs_for(&change(None));
        all.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let named = cache.refs_for(&change(Some(vec!["b", "a2"])));
        assert_eq!(
            named.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }
}
