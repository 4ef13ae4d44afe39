//! The live resource's path: its ledger record kept up to date, the
//! renames of its disks followed, and a create or an import taken as far
//! as the rails let it go.

use kube::ResourceExt;
use msp_policy_sdk::model::{Action, Decision, Observation};

use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::observe::{self, takes_over};
use crate::controller::operations::operation_error;
use crate::nodes::client::{BlockDeviceInfo, NodeClient, NodeError};
use crate::nodes::data_safety::{self, PURGE_ANNOTATION};
use crate::nodes::disk_identity;
use crate::nodes::disk_safety;
use crate::nodes::pool_calls::{self, Load, Loaded};
use crate::nodes::pool_identity::{self, Identity};
use crate::nodes::registry::PoolUpdate;
use crate::state::crd::MayastorPool;
use crate::state::ledger::{LedgerEntry, LedgerError};

use super::{Outcome, Stop, action_name, client_or_failed, last_seen, ledger_entry, update_cache};

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
        action @ (Action::Create | Action::Import) => match load(pool, obs, action, ctx).await {
            Ok(outcome) | Err(Stop::At(outcome)) => Ok(outcome),
            Err(Stop::Error(err)) => Err(err),
        },
    }
}

/// A create or an import of a live resource's pool, as far as the rails let
/// it go: what the ledger records, then the disks, then the node call.
pub(super) async fn load(
    pool: &MayastorPool,
    obs: &Observation,
    action: Action,
    ctx: &Context,
) -> Result<Outcome, Stop> {
    let mut loading = Loading::of(pool, obs, action, ctx)?;
    loading.check_identity(pool, ctx).await?;
    let started = std::time::Instant::now();
    let wrote = loading.record(pool, ctx).await?;
    ctx.metrics.reconcile_step("ledger", started.elapsed());
    loading.check_disks(ctx, wrote).await?;
    let sent = std::time::Instant::now();
    let outcome = loading.call(ctx).await;
    tracing::debug!(
        ledger_ms = (sent - started).as_millis() as u64,
        node_ms = sent.elapsed().as_millis() as u64,
        "ledger written, disks checked, node called"
    );
    outcome
}

/// A create or an import the rails that need no node call let through:
/// what to load, where, with which uuid, and the ledger entry to record.
pub(super) struct Loading {
    action: Action,
    load: Load,
    uid: String,
    client: NodeClient,
    identity: Identity,
    /// The ledger's entry of the pool's name on the node before this load.
    prior: Option<LedgerEntry>,
    /// What the ledger records before the node acts.
    entry: LedgerEntry,
    /// The node's block devices as the identity check listed them, with
    /// nothing written since when the disk check reuses them.
    devices: Option<Vec<BlockDeviceInfo>>,
    /// `devices` were listed by this load (not a listing a moment old).
    fresh: bool,
    /// The entry's pins were taken by this load (a create with nothing
    /// pinned), not found recorded.
    pinned_here: bool,
}

impl Loading {
    /// The load `action` on `pool` calls for, unless its disks are claimed
    /// ([`observe::conflicts`]), the ledger's entry of its name is another
    /// resource's ([`other_resources`]), its node is not online, or its
    /// adoption annotation is no uuid.
    fn of(
        pool: &MayastorPool,
        obs: &Observation,
        action: Action,
        ctx: &Context,
    ) -> Result<Loading, Stop> {
        let claimed = (!obs.conflicts.is_empty())
            .then(|| format!("its disks are claimed by {}", obs.conflicts.join(", ")));
        Stop::refused_if(action, claimed)?;
        let node = pool.effective_node();
        let disks = pool.effective_disks();
        let uid = pool.uid().unwrap_or_default();
        let prior = ctx.ledger.get(node, &pool.name_any());
        Stop::refused_if(
            action,
            prior.as_ref().and_then(|p| other_resources(pool, p)),
        )?;
        let client = client_or_failed(ctx, node, &uid, action).map_err(Stop::At)?;
        let adopt = pool_identity::adoption(pool.annotations())
            .transpose()
            .map_err(|why| Stop::refused(action, why))?;
        // Which pool on the disks is this resource's: by uuid, when the
        // node has them (else pools are matched by name and disks).
        let identity = if client.knows_pool_uuids() {
            let create = action == Action::Create;
            pool_identity::choose(&uid, disks, prior.as_ref(), adopt.as_deref(), create)
        } else {
            Identity::Unknown
        };
        // An adoption imports only: a mistyped uuid formats nothing.
        let load = match (action, &identity) {
            (_, Identity::Adopted(_)) | (Action::Import, _) => Load::Import,
            _ => Load::Create,
        };
        let entry = LedgerEntry {
            pool_uuid: identity.uuid().map(str::to_string),
            ..ledger_entry(pool, node, disks)
        };
        Ok(Loading {
            action,
            load,
            uid,
            client,
            identity,
            prior,
            entry,
            devices: None,
            fresh: false,
            pinned_here: false,
        })
    }

    /// Resolves the disks on the node and compares them with what the
    /// ledger pinned ([`disk_identity`]): another disk under a path, or a
    /// node answer that cannot tell, and nothing is called. What the entry
    /// records: the pins as they were, or for a first create the disks as
    /// listed now. A kernel name in the spec is pointed out once.
    async fn check_identity(&mut self, pool: &MayastorPool, ctx: &Context) -> Result<(), Stop> {
        let disks = self.entry.disks.clone();
        if !disk_safety::needs_check(&disks) {
            return Ok(());
        }
        // The pins of this pool's entry (its own, or the one it takes over).
        let pinned = self
            .prior
            .as_ref()
            .filter(|p| p.uid == self.uid || takes_over(pool, p))
            .map(|p| p.disk_ids.clone())
            .unwrap_or_default();
        let node = self.entry.node.clone();
        let asked = std::time::Instant::now();
        // A create with nothing pinned only pins: a listing of the node a
        // moment old will do when it lists every disk (the disk check's
        // fresh listing, which such a create always makes, pins them again
        // when it shows them otherwise: a link udev made since).
        let recent = (!disk_identity::identified(&pinned) && self.client.may_format(self.load))
            .then(|| ctx.recent_devices(&node))
            .flatten()
            .filter(|devices| disk_identity::lists_all(&disks, devices));
        let listed = match recent {
            Some(devices) => Ok(devices),
            None => {
                let listed = self.list(ctx).await;
                self.fresh = listed.is_ok();
                listed.map_err(|e| e.to_string())
            }
        };
        let refusal =
            disk_identity::refusal(&disks, &pinned, listed.as_deref().map_err(String::as_str));
        ctx.metrics.reconcile_step("identity", asked.elapsed());
        Stop::refused_if(self.action, refusal)?;
        let devices = listed.ok();
        if let Some(devices) = &devices {
            tell_kernel_names(pool, &disks, devices, ctx).await;
        }
        let create = self.action == Action::Create;
        self.entry.disk_ids = disk_identity::to_record(&disks, &pinned, devices.as_deref(), create);
        self.pinned_here = create && !disk_identity::identified(&pinned);
        self.devices = devices;
        Ok(())
    }

    /// Records the entry, durable before the node acts: a crash after
    /// CreatePool must not leave a pool the operator would not know it
    /// created. Recorded before the disk check, so that the check's answer
    /// is at most one round trip old when CreatePool is sent: a filesystem
    /// made while the ledger write was in flight is seen. A create records
    /// the node's other new pools with it ([`new_on_node`]).
    /// True when it wrote (the entry or one ahead was new).
    async fn record(&self, pool: &MayastorPool, ctx: &Context) -> Result<bool, Stop> {
        let (mut ahead, coming) = if self.action == Action::Create {
            new_on_node(ctx, pool, self.client.knows_pool_uuids())
        } else {
            (Vec::new(), 0)
        };
        // Pinned from the same listing as this pool's own.
        if let Some(devices) = &self.devices {
            for entry in &mut ahead {
                entry.disk_ids = disk_identity::pin(&entry.disks, devices);
            }
        }
        let wrote = !ahead.is_empty() || self.prior.as_ref() != Some(&self.entry);
        match ctx
            .ledger
            .record_with(self.entry.clone(), ahead, coming)
            .await
        {
            Ok(()) => Ok(wrote),
            Err(full @ LedgerError::Full { .. }) => {
                Err(Stop::refused(self.action, full.to_string()))
            }
            Err(err) => Err(Stop::Error(err.into())),
        }
    }

    /// Asks the node what the disks hold, last before a load that may
    /// format them ([`disk_safety`]); a refusal drops what [`Self::record`]
    /// recorded of a create (a pool taken over keeps its old record).
    /// `wrote`: the ledger was written since the identity check listed the
    /// devices; else that listing is as fresh and is used again.
    /// Pins taken here from a listing older than this one (a moment old,
    /// or made before the ledger write) that differ from what the node
    /// lists now (a link udev made since) are recorded again, and the
    /// devices listed once more for the check.
    async fn check_disks(&mut self, ctx: &Context, wrote: bool) -> Result<(), Stop> {
        let disks = self.entry.disks.clone();
        let disks = &disks;
        let refusal = if self.client.may_format(self.load) && disk_safety::needs_check(disks) {
            let asked = std::time::Instant::now();
            let mut listed = match (&self.devices, self.fresh && !wrote) {
                (Some(devices), true) => Ok(devices.clone()),
                _ => self.list(ctx).await,
            };
            if let Ok(devices) = &listed
                && self.pinned_here
            {
                let now = disk_identity::pin(disks, devices);
                if now != self.entry.disk_ids {
                    tracing::debug!(was = ?self.entry.disk_ids, ?now, "pinned again from the node's answer now");
                    self.entry.disk_ids = now;
                    ctx.ledger.record(self.entry.clone(), 0).await?;
                    listed = self.list(ctx).await;
                }
            }
            ctx.metrics.reconcile_step("disks", asked.elapsed());
            match listed {
                // The disks pinned from the first listing are the ones
                // listed now (a swap in between is seen).
                Ok(listed) => disk_identity::refusal(disks, &self.entry.disk_ids, Ok(&listed))
                    .or_else(|| disk_safety::refusal(disks, &listed)),
                Err(err) => Some(disk_safety::unknown(disks, &err.to_string())),
            }
        } else {
            None
        };
        if refusal.is_some() && self.load == Load::Create {
            let prior = self.prior.clone().filter(|p| p.uid != self.uid);
            restore(ctx, &self.entry, prior).await?;
        }
        Stop::refused_if(self.action, refusal)
    }

    /// The node's block devices, listed now (and noted as its latest).
    async fn list(&self, ctx: &Context) -> Result<Vec<BlockDeviceInfo>, NodeError> {
        let timeout = ctx.registry.settings().rpc_timeout;
        let listed = self.client.list_block_devices(timeout).await;
        if let Ok(devices) = &listed {
            ctx.note_devices(&self.entry.node, devices);
        }
        listed
    }

    /// The node call, its result in the node's cached pool list and as the
    /// resource's last operation.
    async fn call(&self, ctx: &Context) -> Result<Outcome, Stop> {
        let (action, entry) = (self.action, &self.entry);
        let (node, name, disks) = (&entry.node, &entry.pool, &entry.disks);
        let sent = std::time::Instant::now();
        let timeout = ctx.registry.settings().probe_timeout;
        let uuid = self.identity.uuid();
        let result =
            pool_calls::load_pool(&self.client, self.load, name, uuid, disks, timeout).await;
        ctx.metrics.reconcile_step("node", sent.elapsed());
        let result = match result {
            Ok(Loaded::Foreign(found)) => Err(self.foreign(ctx, &found).await)?,
            Ok(Loaded::Pool(reported)) => Ok(reported),
            Err(err) => Err(err),
        };
        ctx.metrics
            .node_operation(action_name(action), result.is_ok());
        update_cache(ctx, node, &result, |reported| {
            PoolUpdate::Loaded(reported.clone())
        })
        .await;
        let error = match result {
            Ok(_) => {
                tracing::info!(%node, ?disks, action = action_name(action), "pool operation succeeded");
                self.pin_after_import(ctx).await?;
                None
            }
            Err(err) => {
                tracing::warn!(%node, ?disks, action = action_name(action), error = %err, "pool operation failed");
                Some(operation_error(&err))
            }
        };
        ctx.operations.record(&self.uid, action, error.clone());
        Ok(match error {
            None => Outcome::Done(action),
            Some(error) => Outcome::Failed(action, error),
        })
    }

    /// An import found the pool on disks nothing pinned (an entry written
    /// before pins were kept, or by a version that dropped them): pinned
    /// now, from the listing before the import.
    async fn pin_after_import(&self, ctx: &Context) -> Result<(), Stop> {
        let Some(devices) = &self.devices else {
            return Ok(());
        };
        if self.load != Load::Import {
            return Ok(());
        }
        let entry = &self.entry;
        if let Some(pins) = disk_identity::after_import(&entry.disks, &entry.disk_ids, devices) {
            let pinned = LedgerEntry {
                disk_ids: pins,
                ..entry.clone()
            };
            ctx.ledger.record(pinned, 0).await?;
        }
        Ok(())
    }

    /// The load found `found`, a pool of another uuid, on the disks: not
    /// this resource's pool. The entry goes back to what it was, and
    /// nothing of that pool is recorded.
    async fn foreign(&self, ctx: &Context, found: &str) -> Stop {
        let (node, name, disks) = (&self.entry.node, &self.entry.pool, &self.entry.disks);
        tracing::warn!(%node, pool = %name, uuid = %found, "a pool this operator did not create is on the disks");
        match restore(ctx, &self.entry, self.prior.clone()).await {
            Ok(()) => Stop::refused(
                self.action,
                pool_identity::foreign_note(name, node, disks, found),
            ),
            Err(err) => Stop::Error(err),
        }
    }
}

/// Points out, once per resource, a kernel name among `disks` (a Normal
/// Event naming the persistent link the node reports for it).
pub(super) async fn tell_kernel_names(
    pool: &MayastorPool,
    disks: &[String],
    devices: &[BlockDeviceInfo],
    ctx: &Context,
) {
    if let Some(note) = disk_identity::unstable_note(disks, devices)
        && ctx.first_kernel_note(&pool.uid().unwrap_or_default())
    {
        crate::controller::report::publish(pool, ctx, false, "KernelDiskName", &note).await;
    }
}

/// Follows an edit of created `pool`'s spec.disks to other names of its
/// disks: when the node resolves each new name to a disk the ledger pinned
/// for the pool, each once ([`disk_identity::renamed`]), the ledger entry
/// and `status.disks` take the new names (the old ones kept as aliases) and
/// a Normal Event says so; the pool is not touched (the node is only asked
/// for its devices). The resource as it is now, or `None` when there is no
/// such edit or it names other disks (ignored, as any spec edit after
/// creation: the policy's reason says so; not asked again until edited
/// again).
pub async fn follow_rename(
    pool: &MayastorPool,
    ctx: &Context,
) -> Result<Option<MayastorPool>, Error> {
    let Some(status) = pool.status.as_ref() else {
        return Ok(None);
    };
    let (Some(node), Some(old)) = (status.node.as_deref(), status.disks.as_deref()) else {
        return Ok(None);
    };
    let new = &pool.spec.disks;
    let uid = pool.uid().unwrap_or_default();
    if node != pool.spec.node || old == new.as_slice() || ctx.other_disks_known(&uid, new) {
        return Ok(None);
    }
    let Some(entry) = ctx
        .ledger
        .get(node, &pool.name_any())
        .filter(|e| e.uid == uid && disk_identity::identified(&e.disk_ids))
    else {
        return Ok(None);
    };
    let Ok(client) = ctx.registry.client(node) else {
        return Ok(None);
    };
    let timeout = ctx.registry.settings().rpc_timeout;
    let asked = std::time::Instant::now();
    let listed = client.list_block_devices(timeout).await;
    ctx.metrics.reconcile_step("identity", asked.elapsed());
    let devices = match listed {
        Ok(devices) => devices,
        Err(err) => {
            tracing::debug!(error = %err, "spec.disks edited; the node could not list its devices: asked again later");
            return Ok(None);
        }
    };
    let pins = match disk_identity::renamed(old, new, &entry.disk_ids, &devices) {
        Ok(pins) => pins,
        Err(why) => {
            tracing::info!(%why, "spec.disks edited to other disks: ignored");
            ctx.note_other_disks(&uid, new);
            return Ok(None);
        }
    };
    ctx.ledger
        .record(
            LedgerEntry {
                disks: new.clone(),
                disk_ids: pins.clone(),
                ..entry
            },
            0,
        )
        .await?;
    let mut view = pool.clone();
    let mut renamed = status.clone();
    renamed.disks = Some(new.clone());
    let shown = disk_identity::shown(&pins);
    renamed.disk_ids = (!shown.is_empty()).then_some(shown);
    crate::controller::report::write_status(pool, &renamed, ctx).await?;
    view.status = Some(renamed);
    let note = format!(
        "spec.disks now names {}, the same disks as {} by the node's answer: status and the \
         ledger follow, the pool was not touched",
        new.join(", "),
        old.join(", ")
    );
    tracing::info!(%note, "path edit followed");
    crate::controller::report::publish(pool, ctx, false, "DisksRenamed", &note).await;
    Ok(Some(view))
}

/// Why live resource `pool` must not record its pool over `entry`, the
/// ledger's record of a pool of the same name on its node made for another
/// resource: the entry is never overwritten (its pool would be forgotten,
/// never destroyed). Only a resource re-created under the same name in the
/// same namespace, on the same disks, takes the pool over (the admin's way
/// to keep a pool across a re-create). On other disks it waits until the old
/// pool is destroyed (a node holds one pool of a name), or held: then the
/// reason says so.
pub(super) fn other_resources(pool: &MayastorPool, entry: &LedgerEntry) -> Option<String> {
    (!observe::owns(pool, entry)).then(|| waiting_for(pool, entry))
}

/// The reason of live resource `pool` waiting for the pool of `entry`,
/// another resource's, to be destroyed.
pub(super) fn waiting_for(pool: &MayastorPool, entry: &LedgerEntry) -> String {
    let namespace = pool.namespace().unwrap_or_default();
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
    format!(
        "node {} already has pool {} of {whose} on {}, and a node holds one pool of a name: \
         this one is created once that pool is destroyed{held}",
        entry.node,
        entry.pool,
        entry.disks.join(", ")
    )
}

/// Puts the ledger entry of `entry`'s pool back to `prior` (none: removed),
/// after a load that found another pool than the one `entry` recorded.
pub(super) async fn restore(
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

/// The other new pools of `pool`'s node that its ledger write can record
/// ahead of their own reconciles, and how many more new pools of the node
/// are not among them (their entries are about to follow: the write lingers
/// a moment for them). A pool is recorded ahead only when its own reconcile
/// would record the very same entry (it records before its disk check): not
/// being deleted, no entry of its name yet, and, as its own observation
/// says, not created ([`Observation::was_created`], the one definition), its
/// node's pool list known and without it, and no disk conflict
/// ([`observe::conflicts`]). Its own reconcile then checks its disks before
/// its CreatePool, and drops the entry when the check refuses. `by_uuid`:
/// the node has pool uuids (v1).
pub(super) fn new_on_node(
    ctx: &Context,
    pool: &MayastorPool,
    by_uuid: bool,
) -> (Vec<LedgerEntry>, usize) {
    let node = pool.effective_node();
    let listed = ctx.registry.view(node).pools;
    let entries = ctx.ledger.on_node(node);
    let src = ctx.sources();
    let (mut ahead, mut coming) = (Vec::new(), 0);
    for other in ctx.pools.on_node(node) {
        let name = other.name_any();
        if other.metadata.uid == pool.metadata.uid
            || other.metadata.deletion_timestamp.is_some()
            || entries.iter().any(|e| e.pool == name)
        {
            continue;
        }
        let obs = observe::observe(&other, &src);
        if obs.was_created() {
            continue;
        }
        let free = obs.pools_known
            && obs.conflicts.is_empty()
            && listed.iter().flatten().all(|p| p.name != name);
        if free {
            // The uuid its own reconcile will find recorded and create with.
            ahead.push(LedgerEntry {
                pool_uuid: by_uuid.then(pool_identity::new_uuid),
                ..ledger_entry(&other, node, other.effective_disks())
            });
        } else {
            coming += 1;
        }
    }
    (ahead, coming)
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
    let current = ctx.ledger.get(pool.effective_node(), &pool.name_any());
    let update = current.and_then(|current| remembered(pool, current, asked == Some(true)));
    if let Some((updated, purge_changed)) = update {
        ctx.ledger.record(updated.clone(), 0).await?;
        if purge_changed {
            purge_noted(pool, &updated, ctx).await;
        }
    }
    Ok(())
}

/// The ledger entry `current` of live resource `pool`'s name brought up to
/// date (see [`remember`]), when that changes it, and whether its purge
/// changed. `None` also when the entry is another resource's.
pub(super) fn remembered(
    pool: &MayastorPool,
    current: LedgerEntry,
    purge: bool,
) -> Option<(LedgerEntry, bool)> {
    let uid = pool.uid().unwrap_or_default();
    let entry = match &current {
        entry if entry.uid == uid => Some(entry.clone()),
        // Re-created on the same disks: the pool is this resource's now
        // (with what was created: node, disks, uuid), and live again.
        entry if takes_over(pool, entry) => {
            tracing::info!(pool = %entry.pool, node = %entry.node, old_uid = %entry.uid,
                "resource re-created on the same disks: it takes the pool over");
            Some(LedgerEntry {
                uid,
                held: None,
                ..entry.clone()
            })
        }
        _ => None,
    }?;
    let (labels, annotations) = last_seen(pool);
    let updated = LedgerEntry {
        labels,
        annotations,
        purge,
        ..entry.clone()
    };
    let purge_changed = entry.purge != purge;
    (updated != current).then_some((updated, purge_changed))
}

/// Says in an Event on `pool` that the purge of `entry`'s pool was recorded
/// or withdrawn.
pub(super) async fn purge_noted(pool: &MayastorPool, entry: &LedgerEntry, ctx: &Context) {
    let note = if entry.purge {
        format!(
            "purge recorded: when this resource is deleted, pool {} on node {} is destroyed with \
             every replica, snapshot and clone on it",
            entry.pool, entry.node
        )
    } else {
        "purge withdrawn: the pool is kept while it holds data".to_string()
    };
    tracing::info!(pool = %entry.pool, node = %entry.node, purge = entry.purge, "purge noted");
    crate::controller::report::publish(pool, ctx, false, "PurgeRecorded", &note).await;
}
