//! Observations for a policy's native unit tests.
//!
//! [`observation`] is a pool on a healthy node in a given state, and
//! [`ObservationBuilder`] changes one thing at a time from there, so that a
//! test says only what matters to it:
//!
//! ```
//! use msp_policy_sdk::model::{Action, PoolState};
//! use msp_policy_sdk::testing::ObservationBuilder;
//!
//! let gone = ObservationBuilder::created(PoolState::Online)
//!     .label("keep", "true")
//!     .deleted()
//!     .build();
//! assert!(gone.pool.deleted && gone.in_ledger && gone.possible().is_ok());
//! assert_eq!(gone.pool.labels.get("keep").map(String::as_str), Some("true"));
//! let failing = ObservationBuilder::new_pool()
//!     .failed(Action::Create, msp_policy_sdk::model::ErrorKind::Internal, 3, 1_000)
//!     .build();
//! assert_eq!(failing.last_operation.map(|l| l.failures), Some(3));
//! ```
//!
//! Every literal fills the rest from `Default`, so fields a later contract
//! adds keep their defaults here (hence the allowed `needless_update`).
#![allow(clippy::needless_update)]

use crate::model::{
    Action, ErrorKind, K8sNode, LastOperation, Observation, OperationError, PoolResource,
    PoolState, ReportedPool, ReportedState, StorageNode,
};

/// The observation's clock.
pub const NOW_MS: u64 = 1_800_000_000_000;
/// The pool, node and disk every observation starts with.
pub const POOL: &str = "pool-a";
pub const NODE: &str = "node1";
pub const DISK: &str = "/dev/disk/by-id/disk-a";

/// A pool as observed with `state` as its status: on a labelled node whose
/// storage node is registered and heartbeating. A created state (online,
/// degraded, faulted, offline) also has its placement cached in status, the
/// pool listed online by the node, and its ledger entry; `None` and pending
/// are a pool not created yet.
pub fn observation(state: Option<PoolState>) -> Observation {
    let created = matches!(
        state,
        Some(PoolState::Online | PoolState::Degraded | PoolState::Faulted | PoolState::Offline)
    );
    Observation {
        now_ms: NOW_MS,
        pool: PoolResource {
            name: POOL.into(),
            namespace: "mayastor".into(),
            uid: "uid-a".into(),
            generation: 1,
            spec_node: NODE.into(),
            spec_disks: vec![DISK.into()],
            status_state: state,
            status_node: created.then(|| NODE.into()),
            status_disks: created.then(|| vec![DISK.into()]),
            ..Default::default()
        },
        node: K8sNode {
            exists: true,
            mayastor_enabled: true,
        },
        storage_node: StorageNode {
            registered: true,
            heartbeat_age_ms: Some(1_000),
            reachable: true,
            endpoint: "10.0.0.1:10124".into(),
            ..Default::default()
        },
        pools_known: true,
        reported: created.then(|| reported(ReportedState::Online)),
        in_ledger: created,
        ..Default::default()
    }
}

/// The pool as its storage node lists it, in `state`.
pub fn reported(state: ReportedState) -> ReportedPool {
    ReportedPool {
        name: POOL.into(),
        disks: vec![format!("aio://{DISK}?uuid=1")],
        state,
        capacity: 1 << 30,
        used: 0,
        replicas: Some(0),
    }
}

/// The `failures`-th consecutive failure of `action`, `ago_ms` before
/// [`NOW_MS`].
pub fn failed(action: Action, kind: ErrorKind, failures: u32, ago_ms: u64) -> LastOperation {
    LastOperation {
        action,
        error: Some(OperationError {
            kind,
            message: "boom".into(),
        }),
        failures,
        at_ms: NOW_MS - ago_ms,
    }
}

/// Changes one aspect of an [`observation`] at a time.
#[derive(Clone, Debug)]
pub struct ObservationBuilder(Observation);

impl ObservationBuilder {
    /// A resource just created: no status yet, nothing on the node.
    pub fn new_pool() -> Self {
        ObservationBuilder(observation(None))
    }

    /// A pool created earlier whose status says `state`.
    pub fn created(state: PoolState) -> Self {
        ObservationBuilder(observation(Some(state)))
    }

    /// The resource and the listed pool are called `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.0.pool.name = name.into();
        if let Some(p) = &mut self.0.reported {
            p.name = name.into();
        }
        self
    }

    /// The resource is gone: the observation is what the host makes of its
    /// ledger entry ([`Observation::as_deleted`]): no state, generation or
    /// conflicts, the labels and annotations as last seen, in the ledger.
    pub fn deleted(self) -> Self {
        ObservationBuilder(self.0.as_deleted())
    }

    /// The resource has label `key` = `value` (on a deleted resource: it had
    /// it when last seen).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.pool.labels.insert(key.into(), value.into());
        self
    }

    /// The resource has annotation `key` = `value` (on a deleted resource:
    /// it had it when last seen).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.pool.annotations.insert(key.into(), value.into());
        self
    }

    /// The admin edited spec.node (status keeps the cached one).
    pub fn spec_node(mut self, node: &str) -> Self {
        self.0.pool.spec_node = node.into();
        self
    }

    /// The admin edited spec.disks (status keeps the cached ones).
    pub fn spec_disks(mut self, disks: &[&str]) -> Self {
        self.0.pool.spec_disks = disks.iter().map(|d| d.to_string()).collect();
        self
    }

    /// The Kubernetes Node does not exist.
    pub fn node_missing(mut self) -> Self {
        self.0.node = K8sNode::default();
        self
    }

    /// The Node lacks the label openebs.io/engine=mayastor.
    pub fn node_unlabelled(mut self) -> Self {
        self.0.node.mayastor_enabled = false;
        self
    }

    /// The storage node never registered (or deregistered).
    pub fn unregistered(mut self) -> Self {
        self.0.storage_node.registered = false;
        self.0.storage_node.heartbeat_age_ms = None;
        self
    }

    /// The storage node's last heartbeat was `ms` ago.
    pub fn heartbeat_age_ms(mut self, ms: u64) -> Self {
        self.0.storage_node.heartbeat_age_ms = Some(ms);
        self
    }

    /// The last call to the storage node did not reach it.
    pub fn unreachable(mut self) -> Self {
        self.0.storage_node.reachable = false;
        self
    }

    /// The node lists the pool in `state`.
    pub fn reported(mut self, state: ReportedState) -> Self {
        let name = self.0.pool.name.clone();
        self.0.reported = Some(ReportedPool {
            name,
            ..reported(state)
        });
        self
    }

    /// The node's fresh list does not have the pool.
    pub fn not_reported(mut self) -> Self {
        self.0.reported = None;
        self
    }

    /// The host has no fresh list of the node's pools.
    pub fn pools_unknown(mut self) -> Self {
        self.0.pools_known = false;
        self.0.reported = None;
        self
    }

    pub fn in_ledger(mut self, in_ledger: bool) -> Self {
        self.0.in_ledger = in_ledger;
        self
    }

    /// The last operation was the `failures`-th failure of `action` in a row.
    pub fn failed(mut self, action: Action, kind: ErrorKind, failures: u32, ago_ms: u64) -> Self {
        self.0.last_operation = Some(failed(action, kind, failures, ago_ms));
        self
    }

    /// The last operation, `action`, succeeded `ago_ms` ago.
    pub fn succeeded(mut self, action: Action, ago_ms: u64) -> Self {
        self.0.last_operation = Some(LastOperation {
            action,
            error: None,
            failures: 0,
            at_ms: NOW_MS - ago_ms,
        });
        self
    }

    /// Other resources on the node claim one of this pool's disks.
    pub fn conflicts(mut self, names: &[&str]) -> Self {
        self.0.conflicts = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The observation. A test may build one the host never makes (a
    /// deleted resource outside the ledger, say): [`Observation::possible`]
    /// says so, and `msp-policy test` refuses such a case.
    pub fn build(self) -> Observation {
        self.0
    }
}

impl From<ObservationBuilder> for Observation {
    fn from(b: ObservationBuilder) -> Observation {
        b.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_states_carry_their_placement_and_entry() {
        for state in [PoolState::Online, PoolState::Offline] {
            let o = ObservationBuilder::created(state).build();
            assert!(o.was_created());
            assert!(o.in_ledger && o.reported.is_some());
            assert_eq!(o.pool.status_node.as_deref(), Some(NODE));
        }
        let o = observation(Some(PoolState::Pending));
        assert!(!o.was_created() && !o.in_ledger && o.reported.is_none());
    }

    #[test]
    fn a_deleted_pool_is_what_the_ledger_kept() {
        let o = ObservationBuilder::created(PoolState::Degraded)
            .annotation("example.com/retain", "true")
            .conflicts(&["other"])
            .deleted()
            .build();
        assert_eq!(o.possible(), Ok(()));
        assert!(o.pool.status_state.is_none() && o.conflicts.is_empty());
        assert!(o.pool.annotations.contains_key("example.com/retain"));
        // Deleted before it was ever created: the host has no entry, so it
        // never asks; the builder can say so, and `possible` tells.
        let never = ObservationBuilder::new_pool()
            .deleted()
            .in_ledger(false)
            .build();
        assert!(never.possible().is_err());
        let big = ObservationBuilder::created(PoolState::Online)
            .deleted()
            .label("k", &"v".repeat(crate::model::LAST_SEEN_LIMIT))
            .build();
        assert!(big.possible().is_err());
    }

    #[test]
    fn a_renamed_pool_is_listed_under_its_new_name() {
        let o = ObservationBuilder::created(PoolState::Online)
            .named("p2")
            .reported(ReportedState::Degraded)
            .build();
        assert_eq!(o.pool.name, "p2");
        assert_eq!(
            o.reported.map(|p| (p.name, p.state)),
            Some(("p2".into(), ReportedState::Degraded))
        );
    }
}
