//! The sweeper: destroys (or retains, as the policy decides) the pools in the
//! ledger whose resource no longer exists, also those deleted while the
//! operator was down. Runs only on a fully synced MayastorPool cache (a
//! half-synced cache would make live resources look deleted), on every
//! deletion the watch reports and every sweep period.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use msp_policy::model::{Observation, PoolResource};
use tokio::sync::Notify;

use crate::controller::actuate::{self, Outcome, action_name};
use crate::controller::Context;
use crate::ledger::LedgerEntry;
use crate::controller::observe::{k8s_node, now_ms, storage_node};

/// The observation of a ledger pool whose resource is gone.
pub fn observe_deleted(entry: &LedgerEntry, ctx: &Context) -> Observation {
    let (sn, pools) = storage_node(&ctx.registry, &entry.node);
    let reported = pools
        .as_ref()
        .and_then(|list| list.iter().find(|p| p.name == entry.pool).cloned());
    Observation {
        now_ms: now_ms(),
        pool: PoolResource {
            name: entry.pool.clone(),
            namespace: entry.namespace.clone(),
            uid: entry.uid.clone(),
            generation: 0,
            spec_node: entry.node.clone(),
            spec_disks: entry.disks.clone(),
            status_state: None,
            status_node: Some(entry.node.clone()),
            status_disks: Some(entry.disks.clone()),
            status_reason: None,
            deleted: true,
        },
        node: k8s_node(&ctx.nodes, &entry.node),
        storage_node: sn,
        pools_known: pools.is_some(),
        reported,
        in_ledger: true,
        last_operation: ctx.operations.get(&entry.uid),
        conflicts: Vec::new(),
    }
}

/// One pass over the ledger.
pub async fn sweep_once(ctx: &Context) {
    let live: HashSet<String> = ctx.pools.state().iter().filter_map(|p| p.uid()).collect();
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
        let obs = observe_deleted(&entry, ctx);
        let decision = match ctx.decider.decide(&obs).await {
            Ok(d) => d,
            Err(err) => {
                ctx.metrics.policy_failure(err.kind);
                tracing::warn!(error = %err, "policy decision for a deleted resource failed; pool left in place");
                continue;
            }
        };
        match actuate::deleted(&entry, &obs, &decision, ctx).await {
            Ok(Outcome::Refused(action, why)) => {
                ctx.metrics.rail_refusal(action_name(action), "refused");
                tracing::warn!(action = action_name(action), %why, "safety rail refused an action on a deleted resource's pool");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweeping a deleted resource's pool failed"),
        }
    }
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
        synced = crate::run::wait_synced(&ctx.pools) => {
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
