//! The node registry: which storage nodes are registered, alive and what pools
//! they report. [`state`] is one node's lifecycle, [`sync`] keeps pool lists
//! current, [`service`] is the v1 `Registration` gRPC service that feeds it,
//! [`admission`] decides who may register as which node.
//!
//! Lifecycle of a node, as the Mayastor control plane does it:
//! - `Register` (every heartbeat) makes it registered and online; a new
//!   instance (restart) or endpoint gets a fresh client and an empty pool cache.
//! - Heartbeats older than the deadline start a probe (ListPools) and wake
//!   the node's pools (the policy reports a node past its deadline down);
//!   the node goes offline in the registry only when the probe fails too.
//! - `Deregister` makes it unregistered at once.
//!
//! ListPools results are cached per node, refreshed after each operation
//! ([`NodeRegistry::refresh`]) and every sync period by [`NodeRegistry::run`].
//! Every change a pool's decision could depend on (liveness, pool list) is
//! broadcast as a [`NodeChange`], so the controller reconciles that node's
//! pools: all of them when the node's liveness changed, only the pools whose
//! entry changed when just the list did.

pub mod admission;
pub mod service;
pub mod state;
pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::nodes::client::NodePool;
use msp_proto::v1::RegisterRequest;
use tokio::sync::broadcast;

use crate::lifecycle::fence::Fence;
use crate::nodes::client::{ApiVersion, NodeClient, NodeError};
use state::{Liveness, NodeEntry};

pub use state::NodeView;

/// How long a Deregister that is not known to come from the node waits for
/// the node to stop answering ([`NodeRegistry::confirm_deregister`]).
pub const DEREGISTER_CONFIRM: Duration = Duration::from_secs(3);
/// How often the node is asked meanwhile.
const DEREGISTER_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Timing of the registry.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// Heartbeats older than this start a probe (io-engine default: 10 s).
    pub deadline: Duration,
    /// How often each online node's pool list is refreshed.
    pub sync_period: Duration,
    /// Deadline of a ListPools probe or refresh.
    pub probe_timeout: Duration,
    /// Deadline of create/import/destroy calls (generous: creating on a
    /// large disk takes time, and create-or-import makes a retry safe).
    pub rpc_timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            deadline: Duration::from_secs(10),
            sync_period: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            rpc_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A change of a node: which pools it may matter to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeChange {
    pub node: String,
    /// `None`: every pool of the node (liveness changed, or its first list);
    /// `Some`: only the pools of these names (their entries changed).
    pub pools: Option<Vec<String>>,
}

/// What an operation did to a node's pools.
#[derive(Clone, Debug)]
pub enum PoolUpdate {
    /// Created or imported: the node's reply.
    Loaded(NodePool),
    /// Destroyed.
    Gone(String),
}

/// Shared handle to the registry.
#[derive(Clone)]
pub struct NodeRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RegistrySettings,
    /// Given to every node's client: only the leader calls storage nodes.
    fence: Fence,
    nodes: RwLock<HashMap<String, NodeEntry>>,
    changes: broadcast::Sender<NodeChange>,
}

/// Errors of the registration service.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("node {0} is not registered or not online")]
    NotOnline(String),
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl NodeRegistry {
    pub fn new(settings: RegistrySettings) -> NodeRegistry {
        NodeRegistry::fenced(settings, Fence::open())
    }

    /// A registry whose node clients call only while `fence` is open.
    pub fn fenced(settings: RegistrySettings, fence: Fence) -> NodeRegistry {
        let (changes, _) = broadcast::channel(1024);
        NodeRegistry {
            inner: Arc::new(Inner {
                settings,
                fence,
                nodes: RwLock::new(HashMap::new()),
                changes,
            }),
        }
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.inner.settings
    }

    /// Names of nodes whose state changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeChange> {
        self.inner.changes.subscribe()
    }

    fn notify(&self, node: &str) {
        self.notify_pools(node, None);
    }

    fn notify_pools(&self, node: &str, pools: Option<Vec<String>>) {
        // No receiver yet is fine: reconciles read the registry anyway.
        let _ = self.inner.changes.send(NodeChange {
            node: node.to_string(),
            pools,
        });
    }

    fn nodes_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, NodeEntry>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a plain field store), so a poisoned lock is usable.
        self.inner.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn nodes_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, NodeEntry>> {
        self.inner.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A Register call: returns true when the node is new, restarted, moved
    /// or came back (and a pool list refresh has been started).
    pub fn register(&self, req: &RegisterRequest) -> Result<bool, tonic::Status> {
        if req.id.is_empty() {
            return Err(tonic::Status::invalid_argument("node id is empty"));
        }
        if req.grpc_endpoint.is_empty() {
            return Err(tonic::Status::invalid_argument("grpc_endpoint is empty"));
        }
        let api = ApiVersion::from_advertised(&req.api_version);
        let now = Instant::now();
        let changed = {
            let mut nodes = self.nodes_write();
            match nodes.get_mut(&req.id) {
                Some(entry) if entry.is_same(&req.grpc_endpoint, api, &req.instance_uuid) => {
                    entry.heartbeat(now)
                }
                existing => {
                    let client = NodeClient::new(
                        &req.grpc_endpoint,
                        api,
                        self.inner.settings.connect_timeout,
                        self.inner.settings.rpc_timeout,
                    )
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
                    .fenced(self.inner.fence.clone());
                    let epoch = existing.map(|e| e.epoch + 1).unwrap_or(0);
                    tracing::info!(node = %req.id, endpoint = %req.grpc_endpoint, ?api,
                        instance = req.instance_uuid.as_deref().unwrap_or(""), "storage node registered");
                    nodes.insert(
                        req.id.clone(),
                        NodeEntry::registered(client, req.instance_uuid.clone(), now, epoch),
                    );
                    true
                }
            }
        };
        if changed {
            self.notify(&req.id);
            self.spawn_refresh(&req.id);
        }
        Ok(changed)
    }

    /// A Deregister call: the node is gone at once.
    pub fn deregister(&self, node: &str) -> bool {
        let changed = {
            let mut nodes = self.nodes_write();
            match nodes.get_mut(node) {
                Some(entry) if entry.liveness != Liveness::Deregistered => {
                    entry.set_liveness(Liveness::Deregistered);
                    true
                }
                _ => false,
            }
        };
        if changed {
            tracing::info!(%node, "storage node deregistered");
            self.notify(node);
        }
        changed
    }

    /// Whether a Deregister of `node` from a sender that could not be told
    /// to be the node itself is to be believed. Behind NAT, a Service or a
    /// standby's forward the sender is another address, so the node is asked
    /// instead: a storage node that deregisters is shutting down and stops
    /// answering at its endpoint within moments; one that keeps answering
    /// for [`DEREGISTER_CONFIRM`] did not send it. A node not registered has
    /// nothing to lose: believed.
    pub async fn confirm_deregister(&self, node: &str) -> bool {
        let client = {
            let nodes = self.nodes_read();
            match nodes.get(node) {
                Some(e) if e.liveness == Liveness::Online => e.client.clone(),
                _ => return true,
            }
        };
        let until = tokio::time::Instant::now() + DEREGISTER_CONFIRM;
        let timeout = self.inner.settings.probe_timeout.min(DEREGISTER_CONFIRM);
        loop {
            if client.list_pools(timeout).await.is_err() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(DEREGISTER_PROBE_INTERVAL).await;
        }
    }

    /// What the registry knows about `node` now.
    pub fn view(&self, node: &str) -> NodeView {
        self.nodes_read()
            .get(node)
            .map(NodeEntry::view)
            .unwrap_or_default()
    }

    /// True when `node` has registered since the operator started.
    pub fn knows(&self, node: &str) -> bool {
        self.nodes_read().contains_key(node)
    }

    /// The client of an online node.
    pub fn client(&self, node: &str) -> Result<NodeClient, RegistryError> {
        let nodes = self.nodes_read();
        match nodes.get(node) {
            Some(entry) if entry.liveness == Liveness::Online => Ok(entry.client.clone()),
            _ => Err(RegistryError::NotOnline(node.to_string())),
        }
    }

    /// Names of all nodes ever registered (for metrics and tests).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes_read().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, endpoint: &str, instance: &str) -> RegisterRequest {
        RegisterRequest {
            id: id.into(),
            grpc_endpoint: endpoint.into(),
            instance_uuid: Some(instance.into()),
            api_version: vec![1],
            ..Default::default()
        }
    }

    fn fast() -> RegistrySettings {
        RegistrySettings {
            deadline: Duration::from_millis(100),
            sync_period: Duration::from_millis(50),
            probe_timeout: Duration::from_millis(200),
            rpc_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn register_heartbeat_deregister() {
        let registry = NodeRegistry::new(fast());
        let mut changes = registry.subscribe();
        // Port 1 on loopback refuses connections: every probe fails fast.
        assert!(
            registry
                .register(&request("n1", "127.0.0.1:1", "a"))
                .expect("register")
        );
        assert_eq!(
            changes.recv().await.expect("change"),
            NodeChange {
                node: "n1".into(),
                pools: None
            }
        );
        let view = registry.view("n1");
        assert!(view.registered && view.reachable);
        assert_eq!(view.endpoint, "127.0.0.1:1");
        // Same instance again: a heartbeat, no change.
        assert!(
            !registry
                .register(&request("n1", "127.0.0.1:1", "a"))
                .expect("heartbeat")
        );
        // A restart (new instance) is a change.
        assert!(
            registry
                .register(&request("n1", "127.0.0.1:1", "b"))
                .expect("restart")
        );
        assert!(registry.deregister("n1"));
        assert!(!registry.deregister("n1"));
        let view = registry.view("n1");
        assert!(!view.registered && !view.reachable);
        assert!(registry.client("n1").is_err());
        assert!(!registry.view("unknown").registered);
    }

    #[test]
    fn only_changed_pools_are_named() {
        use super::sync::changed_pools;
        let pool = |name: &str, used: u64| NodePool {
            name: name.into(),
            disks: vec![],
            state: crate::nodes::client::PoolHealth::Online,
            capacity: 10,
            used,
            replicas: None,
        };
        let old = vec![pool("a", 0), pool("b", 0), pool("c", 0)];
        let new = vec![pool("a", 0), pool("b", 1), pool("d", 0)];
        assert_eq!(changed_pools(&old, &new), vec!["b", "c", "d"]);
        assert!(changed_pools(&old, &old).is_empty());
    }

    #[test]
    fn replica_counts_come_from_one_listing_or_stay() {
        use super::sync::count_replicas;
        let pool = |name: &str, replicas| NodePool {
            name: name.into(),
            disks: vec![],
            state: crate::nodes::client::PoolHealth::Online,
            capacity: 10,
            used: 0,
            replicas,
        };
        let counts = std::collections::BTreeMap::from([("a".to_string(), 2u32)]);
        let mut new = vec![pool("a", None), pool("b", None)];
        count_replicas(&mut new, Some(&counts), None);
        assert_eq!(new, vec![pool("a", Some(2)), pool("b", Some(0))]);
        // The listing failed: the last counts stay; a new pool has none.
        let old = new.clone();
        let mut next = vec![pool("a", None), pool("b", None), pool("c", None)];
        count_replicas(&mut next, None, Some(&old));
        assert_eq!(
            next,
            vec![pool("a", Some(2)), pool("b", Some(0)), pool("c", None)]
        );
    }

    #[tokio::test]
    async fn operation_replies_update_the_cache() {
        let registry = NodeRegistry::new(fast());
        registry
            .register(&request("n3", "127.0.0.1:1", "a"))
            .expect("register");
        // Pools not listed yet: an update alone does not invent a list.
        let pool = NodePool {
            name: "p".into(),
            disks: vec!["/dev/loop0".into()],
            state: crate::nodes::client::PoolHealth::Online,
            capacity: 10,
            used: 0,
            replicas: None,
        };
        registry.apply_update("n3", PoolUpdate::Loaded(pool.clone()));
        assert!(registry.view("n3").pools.is_none());
        // With a list, the reply goes in and the change names the pool.
        registry.nodes_write().get_mut("n3").expect("n3").pools = Some(Vec::new());
        let mut changes = registry.subscribe();
        registry.apply_update("n3", PoolUpdate::Loaded(pool.clone()));
        assert_eq!(registry.view("n3").pools, Some(vec![pool.clone()]));
        let change = changes.recv().await.expect("change");
        assert_eq!(change.pools, Some(vec!["p".to_string()]));
        // A reply (no count) keeps the count the last listing gave.
        registry.nodes_write().get_mut("n3").expect("n3").pools = Some(vec![NodePool {
            replicas: Some(4),
            ..pool.clone()
        }]);
        registry.apply_update("n3", PoolUpdate::Loaded(pool.clone()));
        let listed = registry.view("n3").pools.expect("listed");
        assert_eq!(listed[0].replicas, Some(4));
        registry.apply_update("n3", PoolUpdate::Gone("p".into()));
        assert_eq!(registry.view("n3").pools, Some(vec![]));
        assert_eq!(changes.recv().await.expect("change").pools, None);
    }

    #[tokio::test]
    async fn rejects_empty_id_and_endpoint() {
        let registry = NodeRegistry::new(fast());
        assert!(registry.register(&request("", "127.0.0.1:1", "a")).is_err());
        assert!(registry.register(&request("n", "", "a")).is_err());
    }

    #[tokio::test]
    async fn offline_only_after_deadline_and_failed_probe() {
        let registry = NodeRegistry::new(fast());
        registry
            .register(&request("n2", "127.0.0.1:1", "a"))
            .expect("register");
        // Heartbeat fresh: a failed list does not make it offline.
        assert!(registry.refresh("n2").await.is_err());
        assert!(registry.view("n2").reachable);
        let mut changes = registry.subscribe();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let monitor = tokio::spawn(registry.clone().run(async {
            let _ = stop_rx.await;
        }));
        // No more heartbeats: the monitor probes after the deadline, the
        // probe fails, the node goes offline and the change is announced.
        let changed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if changes.recv().await.is_ok_and(|c| c.node == "n2")
                    && !registry.view("n2").reachable
                {
                    break;
                }
            }
        })
        .await;
        assert!(changed.is_ok(), "node never went offline");
        let view = registry.view("n2");
        assert!(view.registered && !view.reachable && view.pools.is_none());
        // A heartbeat brings it back.
        assert!(
            registry
                .register(&request("n2", "127.0.0.1:1", "a"))
                .expect("back")
        );
        assert!(registry.view("n2").reachable);
        let _ = stop_tx.send(());
        monitor.await.expect("monitor");
    }
}
