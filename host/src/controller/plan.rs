//! Plan: what a reconcile does to one pool, as a value ([`Plan`]), made from
//! what is observed and decided without writing anything. [`super::apply`]
//! carries it out, [`after`] takes the decision on what came of it, and
//! [`super::report`] writes that, last.
//!
//! Every way a reconcile can stop early is a variant (kube-runtime's
//! `Action` is the model: a small value the runtime applies), so that the
//! reconcile itself has no early return.

use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use msp_policy_sdk::model::{Action, Decision, Observation};

use super::apply::{Outcome, action_name, refused_note};
use super::context::Context;
use super::decide::{self, DecideError};
use super::observe;
use crate::state::crd::MayastorPool;
use crate::state::format;

/// Node and disks of a pool just created (or found created), to cache in
/// status.
pub type Placement = (String, Vec<String>);

/// What a reconcile does to one pool.
#[derive(Debug)]
pub enum Plan {
    /// Nothing is written: look again after this long (the Node cache is not
    /// synced yet, or the pool's node may still register after a start).
    Wait(Duration),
    /// Left alone: its status or ledger entry is of a format newer than this
    /// version reads (an operator rolled back past a format change); nothing
    /// is written over what it does not understand, a Warning says so.
    LeaveAlone(format::TooNew),
    /// The policy failed: the last good status is kept, a Warning says so.
    PolicyFailed(DecideError),
    /// The policy's decision on the observation, carried out by apply.
    Act(Box<Decided>),
}

/// A decision and what it was made on; after apply, also what apply did
/// that the report says.
#[derive(Debug)]
pub struct Decided {
    pub obs: Observation,
    pub decision: Decision,
    /// Placement to cache in status (a create or import just succeeded, or
    /// the pool was found created with nothing cached yet).
    pub created: Option<Placement>,
    /// A safety rail refused the action (the reason says why).
    pub refused: bool,
}

impl Plan {
    /// The policy's decision on `obs`, or its failure.
    fn decided(obs: Observation, decision: Result<Decision, DecideError>) -> Plan {
        match decision {
            Ok(decision) => Plan::Act(Box::new(Decided {
                obs,
                decision,
                created: None,
                refused: false,
            })),
            Err(err) => Plan::PolicyFailed(err),
        }
    }
}

/// The plan for `pool`, acted on as `acted` (the resource as created, see
/// [`observe::as_created`]): observed and decided, nothing written.
pub async fn plan(pool: &MayastorPool, acted: &MayastorPool, ctx: &Context) -> Plan {
    // The controller waits for the MayastorPool cache; the Node cache must be
    // complete too, or a pool would be told its node does not exist.
    if ctx.nodes.wait_until_ready().now_or_never().is_none() {
        tracing::debug!("Node cache not synced yet");
        Plan::Wait(ctx.settings.min_requeue)
    } else if let Some(too_new) = newer_format(pool, ctx) {
        Plan::LeaveAlone(too_new)
    } else if let Some(left) = ctx.startup_hold(acted) {
        tracing::debug!(
            ?left,
            "node not registered yet since the start; status kept"
        );
        Plan::Wait(left)
    } else {
        let obs = observe::observe(acted, &ctx.sources());
        let decision = decide(&obs, ctx).await;
        if let Ok(d) = &decision {
            tracing::debug!(action = action_name(d.action), state = ?d.state, "decided");
        }
        Plan::decided(obs, decision)
    }
}

/// Why `pool`'s status or ledger entry is of a format this version cannot
/// read, when it is.
fn newer_format(pool: &MayastorPool, ctx: &Context) -> Option<format::TooNew> {
    let status = pool.status.as_ref().and_then(|s| s.format_version);
    format::check("its status", status.map(u64::from), format::STATUS_FORMAT)
        .err()
        .or_else(|| ctx.ledger.unread(pool.effective_node(), &pool.name_any()))
}

async fn decide(obs: &Observation, ctx: &Context) -> Result<Decision, DecideError> {
    decide::decide(&*ctx.decider, &ctx.metrics, obs).await
}

/// The plan to report once apply did `outcome`: after a node call, observed
/// and decided again (the node's list was refreshed), so that what is
/// reported is the result, not "creating"; after a refusal, the reason says
/// so.
pub async fn after(pool: &MayastorPool, plan: Plan, outcome: Outcome, ctx: &Context) -> Plan {
    match plan {
        Plan::Act(decided) => match settle(pool, *decided, outcome, ctx).await {
            Ok(decided) => Plan::Act(Box::new(decided)),
            Err(err) => Plan::PolicyFailed(err),
        },
        other => other,
    }
}

async fn settle(
    pool: &MayastorPool,
    mut d: Decided,
    outcome: Outcome,
    ctx: &Context,
) -> Result<Decided, DecideError> {
    match outcome {
        Outcome::Nothing => {}
        Outcome::Refused(action, why) => {
            d.refused = true;
            let note = refused_note(action, &why);
            d.decision.reason = if d.decision.reason.is_empty() {
                note
            } else {
                format!("{}; {note}", d.decision.reason)
            };
        }
        outcome @ (Outcome::Done(_) | Outcome::Failed(..)) => {
            if let Outcome::Done(Action::Create | Action::Import) = outcome
                && !pool.placement_cached()
            {
                d.created = Some(placement(pool));
            }
            d.obs = observe::observe(pool, &ctx.sources());
            d.decision = decide(&d.obs, ctx).await?;
        }
    }
    // The pool exists on its node and the ledger says this operator made it,
    // but status has no node yet (the write after the create failed, or the
    // operator stopped in between): cache node and disks now.
    // Decided again on the status about to be written, so that the reason
    // is a created pool's (a resource re-created on the same disks that took
    // its pool over is not "not created by this operator").
    if d.created.is_none()
        && !pool.placement_cached()
        && d.obs.in_ledger
        && d.obs.reported.is_some()
    {
        let (node, disks) = placement(pool);
        d.obs.pool.status_node = Some(node.clone());
        d.obs.pool.status_disks = Some(disks.clone());
        d.decision = decide(&d.obs, ctx).await?;
        d.created = Some((node, disks));
    }
    Ok(d)
}

fn placement(pool: &MayastorPool) -> Placement {
    (
        pool.effective_node().to_string(),
        pool.effective_disks().to_vec(),
    )
}
