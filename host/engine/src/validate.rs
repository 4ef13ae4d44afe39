//! What makes a decision sensible and a policy acceptable.
//!
//! [`check_decision`] runs on every decision (a policy that returns nonsense
//! fails like one that traps). [`self_test`] runs a new module over built-in
//! observations covering each state and event before it may replace the
//! running policy; `msp-policy check` prints the same report.

use std::time::Instant;

use msp_policy_sdk::model::{
    Action, Decision, ErrorKind, K8sNode, LastOperation, Observation, OperationError, PolicyInfo,
    PoolResource, PoolState, ReportedPool, ReportedState, StorageNode,
};

use super::error::PolicyError;
use super::sandbox::{CompiledPolicy, Limits};

/// A requeue beyond a day is taken for a bug (the host bounds it further).
pub const MAX_REQUEUE_MS: u64 = 24 * 3600 * 1000;
/// Longest reason accepted (status.reason and event messages stay readable).
pub const MAX_REASON_BYTES: usize = 4096;
/// Longest policy name or version.
pub const MAX_NAME_BYTES: usize = 63;

/// Checks one decision for the observation it answers.
pub fn check_decision(obs: &Observation, d: &Decision) -> Result<(), PolicyError> {
    let nonsense = |m: String| Err(PolicyError::Nonsense(m));
    if let Some(ms) = d.requeue_after_ms
        && ms > MAX_REQUEUE_MS
    {
        return nonsense(format!("requeue after {ms} ms (limit {MAX_REQUEUE_MS})"));
    }
    if d.reason.len() > MAX_REASON_BYTES {
        return nonsense(format!(
            "reason of {} bytes (limit {MAX_REASON_BYTES})",
            d.reason.len()
        ));
    }
    match (d.action, obs.pool.deleted) {
        (Action::Destroy | Action::Retain, false) => {
            return nonsense(format!("{:?} for a resource that exists", d.action));
        }
        (Action::Create | Action::Import, true) => {
            return nonsense(format!("{:?} for a deleted resource", d.action));
        }
        _ => {}
    }
    if let Some(e) = &d.event {
        let camel = e.reason.len() <= 128
            && e.reason
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
            && e.reason.chars().all(|c| c.is_ascii_alphanumeric());
        if !camel {
            return nonsense(format!(
                "event reason {:?} is not a short CamelCase word",
                e.reason
            ));
        }
        if e.message.len() > MAX_REASON_BYTES {
            return nonsense(format!("event message of {} bytes", e.message.len()));
        }
    }
    Ok(())
}

/// Checks the policy's `info()`.
pub fn check_info(info: &PolicyInfo) -> Result<(), PolicyError> {
    let ok = |s: &str| {
        !s.is_empty() && s.len() <= MAX_NAME_BYTES && s.chars().all(|c| c.is_ascii_graphic())
    };
    if !ok(&info.name) || !ok(&info.version) {
        return Err(PolicyError::Nonsense(format!(
            "info() name {:?} / version {:?}: want 1-{MAX_NAME_BYTES} printable ASCII characters",
            info.name, info.version
        )));
    }
    Ok(())
}

/// One passed conformance case, for the report.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: &'static str,
    pub decision: Decision,
    pub micros: u128,
}

/// Runs the built-in observations through `policy`; the first failure is
/// returned as [`PolicyError::Conformance`].
pub fn self_test(policy: &CompiledPolicy, limits: &Limits) -> Result<Vec<CaseResult>, PolicyError> {
    check_info(&policy.info).map_err(|e| PolicyError::Conformance {
        case: "info".into(),
        source: Box::new(e),
    })?;
    let mut results = Vec::new();
    for (case, obs) in conformance_observations() {
        let started = Instant::now();
        let decided = policy
            .decide(&obs, limits)
            .and_then(|d| check_decision(&obs, &d).map(|()| d));
        match decided {
            Ok(decision) => results.push(CaseResult {
                case,
                decision,
                micros: started.elapsed().as_micros(),
            }),
            Err(e) => {
                return Err(PolicyError::Conformance {
                    case: case.into(),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(results)
}

/// The conformance observation named `case`, for tests that start from one.
pub fn conformance_case(case: &str) -> Option<Observation> {
    conformance_observations()
        .into_iter()
        .find(|(name, _)| *name == case)
        .map(|(_, obs)| obs)
}

/// Observations covering each state and event, named for the report.
pub fn conformance_observations() -> Vec<(&'static str, Observation)> {
    const NOW: u64 = 1_700_000_000_000;
    let new_pool = Observation {
        now_ms: NOW,
        pool: PoolResource {
            name: "conformance-pool".into(),
            namespace: "mayastor".into(),
            uid: "00000000-0000-4000-8000-000000000001".into(),
            generation: 1,
            spec_node: "conformance-node".into(),
            spec_disks: vec!["/dev/disk/by-id/conformance-disk".into()],
            ..PoolResource::default()
        },
        node: K8sNode {
            exists: true,
            mayastor_enabled: true,
        },
        storage_node: StorageNode {
            registered: true,
            heartbeat_age_ms: Some(1_000),
            reachable: true,
            endpoint: "127.0.0.1:10124".into(),
        },
        pools_known: true,
        ..Observation::default()
    };
    let created = |state: PoolState, reported: Option<ReportedState>| {
        let mut o = new_pool.clone();
        o.pool.status_state = Some(state);
        o.pool.status_node = Some(o.pool.spec_node.clone());
        o.pool.status_disks = Some(o.pool.spec_disks.clone());
        o.in_ledger = true;
        o.reported = reported.map(|state| ReportedPool {
            name: o.pool.name.clone(),
            disks: vec!["aio:///dev/disk/by-id/conformance-disk".into()],
            state,
            capacity: 1 << 30,
            used: 1 << 20,
            replicas: Some(0),
        });
        o
    };
    let mut cases = vec![("new pool", new_pool.clone())];
    let mut o = new_pool.clone();
    o.node.exists = false;
    cases.push(("node missing", o));
    let mut o = new_pool.clone();
    o.node.mayastor_enabled = false;
    cases.push(("node not labelled", o));
    let mut o = new_pool.clone();
    o.storage_node = StorageNode::default();
    cases.push(("storage node not registered", o));
    let mut o = new_pool.clone();
    o.conflicts = vec!["conformance-other".into()];
    cases.push(("disks claimed", o));
    let mut o = new_pool.clone();
    o.in_ledger = true;
    o.last_operation = Some(LastOperation {
        action: Action::Create,
        error: Some(OperationError {
            kind: ErrorKind::FailedPrecondition,
            message: "disk has a filesystem".into(),
        }),
        failures: 3,
        at_ms: NOW - 500,
    });
    cases.push(("create failed", o));
    for (case, rep) in [
        ("online", ReportedState::Online),
        ("degraded", ReportedState::Degraded),
        ("faulted", ReportedState::Faulted),
        ("unknown", ReportedState::Unknown),
    ] {
        cases.push((case, created(PoolState::Online, Some(rep))));
    }
    let mut o = created(PoolState::Online, Some(ReportedState::Online));
    o.storage_node.heartbeat_age_ms = Some(60_000);
    cases.push(("heartbeat lost", o));
    cases.push(("storage node back", created(PoolState::Offline, None)));
    let mut o = created(PoolState::Online, Some(ReportedState::Online));
    o.pool.spec_node = "conformance-elsewhere".into();
    o.pool.generation = 2;
    cases.push(("spec edited", o));
    // As the host makes it: what the ledger entry kept.
    let o = created(PoolState::Online, Some(ReportedState::Online)).as_deleted();
    cases.push(("deleted", o));
    cases
}
