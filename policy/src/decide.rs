//! The default policy's decision: one observation of a MayastorPool in, what to
//! do and what to report out.
//!
//! Plain Rust with no I/O, no clock and no randomness, so the same function runs
//! natively in unit tests and inside the wasm component the host loads. The
//! host enforces its own safety rails on whatever this returns (it destroys only
//! ledger pools of deleted resources, never creates on a claimed disk, bounds
//! requeues), so the policy is about *when* and *why*, not about being the last
//! line of defence.
//!
//! Order of questions, first match wins:
//! 1. the resource is gone → destroy a pool the operator created (or nothing);
//! 2. the storage node is down (not registered, heartbeat older than the
//!    host's deadline, or not answering) → offline if the pool was created,
//!    else pending;
//! 3. the pool is listed by the node → its reported health;
//! 4. not listed → create (never created) or import (created before), with
//!    exponential backoff after failures, never giving up. A created pool
//!    being imported on a running node is pending, and faulted when the import
//!    fails for a lasting reason: offline means only that the storage node is
//!    not running.
//!
//! Pending reasons before creation (node missing, not labelled, disk conflict)
//! are checked before the storage node, because they are what the admin fixes.

use msp_policy_sdk::model::{
    Action, Decision, ENGINE_LABEL_KEY, ENGINE_LABEL_VALUE, ErrorKind, Event, Observation,
    PolicyInfo, PoolState, ReportedState,
};

/// The policy's name in `info()`, the status and metrics.
pub const NAME: &str = "msp-default";
/// The policy's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// First retry delay after a failed operation.
pub const BACKOFF_MIN_MS: u64 = 1_000;
/// Retry delay cap: failures keep being retried every 5 minutes at most.
pub const BACKOFF_MAX_MS: u64 = 300_000;
/// How soon to look again while waiting for something that normally takes
/// well under a second (a pool list after an operation).
pub const SHORT_REQUEUE_MS: u64 = 1_000;
/// How soon to look again at an offline pool or a pool in an unknown state
/// (the node registry also wakes the pool when its node comes back).
pub const WATCH_REQUEUE_MS: u64 = 5_000;
/// After a successful create or import, how long a pool may stay unlisted
/// before the operation is repeated (the list is refreshed after each operation).
pub const SETTLE_MS: u64 = 5_000;

/// Who this policy is.
pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_string(),
        version: VERSION.to_string(),
    }
}

/// Decide what to do about one pool.
pub fn decide(obs: &Observation) -> Decision {
    let mut d = decide_core(obs);
    for note in [node_gone_note(obs), spec_edit_note(obs)]
        .into_iter()
        .flatten()
    {
        d.reason = if d.reason.is_empty() {
            note
        } else {
            format!("{}; {note}", d.reason)
        };
    }
    // An event only when the reason is news: the same decision on the next
    // reconcile does not repeat it.
    if d.event.is_some() && obs.pool.status_reason.as_deref() == Some(d.reason.as_str()) {
        d.event = None;
    }
    d
}

fn decide_core(obs: &Observation) -> Decision {
    if obs.pool.deleted {
        return decide_deleted(obs);
    }
    let created = was_created(obs);
    let node = effective_node(obs);

    if !created {
        if !obs.node.exists {
            return pending(format!(
                "Kubernetes node \"{node}\" does not exist: fix spec.node (delete and recreate the \
                 resource) or add the node"
            ));
        }
        if !obs.node.mayastor_enabled {
            return pending(format!(
                "node \"{node}\" is not labelled {ENGINE_LABEL_KEY}={ENGINE_LABEL_VALUE}: label it to run a storage node there"
            ));
        }
        if !obs.conflicts.is_empty() {
            let msg = format!(
                "disks claimed by another pool on node \"{node}\" ({}): give this pool other disks \
                 or delete the other pool",
                obs.conflicts.join(", ")
            );
            return Decision {
                event: Some(warning("DiskConflict", &msg)),
                ..pending(msg)
            };
        }
    }

    if let Some(down) = storage_node_down(obs) {
        return if created {
            Decision {
                action: Action::None,
                state: PoolState::Offline,
                reason: down,
                requeue_after_ms: Some(WATCH_REQUEUE_MS),
                event: None,
            }
        } else {
            pending(down)
        };
    }

    if !obs.pools_known {
        return Decision {
            action: Action::None,
            state: obs.pool.status_state.unwrap_or(PoolState::Pending),
            reason: format!("waiting for the pool list of the storage node on \"{node}\""),
            requeue_after_ms: Some(SHORT_REQUEUE_MS),
            event: None,
        };
    }

    match &obs.reported {
        Some(p) => reported_health(p.state, created, &node),
        None => create_or_import(obs, created, &node),
    }
}

/// The health the storage node reports for a listed pool.
fn reported_health(state: ReportedState, created: bool, node: &str) -> Decision {
    let (state, reason, requeue) = match state {
        ReportedState::Online => (PoolState::Online, String::new(), None),
        ReportedState::Degraded => (
            PoolState::Degraded,
            format!(
                "the storage node on \"{node}\" reports the pool degraded: a disk turned read-only \
                 or reports errors; the pool is still usable, check the disks"
            ),
            None,
        ),
        ReportedState::Faulted => (
            PoolState::Faulted,
            format!(
                "the storage node on \"{node}\" reports the pool faulted: a disk is missing or \
                 failed; the pool is not usable"
            ),
            None,
        ),
        ReportedState::Unknown => (
            PoolState::Degraded,
            format!("the storage node on \"{node}\" reports the pool's state as unknown"),
            Some(WATCH_REQUEUE_MS),
        ),
    };
    let reason = if created {
        reason
    } else if reason.is_empty() {
        // Listed by the node but never created by this operator: report it,
        // and say it stays the admin's.
        format!(
            "pool found on \"{node}\" but not created by this operator: it is left in place when the resource is deleted"
        )
    } else {
        reason
    };
    Decision {
        action: Action::None,
        state,
        reason,
        requeue_after_ms: requeue,
        event: None,
    }
}

/// The node is up and does not list the pool: make it (again).
fn create_or_import(obs: &Observation, created: bool, node: &str) -> Decision {
    // Not offline while importing: the storage node is running.
    let (action, waiting_state) = if created {
        (Action::Import, PoolState::Pending)
    } else {
        (Action::Create, PoolState::Pending)
    };
    let verb = if created { "import" } else { "create" };

    if let Some(op) = &obs.last_operation
        && matches!(op.action, Action::Create | Action::Import)
    {
        match &op.error {
            None if obs.now_ms.saturating_sub(op.at_ms) < SETTLE_MS => {
                return Decision {
                    action: Action::None,
                    state: waiting_state,
                    reason: format!("{verb} in progress on \"{node}\" (the storage node runs)"),
                    requeue_after_ms: Some(SHORT_REQUEUE_MS),
                    event: None,
                };
            }
            None => {}
            Some(err) => {
                let failures = op.failures.max(1);
                let backoff = backoff_ms(failures);
                let reason = format!(
                    "{verb} failed ({failures} in a row, retrying every {}s at most): {}",
                    backoff / 1000,
                    error_advice(err.kind, &err.message, node)
                );
                let due = op.at_ms.saturating_add(backoff);
                // A created pool the node cannot bring back is not usable;
                // a call that did not complete says nothing about the pool.
                let failed_state = if created && !transient(err.kind) {
                    PoolState::Faulted
                } else {
                    waiting_state
                };
                let event = Some(warning(
                    if created {
                        "ImportFailed"
                    } else {
                        "CreateFailed"
                    },
                    &reason,
                ));
                if obs.now_ms < due {
                    return Decision {
                        action: Action::None,
                        state: failed_state,
                        reason,
                        requeue_after_ms: Some(due - obs.now_ms),
                        event,
                    };
                }
                return Decision {
                    action,
                    state: failed_state,
                    reason,
                    requeue_after_ms: Some(backoff_ms(failures.saturating_add(1))),
                    event,
                };
            }
        }
    }

    let disks = effective_disks(obs).join(", ");
    let reason = if created {
        format!(
            "the storage node on \"{node}\" runs but does not list the pool (it restarted?): \
             importing it from {disks}"
        )
    } else {
        format!("creating the pool on \"{node}\" with {disks}")
    };
    Decision {
        action,
        state: waiting_state,
        reason,
        requeue_after_ms: Some(SHORT_REQUEUE_MS),
        event: None,
    }
}

/// The resource is gone: destroy what the operator created, with backoff.
fn decide_deleted(obs: &Observation) -> Decision {
    let state = obs.pool.status_state.unwrap_or(PoolState::Pending);
    let node = effective_node(obs);
    if !obs.in_ledger {
        return Decision {
            action: Action::None,
            state,
            reason: "resource deleted; no pool of this operator to destroy".to_string(),
            requeue_after_ms: None,
            event: None,
        };
    }
    if let Some(down) = storage_node_down(obs) {
        return Decision {
            action: Action::None,
            state,
            reason: format!("resource deleted; waiting to destroy the pool: {down}"),
            requeue_after_ms: Some(WATCH_REQUEUE_MS),
            event: None,
        };
    }
    if let Some(op) = &obs.last_operation
        && op.action == Action::Destroy
    {
        match &op.error {
            None => {
                return Decision {
                    action: Action::None,
                    state,
                    reason: format!("resource deleted; pool destroyed on \"{node}\""),
                    requeue_after_ms: None,
                    event: None,
                };
            }
            Some(err) => {
                let failures = op.failures.max(1);
                let backoff = backoff_ms(failures);
                let due = op.at_ms.saturating_add(backoff);
                let reason = format!(
                    "resource deleted; destroy failed ({failures} in a row): {}: {}",
                    kind_name(err.kind),
                    err.message
                );
                return if obs.now_ms < due {
                    Decision {
                        action: Action::None,
                        state,
                        reason,
                        requeue_after_ms: Some(due - obs.now_ms),
                        event: None,
                    }
                } else {
                    Decision {
                        action: Action::Destroy,
                        state,
                        reason,
                        requeue_after_ms: Some(backoff_ms(failures.saturating_add(1))),
                        event: None,
                    }
                };
            }
        }
    }
    Decision {
        action: Action::Destroy,
        state,
        reason: format!("resource deleted; destroying the pool on \"{node}\""),
        requeue_after_ms: Some(SHORT_REQUEUE_MS),
        event: Some(Event {
            warning: false,
            reason: "Destroying".to_string(),
            message: format!("destroying the pool on \"{node}\""),
        }),
    }
}

/// True when the pool exists or existed on its node
/// ([`Observation::was_created`], kept here for policies that call it).
pub fn was_created(obs: &Observation) -> bool {
    obs.was_created()
}

/// The node the pool lives on: cached at the first create, else the spec's.
pub fn effective_node(obs: &Observation) -> String {
    obs.pool
        .status_node
        .clone()
        .unwrap_or_else(|| obs.pool.spec_node.clone())
}

/// The disks of the pool: cached at the first create, else the spec's.
pub fn effective_disks(obs: &Observation) -> Vec<String> {
    obs.pool
        .status_disks
        .clone()
        .unwrap_or_else(|| obs.pool.spec_disks.clone())
}

/// Why the storage node cannot be used now, or None when it can.
pub fn storage_node_down(obs: &Observation) -> Option<String> {
    let sn = &obs.storage_node;
    let node = effective_node(obs);
    if !sn.registered {
        return Some(format!(
            "the storage node on \"{node}\" is not registered (is the io-engine running there?)"
        ));
    }
    // The host's deadline, not one of our own (the admin's --node-deadline
    // decides when a silent node's pools go offline), and the deadline, not
    // the age: a reason that ticks with every look would make each
    // reconcile of an offline pool a new status write.
    if obs.heartbeat_late() {
        return Some(format!(
            "no heartbeat from the storage node on \"{node}\" for over {}s",
            obs.settings.heartbeat_deadline_ms / 1000
        ));
    }
    if !sn.reachable {
        let at = if sn.endpoint.is_empty() {
            String::new()
        } else {
            format!(" at {}", sn.endpoint)
        };
        return Some(format!(
            "the storage node on \"{node}\"{at} does not answer"
        ));
    }
    None
}

/// Retry delay after `failures` consecutive failures: 1 s, 2 s, 4 s … 5 min.
pub fn backoff_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(20);
    BACKOFF_MIN_MS
        .saturating_mul(1u64 << exp)
        .min(BACKOFF_MAX_MS)
}

/// Set when the spec names another node or other disks than those cached at
/// the first create: the edit is ignored, and the admin learns how to move.
fn spec_edit_note(obs: &Observation) -> Option<String> {
    let p = &obs.pool;
    let node_changed = p.status_node.as_ref().is_some_and(|n| *n != p.spec_node);
    let disks_changed = p.status_disks.as_ref().is_some_and(|d| *d != p.spec_disks);
    if !node_changed && !disks_changed {
        return None;
    }
    Some(format!(
        "spec edited after creation is ignored: the pool stays on \"{}\" with {}; to move a pool, \
         delete this resource and create a new one",
        effective_node(obs),
        effective_disks(obs).join(", ")
    ))
}

/// The storage node's error as it gave it, and what the admin can do. The
/// node's text is the cause; nothing here guesses another one.
fn error_advice(kind: ErrorKind, message: &str, node: &str) -> String {
    let advice = match kind {
        ErrorKind::FailedPrecondition => {
            "fix what it names on the node (a disk holding data is never overwritten)".to_string()
        }
        ErrorKind::InvalidArgument => "check spec.disks (delete and recreate the resource to \
                                       change them)"
            .to_string(),
        ErrorKind::AlreadyExists => "destroy the other pool or give this resource another name \
                                     or other disks"
            .to_string(),
        ErrorKind::NotFound => "check that the disk paths exist there".to_string(),
        ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => {
            "the call did not complete; retrying with backoff".to_string()
        }
        ErrorKind::ResourceExhausted => "retrying with backoff".to_string(),
        ErrorKind::Internal | ErrorKind::Other => "retrying with backoff".to_string(),
    };
    format!(
        "the storage node on \"{node}\" answered {}: {message} ({advice})",
        kind_name(kind)
    )
}

/// Kinds that say the call did not complete, not that the pool is bad.
fn transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable | ErrorKind::DeadlineExceeded | ErrorKind::ResourceExhausted
    )
}

/// Set when a created pool's Kubernetes node is gone or lost the Mayastor
/// label: the pool still works, but its storage node is about to go away.
fn node_gone_note(obs: &Observation) -> Option<String> {
    if obs.pool.deleted || !obs.was_created() {
        return None;
    }
    let node = effective_node(obs);
    if !obs.node.exists {
        return Some(format!(
            "Kubernetes node \"{node}\" no longer exists: the pool's storage node goes with it"
        ));
    }
    if !obs.node.mayastor_enabled {
        return Some(format!(
            "node \"{node}\" is no longer labelled {ENGINE_LABEL_KEY}={ENGINE_LABEL_VALUE}: its storage node will be \
             stopped and this pool will go offline; label the node again to keep it"
        ));
    }
    None
}

/// The gRPC-style name of an error kind, as the admin sees it in logs.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "invalid-argument",
        ErrorKind::FailedPrecondition => "failed-precondition",
        ErrorKind::AlreadyExists => "already-exists",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::DeadlineExceeded => "deadline-exceeded",
        ErrorKind::ResourceExhausted => "resource-exhausted",
        ErrorKind::Internal => "internal",
        ErrorKind::Other => "other",
    }
}

/// Pending, no action, no requeue: the admin (or a watched change) moves it on.
pub fn pending(reason: String) -> Decision {
    Decision {
        action: Action::None,
        state: PoolState::Pending,
        reason,
        requeue_after_ms: None,
        event: None,
    }
}

fn warning(reason: &str, message: &str) -> Event {
    Event {
        warning: true,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}
