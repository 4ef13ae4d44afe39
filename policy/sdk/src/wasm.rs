//! The wasm export glue: generated bindings of the current contract
//! (`wit/policy.wit`, 0.3.0) and the conversions between them and `model`.
//! Built only for wasm32; a policy crate exports itself with
//! `msp_policy_sdk::export_policy!(info_fn, decide_fn)`.

use crate::model;

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_policy_bindings",
    default_bindings_module: "msp_policy_sdk::wasm",
});

pub use exports::openebs::msp_policy::decider as wit;

/// Export `$info` and `$decide` (functions over `model` types) as the
/// component's `decider` interface.
#[macro_export]
macro_rules! export_policy {
    ($info:path, $decide:path) => {
        struct MspPolicyExport;
        impl $crate::wasm::wit::Guest for MspPolicyExport {
            fn info() -> $crate::wasm::wit::PolicyInfo {
                $crate::wasm::info_to_wit($info())
            }
            fn decide(o: $crate::wasm::wit::Observation) -> $crate::wasm::wit::Decision {
                $crate::wasm::decision_to_wit($decide(&$crate::wasm::observation_from_wit(o)))
            }
        }
        $crate::wasm::export_policy_bindings!(MspPolicyExport with_types_in $crate::wasm);
    };
}

pub fn info_to_wit(i: model::PolicyInfo) -> wit::PolicyInfo {
    wit::PolicyInfo {
        name: i.name,
        version: i.version,
    }
}

pub fn observation_from_wit(o: wit::Observation) -> model::Observation {
    model::Observation {
        now_ms: o.now_ms,
        pool: model::PoolResource {
            name: o.pool.name,
            namespace: o.pool.namespace,
            uid: o.pool.uid,
            generation: o.pool.generation,
            spec_node: o.pool.spec_node,
            spec_disks: o.pool.spec_disks,
            status_state: o.pool.status_state.map(state_from_wit),
            status_node: o.pool.status_node,
            status_disks: o.pool.status_disks,
            status_reason: o.pool.status_reason,
            deleted: o.pool.deleted,
            labels: o.pool.labels.into_iter().collect(),
            annotations: o.pool.annotations.into_iter().collect(),
        },
        node: model::K8sNode {
            exists: o.node.exists,
            mayastor_enabled: o.node.mayastor_enabled,
        },
        storage_node: model::StorageNode {
            registered: o.storage_node.registered,
            heartbeat_age_ms: o.storage_node.heartbeat_age_ms,
            reachable: o.storage_node.reachable,
            endpoint: o.storage_node.endpoint,
        },
        pools_known: o.pools_known,
        reported: o.reported.map(|p| model::ReportedPool {
            name: p.name,
            disks: p.disks,
            state: match p.state {
                wit::ReportedState::Unknown => model::ReportedState::Unknown,
                wit::ReportedState::Online => model::ReportedState::Online,
                wit::ReportedState::Degraded => model::ReportedState::Degraded,
                wit::ReportedState::Faulted => model::ReportedState::Faulted,
            },
            capacity: p.capacity,
            used: p.used,
            replicas: p.replicas,
        }),
        in_ledger: o.in_ledger,
        last_operation: o.last_operation.map(|l| model::LastOperation {
            action: action_from_wit(l.action),
            error: l.error.map(|e| model::OperationError {
                kind: match e.kind {
                    wit::ErrorKind::InvalidArgument => model::ErrorKind::InvalidArgument,
                    wit::ErrorKind::FailedPrecondition => model::ErrorKind::FailedPrecondition,
                    wit::ErrorKind::AlreadyExists => model::ErrorKind::AlreadyExists,
                    wit::ErrorKind::NotFound => model::ErrorKind::NotFound,
                    wit::ErrorKind::Unavailable => model::ErrorKind::Unavailable,
                    wit::ErrorKind::DeadlineExceeded => model::ErrorKind::DeadlineExceeded,
                    wit::ErrorKind::ResourceExhausted => model::ErrorKind::ResourceExhausted,
                    wit::ErrorKind::Internal => model::ErrorKind::Internal,
                    wit::ErrorKind::Other => model::ErrorKind::Other,
                },
                message: e.message,
            }),
            failures: l.failures,
            at_ms: l.at_ms,
        }),
        conflicts: o.conflicts,
        settings: model::HostSettings {
            heartbeat_deadline_ms: o.settings.heartbeat_deadline_ms,
        },
    }
}

pub fn decision_to_wit(d: model::Decision) -> wit::Decision {
    wit::Decision {
        action: match d.action {
            model::Action::None => wit::Action::None,
            model::Action::Create => wit::Action::Create,
            model::Action::Import => wit::Action::Import,
            model::Action::Destroy => wit::Action::Destroy,
            model::Action::Retain => wit::Action::Retain,
        },
        state: match d.state {
            model::PoolState::Pending => wit::PoolState::Pending,
            model::PoolState::Online => wit::PoolState::Online,
            model::PoolState::Degraded => wit::PoolState::Degraded,
            model::PoolState::Faulted => wit::PoolState::Faulted,
            model::PoolState::Offline => wit::PoolState::Offline,
        },
        reason: d.reason,
        requeue_after_ms: d.requeue_after_ms,
        event: d.event.map(|e| wit::Event {
            warning: e.warning,
            reason: e.reason,
            message: e.message,
        }),
    }
}

fn state_from_wit(s: wit::PoolState) -> model::PoolState {
    match s {
        wit::PoolState::Pending => model::PoolState::Pending,
        wit::PoolState::Online => model::PoolState::Online,
        wit::PoolState::Degraded => model::PoolState::Degraded,
        wit::PoolState::Faulted => model::PoolState::Faulted,
        wit::PoolState::Offline => model::PoolState::Offline,
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
