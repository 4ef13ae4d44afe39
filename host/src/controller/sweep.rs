//! Sweep: the deleted path beside the live one. Destroys (or retains, as the
//! policy decides) the pools in the ledger whose resource no longer exists,
//! also those deleted while the operator was down. It shares observe, decide
//! and actuate with the reconcile; what differs is the observation (built
//! from the ledger entry) and the actuator's rails for a deleted resource.
//!
//! Runs only on a fully synced MayastorPool cache (a half-synced cache would
//! make live resources look deleted), on every deletion the watch reports and
//! every sweep period.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::Notify;

use super::actuate::{self, Outcome};
use super::context::Context;
use super::decide;
use super::observe::observe_deleted;
use crate::state::cache::wait_synced;

/// One pass over the ledger.
pub async fn sweep_once(ctx: &Context) {
    let live: HashSet<String> = ctx.pools.all().iter().filter_map(|p| p.uid()).collect();
    // Last operations of resources that are gone and have no ledger entry
    // left are of no further use.
    let ledgered: HashSet<String> = ctx.ledger.all().into_iter().map(|e| e.uid).collect();
    ctx.operations
        .retain(|uid| live.contains(uid) || ledgered.contains(uid));
    ctx.retain_reported(|uid| live.contains(uid));
    for entry in ctx.ledger.all() {
        if live.contains(&entry.uid) {
            continue;
        }
        let span = tracing::info_span!("sweep", pool = %entry.pool, node = %entry.node);
        let _enter = span.enter();
        let obs = observe_deleted(&entry, &ctx.sources());
        // A failed decision leaves the pool in place until the next sweep.
        let Ok(decision) = decide::decide(&*ctx.decider, &ctx.metrics, &obs).await else {
            continue;
        };
        match actuate::deleted(&entry, &obs, &decision, ctx).await {
            Ok(Outcome::Refused(action, why)) => {
                actuate::refused(ctx, action, &why);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweeping a deleted resource's pool failed"),
        }
    }
    ctx.metrics.set_pools_held(&ctx.ledger.all());
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
    loop {
        sweep_once(&ctx).await;
        tokio::select! {
            _ = &mut shutdown => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(period) => {}
        }
    }
}
