//! Apply: carries out the policy's action on the storage node, after the
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
//!   leaves a record, never an untracked pool, and before the disk check,
//!   so that the check's answer is at most one round trip old when
//!   CreatePool is sent;
//! - CreatePool and ImportPool carry the pool's uuid (v1): a pool of the
//!   name that the operator did not create, found on the disks, is never
//!   imported as the resource's, only adopted by the admin's annotation;
//!   a destroy touches only the pool of the recorded uuid
//!   ([`crate::nodes::pool_identity`]).

use std::collections::BTreeMap;

use kube::ResourceExt;
use msp_policy_sdk::model::{Action, Decision, ErrorKind, Observation, OperationError};

use super::context::Context;
use super::error::Error;
use super::observe::{self, takes_over};
use crate::nodes::client::{NodeClient, NodeError, disk_path};
use crate::nodes::data_safety::{self, Contents, PURGE_ANNOTATION};
use crate::nodes::disk_safety;
use crate::nodes::pool_calls::{self, Destroyed, Load, Loaded};
use crate::nodes::pool_identity::{self, Identity};
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
            let prior = ctx.ledger.get(&node, &name);
            if let Some(why) = prior.as_ref().and_then(|p| other_resources(pool, p)) {
                return Ok(Outcome::Refused(action, why));
            }
            let client = match client_or_failed(ctx, &node, &uid, action) {
                Ok(client) => client,
                Err(failed) => return Ok(failed),
            };
            // Which pool on the disks is this resource's: by uuid, when the
            // node has them (else pools are matched by name and disks).
            let by_uuid = client.knows_pool_uuids();
            let adopt = match pool_identity::adoption(pool.annotations()) {
                Some(Err(why)) => return Ok(Outcome::Refused(action, why)),
                Some(Ok(uuid)) => Some(uuid),
                None => None,
            };
            let identity = if by_uuid {
                pool_identity::choose(
                    &uid,
                    &disks,
                    prior.as_ref(),
                    adopt.as_deref(),
                    action == Action::Create,
                )
            } else {
                Identity::Unknown
            };
            // An adoption imports only: a mistyped uuid formats nothing.
            let load = match (action, &identity) {
                (_, Identity::Adopted(_)) | (Action::Import, _) => Load::Import,
                _ => Load::Create,
            };
            // Durable before the node acts: a crash after CreatePool must not
            // leave a pool the operator would not know it created. Recorded
            // before the disk check, so that the check's answer is at most
            // one round trip old when CreatePool is sent: a filesystem made
            // while the ledger write was in flight is seen.
            let started = std::time::Instant::now();
            let entry = LedgerEntry {
                pool_uuid: identity.uuid().map(str::to_string),
                ..ledger_entry(pool, &node, &disks)
            };
            let (ahead, coming) = if action == Action::Create {
                new_on_node(ctx, pool, by_uuid)
            } else {
                (Vec::new(), 0)
            };
            match ctx.ledger.record_with(entry.clone(), ahead, coming).await {
                Ok(()) => {}
                Err(full @ LedgerError::Full { .. }) => {
                    return Ok(Outcome::Refused(action, full.to_string()));
                }
                Err(err) => return Err(err.into()),
            }
            ctx.metrics.reconcile_step("ledger", started.elapsed());
            // A load that may format the disks: ask what they hold, last.
            if client.may_format(load) && disk_safety::needs_check(&disks) {
                let timeout = ctx.registry.settings().rpc_timeout;
                let asked = std::time::Instant::now();
                let listed = client.list_block_devices(timeout).await;
                ctx.metrics.reconcile_step("disks", asked.elapsed());
                let refusal = match listed {
                    Ok(listed) => disk_safety::refusal(&disks, &listed),
                    Err(err) => Some(disk_safety::unknown(&disks, &err.to_string())),
                };
                if let Some(why) = refusal {
                    if load == Load::Create {
                        // Nothing was created: no record of it stays (a
                        // pool taken over keeps its old one).
                        restore(ctx, &entry, prior.filter(|p| p.uid != uid)).await?;
                    }
                    return Ok(Outcome::Refused(action, why));
                }
            }
            let sent = std::time::Instant::now();
            let timeout = ctx.registry.settings().probe_timeout;
            let result =
                pool_calls::load_pool(&client, load, &name, identity.uuid(), &disks, timeout).await;
            ctx.metrics.reconcile_step("node", sent.elapsed());
            tracing::debug!(
                ledger_ms = (sent - started).as_millis() as u64,
                node_ms = sent.elapsed().as_millis() as u64,
                "ledger written, disks checked, node called"
            );
            let result = match result {
                Ok(Loaded::Foreign(found)) => {
                    // Not this resource's pool: the entry goes back to what
                    // it was, and nothing of that pool is recorded.
                    tracing::warn!(%node, pool = %name, uuid = %found, "a pool this operator did not create is on the disks");
                    restore(ctx, &entry, prior).await?;
                    let why = pool_identity::foreign_note(&name, &node, &disks, &found);
                    return Ok(Outcome::Refused(action, why));
                }
                Ok(Loaded::Pool(reported)) => Ok(reported),
                Err(err) => Err(err),
            };
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

/// Why live resource `pool` must not record its pool over `entry`, the
/// ledger's record of a pool of the same name on its node made for another
/// resource: the entry is never overwritten (its pool would be forgotten,
/// never destroyed). Only a resource re-created under the same name in the
/// same namespace, on the same disks, takes the pool over (the admin's way
/// to keep a pool across a re-create). On other disks it waits until the old
/// pool is destroyed (a node holds one pool of a name), or held: then the
/// reason says so.
fn other_resources(pool: &MayastorPool, entry: &LedgerEntry) -> Option<String> {
    let namespace = pool.namespace().unwrap_or_default();
    if pool.uid().as_deref() == Some(entry.uid.as_str()) || takes_over(pool, entry) {
        return None;
    }
    let whose = if entry.namespace == namespace {
        format!(
            "the deleted resource {namespace}/{} (uid {})",
            entry.pool, entry.uid
        )
    } else {
        format!(
            "resource {}/{} (uid {})",
            entry.namespace, entry.pool, entry.uid
        )
    };
    let held = match &entry.held {
        Some(held) => format!("; it is kept because {}", data_safety::what_holds(held)),
        None => String::new(),
    };
    Some(format!(
        "node {} already has pool {} of {whose} on {}, and a node holds one pool of a name: \
         this one is created once that pool is destroyed{held}",
        entry.node,
        entry.pool,
        entry.disks.join(", ")
    ))
}

/// Puts the ledger entry of `entry`'s pool back to `prior` (none: removed),
/// after a load that found another pool than the one `entry` recorded.
async fn restore(
    ctx: &Context,
    entry: &LedgerEntry,
    prior: Option<LedgerEntry>,
) -> Result<(), Error> {
    match prior {
        Some(prior) if prior != *entry => ctx.ledger.record(prior, 0).await?,
        Some(_) => {}
        None => ctx.ledger.remove(&entry.node, &entry.pool).await?,
    }
    Ok(())
}

/// What the ledger keeps of `pool`'s labels and annotations (bounded).
fn last_seen(pool: &MayastorPool) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    msp_policy_sdk::model::last_seen(pool.labels(), pool.annotations())
}

/// The other new pools of `pool`'s node that its ledger write can record
/// ahead of their own reconciles, and how many more new pools of the node
/// are not among them (their entries are about to follow: the write lingers
/// a moment for them). A pool is recorded ahead only when its own reconcile
/// would record the very same entry (it records before its disk check): not
/// created (no cached placement) and not being deleted, no entry yet, its
/// node's pool list known and without it, and no disk conflict. Its own
/// reconcile then checks its disks before its CreatePool, and drops the
/// entry when the check refuses. `by_uuid`: the node has pool uuids (v1).
fn new_on_node(ctx: &Context, pool: &MayastorPool, by_uuid: bool) -> (Vec<LedgerEntry>, usize) {
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
        if listed.iter().any(|p| p.name == name)
            || !observe::conflicts(other, &pools, Some(listed), &entries).is_empty()
        {
            continue;
        }
        coming -= 1;
        // The uuid its own reconcile will find recorded and create with.
        ahead.push(LedgerEntry {
            pool_uuid: by_uuid.then(pool_identity::new_uuid),
            ..ledger_entry(other, node, disks)
        });
    }
    (ahead, coming)
}

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
            && pool_calls::overlap(p.effective_disks(), &entry.disks)
    }) {
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
            let result = pool_calls::destroy_pool(
                &client,
                &entry.pool,
                entry.pool_uuid.as_deref(),
                &entry.disks,
                entry.purge,
                timeout,
            )
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
                Ok(Destroyed::Other(what)) => {
                    // Not the pool this operator made: forget it, never touch it.
                    ctx.ledger.remove(&entry.node, &entry.pool).await?;
                    return Ok(Outcome::Refused(
                        Action::Destroy,
                        format!(
                            "the node's pool {} {what}, but this operator created it on {}{}",
                            entry.pool,
                            entry.disks.join(", "),
                            entry
                                .pool_uuid
                                .as_deref()
                                .map(|u| format!(" with uuid {u}"))
                                .unwrap_or_default()
                        ),
                    ));
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
///   Warning Event and changes nothing;
/// - its uid, when it is a deleted resource re-created under the same name
///   on the same disks: it takes the pool over (issue 23 item 2), so it
///   reports the pool as its own and the sweep does not destroy it for the
///   old uid.
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
    let Some(current) = ctx.ledger.get(pool.effective_node(), &pool.name_any()) else {
        return Ok(());
    };
    let entry = match current.clone() {
        entry if entry.uid == uid => entry,
        // Re-created on the same disks: the pool is this resource's now
        // (with what was created: node, disks, uuid), and live again.
        entry if takes_over(pool, &entry) => {
            tracing::info!(pool = %entry.pool, node = %entry.node, old_uid = %entry.uid,
                "resource re-created on the same disks: it takes the pool over");
            LedgerEntry {
                uid: uid.clone(),
                held: None,
                ..entry
            }
        }
        _ => return Ok(()),
    };
    let (labels, annotations) = last_seen(pool);
    let purge = asked == Some(true);
    let updated = LedgerEntry {
        labels,
        annotations,
        purge,
        ..entry.clone()
    };
    if current == updated {
        return Ok(());
    }
    let purge_changed = entry.purge != purge;
    ctx.ledger.record(updated, 0).await?;
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

    fn live_pool(uid: &str, namespace: &str, disk: &str) -> MayastorPool {
        let mut p = MayastorPool::new(
            "p",
            MayastorPoolSpec {
                node: "n1".into(),
                disks: vec![disk.into()],
            },
        );
        p.metadata.namespace = Some(namespace.into());
        p.metadata.uid = Some(uid.into());
        p
    }

    /// Issue 23 item 2: a ledger entry is never overwritten by another
    /// resource's; only a re-create on the same disks takes the pool over.
    #[test]
    fn another_resources_entry_is_taken_over_only_from_the_same_disks() {
        let old = entry();
        // Re-created in the same namespace on the same disk: takes over.
        let same = live_pool("new", "mayastor", "/dev/loop0");
        assert!(takes_over(&same, &old));
        assert_eq!(other_resources(&same, &old), None);
        // On another disk: waits for the old pool, saying whose it is.
        let elsewhere = live_pool("new", "mayastor", "/dev/loop1");
        assert!(!takes_over(&elsewhere, &old));
        let why = other_resources(&elsewhere, &old).expect("waits");
        assert!(
            why.contains("deleted resource mayastor/p (uid old)"),
            "{why}"
        );
        assert!(why.contains("/dev/loop0"), "{why}");
        // Another namespace's pool of the name is never taken over.
        let other_ns = live_pool("new", "other", "/dev/loop0");
        assert!(!takes_over(&other_ns, &old));
        assert!(other_resources(&other_ns, &old).is_some());
        // Its own entry.
        assert_eq!(
            other_resources(&live_pool("old", "mayastor", "/dev/loop1"), &old),
            None
        );
        // A live resource naming the pool on other disks does not hold back
        // the old pool's destroy (it is waiting for it).
        let arc = std::sync::Arc::new(elsewhere);
        assert!(destroy_refusal(&old, &[arc], None).is_none());
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

    /// A storage node that logs the calls a create makes into `log`.
    #[derive(Clone)]
    struct LoggingNode(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

    impl LoggingNode {
        fn push(&self, what: &'static str) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }
    }

    #[tonic::async_trait]
    impl msp_proto::v1::host_rpc_server::HostRpc for LoggingNode {
        async fn list_block_devices(
            &self,
            _: tonic::Request<msp_proto::v1::ListBlockDevicesRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::ListBlockDevicesResponse>, tonic::Status>
        {
            self.push("disk check");
            Ok(tonic::Response::new(
                msp_proto::v1::ListBlockDevicesResponse {
                    devices: vec![msp_proto::v1::BlockDevice {
                        devname: "/dev/loop0".into(),
                        available: true,
                        ..Default::default()
                    }],
                },
            ))
        }
    }

    #[tonic::async_trait]
    impl msp_proto::v1::pool_rpc_server::PoolRpc for LoggingNode {
        async fn create_pool(
            &self,
            req: tonic::Request<msp_proto::v1::CreatePoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::Pool>, tonic::Status> {
            self.push("create");
            let req = req.into_inner();
            Ok(tonic::Response::new(msp_proto::v1::Pool {
                uuid: req.uuid.unwrap_or_default(),
                name: req.name,
                disks: req.disks,
                state: 1,
                ..Default::default()
            }))
        }
        async fn destroy_pool(
            &self,
            _: tonic::Request<msp_proto::v1::DestroyPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            Err(tonic::Status::unimplemented("destroy"))
        }
        async fn export_pool(
            &self,
            _: tonic::Request<msp_proto::v1::ExportPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            Err(tonic::Status::unimplemented("export"))
        }
        async fn import_pool(
            &self,
            _: tonic::Request<msp_proto::v1::ImportPoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::Pool>, tonic::Status> {
            Err(tonic::Status::unimplemented("import"))
        }
        async fn list_pools(
            &self,
            _: tonic::Request<msp_proto::v1::ListPoolOptions>,
        ) -> Result<tonic::Response<msp_proto::v1::ListPoolsResponse>, tonic::Status> {
            Ok(tonic::Response::new(Default::default()))
        }
        async fn grow_pool(
            &self,
            _: tonic::Request<msp_proto::v1::GrowPoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::GrowPoolResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("grow"))
        }
    }

    /// Issue 23 item 6: the ledger write comes before the disk check, and
    /// the check right before CreatePool, so the check's answer is at most
    /// one round trip old when the node may format (a filesystem made while
    /// a slow ledger write was in flight is seen). Also: the CreatePool
    /// carries the uuid the entry records (item 5).
    #[tokio::test]
    async fn a_create_records_then_checks_the_disks_then_creates() {
        use crate::controller::fixtures::{Fixture, pool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let node = LoggingNode(Default::default());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(msp_proto::v1::host_rpc_server::HostRpcServer::new(
                    node.clone(),
                ))
                .add_service(msp_proto::v1::pool_rpc_server::PoolRpcServer::new(
                    node.clone(),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let (fx, mut api) = Fixture::with_api_server();
        let ctx = fx.ctx;
        ctx.registry
            .register(&msp_proto::v1::RegisterRequest {
                id: "n1".into(),
                grpc_endpoint: addr.to_string(),
                api_version: vec![1],
                ..Default::default()
            })
            .expect("registered");
        let p = pool("n1");
        let obs = observe::observe(&p, &ctx.sources());
        let decision = Decision {
            action: Action::Create,
            state: msp_policy_sdk::model::PoolState::Pending,
            reason: String::new(),
            requeue_after_ms: None,
            event: None,
        };
        let apiserver = async {
            let sent = api
                .next(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "msp-ledger-n1", "namespace": "mayastor"}}))
                .await;
            node.push("ledger");
            sent
        };
        let (outcome, sent) = tokio::join!(live(&p, &obs, &decision, &ctx), apiserver);
        server.abort();
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        let log = node.0.lock().expect("log").clone();
        assert_eq!(log, vec!["ledger", "disk check", "create"]);
        assert_eq!(sent.method, http::Method::PATCH);
        let recorded: serde_json::Value =
            serde_json::from_str(sent.body["data"]["p"].as_str().expect("the entry of p"))
                .expect("an entry");
        let uuid = recorded["poolUuid"].as_str().expect("a pool uuid recorded");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
    }
}
