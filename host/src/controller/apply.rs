//! Apply: carries out a plan ([`apply`]; [`deleted`] for the sweep), the one
//! place that writes the ledger and calls the storage node: the ledger's
//! record of a live resource brought up to date ([`remember`]), then the
//! policy's action, after the host's own safety rails, which no policy can
//! turn off:
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
//! - nothing is created or imported on a path that now names another disk
//!   than the one pinned at creation, or while the node's answer cannot
//!   tell ([`crate::nodes::disk_identity`]);
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
use super::plan::Plan;
use crate::nodes::client::BlockDeviceInfo;
use crate::nodes::client::{NodeClient, NodeError, PoolContent, disk_path};
use crate::nodes::data_safety::{self, Contents, PURGE_ANNOTATION};
use crate::nodes::disk_identity;
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
/// note that says so returned (for the live pool's event).
pub fn refused(ctx: &Context, action: Action, why: &str) -> String {
    ctx.metrics.rail_refusal(action_name(action), "refused");
    let note = refused_note(action, why);
    tracing::warn!(%note, "safety rail");
    note
}

/// What the reason and the Event of a pool say when a safety rail refused
/// `action` because of `why`.
pub fn refused_note(action: Action, why: &str) -> String {
    format!(
        "the operator refused to {} the pool: {why}",
        action_name(action)
    )
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

/// Carries out `plan` on `pool`: the ledger's record of the resource brought
/// up to date ([`remember`]), then the decided action. A refusal by a safety
/// rail is counted, logged and said in a Warning Event here; what the
/// reconcile reports of it is [`super::plan::after`]'s.
pub async fn apply(pool: &MayastorPool, plan: &Plan, ctx: &Context) -> Result<Outcome, Error> {
    let outcome = match plan {
        Plan::Wait(_) | Plan::LeaveAlone(_) => Outcome::Nothing,
        // The ledger keeps what it needs of the resource whatever the policy says.
        Plan::PolicyFailed(_) => {
            remember(pool, ctx).await?;
            Outcome::Nothing
        }
        Plan::Act(d) => {
            remember(pool, ctx).await?;
            live(pool, &d.obs, &d.decision, ctx).await?
        }
    };
    if let Outcome::Refused(action, why) = &outcome {
        let note = refused(ctx, *action, why);
        crate::controller::report::publish(pool, ctx, true, "Refused", &note).await;
    }
    Ok(outcome)
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
        action @ (Action::Create | Action::Import) => match load(pool, obs, action, ctx).await {
            Ok(outcome) | Err(Stop::At(outcome)) => Ok(outcome),
            Err(Stop::Error(err)) => Err(err),
        },
    }
}

/// Why a create, an import or a destroy stopped before its end: an outcome
/// (a rail refused, the node is not online, the pool is kept) or an error.
enum Stop {
    At(Outcome),
    Error(Error),
}

impl Stop {
    fn refused(action: Action, why: String) -> Stop {
        Stop::At(Outcome::Refused(action, why))
    }

    /// Refused `action` when there is a `why`.
    fn refused_if(action: Action, why: Option<String>) -> Result<(), Stop> {
        why.map_or(Ok(()), |why| Err(Stop::refused(action, why)))
    }
}

impl From<Error> for Stop {
    fn from(err: Error) -> Stop {
        Stop::Error(err)
    }
}

impl From<LedgerError> for Stop {
    fn from(err: LedgerError) -> Stop {
        Stop::Error(err.into())
    }
}

/// A create or an import of a live resource's pool, as far as the rails let
/// it go: what the ledger records, then the disks, then the node call.
async fn load(
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
struct Loading {
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
                Some(err.to_operation_error())
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
async fn tell_kernel_names(
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
    (!observe::owns(pool, entry)).then(|| waiting_for(pool, entry))
}

/// The reason of live resource `pool` waiting for the pool of `entry`,
/// another resource's, to be destroyed.
fn waiting_for(pool: &MayastorPool, entry: &LedgerEntry) -> String {
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
/// being deleted, no entry of its name yet, and, as its own observation
/// says, not created ([`Observation::was_created`], the one definition), its
/// node's pool list known and without it, and no disk conflict
/// ([`observe::conflicts`]). Its own reconcile then checks its disks before
/// its CreatePool, and drops the entry when the check refuses. `by_uuid`:
/// the node has pool uuids (v1).
fn new_on_node(ctx: &Context, pool: &MayastorPool, by_uuid: bool) -> (Vec<LedgerEntry>, usize) {
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
async fn destroy(entry: &LedgerEntry, obs: &Observation, ctx: &Context) -> Result<Outcome, Stop> {
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
            let error = err.to_operation_error();
            ctx.operations
                .record(&entry.uid, Action::Destroy, Some(error.clone()));
            Ok(Outcome::Failed(Action::Destroy, error))
        }
    }
}

/// Why the node's pool of `entry`'s name, which `what` (a phrase), is not
/// the one this operator created.
fn other_pool(entry: &LedgerEntry, what: &str) -> String {
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
async fn forget_destroyed(
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
fn remembered(
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
async fn purge_noted(pool: &MayastorPool, entry: &LedgerEntry, ctx: &Context) {
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

    /// A storage node that logs the calls it gets into `log` and lists
    /// `devices` as its block devices.
    #[derive(Clone, Default)]
    struct LoggingNode {
        log: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
        devices: std::sync::Arc<std::sync::Mutex<Vec<msp_proto::v1::BlockDevice>>>,
    }

    impl LoggingNode {
        fn push(&self, what: &'static str) {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }

        fn log(&self) -> Vec<&'static str> {
            self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }

        /// The node lists these devices: (kernel name, links).
        fn lists(&self, devices: &[(&str, &[&str])]) {
            *self.devices.lock().unwrap_or_else(|e| e.into_inner()) = devices
                .iter()
                .map(|(name, links)| msp_proto::v1::BlockDevice {
                    devname: name.to_string(),
                    devlinks: links.iter().map(|l| l.to_string()).collect(),
                    size: 131_072,
                    available: true,
                    ..Default::default()
                })
                .collect();
        }
    }

    fn pool_reply(name: String, uuid: Option<String>, disks: Vec<String>) -> msp_proto::v1::Pool {
        msp_proto::v1::Pool {
            uuid: uuid.unwrap_or_default(),
            name,
            disks,
            state: 1,
            ..Default::default()
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
            let devices = self
                .devices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(tonic::Response::new(
                msp_proto::v1::ListBlockDevicesResponse { devices },
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
            Ok(tonic::Response::new(pool_reply(
                req.name, req.uuid, req.disks,
            )))
        }
        async fn destroy_pool(
            &self,
            _: tonic::Request<msp_proto::v1::DestroyPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            self.push("destroy");
            Err(tonic::Status::unimplemented("destroy"))
        }
        async fn export_pool(
            &self,
            _: tonic::Request<msp_proto::v1::ExportPoolRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            self.push("export");
            Err(tonic::Status::unimplemented("export"))
        }
        async fn import_pool(
            &self,
            req: tonic::Request<msp_proto::v1::ImportPoolRequest>,
        ) -> Result<tonic::Response<msp_proto::v1::Pool>, tonic::Status> {
            self.push("import");
            let req = req.into_inner();
            Ok(tonic::Response::new(pool_reply(
                req.name, req.uuid, req.disks,
            )))
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
            self.push("grow");
            Err(tonic::Status::unimplemented("grow"))
        }
    }

    /// A context whose storage node n1 is `node` (v1) and whose API server
    /// is the returned one; the node's server task.
    async fn with_node(
        node: &LoggingNode,
    ) -> (
        Context,
        crate::controller::fixtures::ApiServer,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        use crate::controller::fixtures::Fixture;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
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
        let (fx, api) = Fixture::with_api_server();
        fx.ctx
            .registry
            .register(&msp_proto::v1::RegisterRequest {
                id: "n1".into(),
                grpc_endpoint: addr.to_string(),
                api_version: vec![1],
                ..Default::default()
            })
            .expect("registered");
        (fx.ctx, api, server)
    }

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            state: msp_policy_sdk::model::PoolState::Pending,
            reason: String::new(),
            requeue_after_ms: None,
            event: None,
        }
    }

    /// The ledger entry a request wrote for pool p.
    fn entry_written(sent: &crate::controller::fixtures::Sent) -> serde_json::Value {
        let entry = sent.body["data"]["p"].as_str().expect("the entry of p");
        serde_json::from_str(entry).expect("an entry")
    }

    const A: &str = "/dev/disk/by-id/msp-loop-a";
    const B: &str = "/dev/disk/by-id/msp-loop-b";

    /// Issue 23 item 6: the ledger write comes before the disk check, and
    /// the check right before CreatePool, so the check's answer is at most
    /// one round trip old when the node may format (a filesystem made while
    /// a slow ledger write was in flight is seen). Also: the CreatePool
    /// carries the uuid the entry records (item 5); issue 26: the entry pins
    /// the disk as the node listed it before (never by-diskseq), and the
    /// kernel name in the spec is pointed out once, with its link.
    #[tokio::test]
    async fn a_create_pins_records_then_checks_the_disks_then_creates() {
        use crate::controller::fixtures::pool;
        let node = LoggingNode::default();
        node.lists(&[
            ("/dev/loop0", &[A, "/dev/disk/by-diskseq/9"]),
            ("/dev/loop1", &[B]),
        ]);
        let (ctx, mut api, server) = with_node(&node).await;
        let p = pool("n1");
        let obs = observe::observe(&p, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |sent| {
                if sent.path.contains("configmaps") {
                    node.push("ledger");
                }
            })
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(
            node.log(),
            vec!["disk check", "ledger", "disk check", "create"]
        );
        let event = sent
            .iter()
            .find(|s| s.path.contains("events"))
            .expect("an Event");
        assert_eq!(event.body["reason"], "KernelDiskName");
        assert_eq!(event.body["type"], "Normal");
        let note = event.body["note"].as_str().expect("a note");
        assert!(note.contains(&format!("/dev/loop0 is {A}")), "{note}");
        let ledger = sent
            .iter()
            .find(|s| s.path.contains("configmaps"))
            .expect("a ledger write");
        assert_eq!(ledger.method, http::Method::PATCH);
        let recorded = entry_written(ledger);
        let uuid = recorded["poolUuid"].as_str().expect("a pool uuid recorded");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        assert_eq!(
            recorded["diskIds"],
            serde_json::json!([{"disk": "/dev/loop0", "devname": "/dev/loop0",
                "links": [A], "size": 131_072 * 512}])
        );
        // Told once: another create of the same resource says nothing more.
        let obs = observe::observe(&p, &ctx.sources());
        let (_, sent) = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert!(sent.iter().all(|s| !s.path.contains("events")), "{sent:?}");
        // Another new pool of the node a moment later pins from the last
        // listing: one listing, the disk check's, after its ledger write.
        let create = |name: &str, uid: &str, disk: &str| {
            let mut q = pool("n1");
            q.metadata.name = Some(name.into());
            q.metadata.uid = Some(uid.into());
            q.spec.disks = vec![disk.into()];
            q
        };
        let q = create("q", "u2", B);
        let before = node.log().len();
        let obs = observe::observe(&q, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&q, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(node.log()[before..], ["disk check", "create"]);
        let recorded: serde_json::Value =
            serde_json::from_str(sent[0].body["data"]["q"].as_str().expect("the entry of q"))
                .expect("an entry");
        assert_eq!(recorded["diskIds"][0]["links"], serde_json::json!([B]));
        // A link udev made after that listing: the disk check's listing
        // shows it, and the pin is recorded again with it before the create.
        const C: &str = "/dev/disk/by-id/msp-loop-c";
        node.lists(&[
            ("/dev/loop0", &[A]),
            ("/dev/loop1", &[B]),
            ("/dev/loop2", &[]),
        ]);
        let obs = observe::observe(&p, &ctx.sources());
        let _ = api
            .serve(live(&p, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        node.lists(&[
            ("/dev/loop0", &[A]),
            ("/dev/loop1", &[B]),
            ("/dev/loop2", &[C]),
        ]);
        let r = create("r", "u3", "/dev/loop2");
        let before = node.log().len();
        let obs = observe::observe(&r, &ctx.sources());
        let (outcome, sent) = api
            .serve(live(&r, &obs, &decision(Action::Create), &ctx), |_| {})
            .await;
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Create));
        assert_eq!(node.log()[before..], ["disk check", "disk check", "create"]);
        let ledger: Vec<_> = sent
            .iter()
            .filter(|s| s.path.contains("configmaps"))
            .collect();
        assert_eq!(ledger.len(), 2, "{sent:?}");
        let recorded: serde_json::Value = serde_json::from_str(
            ledger[1].body["data"]["r"]
                .as_str()
                .expect("the entry of r"),
        )
        .expect("an entry");
        assert_eq!(recorded["diskIds"][0]["links"], serde_json::json!([C]));
        server.abort();
    }

    /// Records `entry` in the context's ledger.
    async fn seed(
        ctx: &Context,
        api: &mut crate::controller::fixtures::ApiServer,
        entry: LedgerEntry,
    ) {
        let (written, _) = api.serve(ctx.ledger.record(entry, 0), |_| {}).await;
        written.expect("recorded");
    }

    /// The resource p (uid u1) created on /dev/loop0, pinned as A.
    fn pinned() -> LedgerEntry {
        LedgerEntry {
            uid: "u1".into(),
            pool_uuid: Some("6f1c2c1e-5d7a-4b7e-9a51-0d2b8f3e4c10".into()),
            disk_ids: vec![crate::state::ledger::DiskId {
                disk: "/dev/loop0".into(),
                devname: "/dev/loop0".into(),
                links: vec![A.into()],
                ..Default::default()
            }],
            ..entry()
        }
    }

    /// Issue 26 item 2: an import on a path that now names another disk
    /// calls nothing on it and says where the pool's disk is; a node answer
    /// that cannot tell (the link not there yet) is neither the same disk
    /// nor another: nothing called, and the import goes ahead once it tells.
    #[tokio::test]
    async fn an_import_calls_nothing_on_another_disk_nor_while_the_node_cannot_tell() {
        use crate::controller::fixtures::pool;
        let node = LoggingNode::default();
        let (ctx, mut api, server) = with_node(&node).await;
        seed(&ctx, &mut api, pinned()).await;
        let p = pool("n1");
        let import = decision(Action::Import);

        node.lists(&[("/dev/loop0", &[B]), ("/dev/loop5", &[A])]);
        let obs = observe::observe(&p, &ctx.sources());
        let (outcome, sent) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        let Ok(Outcome::Refused(Action::Import, why)) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!(
            why.starts_with(&format!(
                "/dev/loop0 is now another disk ({B}); the pool's disk is at /dev/loop5 ({A})"
            )),
            "{why}"
        );
        assert!(
            why.contains("point spec.disks at a persistent link"),
            "{why}"
        );
        assert!(sent.is_empty(), "nothing written: {sent:?}");
        assert_eq!(node.log(), vec!["disk check"]);

        node.lists(&[("/dev/loop0", &["/dev/disk/by-diskseq/40"])]);
        let (outcome, sent) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        let Ok(Outcome::Refused(Action::Import, why)) = outcome else {
            panic!("refused: {outcome:?}");
        };
        assert!(
            why.contains("taken neither for the pool's disk nor for another"),
            "{why}"
        );
        assert!(sent.is_empty(), "nothing written: {sent:?}");
        assert_eq!(node.log(), vec!["disk check", "disk check"]);

        node.lists(&[("/dev/loop0", &[A, "/dev/disk/by-diskseq/41"])]);
        let (outcome, _) = api.serve(live(&p, &obs, &import, &ctx), |_| {}).await;
        server.abort();
        assert_eq!(outcome.expect("no error"), Outcome::Done(Action::Import));
        assert_eq!(
            node.log(),
            vec!["disk check", "disk check", "disk check", "import"]
        );
    }

    /// Issue 26 item 3: spec.disks edited from the kernel name to the
    /// disk's persistent link: the ledger and status take the new name
    /// (the old one kept as an alias), an Event says so, and the node is
    /// only asked for its devices. An edit to another disk changes nothing
    /// and is not asked about again.
    #[tokio::test]
    async fn a_path_edit_to_the_same_disk_is_followed_without_touching_the_pool() {
        use crate::controller::fixtures::pool;
        use crate::state::crd::MayastorPoolStatus;
        let node = LoggingNode::default();
        node.lists(&[("/dev/loop0", &[A]), ("/dev/loop5", &[B])]);
        let (ctx, mut api, server) = with_node(&node).await;
        seed(&ctx, &mut api, pinned()).await;
        let mut p = pool("n1");
        p.status = Some(MayastorPoolStatus {
            node: Some("n1".into()),
            disks: Some(vec!["/dev/loop0".into()]),
            ..Default::default()
        });
        p.spec.disks = vec![A.into()];
        let reply = serde_json::to_value(&p).expect("json");
        let (renamed, sent) = api
            .serve_with(follow_rename(&p, &ctx), |sent| {
                if sent.path.ends_with("/status") {
                    reply.clone()
                } else {
                    crate::controller::fixtures::default_reply(sent)
                }
            })
            .await;
        let view = renamed.expect("no error").expect("followed");
        let status = view.status.expect("status");
        assert_eq!(status.disks, Some(vec![A.to_string()]));
        assert_eq!(status.disk_ids, Some(vec![A.to_string()]));
        assert_eq!(node.log(), vec!["disk check"], "no node call that writes");
        let kinds: Vec<&str> = sent
            .iter()
            .map(|s| {
                if s.path.contains("configmaps") {
                    "ledger"
                } else if s.path.ends_with("/status") {
                    "status"
                } else if s.path.contains("events") {
                    "event"
                } else {
                    "other"
                }
            })
            .collect();
        assert_eq!(kinds, vec!["ledger", "status", "event"]);
        let recorded = entry_written(&sent[0]);
        assert_eq!(recorded["disks"], serde_json::json!([A]));
        assert_eq!(
            recorded["diskIds"][0]["aliases"],
            serde_json::json!(["/dev/loop0"])
        );
        assert_eq!(sent[1].body[1]["value"]["disks"], serde_json::json!([A]));
        assert_eq!(sent[2].body["reason"], "DisksRenamed");
        let entry = ctx.ledger.get("n1", "p").expect("entry");
        assert_eq!(
            entry.disk_names(),
            vec![A.to_string(), "/dev/loop0".to_string()]
        );

        // Another disk: nothing written, and not asked again.
        p.spec.disks = vec![B.into()];
        let (renamed, sent) = api.serve(follow_rename(&p, &ctx), |_| {}).await;
        assert!(renamed.expect("no error").is_none());
        assert!(sent.is_empty(), "{sent:?}");
        let (renamed, _) = api.serve(follow_rename(&p, &ctx), |_| {}).await;
        assert!(renamed.expect("no error").is_none());
        server.abort();
        assert_eq!(node.log(), vec!["disk check", "disk check"]);
    }
}
