//! Example policy `first`, written from scratch against the SDK alone (the
//! walkthrough in policy/README.md starts here): create a pool when its node
//! is ready, report the health the storage node lists, import a pool the node
//! lost after a restart, keep every pool whose resource is deleted. Retry
//! delays are fixed, where the default policy backs off.
//!
//! The host keeps its own safety rails whatever a policy says: it never
//! formats a disk holding something not ours, destroys only ledger pools of
//! deleted resources and bounds requeues.

use msp_policy_sdk::model::{Action, Decision, Observation, PolicyInfo, PoolState, ReportedState};

pub const NAME: &str = "msp-first";
/// How soon to look again after a failure or while waiting.
pub const RETRY_MS: u64 = 5_000;

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

pub fn decide(obs: &Observation) -> Decision {
    let created = obs.was_created();
    let node = obs
        .pool
        .status_node
        .as_deref()
        .unwrap_or(&obs.pool.spec_node);
    if obs.pool.deleted {
        // The host observes a deleted resource only through its ledger
        // entry: there is always a pool to keep.
        let reason = format!("resource deleted; pool kept on \"{node}\"");
        return decision(Action::Retain, current(obs), reason, None);
    }
    let node_ready = obs.node.exists && obs.node.mayastor_enabled;
    if !created && !node_ready {
        return pending(format!(
            "node \"{node}\" is missing or not labelled openebs.io/engine=mayastor"
        ));
    }
    if !created && !obs.conflicts.is_empty() {
        return pending(format!(
            "disks claimed by {}: give this pool other disks",
            obs.conflicts.join(", ")
        ));
    }
    let sn = &obs.storage_node;
    // The host's --node-deadline, which the observation carries.
    let silent = obs.heartbeat_late();
    if !sn.registered || silent || !sn.reachable {
        let reason = format!("the storage node on \"{node}\" is down");
        let state = if created {
            PoolState::Offline
        } else {
            PoolState::Pending
        };
        return decision(Action::None, state, reason, Some(RETRY_MS));
    }
    if !obs.pools_known {
        let reason = format!("waiting for the pool list of \"{node}\"");
        return decision(Action::None, current(obs), reason, Some(RETRY_MS));
    }
    if let Some(p) = &obs.reported {
        let state = match p.state {
            ReportedState::Online => PoolState::Online,
            ReportedState::Degraded => PoolState::Degraded,
            ReportedState::Faulted => PoolState::Faulted,
            ReportedState::Unknown => current(obs),
        };
        return decision(Action::None, state, String::new(), None);
    }
    if let Some(err) = obs.last_operation.as_ref().and_then(|op| op.error.as_ref())
        && obs.now_ms < obs.last_operation.as_ref().map_or(0, |op| op.at_ms) + RETRY_MS
    {
        return decision(
            Action::None,
            current(obs),
            err.message.clone(),
            Some(RETRY_MS),
        );
    }
    let (action, reason) = if created {
        (Action::Import, format!("importing the pool on \"{node}\""))
    } else {
        (Action::Create, format!("creating the pool on \"{node}\""))
    };
    decision(action, PoolState::Pending, reason, Some(RETRY_MS))
}

/// The state written last (pending before the first write).
fn current(obs: &Observation) -> PoolState {
    obs.pool.status_state.unwrap_or(PoolState::Pending)
}

fn pending(reason: String) -> Decision {
    decision(Action::None, PoolState::Pending, reason, None)
}

fn decision(action: Action, state: PoolState, reason: String, requeue: Option<u64>) -> Decision {
    Decision {
        action,
        state,
        reason,
        requeue_after_ms: requeue,
        event: None,
    }
}

#[cfg(target_arch = "wasm32")]
msp_policy_sdk::export_policy!(crate::info, crate::decide);

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_sdk::model::ErrorKind;
    use msp_policy_sdk::testing::ObservationBuilder;

    #[test]
    fn a_new_pool_on_a_ready_node_is_created() {
        let d = decide(&ObservationBuilder::new_pool().build());
        assert_eq!((d.action, d.state), (Action::Create, PoolState::Pending));
        let d = decide(&ObservationBuilder::new_pool().node_unlabelled().build());
        assert_eq!((d.action, d.state), (Action::None, PoolState::Pending));
        assert!(d.reason.contains("not labelled"), "{}", d.reason);
    }

    #[test]
    fn a_listed_pool_reports_its_health_and_a_lost_one_is_imported() {
        let online = ObservationBuilder::created(PoolState::Online);
        let d = decide(&online.clone().reported(ReportedState::Degraded).build());
        assert_eq!((d.action, d.state), (Action::None, PoolState::Degraded));
        let d = decide(&online.not_reported().build());
        assert_eq!(d.action, Action::Import);
    }

    #[test]
    fn a_silent_node_makes_created_pools_offline() {
        let o = ObservationBuilder::created(PoolState::Online)
            .heartbeat_age_ms(msp_policy_sdk::model::DEFAULT_HEARTBEAT_DEADLINE_MS + 1);
        assert_eq!(decide(&o.build()).state, PoolState::Offline);
    }

    #[test]
    fn a_failure_waits_before_the_retry() {
        let fresh =
            ObservationBuilder::new_pool().failed(Action::Create, ErrorKind::Internal, 1, 1_000);
        let d = decide(&fresh.build());
        assert_eq!((d.action, d.reason.as_str()), (Action::None, "boom"));
        let old =
            ObservationBuilder::new_pool().failed(Action::Create, ErrorKind::Internal, 1, RETRY_MS);
        assert_eq!(decide(&old.build()).action, Action::Create);
    }

    #[test]
    fn a_deleted_resource_keeps_its_pool() {
        let d = decide(
            &ObservationBuilder::created(PoolState::Online)
                .deleted()
                .build(),
        );
        assert_eq!(d.action, Action::Retain);
        let d = decide(&ObservationBuilder::new_pool().deleted().build());
        assert_eq!(d.action, Action::Retain);
    }
}
