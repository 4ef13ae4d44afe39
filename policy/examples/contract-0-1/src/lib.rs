//! A policy built against the first contract, 0.1.0 (`wit/v0.1.0/policy.wit`),
//! with wit-bindgen directly rather than the SDK (which follows the current
//! contract): what a policy shipped before 0.2 looks like. The host's tests
//! load it to show that a 0.1 component keeps deciding on a host whose
//! current contract is newer. Not a template: start a new policy from the SDK.
//!
//! Its rule is small and stated here, so that the tests can say what it must
//! decide (every reason starts with `contract-0.1:`):
//! 1. resource deleted → destroy when in the ledger, else nothing;
//! 2. Kubernetes node missing or not labelled, or disks claimed, before the
//!    pool was created → pending;
//! 3. storage node not registered, heartbeat older than 10 s (its own
//!    constant: 0.1 carried no deadline), or not answering → offline once
//!    created (status.node cached), pending before;
//! 4. pool list not known → keep the state, look again in 1 s;
//! 5. listed → its reported state (unknown → degraded);
//! 6. not listed → create (never created) or import, look again in 1 s.

/// Heartbeat age after which this policy calls a storage node down.
pub const HEARTBEAT_DEADLINE_MS: u64 = 10_000;
/// The requeue it asks for while waiting.
pub const REQUEUE_MS: u64 = 1_000;

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../../wit/v0.1.0/policy.wit",
    });

    use exports::openebs::msp_policy::decider::{
        Action, Decision, Guest, Observation, PolicyInfo, PoolState, ReportedState,
    };

    struct ContractOne;

    fn decision(action: Action, state: PoolState, why: &str, requeue: Option<u64>) -> Decision {
        Decision {
            action,
            state,
            reason: format!("contract-0.1: {why}"),
            requeue_after_ms: requeue,
            event: None,
        }
    }

    impl Guest for ContractOne {
        fn info() -> PolicyInfo {
            PolicyInfo {
                name: "contract-0-1".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }
        }

        fn decide(o: Observation) -> Decision {
            let created = o.pool.status_node.is_some();
            let pending = o.pool.status_state.unwrap_or(PoolState::Pending);
            if o.pool.deleted {
                return if o.in_ledger {
                    decision(Action::Destroy, pending, "deleted, destroying", None)
                } else {
                    decision(Action::None, pending, "deleted, not ours", None)
                };
            }
            if !created && (!o.node.exists || !o.node.mayastor_enabled) {
                return decision(Action::None, PoolState::Pending, "node not usable", None);
            }
            if !created && !o.conflicts.is_empty() {
                return decision(Action::None, PoolState::Pending, "disks claimed", None);
            }
            let sn = &o.storage_node;
            let late = sn
                .heartbeat_age_ms
                .is_some_and(|age| age > super::HEARTBEAT_DEADLINE_MS);
            if !sn.registered || late || !sn.reachable {
                let state = if created {
                    PoolState::Offline
                } else {
                    PoolState::Pending
                };
                return decision(Action::None, state, "storage node down", None);
            }
            if !o.pools_known {
                return decision(
                    Action::None,
                    pending,
                    "waiting for the pool list",
                    Some(super::REQUEUE_MS),
                );
            }
            match o.reported.map(|p| p.state) {
                Some(ReportedState::Online) => {
                    decision(Action::None, PoolState::Online, "listed online", None)
                }
                Some(ReportedState::Degraded | ReportedState::Unknown) => {
                    decision(Action::None, PoolState::Degraded, "listed degraded", None)
                }
                Some(ReportedState::Faulted) => {
                    decision(Action::None, PoolState::Faulted, "listed faulted", None)
                }
                None if created => decision(
                    Action::Import,
                    PoolState::Pending,
                    "not listed, importing",
                    Some(super::REQUEUE_MS),
                ),
                None => decision(
                    Action::Create,
                    PoolState::Pending,
                    "not listed, creating",
                    Some(super::REQUEUE_MS),
                ),
            }
        }
    }

    export!(ContractOne);
}
