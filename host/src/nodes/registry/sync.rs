//! Keeping each node's pool list current: a full ListPools after a
//! (re)registration, every sync period and when heartbeats are late (then it
//! is the probe that decides offline), and the node's own reply after each
//! operation. With each ListPools goes one ListReplicas of the whole node
//! (not one per pool), which gives each pool's count of replicas, snapshots
//! and clones ([`NodePool::replicas`]); when that listing fails the
//! last counts stay. [`list_change`] is the one rule for which pools a new
//! list matters to.

use std::time::{Duration, Instant};

use crate::nodes::client::NodePool;

use super::state::Liveness;
use super::{NodeRegistry, PoolUpdate, RegistryError};

/// Names of the pools whose entry differs between two lists (sorted by name).
pub fn changed_pools(old: &[NodePool], new: &[NodePool]) -> Vec<String> {
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

/// Which of the node's pools going from list `old` to `new` matters to:
/// `None` when nothing changed; `Some(None)`, all of them, when there was no
/// list before or a pool is gone (a pool gone frees its disks, and other
/// pools of the node may be waiting for them); `Some(Some(names))` when only
/// those entries changed.
pub fn list_change(old: Option<&[NodePool]>, new: &[NodePool]) -> Option<Option<Vec<String>>> {
    let Some(old) = old else {
        return Some(None);
    };
    if old.iter().any(|o| new.iter().all(|n| n.name != o.name)) {
        return Some(None);
    }
    let names = changed_pools(old, new);
    (!names.is_empty()).then_some(Some(names))
}

/// Sets each listed pool's replica count from `counts`, the node's listing
/// by pool name (a pool it does not name holds none); without a listing,
/// the count `old` had for the pool stays.
pub fn count_replicas(
    pools: &mut [NodePool],
    counts: Option<&std::collections::BTreeMap<String, u32>>,
    old: Option<&[NodePool]>,
) {
    for pool in pools {
        pool.replicas = match counts {
            Some(counts) => Some(counts.get(&pool.name).copied().unwrap_or(0)),
            None => old
                .and_then(|old| old.iter().find(|o| o.name == pool.name))
                .and_then(|o| o.replicas),
        };
    }
}

impl NodeRegistry {
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
        let timeout = self.inner.settings.probe_timeout;
        let result = client.list_pools(timeout).await;
        // Only after a list: a node that does not answer it is not asked more.
        let counts = match &result {
            Ok(_) => match client.count_contents(timeout).await {
                Ok(counts) => Some(counts),
                Err(err) => {
                    tracing::debug!(%node, error = %err, "listing the node's replicas failed; the last counts stay");
                    None
                }
            },
            Err(_) => None,
        };
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
                    count_replicas(&mut pools, counts.as_ref(), entry.pools.as_deref());
                    let changed = list_change(entry.pools.as_deref(), &pools);
                    entry.pools = Some(pools);
                    (changed, Ok(()))
                }
                Err(err) => {
                    let late = entry.last_heartbeat.elapsed() > deadline;
                    if late && entry.liveness == Liveness::Online {
                        tracing::warn!(%node, error = %err, "storage node missed its heartbeat deadline and the probe failed: offline");
                        entry.set_liveness(Liveness::Offline);
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
                    // Not listed yet: an update alone does not invent a list.
                    entry.pools.as_mut().and_then(|list| {
                        let before = list.clone();
                        match update {
                            PoolUpdate::Loaded(mut pool) => {
                                // The reply has no count: the last one stays
                                // until the refresh that follows.
                                if pool.replicas.is_none() {
                                    pool.replicas = list
                                        .iter()
                                        .find(|p| p.name == pool.name)
                                        .and_then(|p| p.replicas);
                                }
                                list.retain(|p| p.name != pool.name);
                                list.push(pool);
                                list.sort_by(|a, b| a.name.cmp(&b.name));
                            }
                            PoolUpdate::Gone(name) => list.retain(|p| p.name != name),
                        }
                        list_change(Some(&before), list)
                    })
                }
                _ => None,
            }
        };
        if let Some(pools) = change {
            self.notify_pools(node, pools);
        }
        self.spawn_refresh(node);
    }

    /// Starts a refresh of `node` in the background unless one is running.
    pub(super) fn spawn_refresh(&self, node: &str) {
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
        // At most a second: a missed deadline is noticed within one.
        let tick = s
            .sync_period
            .min(s.deadline / 2)
            .min(Duration::from_secs(1))
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
            // Nodes whose deadline just passed: their pools are woken now
            // (the policy reports a late node down), not only once the
            // probe fails a probe timeout later.
            let late: Vec<String> = {
                let mut nodes = self.nodes_write();
                nodes
                    .iter_mut()
                    .filter(|(_, e)| {
                        e.liveness == Liveness::Online
                            && !e.late
                            && e.last_heartbeat.elapsed() > s.deadline
                    })
                    .map(|(name, e)| {
                        e.late = true;
                        name.clone()
                    })
                    .collect()
            };
            for node in late {
                tracing::info!(%node, "storage node missed its heartbeat deadline; probing it");
                self.notify(&node);
            }
        }
    }
}
