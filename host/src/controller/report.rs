//! Report: turns a decision into the status subresource, written only when it
//! changed (a JSON Patch of the status subresource only, under the
//! `msp-operator` field manager, conditional on the resource's uid), an Event on each state transition, and the
//! per-pool metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Resource, ResourceExt};
use msp_policy_sdk::model::{Decision, Observation};

use super::context::{Context, refused_retry};
use super::decide::DecideError;
use super::error::Error;
use super::plan::{Placement, Plan};
use crate::state::crd::{MayastorPool, MayastorPoolStatus, PoolState};
use crate::state::events::{self, truncate};
use crate::state::format;
use crate::state::format::STATUS_FORMAT;
use crate::state::ledger::FIELD_MANAGER;

/// Longest reason written to status (a policy's nonsense is cut here).
pub const MAX_REASON: usize = 1024;

/// The `Ready` condition for `state`, keeping the transition time when the
/// condition's status did not change.
pub fn ready_condition(
    old: &[Condition],
    state: PoolState,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let ready = matches!(state, PoolState::Online | PoolState::Degraded);
    let status = if ready { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: state.title().into(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status the decision calls for. `created` is the node and disks of a
/// create that just succeeded; they are cached once and kept from then on.
pub fn desired_status(
    pool: &MayastorPool,
    obs: &Observation,
    decision: &Decision,
    policy: &str,
    created: Option<Placement>,
    now: Time,
) -> MayastorPoolStatus {
    let old = pool.status.clone().unwrap_or_default();
    let state = decision.state;
    let (node, disks) = match (old.node.clone(), old.disks.clone()) {
        (Some(n), Some(d)) => (Some(n), Some(d)),
        _ => match created {
            Some((n, d)) => (Some(n), Some(d)),
            None => (None, None),
        },
    };
    let (capacity, used, replicas) = match (&obs.reported, state) {
        // A count of 0 is no field: a new pool's first count then costs no
        // write of its own.
        (Some(p), _) => (
            Some(p.capacity),
            Some(p.used),
            p.replicas.filter(|n| *n > 0),
        ),
        // The node is down: the last known figures are still the best.
        (None, PoolState::Offline) => (old.capacity, old.used, old.replicas),
        (None, _) => (None, None, None),
    };
    let reason = truncate(&decision.reason, MAX_REASON);
    let condition = ready_condition(
        &old.conditions,
        state,
        &reason,
        pool.metadata.generation,
        now,
    );
    MayastorPoolStatus {
        state: Some(state),
        node,
        disks,
        disk_ids: old.disk_ids.clone(),
        reason: if reason.is_empty() {
            None
        } else {
            Some(reason)
        },
        capacity,
        used,
        replicas,
        policy: Some(policy.to_string()),
        format_version: Some(STATUS_FORMAT),
        // The decider's, set by `report`.
        policy_digest: None,
        conditions: vec![condition],
    }
}

/// What a status says, its format spelled out (absent is format 1): a status
/// written before the format was kept is not written again only to add it.
fn said(status: &MayastorPoolStatus) -> MayastorPoolStatus {
    MayastorPoolStatus {
        format_version: Some(status.format_version.unwrap_or(1)),
        ..status.clone()
    }
}

/// Writes `status` when it differs from the resource's; returns true when written.
pub async fn write_status(
    pool: &MayastorPool,
    status: &MayastorPoolStatus,
    ctx: &Context,
) -> Result<bool, Error> {
    if pool.status.as_ref().map(said) == Some(said(status)) {
        return Ok(false);
    }
    // The watch cache may not show our last write yet: written over this
    // very copy already, it would be the same write again.
    let uid = pool.uid().unwrap_or_default();
    let version = pool.resource_version().unwrap_or_default();
    let digest = status_digest(&said(status));
    if ctx.wrote_over(&uid, &version, digest) {
        return Ok(false);
    }
    let api: Api<MayastorPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    // The write is conditional on the uid of the resource it was computed
    // for: a reconcile that read a resource since deleted and re-created
    // under its name must not give the new one the old placement. A JSON
    // Patch `test` is checked atomically with the write (a server-side
    // apply of the status subresource ignores metadata.uid).
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": status},
    ]))
    .map_err(|e| Error::Status(kube::Error::SerdeError(e)))?;
    let started = std::time::Instant::now();
    api.patch_status(
        &pool.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.reconcile_step("status", started.elapsed());
    ctx.record_written(&uid, &version, digest);
    ctx.metrics.status_write();
    Ok(true)
}

/// A digest of what a status says, leaving out the condition's transition
/// time (computed afresh by a reconcile that sees no earlier condition).
pub fn status_digest(status: &MayastorPoolStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut said = status.clone();
    for c in &mut said.conditions {
        c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&said)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// The Event of a state transition, written for the admin. Each kind of
/// transition has its own reason, so that an Event list folded by reason
/// never shows an older transition's message under a newer one.
#[derive(Debug, PartialEq, Eq)]
pub struct TransitionEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl TransitionEvent {
    /// `created_before`: the pool had been created before this transition
    /// (its placement was cached), so pending means it is being imported again.
    pub fn new(
        from: Option<PoolState>,
        to: PoolState,
        created_before: bool,
        node: &str,
        why: &str,
    ) -> Self {
        use PoolState::*;
        let (reason, what) = match (from, to) {
            (Some(Offline), Online) => (
                "NodeBack",
                format!("storage node on {node} back: pool online"),
            ),
            (Some(Degraded | Faulted), Online) => {
                ("Recovered", format!("pool on {node} healthy again: online"))
            }
            (_, Online) if created_before => {
                ("Imported", format!("pool imported again on {node}: online"))
            }
            (_, Online) if !why.is_empty() => ("Online", format!("pool on {node} online")),
            (_, Online) => ("Created", format!("created on {node} and online")),
            (_, Offline) => (
                "NodeLost",
                format!("storage node on {node} lost: pool offline"),
            ),
            (_, Degraded) => ("Degraded", format!("pool on {node} degraded")),
            (_, Faulted) => ("Faulted", format!("pool on {node} faulted, not usable")),
            (_, Pending) if created_before => (
                "Reimporting",
                format!("storage node on {node} runs: bringing the pool back"),
            ),
            (_, Pending) => ("Pending", format!("waiting to create the pool on {node}")),
        };
        let note = if why.is_empty() {
            what
        } else {
            format!("{what}: {why}")
        };
        TransitionEvent {
            warning: matches!(to, Degraded | Faulted | Offline),
            reason,
            note,
        }
    }
}

/// Publishes an event about `pool`.
pub async fn publish(pool: &MayastorPool, ctx: &Context, warning: bool, reason: &str, note: &str) {
    events::publish(
        &ctx.recorder,
        &pool.object_ref(&()),
        warning,
        reason,
        note,
        "Reconcile",
    )
    .await;
}

/// A failed policy decision on a live pool: the last good status stays, with
/// a reason that says so, and a Warning event.
pub async fn policy_failed(
    pool: &MayastorPool,
    err: &DecideError,
    ctx: &Context,
) -> Result<(), Error> {
    let policy = ctx.decider.active();
    let message = truncate(
        &format!("policy {policy} failed, last good status kept: {err}"),
        MAX_REASON,
    );
    let mut status = pool.status.clone().unwrap_or_default();
    status.reason = Some(message.clone());
    status.format_version = Some(STATUS_FORMAT);
    write_status(pool, &status, ctx).await?;
    publish(pool, ctx, true, "PolicyFailed", &message).await;
    Ok(())
}

/// Reports `plan`, the last step of a reconcile, and says when to look
/// again: a decision's status, Events and metrics ([`decided`]), a failed
/// policy's kept status ([`policy_failed`]), or why the pool is left alone.
pub async fn report(pool: &MayastorPool, plan: Plan, ctx: &Context) -> Result<Requeue, Error> {
    let delay = match plan {
        Plan::Wait(delay) => delay,
        Plan::LeaveAlone(too_new) => {
            tracing::warn!(error = %too_new, "pool left alone");
            publish(pool, ctx, true, format::EVENT_REASON, &too_new.to_string()).await;
            ctx.settings.resync
        }
        Plan::PolicyFailed(err) => {
            policy_failed(pool, &err, ctx).await?;
            ctx.settings.policy_retry
        }
        Plan::Act(d) => {
            decided(pool, &d.obs, &d.decision, d.created, ctx).await?;
            let uid = pool.uid().unwrap_or_default();
            let asked = ctx.requeue_after(&d.decision);
            if d.refused {
                refused_retry(ctx.refusals.bump(&uid), asked, &ctx.settings)
            } else {
                ctx.refusals.clear(&uid);
                asked
            }
        }
    };
    Ok(Requeue::requeue(delay))
}

/// The persistent names of the pool's disks as its ledger entry pinned
/// them, for `status.diskIds`; `None` when nothing is pinned (the status
/// keeps what it had).
pub fn disk_ids(pool: &MayastorPool, ctx: &Context) -> Option<Vec<String>> {
    let entry = ctx
        .ledger
        .get(pool.effective_node(), &pool.name_any())
        .filter(|e| Some(e.uid.as_str()) == pool.uid().as_deref())?;
    let shown = crate::nodes::disk_identity::shown(&entry.disk_ids);
    (!shown.is_empty()).then_some(shown)
}

/// Reports the decision: status, events on transition, metrics.
pub async fn decided(
    pool: &MayastorPool,
    obs: &Observation,
    decision: &Decision,
    created: Option<Placement>,
    ctx: &Context,
) -> Result<(), Error> {
    let policy = ctx.decider.active();
    let mut status = desired_status(
        pool,
        obs,
        decision,
        &policy,
        created,
        Time(jiff::Timestamp::now()),
    );
    // Unchanged while the same module decides: written once per pool when
    // another module takes over, never on its own.
    status.policy_digest = ctx.decider.digest();
    if let Some(shown) = disk_ids(pool, ctx) {
        status.disk_ids = Some(shown);
    }
    write_status(pool, &status, ctx).await?;
    let new_state = status.state.unwrap_or(PoolState::Pending);
    let remembered = ctx.swap_reported(&pool.uid().unwrap_or_default(), new_state);
    let old_state = remembered.or(pool.status.as_ref().and_then(|s| s.state));
    if old_state != Some(new_state) {
        tracing::info!(from = old_state.map(PoolState::as_str).unwrap_or("none"), to = %new_state, reason = status.reason.as_deref().unwrap_or(""), "state transition");
        let event = TransitionEvent::new(
            old_state,
            new_state,
            pool.placement_cached(),
            pool.effective_node(),
            status.reason.as_deref().unwrap_or(""),
        );
        publish(pool, ctx, event.warning, event.reason, &event.note).await;
    }
    if let Some(ev) = &decision.event {
        publish(pool, ctx, ev.warning, &ev.reason, &ev.message).await;
    }
    ctx.metrics.set_pool(
        &pool.namespace().unwrap_or_default(),
        &pool.name_any(),
        new_state,
        status.capacity,
        status.used,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_transition_has_its_own_reason_and_an_admin_message() {
        use PoolState::*;
        let cases = [
            (
                None,
                Online,
                false,
                "",
                "Created",
                "created on node1 and online",
            ),
            (
                Some(Pending),
                Online,
                false,
                "",
                "Created",
                "created on node1 and online",
            ),
            (
                None,
                Online,
                false,
                "found",
                "Online",
                "pool on node1 online: found",
            ),
            (
                Some(Offline),
                Online,
                true,
                "",
                "NodeBack",
                "storage node on node1 back: pool online",
            ),
            (
                Some(Pending),
                Online,
                true,
                "",
                "Imported",
                "pool imported again on node1: online",
            ),
            (
                Some(Faulted),
                Online,
                true,
                "",
                "Recovered",
                "pool on node1 healthy again: online",
            ),
            (
                Some(Online),
                Offline,
                true,
                "no heartbeat",
                "NodeLost",
                "storage node on node1 lost: pool offline: no heartbeat",
            ),
            (
                Some(Online),
                Degraded,
                true,
                "x",
                "Degraded",
                "pool on node1 degraded: x",
            ),
            (
                Some(Online),
                Faulted,
                true,
                "x",
                "Faulted",
                "pool on node1 faulted, not usable: x",
            ),
            (
                Some(Offline),
                Pending,
                true,
                "importing",
                "Reimporting",
                "storage node on node1 runs: bringing the pool back: importing",
            ),
            (
                None,
                Pending,
                false,
                "no node",
                "Pending",
                "waiting to create the pool on node1: no node",
            ),
        ];
        let mut reasons = std::collections::HashMap::new();
        for (from, to, created, why, reason, note) in cases {
            let e = TransitionEvent::new(from, to, created, "node1", why);
            assert_eq!(
                (e.reason, e.note.as_str()),
                (reason, note),
                "{from:?} -> {to:?}"
            );
            assert_eq!(e.warning, matches!(to, Degraded | Faulted | Offline));
            // One reason, one kind of message: folding by reason is harmless.
            let what = note.split(':').next().unwrap_or_default().to_string();
            assert_eq!(
                reasons.entry(reason).or_insert(what.clone()),
                &what,
                "{reason}"
            );
        }
    }
    use crate::state::crd::MayastorPoolSpec;
    use msp_policy_sdk::model::{Action, ReportedPool, ReportedState};

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("ts"))
    }

    fn decision(state: msp_policy_sdk::model::PoolState, reason: &str) -> Decision {
        Decision {
            action: Action::None,
            state,
            reason: reason.into(),
            requeue_after_ms: None,
            event: None,
        }
    }

    fn resource() -> MayastorPool {
        let mut p = MayastorPool::new(
            "p",
            MayastorPoolSpec {
                node: "n1".into(),
                disks: vec!["/dev/loop0".into()],
            },
        );
        p.metadata.generation = Some(3);
        p
    }

    #[test]
    fn caches_node_and_disks_once() {
        let mut pool = resource();
        let obs = Observation::default();
        let d = decision(msp_policy_sdk::model::PoolState::Pending, "creating");
        let s = desired_status(&pool, &obs, &d, "msp-default@0.1.0", None, t(1));
        assert_eq!(s.node, None);
        let s = desired_status(
            &pool,
            &obs,
            &d,
            "x",
            Some(("n1".into(), vec!["/dev/loop0".into()])),
            t(1),
        );
        assert_eq!(s.node.as_deref(), Some("n1"));
        pool.status = Some(s);
        // A later spec edit does not move the cache.
        pool.spec.node = "n2".into();
        let s = desired_status(
            &pool,
            &obs,
            &d,
            "x",
            Some(("n2".into(), vec!["/dev/loop1".into()])),
            t(2),
        );
        assert_eq!(s.node.as_deref(), Some("n1"));
        assert_eq!(s.disks, Some(vec!["/dev/loop0".to_string()]));
    }

    #[test]
    fn ready_condition_tracks_generation_and_transitions() {
        let mut pool = resource();
        let mut obs = Observation {
            reported: Some(ReportedPool {
                name: "p".into(),
                disks: vec!["/dev/loop0".into()],
                state: ReportedState::Online,
                capacity: 100,
                used: 1,
                replicas: Some(2),
            }),
            ..Default::default()
        };
        let online = decision(msp_policy_sdk::model::PoolState::Online, "");
        let s = desired_status(&pool, &obs, &online, "x", None, t(10));
        let c = &s.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Online")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(
            (s.capacity, s.used, s.replicas, s.reason.clone()),
            (Some(100), Some(1), Some(2), None)
        );
        // None listed: no field (a new pool's first count writes nothing).
        let mut empty = obs.clone();
        if let Some(p) = empty.reported.as_mut() {
            p.replicas = Some(0);
        }
        let none = desired_status(&pool, &empty, &online, "x", None, t(10));
        assert_eq!(none.replicas, None);
        pool.status = Some(s.clone());
        // Same condition status later: transition time kept, so nothing to write.
        let again = desired_status(&pool, &obs, &online, "x", None, t(20));
        assert_eq!(again, s);
        // Offline keeps the last known capacity; Ready turns False with a new time.
        obs.reported = None;
        let off = desired_status(
            &pool,
            &obs,
            &decision(msp_policy_sdk::model::PoolState::Offline, "down"),
            "x",
            None,
            t(30),
        );
        assert_eq!((off.capacity, off.replicas), (Some(100), Some(2)));
        assert_eq!(off.conditions[0].status, "False");
        assert_eq!(off.conditions[0].last_transition_time, t(30));
    }

    #[tokio::test]
    async fn a_status_written_over_the_same_copy_is_not_written_again() {
        let fixture = super::super::fixtures::Fixture::new();
        let ctx = &fixture.ctx;
        let mut pool = resource();
        pool.metadata.uid = Some("u1".into());
        pool.metadata.resource_version = Some("41".into());
        let obs = Observation::default();
        let status = desired_status(
            &pool,
            &obs,
            &decision(msp_policy_sdk::model::PoolState::Online, ""),
            "p@1",
            None,
            t(100),
        );
        // Written over version 41 (the fixture's client fails every call, so
        // an attempted write is an error).
        ctx.record_written("u1", "41", status_digest(&status));
        // Computed again later from the same stale copy: only the condition
        // time differs; nothing to write.
        let again = desired_status(
            &pool,
            &obs,
            &decision(msp_policy_sdk::model::PoolState::Online, ""),
            "p@1",
            None,
            t(105),
        );
        assert!(matches!(write_status(&pool, &again, ctx).await, Ok(false)));
        // Something else said: written.
        let other = desired_status(
            &pool,
            &obs,
            &decision(msp_policy_sdk::model::PoolState::Online, "x"),
            "p@1",
            None,
            t(105),
        );
        assert!(write_status(&pool, &other, ctx).await.is_err());
        // A newer copy of the resource: compared as it is, so written.
        pool.metadata.resource_version = Some("42".into());
        assert!(write_status(&pool, &again, ctx).await.is_err());
    }
}
