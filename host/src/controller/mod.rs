//! The reconcile of one MayastorPool: observe → decide → actuate → report,
//! its shared [`Context`], and the per-resource error backoff.
//!
//! Every reconcile is level-triggered and idempotent: a crash between any two
//! steps repeats the work, never doubles it (CreatePool is create-or-import).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use msp_policy::model::{Action, Decision, Observation};
use tracing::Instrument;

pub mod actuate;
pub mod observe;
pub mod report;
pub mod sweep;

use crate::controller::actuate::{self, Outcome, action_name};
use crate::crd::MayastorPool;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::controller::observe::{self, Operations, Sources, effective_disks, effective_node};
use crate::registry::NodeRegistry;
use crate::controller::report;

/// Why a policy decision failed (trap, fuel, memory, nonsense).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecideError {
    /// A short label for metrics (the engine's `PolicyError::kind`).
    pub kind: &'static str,
    pub message: String,
}

/// What the controller needs of a policy: a decision and its identity.
/// The operator runs the wasm engine behind it; unit tests use the default
/// policy natively ([`NativePolicy`]).
pub trait Decider: Send + Sync + 'static {
    fn decide<'a>(
        &'a self,
        obs: &'a Observation,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, DecideError>> + Send + 'a>>;
    /// `name@version` of the active policy, for status and logs.
    fn active(&self) -> String;
}

/// The default policy called as plain Rust.
pub struct NativePolicy;

impl Decider for NativePolicy {
    fn decide<'a>(
        &'a self,
        obs: &'a Observation,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, DecideError>> + Send + 'a>> {
        Box::pin(async move { Ok(msp_policy::decide(obs)) })
    }

    fn active(&self) -> String {
        let info = msp_policy::info();
        format!("{}@{} (native)", info.name, info.version)
    }
}

/// The real path: the sandboxed wasm engine (bundled policy or the ConfigMap's).
impl Decider for crate::policy::PolicyEngine {
    fn decide<'a>(
        &'a self,
        obs: &'a Observation,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, DecideError>> + Send + 'a>> {
        Box::pin(async move {
            crate::policy::PolicyEngine::decide(self, obs)
                .await
                .map_err(|e| DecideError {
                    kind: e.kind(),
                    message: e.to_string(),
                })
        })
    }

    fn active(&self) -> String {
        let active = crate::policy::PolicyEngine::active(self);
        let short: String = active.sha256.chars().take(12).collect();
        format!("{}@{} ({short})", active.name, active.version)
    }
}

/// Errors that end a reconcile; it is retried with a per-resource backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Status(_) => "status",
            Error::Ledger(_) => "ledger",
        }
    }
}

/// Timing of reconciles.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Requeues the policy asks for are bounded to [min_requeue, max_requeue].
    pub min_requeue: Duration,
    pub max_requeue: Duration,
    /// Requeue when the policy asks for none (changes wake pools anyway).
    pub resync: Duration,
    /// Retry after a failed policy decision.
    pub policy_retry: Duration,
    /// First and last retry delay after a reconcile error.
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            min_requeue: Duration::from_millis(200),
            max_requeue: Duration::from_secs(300),
            resync: Duration::from_secs(60),
            policy_retry: Duration::from_secs(10),
            error_backoff_min: Duration::from_millis(500),
            error_backoff_max: Duration::from_secs(60),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub pools: Store<MayastorPool>,
    pub nodes: Store<Node>,
    pub registry: NodeRegistry,
    pub ledger: Arc<Ledger>,
    pub decider: Arc<dyn Decider>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub operations: Operations,
    pub settings: ControllerSettings,
    /// Consecutive reconcile errors per resource uid, for the backoff.
    errors: Mutex<HashMap<String, u32>>,
    /// The state last reported per resource uid: the watch cache may not
    /// show our own status write yet, and a transition is announced once.
    reported: Mutex<HashMap<String, crate::crd::PoolState>>,
    started: Instant,
    startup_grace: Duration,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        pools: Store<MayastorPool>,
        nodes: Store<Node>,
        registry: NodeRegistry,
        ledger: Arc<Ledger>,
        decider: Arc<dyn Decider>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: ControllerSettings,
    ) -> Context {
        Context {
            client,
            pools,
            nodes,
            registry,
            ledger,
            decider,
            recorder,
            metrics,
            operations: Operations::default(),
            settings,
            errors: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
            started: Instant::now(),
            startup_grace: Duration::ZERO,
        }
    }

    /// After a start, storage nodes need a heartbeat to register again: until
    /// `grace` has passed, a created pool whose node the registry has not
    /// seen keeps its status instead of flapping to offline.
    pub fn with_startup_grace(mut self, started: Instant, grace: Duration) -> Context {
        self.started = started;
        self.startup_grace = grace;
        self
    }

    /// How long to hold `pool`'s status because its node may still register.
    fn startup_hold(&self, pool: &MayastorPool) -> Option<Duration> {
        let left = self.startup_grace.checked_sub(self.started.elapsed())?;
        (observe::is_created(pool) && !self.registry.knows(effective_node(pool)) && !left.is_zero())
            .then_some(left)
    }

    pub fn sources(&self) -> Sources<'_> {
        Sources {
            pools: &self.pools,
            nodes: &self.nodes,
            registry: &self.registry,
            ledger: &self.ledger,
            operations: &self.operations,
        }
    }

    /// The bounded requeue for a decision.
    pub fn requeue_after(&self, decision: &Decision) -> Duration {
        bounded_requeue(decision.requeue_after_ms, &self.settings)
    }

    /// The state last reported for `uid`, and records `state` as the new one.
    pub fn swap_reported(
        &self,
        uid: &str,
        state: crate::crd::PoolState,
    ) -> Option<crate::crd::PoolState> {
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), state)
    }

    /// Forgets what was reported for resources `keep` rejects (gone ones).
    pub fn retain_reported(&self, keep: impl Fn(&str) -> bool) {
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
    }

    fn error_count(&self, uid: &str, reset: bool) -> u32 {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if reset {
            errors.remove(uid);
            0
        } else {
            let n = errors.entry(uid.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
    }
}

/// A policy decision, or the policy's failure handled: metric, Warning event,
/// the last good status kept with a reason that says so.
async fn decide(
    pool: &MayastorPool,
    obs: &Observation,
    ctx: &Context,
) -> Result<Option<Decision>, Error> {
    match ctx.decider.decide(obs).await {
        Ok(decision) => Ok(Some(decision)),
        Err(err) => {
            ctx.metrics.policy_failure(err.kind);
            let policy = ctx.decider.active();
            let message = report::truncate(
                &format!("policy {policy} failed, last good status kept: {err}"),
                report::MAX_REASON,
            );
            tracing::warn!(%policy, error = %err, "policy decision failed");
            let mut status = pool.status.clone().unwrap_or_default();
            status.reason = Some(message.clone());
            report::write_status(pool, &status, ctx).await?;
            report::publish(pool, ctx, true, "PolicyFailed", &message).await;
            Ok(None)
        }
    }
}

/// Reconciles one MayastorPool.
pub async fn reconcile(pool: Arc<MayastorPool>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let span = tracing::info_span!("reconcile", pool = %pool.name_any(), namespace = %pool.namespace().unwrap_or_default());
    async move {
        let _timer = ctx.metrics.reconcile_timer();
        let uid = pool.uid().unwrap_or_default();
        let result = reconcile_inner(&pool, &ctx).await;
        if result.is_ok() {
            ctx.error_count(&uid, true);
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_inner(pool: &MayastorPool, ctx: &Context) -> Result<Requeue, Error> {
    // The controller waits for the MayastorPool cache; the Node cache must be
    // complete too, or a pool would be told its node does not exist.
    if ctx.nodes.wait_until_ready().now_or_never().is_none() {
        tracing::debug!("Node cache not synced yet");
        return Ok(Requeue::requeue(ctx.settings.min_requeue));
    }
    if let Some(left) = ctx.startup_hold(pool) {
        tracing::debug!(
            ?left,
            "node not registered yet since the start; status kept"
        );
        return Ok(Requeue::requeue(left));
    }
    let mut obs = observe::observe(pool, &ctx.sources());
    let Some(mut decision) = decide(pool, &obs, ctx).await? else {
        return Ok(Requeue::requeue(ctx.settings.policy_retry));
    };
    tracing::debug!(action = action_name(decision.action), state = ?decision.state, "decided");
    let mut created = None;
    match actuate::live(pool, &obs, &decision, ctx).await? {
        Outcome::Nothing => {}
        Outcome::Refused(action, why) => {
            ctx.metrics.rail_refusal(action_name(action), "refused");
            let note = format!(
                "the operator refused to {} the pool: {why}",
                action_name(action)
            );
            tracing::warn!(%note, "safety rail");
            report::publish(pool, ctx, true, "Refused", &note).await;
            decision.reason = if decision.reason.is_empty() {
                note
            } else {
                format!("{}; {note}", decision.reason)
            };
        }
        outcome @ (Outcome::Done(_) | Outcome::Failed(..)) => {
            if let Outcome::Done(Action::Create | Action::Import) = outcome
                && !observe::is_created(pool)
            {
                created = Some((
                    effective_node(pool).to_string(),
                    effective_disks(pool).to_vec(),
                ));
            }
            // Look again at once: the node's list was refreshed, so the
            // status written now is the result, not "creating".
            obs = observe::observe(pool, &ctx.sources());
            match decide(pool, &obs, ctx).await? {
                Some(d) => decision = d,
                None => return Ok(Requeue::requeue(ctx.settings.policy_retry)),
            }
        }
    }
    // The pool exists on its node and the ledger says this operator made it,
    // but status has no node yet (the write after the create failed, or the
    // operator stopped in between): cache node and disks now.
    if created.is_none() && !observe::is_created(pool) && obs.in_ledger && obs.reported.is_some() {
        created = Some((
            effective_node(pool).to_string(),
            effective_disks(pool).to_vec(),
        ));
    }
    report::report(pool, &obs, &decision, created, ctx).await?;
    Ok(Requeue::requeue(ctx.requeue_after(&decision)))
}

/// Backoff after a failed reconcile: per resource, doubling, bounded; never terminal.
pub fn error_policy(pool: Arc<MayastorPool>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_failure(err.metric_label());
    let n = ctx.error_count(&pool.uid().unwrap_or_default(), false);
    let delay = backoff(
        n,
        ctx.settings.error_backoff_min,
        ctx.settings.error_backoff_max,
    );
    tracing::warn!(pool = %pool.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// The requeue a policy asked for, bounded; the resync period when it asked none.
pub fn bounded_requeue(requested_ms: Option<u64>, settings: &ControllerSettings) -> Duration {
    match requested_ms {
        Some(ms) => Duration::from_millis(ms).clamp(settings.min_requeue, settings.max_requeue),
        None => settings.resync,
    }
}

/// `min * 2^(n-1)`, at most `max`.
pub fn backoff(n: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_and_is_bounded() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(2, min, max), Duration::from_secs(1));
        assert_eq!(backoff(50, min, max), max);
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
    async fn native_policy_decides() {
        let obs = Observation::default();
        let d = NativePolicy.decide(&obs).await.expect("decision");
        assert_eq!(d.state, msp_policy::model::PoolState::Pending);
        assert!(!d.reason.is_empty());
        assert!(NativePolicy.active().starts_with("msp-default@"));
    }
}
