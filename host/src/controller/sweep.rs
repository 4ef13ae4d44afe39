//! Sweep: the deleted path beside the live one. Destroys (or retains, as the
//! policy decides) the pools in the ledger whose resource no longer exists,
//! also those deleted while the operator was down. It shares observe, decide
//! and apply with the reconcile; what differs is the observation (built
//! from the ledger entry) and the actuator's rails for a deleted resource.
//!
//! Runs only on a fully synced MayastorPool cache (a half-synced cache would
//! make live resources look deleted), on every deletion the watch reports and
//! every sweep period. Only entries of the watched namespace are swept: the
//! cache holds no other namespace's resources, so absence from it proves
//! nothing about them (another operator, or this one restarted with another
//! `--namespace`, may be watching them).
//!
//! Nodes are swept independently: each pass starts one task per node with
//! something to sweep and no task of its own still running, so a node that
//! hangs (each call bounded by the RPC deadline) holds up only its own pools.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::apply::{self, Outcome};
use super::context::Context;
use super::decide;
use super::observe::observe_deleted;
use crate::state::cache::wait_synced;
use crate::state::ledger::LedgerEntry;

/// The nodes whose sweep task is running.
#[derive(Clone, Default)]
struct Busy(Arc<Mutex<HashSet<String>>>);

impl Busy {
    /// Claims `node`; false when its sweep is still running.
    fn claim(&self, node: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string())
    }

    fn release(&self, node: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }
}

/// Releases a node's claim when its task ends, however it ends.
struct Claim(Busy, String);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.release(&self.1);
    }
}

/// One pass over the ledger: a task per node with deleted resources' pools
/// (unless that node's previous task is still running), in `tasks`.
fn sweep_pass(ctx: &Arc<Context>, busy: &Busy, tasks: &mut JoinSet<()>) {
    let live: HashSet<String> = ctx.pools.all().iter().filter_map(|p| p.uid()).collect();
    // Last operations of resources that are gone and have no ledger entry
    // left are of no further use.
    let ledgered: HashSet<String> = ctx.ledger.all().into_iter().map(|e| e.uid).collect();
    ctx.operations
        .retain(|uid| live.contains(uid) || ledgered.contains(uid));
    ctx.retain_reported(|uid| live.contains(uid));
    let mut by_node: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
    for entry in ctx.ledger.all() {
        if live.contains(&entry.uid) || entry.namespace != ctx.settings.namespace {
            continue;
        }
        by_node.entry(entry.node.clone()).or_default().push(entry);
    }
    for (node, entries) in by_node {
        if !busy.claim(&node) {
            tracing::debug!(%node, "the node's previous sweep is still running");
            continue;
        }
        let claim = Claim(busy.clone(), node);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _claim = claim;
            for entry in entries {
                sweep_entry(&ctx, &entry).await;
            }
            ctx.metrics.set_pools_held(&ctx.ledger.all());
        });
    }
    ctx.metrics.set_pools_held(&ctx.ledger.all());
}

/// Destroys (or retains) one deleted resource's pool, as the policy decides.
async fn sweep_entry(ctx: &Context, entry: &LedgerEntry) {
    let span = tracing::info_span!("sweep", pool = %entry.pool, node = %entry.node);
    async {
        let obs = observe_deleted(entry, &ctx.sources());
        // A failed decision leaves the pool in place until the next sweep.
        let Ok(decision) = decide::decide(&*ctx.decider, &ctx.metrics, &obs).await else {
            return;
        };
        match apply::deleted(entry, &obs, &decision, ctx).await {
            Ok(Outcome::Refused(action, why)) => {
                apply::refused(ctx, action, &why);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweeping a deleted resource's pool failed"),
        }
    }
    .instrument(span)
    .await
}

/// Sweeps once the pool cache is synced, then on `wake` and every `period`,
/// until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    wake: Arc<Notify>,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return,
        synced = wait_synced(ctx.pools.store()) => {
            if !synced {
                tracing::error!("the MayastorPool cache was dropped before it synced; no sweeping");
                return;
            }
        }
    }
    let elsewhere: Vec<String> = ctx
        .ledger
        .all()
        .into_iter()
        .filter(|e| e.namespace != ctx.settings.namespace)
        .map(|e| format!("{}/{} on {}", e.namespace, e.pool, e.node))
        .collect();
    if !elsewhere.is_empty() {
        tracing::warn!(watched = %ctx.settings.namespace, pools = %elsewhere.join(", "),
            "the ledger holds pools of namespaces this operator does not watch: they are left alone (never swept)");
    }
    let busy = Busy::default();
    // Dropped on return: a node's sweep in flight is cancelled with the run.
    let mut tasks = JoinSet::new();
    loop {
        sweep_pass(&ctx, &busy, &mut tasks);
        // Reap finished tasks (their panics are logged, not spread).
        while let Some(done) = tasks.try_join_next() {
            if let Err(err) = done
                && err.is_panic()
            {
                tracing::error!(error = %err, "a node's sweep panicked");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(period) => {}
        }
    }
}
