//! The node registry: which storage nodes are registered, alive and what pools
//! they report, plus the v1 `Registration` gRPC service that feeds it.
//!
//! Lifecycle of a node, as the Mayastor control plane does it:
//! - `Register` (every heartbeat) makes it registered and online; a new
//!   instance (restart) or endpoint gets a fresh client and an empty pool cache.
//! - Heartbeats older than the deadline start a probe (ListPools); the node
//!   goes offline only when the probe fails too.
//! - `Deregister` makes it unregistered at once.
//!
//! ListPools results are cached per node, refreshed after each operation
//! ([`NodeRegistry::refresh`]) and every sync period by [`NodeRegistry::run`].
//! Every change a pool's decision could depend on (liveness, pool list) is
//! broadcast as a [`NodeChange`], so the controller reconciles that node's
//! pools: all of them when the node's liveness changed, only the pools whose
//! entry changed when just the list did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use msp_policy::model::ReportedPool;
use msp_proto::v1::registration_server::{Registration, RegistrationServer};
use msp_proto::v1::{DeregisterRequest, RegisterRequest};
use tokio::sync::broadcast;

use crate::node_client::{ApiVersion, NodeClient, NodeError};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Online,
    /// Heartbeats stopped and the probe failed.
    Offline,
    Deregistered,
}

struct NodeEntry {
    client: NodeClient,
    instance: Option<String>,
    last_heartbeat: Instant,
    liveness: Liveness,
    pools: Option<Vec<ReportedPool>>,
    last_sync: Option<Instant>,
    /// Bumped on every liveness or client change, so a refresh that started
    /// before does not store a stale list.
    epoch: u64,
    syncing: bool,
}

/// What the registry knows about one node, for an observation.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub registered: bool,
    pub reachable: bool,
    pub heartbeat_age: Option<Duration>,
    pub endpoint: String,
    /// The node's pools, when listed since it (re)registered.
    pub pools: Option<Vec<ReportedPool>>,
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
    Loaded(ReportedPool),
    /// Destroyed.
    Gone(String),
}

/// Names of the pools whose entry differs between two lists (sorted by name).
pub fn changed_pools(old: &[ReportedPool], new: &[ReportedPool]) -> Vec<String> {
    let mut names: Vec<String> = old
        .iter()
        .filter(|o| !new.contains(o))
        .chain(new.iter().filter(|n| !old.contains(n)))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Shared handle to the registry.
#[derive(Clone)]
pub struct NodeRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RegistrySettings,
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
        let (changes, _) = broadcast::channel(1024);
        NodeRegistry {
            inner: Arc::new(Inner {
                settings,
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
                Some(entry)
                    if entry.client.endpoint() == req.grpc_endpoint
                        && entry.client.api() == api
                        && entry.instance == req.instance_uuid =>
                {
                    entry.last_heartbeat = now;
                    if entry.liveness == Liveness::Online {
                        false
                    } else {
                        // Came back with the same instance (a network blip):
                        // its pools are still loaded, but list them again.
                        entry.liveness = Liveness::Online;
                        entry.pools = None;
                        entry.epoch += 1;
                        true
                    }
                }
                existing => {
                    let client = NodeClient::new(
                        &req.grpc_endpoint,
                        api,
                        self.inner.settings.connect_timeout,
                        self.inner.settings.rpc_timeout,
                    )
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    let epoch = existing.map(|e| e.epoch + 1).unwrap_or(0);
                    tracing::info!(node = %req.id, endpoint = %req.grpc_endpoint, ?api,
                        instance = req.instance_uuid.as_deref().unwrap_or(""), "storage node registered");
                    nodes.insert(
                        req.id.clone(),
                        NodeEntry {
                            client,
                            instance: req.instance_uuid.clone(),
                            last_heartbeat: now,
                            liveness: Liveness::Online,
                            pools: None,
                            last_sync: None,
                            epoch,
                            syncing: false,
                        },
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
                    entry.liveness = Liveness::Deregistered;
                    entry.pools = None;
                    entry.epoch += 1;
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

    /// What the registry knows about `node` now.
    pub fn view(&self, node: &str) -> NodeView {
        let nodes = self.nodes_read();
        match nodes.get(node) {
            None => NodeView::default(),
            Some(entry) => NodeView {
                registered: entry.liveness != Liveness::Deregistered,
                reachable: entry.liveness == Liveness::Online,
                heartbeat_age: Some(entry.last_heartbeat.elapsed()),
                endpoint: entry.client.endpoint().to_string(),
                pools: match entry.liveness {
                    Liveness::Online => entry.pools.clone(),
                    _ => None,
                },
            },
        }
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

    /// Lists the node's pools now and caches the result; notifies when the
    /// list changed. A failure on a node whose heartbeats are late marks it
    /// offline (this is the probe).
    pub async fn refresh(&self, node: &str) -> Result<(), RegistryError> {
        let (client, epoch) = {
            let nodes = self.nodes_read();
            match nodes.get(node) {
                Some(e) if e.liveness == Liveness::Online => (e.client.clone(), e.epoch),
                _ => return Err(RegistryError::NotOnline(node.to_string())),
            }
        };
        let result = client.list_pools(self.inner.settings.probe_timeout).await;
        let deadline = self.inner.settings.deadline;
        let (changed, outcome) = {
            let mut nodes = self.nodes_write();
            let Some(entry) = nodes.get_mut(node) else {
                return Err(RegistryError::NotOnline(node.to_string()));
            };
            if entry.epoch != epoch {
                // Re-registered or deregistered meanwhile: this list is stale.
                return Ok(());
            }
            entry.last_sync = Some(Instant::now());
            match result {
                Ok(mut pools) => {
                    pools.sort_by(|a, b| a.name.cmp(&b.name));
                    let changed = match &entry.pools {
                        None => Some(None),
                        // A pool gone frees its disks: other pools of the node
                        // may be waiting for them.
                        Some(old) if old.iter().any(|o| pools.iter().all(|n| n.name != o.name)) => {
                            Some(None)
                        }
                        Some(old) => {
                            let names = changed_pools(old, &pools);
                            (!names.is_empty()).then_some(Some(names))
                        }
                    };
                    entry.pools = Some(pools);
                    (changed, Ok(()))
                }
                Err(err) => {
                    let late = entry.last_heartbeat.elapsed() > deadline;
                    if late && entry.liveness == Liveness::Online {
                        tracing::warn!(%node, error = %err, "storage node missed its heartbeat deadline and the probe failed: offline");
                        entry.liveness = Liveness::Offline;
                        entry.pools = None;
                        entry.epoch += 1;
                        (Some(None), Err(err.into()))
                    } else {
                        (None, Err(err.into()))
                    }
                }
            }
        };
        if let Some(pools) = changed {
            self.notify_pools(node, pools);
        }
        outcome
    }

    /// After a successful operation the node's reply updates the cached
    /// list at once (a full list makes the node probe every disk, which
    /// grows with its pool count); a full refresh follows in the background.
    /// Stale lists still in flight are discarded.
    pub fn apply_update(&self, node: &str, update: PoolUpdate) {
        let change = {
            let mut nodes = self.nodes_write();
            match nodes.get_mut(node) {
                Some(entry) if entry.liveness == Liveness::Online => {
                    entry.epoch += 1;
                    match entry.pools.as_mut() {
                        Some(list) => {
                            let before = list.clone();
                            let gone = matches!(update, PoolUpdate::Gone(_));
                            match update {
                                PoolUpdate::Loaded(pool) => {
                                    list.retain(|p| p.name != pool.name);
                                    list.push(pool);
                                    list.sort_by(|a, b| a.name.cmp(&b.name));
                                }
                                PoolUpdate::Gone(name) => list.retain(|p| p.name != name),
                            }
                            let names = changed_pools(&before, list);
                            // A pool gone frees disks others may wait for.
                            (!names.is_empty()).then(|| if gone { None } else { Some(names) })
                        }
                        None => None,
                    }
                }
                _ => None,
            }
        };
        if let Some(pools) = change {
            self.notify_pools(node, pools);
        }
        self.spawn_refresh(node);
    }

    fn spawn_refresh(&self, node: &str) {
        {
            let mut nodes = self.nodes_write();
            match nodes.get_mut(node) {
                Some(e) if !e.syncing => e.syncing = true,
                _ => return,
            }
        }
        let registry = self.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            if let Err(err) = registry.refresh(&node).await {
                tracing::debug!(%node, error = %err, "pool list refresh failed");
            }
            if let Some(e) = registry.nodes_write().get_mut(&node) {
                e.syncing = false;
            }
        });
    }

    /// Watches deadlines and refreshes pool lists every sync period, until
    /// `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let s = &self.inner.settings;
        let tick = s
            .sync_period
            .min(s.deadline / 2)
            .max(Duration::from_millis(50));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = interval.tick() => {}
            }
            let due: Vec<String> = {
                let nodes = self.nodes_read();
                nodes
                    .iter()
                    .filter(|(_, e)| {
                        e.liveness == Liveness::Online
                            && !e.syncing
                            && (e.last_heartbeat.elapsed() > s.deadline
                                || e.last_sync.is_none_or(|t| t.elapsed() >= s.sync_period))
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            };
            for node in due {
                self.spawn_refresh(&node);
            }
        }
    }

    /// Names of all nodes ever registered (for metrics and tests).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes_read().keys().cloned().collect()
    }
}

/// The v1 `Registration` service, backed by the registry.
pub struct RegistrationService {
    registry: NodeRegistry,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.registry.register(request.get_ref())?;
        Ok(tonic::Response::new(()))
    }

    async fn deregister(
        &self,
        request: tonic::Request<DeregisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.registry.deregister(&request.get_ref().id);
        Ok(tonic::Response::new(()))
    }
}

/// Binds the registration listener (so the caller learns the real port when
/// it asked for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `Registration` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: NodeRegistry,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(RegistrationService { registry }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
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
        let pool = |name: &str, used: u64| ReportedPool {
            name: name.into(),
            disks: vec![],
            state: msp_policy::model::ReportedState::Online,
            capacity: 10,
            used,
        };
        let old = vec![pool("a", 0), pool("b", 0), pool("c", 0)];
        let new = vec![pool("a", 0), pool("b", 1), pool("d", 0)];
        assert_eq!(changed_pools(&old, &new), vec!["b", "c", "d"]);
        assert!(changed_pools(&old, &old).is_empty());
    }

    #[tokio::test]
    async fn operation_replies_update_the_cache() {
        let registry = NodeRegistry::new(fast());
        registry
            .register(&request("n3", "127.0.0.1:1", "a"))
            .expect("register");
        // Pools not listed yet: an update alone does not invent a list.
        let pool = ReportedPool {
            name: "p".into(),
            disks: vec!["/dev/loop0".into()],
            state: msp_policy::model::ReportedState::Online,
            capacity: 10,
            used: 0,
        };
        registry.apply_update("n3", PoolUpdate::Loaded(pool.clone()));
        assert!(registry.view("n3").pools.is_none());
        // With a list, the reply goes in and the change names the pool.
        registry.nodes_write().get_mut("n3").expect("n3").pools = Some(Vec::new());
        let mut changes = registry.subscribe();
        registry.apply_update("n3", PoolUpdate::Loaded(pool.clone()));
        assert_eq!(registry.view("n3").pools, Some(vec![pool]));
        let change = changes.recv().await.expect("change");
        assert_eq!(change.pools, Some(vec!["p".to_string()]));
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
