//! The reconcile of one MayastorPool: observe → decide → apply → report,
//! and [`on_error`], the per-resource backoff. Start here.
//!
//! One step per module, imports running one way (each step uses the
//! [`context`] and [`error`] modules, never this one):
//! - [`observe`] builds the policy's [`Observation`] from in-memory state
//!   (what the controller last did to a pool is in [`operations`]);
//! - [`decide`] asks the policy engine (behind [`Decider`]) and handles its failure;
//! - [`apply`] applies the host's safety rails, then calls the storage node;
//! - [`report`] writes status, events and per-pool metrics;
//! - [`sweep`] is the deleted path: pools in the ledger whose resource is gone.
//!
//! Every reconcile is level-triggered and idempotent: a crash between any two
//! steps repeats the work, never doubles it (CreatePool is create-or-import).

pub mod apply;
pub mod context;
pub mod decide;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod observe;
pub mod operations;
pub mod report;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use msp_policy_sdk::model::{Action, Decision, Observation};
use tracing::Instrument;

use crate::state::crd::MayastorPool;
use crate::state::format;
use apply::{Outcome, action_name};

pub use context::{Context, ControllerSettings, Parts, bounded_requeue};
#[cfg(test)]
pub use decide::NativePolicy;
pub use decide::{DecideError, Decider};
pub use error::{Error, backoff};

/// Reconciles one MayastorPool.
pub async fn reconcile(pool: Arc<MayastorPool>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let span = tracing::info_span!("reconcile", pool = %pool.name_any(), namespace = %pool.namespace().unwrap_or_default());
    async move {
        let _timer = ctx.metrics.reconcile_timer();
        let result = reconcile_inner(&pool, &ctx).await;
        if result.is_ok() {
            ctx.errors.clear(&pool.uid().unwrap_or_default());
        }
        result
    }
    .instrument(span)
    .await
}

/// Node and disks of a create that just succeeded, to cache in status.
type Placement = (String, Vec<String>);

/// What a reconcile will report: the last observation, the decision on it,
/// the placement to cache, and whether a safety rail refused the action.
struct Plan {
    obs: Observation,
    decision: Decision,
    created: Option<Placement>,
    refused: bool,
}

async fn reconcile_inner(pool: &MayastorPool, ctx: &Context) -> Result<Requeue, Error> {
    // The controller waits for the MayastorPool cache; the Node cache must be
    // complete too, or a pool would be told its node does not exist.
    if ctx.nodes.wait_until_ready().now_or_never().is_none() {
        tracing::debug!("Node cache not synced yet");
        return Ok(Requeue::requeue(ctx.settings.min_requeue));
    }
    // A status or ledger entry of a format newer than this version reads (an
    // operator rolled back past a format change): the pool is left alone,
    // nothing is written over what this version does not understand.
    if let Some(too_new) = newer_format(pool, ctx) {
        tracing::warn!(error = %too_new, "pool left alone");
        report::publish(pool, ctx, true, format::EVENT_REASON, &too_new.to_string()).await;
        return Ok(Requeue::requeue(ctx.settings.resync));
    }
    // Acted on as created (the ledger's node and disks) when the spec was
    // edited before the first create was reported; reported on as it is.
    let as_created = observe::as_created(pool, &ctx.ledger);
    let acted = as_created.as_ref().unwrap_or(pool);
    if let Some(left) = ctx.startup_hold(acted) {
        tracing::debug!(
            ?left,
            "node not registered yet since the start; status kept"
        );
        return Ok(Requeue::requeue(left));
    }
    apply::remember(acted, ctx).await?;
    let Some(plan) = decide_and_act(acted, ctx).await? else {
        return Ok(Requeue::requeue(ctx.settings.policy_retry));
    };
    report::report(pool, &plan.obs, &plan.decision, plan.created, ctx).await?;
    let uid = pool.uid().unwrap_or_default();
    let asked = ctx.requeue_after(&plan.decision);
    let delay = if plan.refused {
        refused_retry(ctx.refusals.bump(&uid), asked, &ctx.settings)
    } else {
        ctx.refusals.clear(&uid);
        asked
    };
    Ok(Requeue::requeue(delay))
}

/// Why `pool`'s status or ledger entry is of a format this version cannot
/// read, when it is.
fn newer_format(pool: &MayastorPool, ctx: &Context) -> Option<format::TooNew> {
    let status = pool.status.as_ref().and_then(|s| s.format_version);
    format::check("its status", status.map(u64::from), format::STATUS_FORMAT)
        .err()
        .or_else(|| ctx.ledger.unread(pool.effective_node(), &pool.name_any()))
}

/// When to look again at a pool a safety rail refused for the `n`th time in a
/// row: the policy would ask again as soon as it asked the first time, and
/// each look costs the node a ListBlockDevices. Doubling from what it asked,
/// at most `refusal_backoff_max` (never less than it asked).
fn refused_retry(n: u32, asked: Duration, settings: &ControllerSettings) -> Duration {
    backoff(n, asked, settings.refusal_backoff_max.max(asked))
}

/// A decision on a live pool, or `None` when the policy failed (the last good
/// status is kept, see [`report::policy_failed`]).
async fn decide_live(
    pool: &MayastorPool,
    obs: &Observation,
    ctx: &Context,
) -> Result<Option<Decision>, Error> {
    match decide::decide(&*ctx.decider, &ctx.metrics, obs).await {
        Ok(decision) => Ok(Some(decision)),
        Err(err) => {
            report::policy_failed(pool, &err, ctx).await?;
            Ok(None)
        }
    }
}

/// Observe, decide and act; after a node call, observe and decide again so
/// that what is reported is the result, not "creating".
async fn decide_and_act(pool: &MayastorPool, ctx: &Context) -> Result<Option<Plan>, Error> {
    let placement = || {
        (
            pool.effective_node().to_string(),
            pool.effective_disks().to_vec(),
        )
    };
    let mut obs = observe::observe(pool, &ctx.sources());
    let Some(mut decision) = decide_live(pool, &obs, ctx).await? else {
        return Ok(None);
    };
    tracing::debug!(action = action_name(decision.action), state = ?decision.state, "decided");
    let mut created = None;
    let mut refused = false;
    match apply::live(pool, &obs, &decision, ctx).await? {
        Outcome::Nothing => {}
        Outcome::Refused(action, why) => {
            refused = true;
            let note = apply::refused(ctx, action, &why);
            report::publish(pool, ctx, true, "Refused", &note).await;
            decision.reason = if decision.reason.is_empty() {
                note
            } else {
                format!("{}; {note}", decision.reason)
            };
        }
        outcome @ (Outcome::Done(_) | Outcome::Failed(..)) => {
            if let Outcome::Done(Action::Create | Action::Import) = outcome
                && !pool.placement_cached()
            {
                created = Some(placement());
            }
            // Look again at once: the node's list was refreshed.
            obs = observe::observe(pool, &ctx.sources());
            match decide_live(pool, &obs, ctx).await? {
                Some(d) => decision = d,
                None => return Ok(None),
            }
        }
    }
    // The pool exists on its node and the ledger says this operator made it,
    // but status has no node yet (the write after the create failed, or the
    // operator stopped in between): cache node and disks now.
    // Decided again on the status about to be written, so that the reason
    // is a created pool's (a resource re-created on the same disks that took
    // its pool over is not "not created by this operator").
    if created.is_none() && !pool.placement_cached() && obs.in_ledger && obs.reported.is_some() {
        let (node, disks) = placement();
        obs.pool.status_node = Some(node.clone());
        obs.pool.status_disks = Some(disks.clone());
        match decide_live(pool, &obs, ctx).await? {
            Some(d) => decision = d,
            None => return Ok(None),
        }
        created = Some((node, disks));
    }
    Ok(Some(Plan {
        obs,
        decision,
        created,
        refused,
    }))
}

/// After a failed reconcile (kube-runtime's "error policy"): the retry delay,
/// per resource, doubling, bounded; never terminal.
pub fn on_error(pool: Arc<MayastorPool>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_failure(err.metric_label());
    let n = ctx.errors.bump(&pool.uid().unwrap_or_default());
    let delay = backoff(
        n,
        ctx.settings.error_backoff_min,
        ctx.settings.error_backoff_max,
    );
    tracing::warn!(pool = %pool.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use msp_policy_sdk::model::PoolState;

    use super::fixtures::{Fixture, pool};
    use super::*;

    #[test]
    fn refused_pools_are_looked_at_less_and_less_often_up_to_the_cap() {
        let s = ControllerSettings::default();
        let asked = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=6)
            .map(|n| refused_retry(n, asked, &s).as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        // A policy that asks for longer than the cap is never hurried.
        assert_eq!(
            refused_retry(3, Duration::from_secs(30), &s),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn requeues_are_bounded() {
        let s = ControllerSettings::default();
        assert_eq!(bounded_requeue(Some(u64::MAX), &s), s.max_requeue);
        assert_eq!(bounded_requeue(Some(0), &s), s.min_requeue);
        assert_eq!(
            bounded_requeue(Some(1_500), &s),
            Duration::from_millis(1_500)
        );
        assert_eq!(bounded_requeue(None, &s), s.resync);
    }

    #[tokio::test]
    async fn a_pool_on_an_unknown_node_stays_pending_and_nothing_is_called() {
        let fx = Fixture::new();
        let pool = pool("nowhere");
        let plan = decide_and_act(&pool, &fx.ctx)
            .await
            .expect("no API call on this path")
            .expect("the native policy decides");
        assert_eq!(plan.decision.action, Action::None);
        assert_eq!(plan.decision.state, PoolState::Pending);
        assert!(
            plan.decision.reason.contains("does not exist"),
            "{}",
            plan.decision.reason
        );
        assert!(plan.created.is_none());
        // The status write goes to the API server, which this fixture lacks:
        // the reconcile fails there, and the backoff counts it.
        let (pool, ctx) = (Arc::new(pool), Arc::new(fx.ctx));
        let err = reconcile(pool.clone(), ctx.clone())
            .await
            .expect_err("no API server");
        assert_eq!(err.metric_label(), "status");
        assert_eq!(
            on_error(pool, &err, ctx.clone()),
            Requeue::requeue(ctx.settings.error_backoff_min)
        );
    }

    /// The status a status write's JSON Patch sets, after checking that it
    /// is conditional on the resource's uid.
    fn written_status<'a>(patch: &'a serde_json::Value, uid: &str) -> &'a serde_json::Value {
        assert_eq!(
            patch[0],
            serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid}),
            "{patch}"
        );
        assert_eq!(
            (&patch[1]["op"], &patch[1]["path"]),
            (&serde_json::json!("add"), &serde_json::json!("/status")),
            "{patch}"
        );
        &patch[1]["value"]
    }

    #[tokio::test]
    async fn a_pending_pool_gets_exactly_this_status_and_one_transition_event() {
        let (fx, mut api) = Fixture::with_api_server();
        let pool = Arc::new(pool("nowhere"));
        let reconciled = tokio::spawn(reconcile(pool.clone(), Arc::new(fx.ctx)));
        let status = api.next(serde_json::to_value(&*pool).expect("pool")).await;
        assert_eq!(status.method, http::Method::PATCH);
        assert_eq!(
            status.path,
            "/apis/openebs.io/v1alpha1/namespaces/mayastor/mayastorpools/p/status"
        );
        assert!(
            status.query.contains("fieldManager=msp-operator"),
            "{}",
            status.query
        );
        let written = written_status(&status.body, "u1");
        assert_eq!(written["state"], "pending");
        assert_eq!(
            written["formatVersion"],
            crate::state::format::STATUS_FORMAT
        );
        let reason = written["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("node \"nowhere\" does not exist"),
            "{reason}"
        );
        // Nothing was created: no node or disks are cached yet.
        assert!(written.get("node").is_none(), "{written}");
        assert!(written.get("disks").is_none(), "{written}");
        assert_eq!(written["conditions"][0]["type"], "Ready");
        assert_eq!(written["conditions"][0]["status"], "False");
        assert_eq!(written["conditions"][0]["reason"], "Pending");
        let event = api.next(serde_json::json!({})).await;
        assert_eq!(event.method, http::Method::POST);
        assert_eq!(
            event.path,
            "/apis/events.k8s.io/v1/namespaces/mayastor/events"
        );
        assert_eq!(event.body["type"], "Normal");
        assert_eq!(event.body["reason"], "Pending");
        assert_eq!(event.body["regarding"]["kind"], "MayastorPool");
        assert_eq!(event.body["regarding"]["name"], "p");
        assert_eq!(event.body["regarding"]["uid"], "u1");
        let note = event.body["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("waiting to create the pool on nowhere"),
            "{note}"
        );
        let requeue = reconciled.await.expect("task").expect("reconciled");
        assert_ne!(requeue, Requeue::await_change());
    }

    #[tokio::test]
    async fn a_failed_policy_keeps_the_last_status_and_says_so_in_a_warning() {
        use super::fixtures::FailingPolicy;
        let (fx, mut api) = Fixture::with_api_server_and(Arc::new(FailingPolicy));
        let mut online = pool("n1");
        online.status = Some(crate::state::crd::MayastorPoolStatus {
            state: Some(PoolState::Online),
            node: Some("n1".into()),
            disks: Some(vec!["/dev/loop0".into()]),
            ..Default::default()
        });
        let online = Arc::new(online);
        let reconciled = tokio::spawn(reconcile(online.clone(), Arc::new(fx.ctx)));
        let status = api
            .next(serde_json::to_value(&*online).expect("pool"))
            .await;
        assert_eq!(status.method, http::Method::PATCH);
        let written = written_status(&status.body, "u1");
        assert_eq!(written["state"], "online", "the last good state stays");
        assert_eq!(written["node"], "n1");
        let reason = written["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("policy failing@0.0.0 failed, last good status kept:"),
            "{reason}"
        );
        let event = api.next(serde_json::json!({})).await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "PolicyFailed");
        assert_eq!(event.body["regarding"]["name"], "p");
        reconciled.await.expect("task").expect("reconciled");
    }

    #[tokio::test]
    async fn the_caches_reach_the_policy() {
        use kube::runtime::watcher::Event;
        let mut fx = Fixture::new();
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some("n1".into());
        fx.nodes.apply_watcher_event(&Event::Apply(node));
        let plan = decide_and_act(&pool("n1"), &fx.ctx)
            .await
            .expect("no API call")
            .expect("decision");
        assert!(
            plan.decision.reason.contains("not labelled"),
            "{}",
            plan.decision.reason
        );
        // An older pool on the same disk of that node claims it first.
        let mut older = pool("n1");
        older.metadata.name = Some("older".into());
        older.metadata.uid = Some("u0".into());
        fx.pools.apply_watcher_event(&Event::Apply(older));
        let obs = observe::observe(&pool("n1"), &fx.ctx.sources());
        assert_eq!(obs.conflicts, vec!["older".to_string()]);
    }
}
