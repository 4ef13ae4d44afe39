//! The reconcile of one MayastorPool: plan (observe, decide) → apply →
//! report, and [`on_error`], the per-resource backoff. Start here.
//!
//! [`reconcile`] reads as its steps, each visited once and in order:
//! - [`plan`] makes the [`plan::Plan`] value: whether to wait, leave the pool
//!   alone, or act on the policy's decision; nothing is written. It uses
//! - [`observe`], which builds the policy's `Observation` from in-memory
//!   state (what the controller last did to a pool is in [`operations`]),
//!   and [`decide`], which asks the policy engine (behind [`Decider`]);
//! - [`apply`] carries the plan out, the one place that writes to the
//!   ledger and calls the storage node, behind the host's safety rails;
//!   [`plan::after`] then takes the decision on what came of it (after a
//!   node call, observed and decided again, so that the result is
//!   reported, not "creating");
//! - [`report`], last, writes status, Events and per-pool metrics, and says
//!   when to look again.
//!
//! [`sweep`] is the deleted path: pools in the ledger whose resource is gone
//! (observe, decide, apply). Imports run one way: each step uses the
//! [`context`] and [`error`] modules, never this one.
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
pub mod plan;
pub mod report;
pub mod sweep;

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use tracing::Instrument;

use crate::state::crd::MayastorPool;

pub use context::{Context, ControllerSettings, Parts, bounded_requeue, refused_retry};
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

async fn reconcile_inner(pool: &MayastorPool, ctx: &Context) -> Result<Requeue, Error> {
    // spec.disks edited to other names of the pool's disks: status follows
    // (written here), and the rest of the reconcile sees it so.
    let renamed = apply::follow_rename(pool, ctx).await?;
    let pool = renamed.as_ref().unwrap_or(pool);
    // Acted on as created (the ledger's node and disks) when the spec was
    // edited before the first create was reported; reported on as it is.
    let as_created = observe::as_created(pool, &ctx.ledger);
    let acted = as_created.as_ref().unwrap_or(pool);
    let plan = plan::plan(pool, acted, ctx).await;
    let outcome = apply::apply(acted, &plan, ctx).await?;
    let result = plan::after(acted, plan, outcome, ctx).await;
    report::report(pool, result, ctx).await
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

    use msp_policy_sdk::model::{Action, PoolState};

    use super::fixtures::{Fixture, pool};
    use super::plan::{Decided, Plan};
    use super::*;

    /// A reconcile up to its report: the decision it would report, `None`
    /// when the policy failed.
    async fn decide_and_act(pool: &MayastorPool, ctx: &Context) -> Result<Option<Decided>, Error> {
        let plan = plan::plan(pool, pool, ctx).await;
        let outcome = apply::apply(pool, &plan, ctx).await?;
        Ok(match plan::after(pool, plan, outcome, ctx).await {
            Plan::Act(decided) => Some(*decided),
            _ => None,
        })
    }

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
