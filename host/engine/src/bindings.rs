//! Host-side bindings of the WIT contract and conversions to and from the
//! plain Rust `msp_policy_sdk::model` types the rest of the operator uses.

use msp_policy_sdk::model;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../../wit",
});

pub use exports::openebs::msp_policy::decider as wit;

/// The export the host looks for; carries the contract version.
pub const DECIDER_EXPORT: &str = "openebs:msp-policy/decider@0.1.0";
/// The same without the version, to recognise another version of it.
pub const DECIDER_UNVERSIONED: &str = "openebs:msp-policy/decider";

pub fn observation_to_wit(o: &model::Observation) -> wit::Observation {
    wit::Observation {
        now_ms: o.now_ms,
        pool: wit::PoolResource {
            name: o.pool.name.clone(),
            namespace: o.pool.namespace.clone(),
            uid: o.pool.uid.clone(),
            generation: o.pool.generation,
            spec_node: o.pool.spec_node.clone(),
            spec_disks: o.pool.spec_disks.clone(),
            status_state: o.pool.status_state.map(state_to_wit),
            status_node: o.pool.status_node.clone(),
            status_disks: o.pool.status_disks.clone(),
            status_reason: o.pool.status_reason.clone(),
            deleted: o.pool.deleted,
        },
        node: wit::K8sNode {
            exists: o.node.exists,
            mayastor_enabled: o.node.mayastor_enabled,
        },
        storage_node: wit::StorageNode {
            registered: o.storage_node.registered,
            heartbeat_age_ms: o.storage_node.heartbeat_age_ms,
            reachable: o.storage_node.reachable,
            endpoint: o.storage_node.endpoint.clone(),
        },
        pools_known: o.pools_known,
        reported: o.reported.as_ref().map(|p| wit::ReportedPool {
            name: p.name.clone(),
            disks: p.disks.clone(),
            state: match p.state {
                model::ReportedState::Unknown => wit::ReportedState::Unknown,
                model::ReportedState::Online => wit::ReportedState::Online,
                model::ReportedState::Degraded => wit::ReportedState::Degraded,
                model::ReportedState::Faulted => wit::ReportedState::Faulted,
            },
            capacity: p.capacity,
            used: p.used,
        }),
        in_ledger: o.in_ledger,
        last_operation: o.last_operation.as_ref().map(|l| wit::LastOperation {
            action: action_to_wit(l.action),
            error: l.error.as_ref().map(|e| wit::OperationError {
                kind: match e.kind {
                    model::ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
                    model::ErrorKind::FailedPrecondition => wit::ErrorKind::FailedPrecondition,
                    model::ErrorKind::AlreadyExists => wit::ErrorKind::AlreadyExists,
                    model::ErrorKind::NotFound => wit::ErrorKind::NotFound,
                    model::ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
                    model::ErrorKind::DeadlineExceeded => wit::ErrorKind::DeadlineExceeded,
                    model::ErrorKind::ResourceExhausted => wit::ErrorKind::ResourceExhausted,
                    model::ErrorKind::Internal => wit::ErrorKind::Internal,
                    model::ErrorKind::Other => wit::ErrorKind::Other,
                },
                message: e.message.clone(),
            }),
            failures: l.failures,
            at_ms: l.at_ms,
        }),
        conflicts: o.conflicts.clone(),
    }
}

pub fn decision_from_wit(d: wit::Decision) -> model::Decision {
    model::Decision {
        action: action_from_wit(d.action),
        state: match d.state {
            wit::PoolState::Pending => model::PoolState::Pending,
            wit::PoolState::Online => model::PoolState::Online,
            wit::PoolState::Degraded => model::PoolState::Degraded,
            wit::PoolState::Faulted => model::PoolState::Faulted,
            wit::PoolState::Offline => model::PoolState::Offline,
        },
        reason: d.reason,
        requeue_after_ms: d.requeue_after_ms,
        event: d.event.map(|e| model::Event {
            warning: e.warning,
            reason: e.reason,
            message: e.message,
        }),
    }
}

pub fn info_from_wit(i: wit::PolicyInfo) -> model::PolicyInfo {
    model::PolicyInfo {
        name: i.name,
        version: i.version,
    }
}

fn state_to_wit(s: model::PoolState) -> wit::PoolState {
    match s {
        model::PoolState::Pending => wit::PoolState::Pending,
        model::PoolState::Online => wit::PoolState::Online,
        model::PoolState::Degraded => wit::PoolState::Degraded,
        model::PoolState::Faulted => wit::PoolState::Faulted,
        model::PoolState::Offline => wit::PoolState::Offline,
    }
}

fn action_to_wit(a: model::Action) -> wit::Action {
    match a {
        model::Action::None => wit::Action::None,
        model::Action::Create => wit::Action::Create,
        model::Action::Import => wit::Action::Import,
        model::Action::Destroy => wit::Action::Destroy,
        model::Action::Retain => wit::Action::Retain,
    }
}

fn action_from_wit(a: wit::Action) -> model::Action {
    match a {
        wit::Action::None => model::Action::None,
        wit::Action::Create => model::Action::Create,
        wit::Action::Import => model::Action::Import,
        wit::Action::Destroy => model::Action::Destroy,
        wit::Action::Retain => model::Action::Retain,
    }
}
