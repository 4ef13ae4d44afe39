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
//! - A new leader adopts the nodes the previous one recorded ([`record`]):
//!   each whose recorded endpoint passes the registration check and answers
//!   a ListPools is online at once, its answers standing in for heartbeats
//!   until its own Register reaches this leader (a frozen leader can hold
//!   the node's connection for a lease duration and more).
//!
//! ListPools results are cached per node, refreshed after each operation
//! ([`NodeRegistry::refresh`]) and every sync period by [`NodeRegistry::run`].
//! Every change a pool's decision could depend on (liveness, pool list) is
//! broadcast as a [`NodeChange`], so the controller reconciles that node's
//! pools: all of them when the node's liveness changed, only the pools whose
//! entry changed when just the list did.

pub mod admission;
pub mod record;
pub mod service;
pub mod state;
pub mod sync;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use msp_proto::v1::RegisterRequest;
use tokio::sync::{broadcast, watch};

use crate::lifecycle::fence::Fence;
use crate::nodes::client::{ApiVersion, NodeClient, NodeError, NodePool};
use crate::nodes::disk_health::{self, Finding};
use admission::Admission;
use record::Recorded;
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
    /// Each registered node's registration, for the record ([`record::keep`]).
    recorded: watch::Sender<BTreeMap<String, Recorded>>,
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
                recorded: watch::Sender::new(BTreeMap::new()),
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

    /// The registrations to record, as they change.
    pub fn recorded(&self) -> watch::Receiver<BTreeMap<String, Recorded>> {
        self.inner.recorded.subscribe()
    }

    /// The client of a node registering at `endpoint`, fenced.
    fn new_client(&self, endpoint: &str, api: ApiVersion) -> Result<NodeClient, NodeError> {
        let s = &self.inner.settings;
        Ok(
            NodeClient::new(endpoint, api, s.connect_timeout, s.rpc_timeout)?
                .fenced(self.inner.fence.clone()),
        )
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
                    let client = self
                        .new_client(&req.grpc_endpoint, api)
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
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
            let recorded = Recorded {
                endpoint: req.grpc_endpoint.clone(),
                api_versions: req.api_version.clone(),
                instance: req.instance_uuid.clone(),
            };
            self.inner.recorded.send_if_modified(|all| {
                all.insert(req.id.clone(), recorded.clone()) != Some(recorded)
            });
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
            self.inner
                .recorded
                .send_if_modified(|all| all.remove(node).is_some());
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

    /// Adopts the nodes of the previous leader's record (see [`record`]):
    /// each not registered here yet whose recorded endpoint passes the
    /// registration check and answers a ListPools now is online, with that
    /// list, as if it had registered; its answers to the list refreshes
    /// stand in for heartbeats until its own Register arrives. A node that
    /// fails either is left to register (its pools wait for it, as without
    /// a record). Returns the names adopted.
    pub async fn adopt(
        &self,
        recorded: BTreeMap<String, Recorded>,
        admission: &Admission,
    ) -> Vec<String> {
        // Kept in the record until deregistered (a node down now stays
        // known to the leader after this one).
        self.inner.recorded.send_if_modified(|all| {
            let before = all.len();
            for (node, rec) in &recorded {
                all.entry(node.clone()).or_insert_with(|| rec.clone());
            }
            all.len() != before
        });
        let probes = recorded.into_iter().filter_map(|(node, rec)| {
            if self.knows(&node) {
                return None;
            }
            if let Err(refusal) = admission.check(&node, &rec.endpoint, None) {
                tracing::warn!(%node, endpoint = %rec.endpoint, why = refusal.kind,
                    "recorded registration not adopted: {}", refusal.message);
                return None;
            }
            let api = ApiVersion::from_advertised(&rec.api_versions);
            let client = match self.new_client(&rec.endpoint, api) {
                Ok(client) => client,
                Err(err) => {
                    tracing::warn!(%node, endpoint = %rec.endpoint, error = %err,
                        "recorded registration not adopted");
                    return None;
                }
            };
            Some(async move {
                let timeout = self.inner.settings.probe_timeout;
                let listed = sync::list(&client, &node, timeout).await;
                (node, rec, client, listed)
            })
        });
        let mut adopted = Vec::new();
        for (node, rec, client, listed) in futures::future::join_all(probes).await {
            let mut pools = match listed.pools {
                Ok(pools) => pools,
                Err(err) => {
                    tracing::info!(%node, endpoint = %rec.endpoint, error = %err,
                        "recorded storage node does not answer; waiting for it to register");
                    continue;
                }
            };
            pools.sort_by(|a, b| a.name.cmp(&b.name));
            // With the counts at once: a pool's status is written from its
            // first look, and a count arriving later would be a second write.
            sync::count_replicas(&mut pools, listed.counts.as_ref(), None);
            let findings = disk_health::carry(BTreeMap::new(), listed.findings, &pools);
            disk_health::apply(&mut pools, &findings);
            {
                let mut nodes = self.nodes_write();
                // Its own Register came first: that one stands.
                if nodes.contains_key(&node) {
                    continue;
                }
                let mut entry =
                    NodeEntry::registered(client, rec.instance.clone(), Instant::now(), 0);
                entry.adopted = true;
                entry.pools = Some(pools);
                entry.disk_findings = findings;
                entry.last_sync = Some(Instant::now());
                nodes.insert(node.clone(), entry);
            }
            tracing::info!(%node, endpoint = %rec.endpoint,
                "storage node adopted from the registration record: it answers at its endpoint");
            self.notify(&node);
            adopted.push(node);
        }
        adopted
    }

    /// What the registry knows about `node` now.
    pub fn view(&self, node: &str) -> NodeView {
        self.nodes_read()
            .get(node)
            .map(NodeEntry::view)
            .unwrap_or_default()
    }

    /// What the operator found wrong with the disks of `node`'s listed pool
    /// `pool`, when it made its reported state worse than the node's.
    pub fn disk_finding(&self, node: &str, pool: &str) -> Option<Finding> {
        self.nodes_read()
            .get(node)
            .filter(|e| e.liveness == Liveness::Online)
            .and_then(|e| e.disk_findings.get(pool).cloned())
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
