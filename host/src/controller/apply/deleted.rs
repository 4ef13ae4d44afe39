//! The deleted resource's path (the sweep's): a pool whose resource is gone
//! destroyed, or kept and held when it holds data or the node cannot tell.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Resource, ResourceExt};
use msp_policy_sdk::model::{Action, Decision, Observation};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::operations::operation_error;
use crate::nodes::client::{PoolContent, disk_path};
use crate::nodes::data_safety::{self, Contents, PURGE_ANNOTATION};
use crate::nodes::pool_calls::{self, Destroyed};
use crate::nodes::registry::PoolUpdate;
use crate::state::crd::MayastorPool;
use crate::state::events;
use crate::state::ledger::LedgerEntry;

use super::{Outcome, Stop, client_or_failed, update_cache};

/// Why destroying the pool of `entry` must not happen, if it must not.
pub fn destroy_refusal(
    entry: &LedgerEntry,
    live: &[std::sync::Arc<MayastorPool>],
    reported_disks: Option<&[String]>,
) -> Option<String> {
    // A live resource naming the pool on other disks waits for this one to
    // go (see `other_resources`): it does not hold it back.
    if let Some(owner) = live.iter().find(|p| {
        p.name_any() == entry.pool
            && p.effective_node() == entry.node
            && pool_calls::overlap(p.effective_disks(), &entry.disk_names())
    }) {
        return Some(format!(
            "resource {}/{} names this pool",
            owner.namespace().unwrap_or_default(),
            owner.name_any()
        ));
    }
    // Reported disks are paths (`disk_path`): the ledger's are compared as
    // paths too (a `malloc:///m?size_mb=8` disk is reported as `/m`).
    let names = entry.disk_names();
    if let Some(disks) = reported_disks
        && !disks
            .iter()
            .any(|d| names.iter().any(|e| disk_path(e) == *d))
    {
        return Some(format!(
            "the node's pool of this name is on {} but this operator created it on {}",
            disks.join(", "),
            entry.disks.join(", ")
        ));
    }
    None
}

/// Acts on a decision about a pool in the ledger whose resource is gone.
pub async fn deleted(
    entry: &LedgerEntry,
    obs: &Observation,
    decision: &Decision,
    ctx: &Context,
) -> Result<Outcome, Error> {
    match decision.action {
        Action::None => Ok(Outcome::Nothing),
        Action::Create | Action::Import => Ok(Outcome::Refused(
            decision.action,
            "the resource was deleted".into(),
        )),
        Action::Retain => {
            tracing::info!(node = %entry.node, pool = %entry.pool, "resource deleted; pool retained on the node and forgotten");
            ctx.ledger.remove(&entry.node, &entry.pool).await?;
            ctx.operations.forget(&entry.uid);
            Ok(Outcome::Done(Action::Retain))
        }
        Action::Destroy => match destroy(entry, obs, ctx).await {
            Ok(outcome) | Err(Stop::At(outcome)) => Ok(outcome),
            Err(Stop::Error(err)) => Err(err),
        },
    }
}

/// Destroys the pool of `entry` as far as the rails let it go: not when a
/// live resource names it or the node's pool of the name is another
/// ([`destroy_refusal`], [`Destroyed::Other`]: then forgotten), not while
/// it holds data ([`hold`]).
pub(super) async fn destroy(
    entry: &LedgerEntry,
    obs: &Observation,
    ctx: &Context,
) -> Result<Outcome, Stop> {
    let live = ctx.pools.all();
    let reported = obs.reported.as_ref().map(|p| p.disks.as_slice());
    let refusal = destroy_refusal(entry, &live, reported);
    if refusal.is_some()
        && obs.reported.is_some()
        && live.iter().all(|p| p.name_any() != entry.pool)
    {
        // Not the pool this operator made: forget it, never touch it.
        ctx.ledger.remove(&entry.node, &entry.pool).await?;
    }
    Stop::refused_if(Action::Destroy, refusal)?;
    let client =
        client_or_failed(ctx, &entry.node, &entry.uid, Action::Destroy).map_err(Stop::At)?;
    let timeout = ctx.registry.settings().probe_timeout;
    let asked = std::time::Instant::now();
    let uuid = entry.pool_uuid.as_deref();
    let result = pool_calls::destroy_pool(
        &client,
        &entry.pool,
        uuid,
        &entry.disks,
        &entry.disk_ids,
        entry.purge,
        timeout,
    )
    .await;
    // A kept pool's time is the rail's alone (the listing); a destroyed
    // one's includes the DestroyPool.
    let step = match &result {
        Ok(Destroyed::Kept(_)) => "contents",
        _ => "destroy",
    };
    ctx.metrics.reconcile_step(step, asked.elapsed());
    tracing::debug!(
        took_ms = asked.elapsed().as_millis() as u64,
        step,
        "destroy decided"
    );
    let result = match result {
        Ok(Destroyed::Kept(contents)) => {
            hold(entry, &contents, ctx).await?;
            Err(Stop::At(Outcome::Nothing))?
        }
        Ok(Destroyed::Other(what)) => {
            // Not the pool this operator made: forget it, never touch it.
            ctx.ledger.remove(&entry.node, &entry.pool).await?;
            Err(Stop::refused(Action::Destroy, other_pool(entry, &what)))?
        }
        Ok(Destroyed::Destroyed(went)) => Ok(went),
        Ok(Destroyed::Gone) => Ok(Vec::new()),
        Err(err) => Err(err),
    };
    ctx.metrics.node_operation("destroy", result.is_ok());
    update_cache(ctx, &entry.node, &result, |_| {
        PoolUpdate::Gone(entry.pool.clone())
    })
    .await;
    match result {
        Ok(went) => {
            forget_destroyed(entry, went, ctx).await?;
            Ok(Outcome::Done(Action::Destroy))
        }
        Err(err) => {
            tracing::warn!(node = %entry.node, pool = %entry.pool, error = %err, "destroy failed");
            let error = operation_error(&err);
            ctx.operations
                .record(&entry.uid, Action::Destroy, Some(error.clone()));
            Ok(Outcome::Failed(Action::Destroy, error))
        }
    }
}

/// Why the node's pool of `entry`'s name, which `what` (a phrase), is not
/// the one this operator created.
pub(super) fn other_pool(entry: &LedgerEntry, what: &str) -> String {
    format!(
        "the node's pool {} {what}, but this operator created it on {}{}",
        entry.pool,
        entry.disks.join(", "),
        entry
            .pool_uuid
            .as_deref()
            .map(|u| format!(" with uuid {u}"))
            .unwrap_or_default()
    )
}

/// The pool of `entry` is destroyed (with `went`, what it held when
/// purged): its entry and last operation are forgotten, and an Event says
/// so when it had been kept or was purged.
pub(super) async fn forget_destroyed(
    entry: &LedgerEntry,
    went: Vec<PoolContent>,
    ctx: &Context,
) -> Result<(), Error> {
    tracing::info!(node = %entry.node, pool = %entry.pool, purged = went.len(), "resource deleted; pool destroyed");
    if entry.held.is_some() || !went.is_empty() {
        let note = if went.is_empty() {
            format!(
                "pool {} on node {} was kept while it held data; now empty, it is destroyed",
                entry.pool, entry.node
            )
        } else {
            let held = Contents::Holds(went).held().unwrap_or_default();
            format!(
                "purged as the annotation {PURGE_ANNOTATION} asked: pool {} on node {} destroyed with {}",
                entry.pool,
                entry.node,
                data_safety::what_holds(&held)
            )
        };
        publish_deleted(entry, ctx, false, "PoolDestroyed", &note).await;
    }
    ctx.ledger.remove(&entry.node, &entry.pool).await?;
    ctx.operations.forget(&entry.uid);
    Ok(())
}

/// Keeps the pool of `entry`, which holds `contents` (or could not be
/// checked): the ledger entry stays, marked held; a Warning Event on the
/// deleted resource says what holds it and how to purge it. Both only when
/// what holds it changed, so a pool held for days costs one listing per
/// period and nothing more.
pub(super) async fn hold(
    entry: &LedgerEntry,
    contents: &Contents,
    ctx: &Context,
) -> Result<(), Error> {
    let held = contents.held().unwrap_or_default();
    if entry.held.as_ref() == Some(&held) {
        return Ok(());
    }
    let note = data_safety::kept_note(&entry.node, &entry.pool, &held);
    tracing::warn!(node = %entry.node, pool = %entry.pool, %note, "pool kept");
    ctx.metrics.rail_refusal("destroy", "holds-data");
    let marked = LedgerEntry {
        held: Some(held),
        ..entry.clone()
    };
    ctx.ledger.record(marked, 0).await?;
    publish_deleted(entry, ctx, true, "PoolKept", &note).await;
    Ok(())
}

/// The deleted MayastorPool of `entry`, by namespace, name and uid, as an
/// Event's subject.
pub fn deleted_ref(entry: &LedgerEntry) -> ObjectReference {
    ObjectReference {
        api_version: Some(MayastorPool::api_version(&()).into_owned()),
        kind: Some(MayastorPool::kind(&()).into_owned()),
        namespace: Some(entry.namespace.clone()),
        name: Some(entry.pool.clone()),
        uid: Some(entry.uid.clone()),
        ..Default::default()
    }
}

/// An Event about the deleted resource of `entry`.
pub(super) async fn publish_deleted(
    entry: &LedgerEntry,
    ctx: &Context,
    warning: bool,
    reason: &str,
    note: &str,
) {
    events::publish(
        &ctx.recorder,
        &deleted_ref(entry),
        warning,
        reason,
        note,
        "Sweep",
    )
    .await;
}
