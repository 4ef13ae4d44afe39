//! The state of one storage node as the registry keeps it: liveness, client,
//! heartbeat and the cached pool list, with the transitions of its lifecycle.
//! Plain data: the locking, the broadcasting and the I/O are the registry's.

use std::time::{Duration, Instant};

use crate::nodes::client::NodePool;

use crate::nodes::client::{ApiVersion, NodeClient};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    Online,
    /// Heartbeats stopped and the probe failed.
    Offline,
    Deregistered,
}

pub(super) struct NodeEntry {
    pub(super) client: NodeClient,
    pub(super) instance: Option<String>,
    pub(super) last_heartbeat: Instant,
    pub(super) liveness: Liveness,
    pub(super) pools: Option<Vec<NodePool>>,
    pub(super) last_sync: Option<Instant>,
    /// Bumped on every liveness or client change, so a refresh that started
    /// before does not store a stale list.
    pub(super) epoch: u64,
    pub(super) syncing: bool,
    /// The heartbeat deadline passed and the node's pools were told (the
    /// policy calls such a node down before the probe says so).
    pub(super) late: bool,
}

/// What the registry knows about one node, for an observation.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub registered: bool,
    pub reachable: bool,
    pub heartbeat_age: Option<Duration>,
    pub endpoint: String,
    /// The node's pools, when listed since it (re)registered.
    pub pools: Option<Vec<NodePool>>,
}

impl NodeEntry {
    /// A node registered now (first time, restarted or moved): online, its
    /// pools not listed yet.
    pub(super) fn registered(
        client: NodeClient,
        instance: Option<String>,
        now: Instant,
        epoch: u64,
    ) -> NodeEntry {
        NodeEntry {
            client,
            instance,
            last_heartbeat: now,
            liveness: Liveness::Online,
            pools: None,
            last_sync: None,
            epoch,
            syncing: false,
            late: false,
        }
    }

    /// True when a Register from `endpoint`, `api`, `instance` is a
    /// heartbeat of this same node instance.
    pub(super) fn is_same(
        &self,
        endpoint: &str,
        api: ApiVersion,
        instance: &Option<String>,
    ) -> bool {
        self.client.endpoint() == endpoint && self.client.api() == api && self.instance == *instance
    }

    /// A heartbeat; true when the node came back online with it (a network
    /// blip: its pools are still loaded, but they are listed again).
    pub(super) fn heartbeat(&mut self, now: Instant) -> bool {
        self.last_heartbeat = now;
        self.late = false;
        if self.liveness == Liveness::Online {
            return false;
        }
        self.set_liveness(Liveness::Online);
        true
    }

    /// Deregister (or a failed probe after the deadline): the pool list is
    /// dropped and lists in flight become stale.
    pub(super) fn set_liveness(&mut self, liveness: Liveness) {
        self.liveness = liveness;
        self.pools = None;
        self.epoch += 1;
    }

    pub(super) fn view(&self) -> NodeView {
        NodeView {
            registered: self.liveness != Liveness::Deregistered,
            reachable: self.liveness == Liveness::Online,
            heartbeat_age: Some(self.last_heartbeat.elapsed()),
            endpoint: self.client.endpoint().to_string(),
            pools: match self.liveness {
                Liveness::Online => self.pools.clone(),
                _ => None,
            },
        }
    }
}
