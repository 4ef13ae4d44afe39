//! Actuate: carries out the policy's action on the storage node, after the
//! host's own safety rails, which no policy can turn off:
//! - a pool is destroyed only when the ledger says this operator created it
//!   for a resource uid that no longer exists, never when a live resource
//!   names it (same node and pool name), and never when the node's pool of
//!   that name sits on other disks than the ledger recorded;
//! - a deleted resource's pool is destroyed only when the node lists it
//!   loaded and empty, unless the admin purged it
//!   ([`crate::nodes::data_safety`]); otherwise it is kept, held in the ledger;
//! - nothing is created or imported on a disk another pool claims;
//! - nothing is created on a disk the node reports holding data, or one
//!   it cannot tell about ([`crate::nodes::disk_safety`]);
//! - the ledger entry is written before CreatePool, so a crash in between
//!   leaves a record, never an untracked pool.

use std::collections::BTreeMap;

use kube::ResourceExt;
use msp_policy_sdk::model::{Action, Decision, ErrorKind, Observation, OperationError};

use super::context::Context;
use super::error::Error;
use super::observe;
use crate::nodes::client::{NodeClient, NodeError, disk_path};
use crate::nodes::data_safety::{self, Contents, PURGE_ANNOTATION};
use crate::nodes::disk_safety;
use crate::nodes::pool_calls::{self, Destroyed, Load};
use crate::nodes::registry::PoolUpdate;
use crate::state::crd::MayastorPool;
use crate::state::events;
use crate::state::ledger::{LedgerEntry, LedgerError};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

/// What actuation did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// No call to the node.
    Nothing,
    /// The action succeeded.
    Done(Action),
    /// The node call failed; the error is recorded as the last operation.
    Failed(Action, OperationError),
    /// A safety rail refused the action; the string says which and why.
    Refused(Action, String),
}

/// The name of an action in logs, metrics and reasons.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::None => "none",
        Action::Create => "create",
        Action::Import => "import",
        Action::Destroy => "destroy",
        Action::Retain => "retain",
    }
}

/// A safety rail refused `action`, on either path: counted, logged, and the
/// note that says so returned (for the live pool's reason and event).
pub fn refused(ctx: &Context, action: Action, why: &str) -> String {
    ctx.metrics.rail_refusal(action_name(action), "refused");
    let note = format!(
        "the operator refused to {} the pool: {why}",
        action_name(action)
    );
    tracing::warn!(%note, "safety rail");
    note
}

/// The client of `node`, or the failed outcome recorded as `uid`'s last
/// operation when the node is not online.
fn client_or_failed(
    ctx: &Context,
    node: &str,
    uid: &str,
    action: Action,
) -> Result<NodeClient, Outcome> {
    ctx.registry.client(node).map_err(|err| {
        let error = OperationError {
            kind: ErrorKind::Unavailable,
            message: err.to_string(),
        };
        ctx.operations.record(uid, action, Some(error.clone()));
        Outcome::Failed(action, error)
    })
}

/// Brings the node's cached pool list up to date after an operation, so the
/// next observation sees the pool (or its absence) at once: the reply when
/// the call succeeded, a fresh list when it failed.
async fn update_cache<T>(
    ctx: &Context,
    node: &str,
    result: &Result<T, NodeError>,
    update: impl FnOnce(&T) -> PoolUpdate,
) {
    match result {
        Ok(reply) => ctx.registry.apply_update(node, update(reply)),
        Err(_) => {
            if let Err(err) = ctx.registry.refresh(node).await {
                tracing::debug!(%node, error = %err, "pool list refresh after an operation failed");
            }
        }
    }
}

/// Acts on a decision about a live resource.
pub async fn live(
    pool: &MayastorPool,
    obs: &Observation,
    decision: &Decision,
    ctx: &Context,
) -> Result<Outcome, Error> {
    match decision.action {
        Action::None | Action::Retain => Ok(Outcome::Nothing),
        Action::Destroy => Ok(Outcome::Refused(
            Action::Destroy,
            "a live resource names this pool; pools are destroyed only after their resource is deleted".into(),
        )),
        action @ (Action::Create | Action::Import) => {
            if !obs.conflicts.is_empty() {
                return Ok(Outcome::Refused(
                    action,
                    format!("its disks are claimed by {}", obs.conflicts.join(", ")),
                ));
            }
            let node = pool.effective_node().to_string();
            let disks = pool.effective_disks().to_vec();
            let name = pool.name_any();
            let uid = pool.uid().unwrap_or_default();
            let client = match client_or_failed(ctx, &node, &uid, action) {
                Ok(client) => client,
                Err(failed) => return Ok(failed),
            };
            // A CreatePool may format the disks (v0 has no import: its
            // CreatePool is what imports too): ask what they hold first.
            let may_format =
                action == Action::Create || client.api() == crate::nodes::client::ApiVersion::V0;
            // What the node said its devices hold, when asked: the check the
            // entries recorded ahead for other pools of the node pass too.
            let mut devices = None;
            if may_format && disk_safety::needs_check(&disks) {
                let timeout = ctx.registry.settings().rpc_timeout;
                let asked = std::time::Instant::now();
                let listed = client.list_block_devices(timeout).await;
                ctx.metrics.reconcile_step("disks", asked.elapsed());
                let refusal = match listed {
                    Ok(listed) => {
                        let refusal = disk_safety::refusal(&disks, &listed);
                        devices = Some(listed);
                        refusal
                    }
                    Err(err) => Some(disk_safety::unknown(&disks, &err.to_string())),
                };
                if let Some(why) = refusal {
                    return Ok(Outcome::Refused(action, why));
                }
            }
            // Durable before the node acts: a crash after CreatePool must not
            // leave a pool the operator would not know it created.
            let started = std::time::Instant::now();
            let entry = ledger_entry(pool, &node, &disks);
            let (ahead, coming) = if action == Action::Create {
                new_on_node(ctx, pool, devices.as_deref())
            } else {
                (Vec::new(), 0)
            };
            match ctx.ledger.record_with(entry, ahead, coming).await {
                Ok(()) => {}
                Err(full @ LedgerError::Full { .. }) => {
                    return Ok(Outcome::Refused(action, full.to_string()));
                }
                Err(err) => return Err(err.into()),
            }
            let recorded = started.elapsed();
            let load = match action {
                Action::Create => Load::Create,
                _ => Load::Import,
            };
            let timeout = ctx.registry.settings().probe_timeout;
            let result = pool_calls::load_pool(&client, load, &name, &disks, timeout).await;
            ctx.metrics.reconcile_step("ledger", recorded);
            ctx.metrics
                .reconcile_step("node", started.elapsed().saturating_sub(recorded));
            tracing::debug!(
                ledger_ms = recorded.as_millis() as u64,
                node_ms = (started.elapsed() - recorded).as_millis() as u64,
                "ledger written, node called"
            );
            ctx.metrics.node_operation(action_name(action), result.is_ok());
            update_cache(ctx, &node, &result, |reported| {
                PoolUpdate::Loaded(reported.clone())
            })
            .await;
            match result {
                Ok(_) => {
                    tracing::info!(%node, ?disks, action = action_name(action), "pool operation succeeded");
                    ctx.operations.record(&uid, action, None);
                    Ok(Outcome::Done(action))
                }
                Err(err) => {
                    tracing::warn!(%node, ?disks, action = action_name(action), error = %err, "pool operation failed");
                    let error = err.to_operation_error();
                    ctx.operations.record(&uid, action, Some(error.clone()));
                    Ok(Outcome::Failed(action, error))
                }
            }
        }
    }
}

/// The ledger entry of `pool` created on `node` and `disks`, with what the
/// policy will need of its metadata once it is deleted.
pub(crate) fn ledger_entry(pool: &MayastorPool, node: &str, disks: &[String]) -> LedgerEntry {
    let (labels, annotations) = last_seen(pool);
    LedgerEntry {
        pool: pool.name_any(),
        namespace: pool.namespace().unwrap_or_default(),
        uid: pool.uid().unwrap_or_default(),
        node: node.to_string(),
        disks: disks.to_vec(),
        labels,
        annotations,
        ..Default::default()
    }
}

/// What the ledger keeps of `pool`'s labels and annotations (bounded).
fn last_seen(pool: &MayastorPool) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    msp_policy_sdk::model::last_seen(pool.labels(), pool.annotations())
}

/// The other new pools of `pool`'s node that its ledger write can record
/// ahead of their own reconciles, and how many more new pools of the node
/// are not among them (their entries are about to follow: the write lingers
/// a moment for them). A pool is recorded ahead only when its own reconcile
/// would record the very same entry after passing the same checks: not
/// created (no cached placement) and not being deleted, no entry yet, its
/// node's pool list known and without it, no disk conflict, and its disks
/// exempt from the disk check or reported empty in `devices` (what this
/// reconcile's check just listed). Its own reconcile still checks the disks
/// again before its CreatePool.
fn new_on_node(
    ctx: &Context,
    pool: &MayastorPool,
    devices: Option<&[crate::nodes::client::BlockDeviceInfo]>,
) -> (Vec<LedgerEntry>, usize) {
    let node = pool.effective_node();
    let pools = ctx.pools.on_node(node);
    let listed = ctx.registry.view(node).pools;
    let entries = ctx.ledger.on_node(node);
    let (mut ahead, mut coming) = (Vec::new(), 0);
    for other in &pools {
        let reported_created = other
            .status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(|s| !matches!(s, crate::state::crd::PoolState::Pending));
        if other.placement_cached()
            || reported_created
            || other.metadata.uid == pool.metadata.uid
            || other.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let name = other.name_any();
        if entries.iter().any(|e| e.pool == name) {
            continue;
        }
        coming += 1;
        let Some(listed) = listed.as_deref() else {
            continue;
        };
        let disks = other.effective_disks();
        let checked = if disk_safety::needs_check(disks) {
            devices.is_some_and(|d| disk_safety::refusal(disks, d).is_none())
        } else {
            true
        };
        if !checked
            || listed.iter().any(|p| p.name == name)
            || !observe::conflicts(other, &pools, Some(listed), &entries).is_empty()
        {
            continue;
        }
        coming -= 1;
        ahead.push(ledger_entry(other, node, disks));
    }
    (ahead, coming)
}

/// Why destroying the pool of `entry` must not happen, if it must not.
pub fn destroy_refusal(
    entry: &LedgerEntry,
    live: &[std::sync::Arc<MayastorPool>],
    reported_disks: Option<&[String]>,
) -> Option<String> {
    if let Some(owner) = live
        .iter()
        .find(|p| p.name_any() == entry.pool && p.effective_node() == entry.node)
    {
        return Some(format!(
            "resource {}/{} names this pool",
            owner.namespace().unwrap_or_default(),
            owner.name_any()
        ));
    }
    // Reported disks are paths (`disk_path`): the ledger's are compared as
    // paths too (a `malloc:///m?size_mb=8` disk is reported as `/m`).
    if let Some(disks) = reported_disks
        && !disks
            .iter()
            .any(|d| entry.disks.iter().any(|e| disk_path(e) == *d))
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
        Action::Destroy => {
            let live = ctx.pools.all();
            let reported = obs.reported.as_ref().map(|p| p.disks.as_slice());
            if let Some(why) = destroy_refusal(entry, &live, reported) {
                if obs.reported.is_some() && live.iter().all(|p| p.name_any() != entry.pool) {
                    // Not the pool this operator made: forget it, never touch it.
                    ctx.ledger.remove(&entry.node, &entry.pool).await?;
                }
                return Ok(Outcome::Refused(Action::Destroy, why));
            }
            let client = match client_or_failed(ctx, &entry.node, &entry.uid, Action::Destroy) {
                Ok(client) => client,
                Err(failed) => return Ok(failed),
            };
            let timeout = ctx.registry.settings().probe_timeout;
            let asked = std::time::Instant::now();
            let result =
                pool_calls::destroy_pool(&client, &entry.pool, &entry.disks, entry.purge, timeout)
                    .await;
            // A kept pool's time is the rail's alone (the listing); a
            // destroyed one's includes the DestroyPool.
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
            let gone = match &result {
                Ok(Destroyed::Kept(contents)) => {
                    hold(entry, contents, ctx).await?;
                    return Ok(Outcome::Nothing);
                }
                Ok(Destroyed::Destroyed(went)) => Some(went.clone()),
                Ok(Destroyed::Gone) => Some(Vec::new()),
                Err(_) => None,
            };
            ctx.metrics.node_operation("destroy", result.is_ok());
            update_cache(ctx, &entry.node, &result, |_| {
                PoolUpdate::Gone(entry.pool.clone())
            })
            .await;
            match (gone, result) {
                (Some(went), _) => {
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
                    Ok(Outcome::Done(Action::Destroy))
                }
                (None, Err(err)) => {
                    tracing::warn!(node = %entry.node, pool = %entry.pool, error = %err, "destroy failed");
                    let error = err.to_operation_error();
                    ctx.operations
                        .record(&entry.uid, Action::Destroy, Some(error.clone()));
                    Ok(Outcome::Failed(Action::Destroy, error))
                }
                (None, Ok(_)) => Ok(Outcome::Nothing),
            }
        }
    }
}

/// Brings what the ledger entry of live resource `pool` keeps of the
/// resource up to date, in one write and only when it changed (a reconcile
/// with nothing new costs a map lookup):
/// - its labels and annotations as last seen, so that its observation once
///   deleted has them;
/// - whether its admin asked for a purge ([`PURGE_ANNOTATION`] =
///   [`data_safety::PURGE_VALUE`]), so that the purge holds when the resource
///   is deleted, even while the operator is down. Any other value is a
///   Warning Event and changes nothing.
pub async fn remember(pool: &MayastorPool, ctx: &Context) -> Result<(), Error> {
    let asked = data_safety::purge_asked(pool.annotations());
    if asked == Some(false) {
        let note = format!(
            "annotation {PURGE_ANNOTATION} is not {}: nothing changes; only that exact value \
             lets the pool be destroyed with its data when the resource is deleted",
            data_safety::PURGE_VALUE
        );
        crate::controller::report::publish(pool, ctx, true, "PurgeNotConfirmed", &note).await;
    }
    let uid = pool.uid().unwrap_or_default();
    let Some(entry) = ctx
        .ledger
        .get(pool.effective_node(), &pool.name_any())
        .filter(|e| e.uid == uid)
    else {
        return Ok(());
    };
    let (labels, annotations) = last_seen(pool);
    let purge = asked == Some(true);
    if entry.labels == labels && entry.annotations == annotations && entry.purge == purge {
        return Ok(());
    }
    let purge_changed = entry.purge != purge;
    ctx.ledger
        .record(
            LedgerEntry {
                labels,
                annotations,
                purge,
                ..entry.clone()
            },
            0,
        )
        .await?;
    if !purge_changed {
        return Ok(());
    }
    let note = if purge {
        format!(
            "purge recorded: when this resource is deleted, pool {} on node {} is destroyed with \
             every replica, snapshot and clone on it",
            entry.pool, entry.node
        )
    } else {
        "purge withdrawn: the pool is kept while it holds data".to_string()
    };
    tracing::info!(pool = %entry.pool, node = %entry.node, purge, "purge noted");
    crate::controller::report::publish(pool, ctx, false, "PurgeRecorded", &note).await;
    Ok(())
}

/// Keeps the pool of `entry`, which holds `contents` (or could not be
/// checked): the ledger entry stays, marked held; a Warning Event on the
/// deleted resource says what holds it and how to purge it. Both only when
/// what holds it changed, so a pool held for days costs one listing per
/// period and nothing more.
async fn hold(entry: &LedgerEntry, contents: &Contents, ctx: &Context) -> Result<(), Error> {
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
async fn publish_deleted(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::crd::MayastorPoolSpec;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            pool: "p".into(),
            namespace: "mayastor".into(),
            uid: "old".into(),
            node: "n1".into(),
            disks: vec!["/dev/loop0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn never_destroys_a_pool_a_live_resource_names() {
        let mut live = MayastorPool::new(
            "p",
            MayastorPoolSpec {
                node: "n1".into(),
                disks: vec!["/dev/loop0".into()],
            },
        );
        live.metadata.namespace = Some("mayastor".into());
        let live = vec![std::sync::Arc::new(live)];
        assert!(destroy_refusal(&entry(), &live, None).is_some());
        // Same name on another node is another pool.
        let mut other = (*live[0]).clone();
        other.spec.node = "n2".into();
        assert!(destroy_refusal(&entry(), &[std::sync::Arc::new(other)], None).is_none());
    }

    #[test]
    fn never_destroys_a_same_named_pool_on_other_disks() {
        let other = vec!["/dev/loop9".to_string()];
        assert!(destroy_refusal(&entry(), &[], Some(&other)).is_some());
        let same = vec!["/dev/loop0".to_string()];
        assert!(destroy_refusal(&entry(), &[], Some(&same)).is_none());
        assert!(destroy_refusal(&entry(), &[], None).is_none());
        // The ledger keeps the resource's disk URI; the node reports a path.
        let malloc = LedgerEntry {
            disks: vec!["malloc:///m1?size_mb=16".into()],
            ..entry()
        };
        assert!(destroy_refusal(&malloc, &[], Some(&["/m1".to_string()])).is_none());
        assert!(destroy_refusal(&malloc, &[], Some(&["/m2".to_string()])).is_some());
    }
}
