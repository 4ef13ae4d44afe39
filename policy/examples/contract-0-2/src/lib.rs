//! A policy built against the second contract, 0.2.0 (`wit/v0.2.0/policy.wit`),
//! with wit-bindgen directly rather than the SDK (which follows the current
//! contract): what a policy shipped before 0.3 looks like. The host's tests
//! load it to show that a 0.2 component keeps deciding on a host whose
//! current contract is newer. Not a template: start a new policy from the SDK.
//!
//! Its rule is small and stated here, so that the tests can say what it must
//! decide (every reason starts with `contract-0.2:`):
//! 1. resource deleted → destroy when in the ledger, else nothing;
//! 2. storage node not registered, heartbeat older than the host's deadline
//!    (`settings`, new in 0.2), or not answering → offline once created
//!    (status.node cached), pending before;
//! 3. pool list not known → keep the state, look again in 1 s;
//! 4. listed → online, naming the resource's label `team` when it has one
//!    (labels are new in 0.2); any other reported state → degraded;
//! 5. not listed → create (never created) or import, look again in 1 s.

/// The requeue it asks for while waiting.
pub const REQUEUE_MS: u64 = 1_000;

#[cfg(target_arch = "wasm32")]
mod glue {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../../wit/v0.2.0/policy.wit",
    });

    use exports::openebs::msp_policy::decider::{
        Action, Decision, Guest, Observation, PolicyInfo, PoolState, ReportedState,
    };

    struct ContractTwo;

    fn decision(action: Action, state: PoolState, why: &str, requeue: Option<u64>) -> Decision {
        Decision {
            action,
            state,
            reason: format!("contract-0.2: {why}"),
            requeue_after_ms: requeue,
            event: None,
        }
    }

    impl Guest for ContractTwo {
        fn info() -> PolicyInfo {
            PolicyInfo {
                name: "contract-0-2".into(),
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
            let sn = &o.storage_node;
            let late = sn
                .heartbeat_age_ms
                .is_some_and(|age| age > o.settings.heartbeat_deadline_ms);
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
                    let team = o.pool.labels.iter().find(|(k, _)| k == "team");
                    let why = match team {
                        Some((_, t)) => format!("listed online, team {t}"),
                        None => "listed online".to_string(),
                    };
                    decision(Action::None, PoolState::Online, &why, None)
                }
                Some(_) => decision(
                    Action::None,
                    PoolState::Degraded,
                    "listed, not online",
                    None,
                ),
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

    export!(ContractTwo);
}
