//! Decide: the policy engine behind the [`Decider`] trait, and the handling
//! of a failed decision that the live and the deleted paths share (counted,
//! logged; the live path also keeps the last good status, see
//! [`super::report::policy_failed`]).

use futures::future::BoxFuture;

use msp_policy_sdk::model::{Decision, Observation};

use crate::metrics::Metrics;
use msp_policy_engine::PolicyEngine;

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
    fn decide<'a>(&'a self, obs: &'a Observation) -> BoxFuture<'a, Result<Decision, DecideError>>;
    /// `name@version` of the active policy, for status and logs.
    fn active(&self) -> String;
    /// `sha256:<hex>` of the active policy's module, for status (none for
    /// a policy that is no module).
    fn digest(&self) -> Option<String> {
        None
    }
}

/// The default policy called as plain Rust.
#[cfg(test)]
pub struct NativePolicy;

#[cfg(test)]
impl Decider for NativePolicy {
    fn decide<'a>(&'a self, obs: &'a Observation) -> BoxFuture<'a, Result<Decision, DecideError>> {
        Box::pin(async move { Ok(msp_policy::decide(obs)) })
    }

    fn active(&self) -> String {
        let info = msp_policy::info();
        format!("{}@{} (native)", info.name, info.version)
    }
}

/// The real path: the sandboxed wasm engine (bundled policy or the ConfigMap's).
impl Decider for PolicyEngine {
    fn decide<'a>(&'a self, obs: &'a Observation) -> BoxFuture<'a, Result<Decision, DecideError>> {
        Box::pin(async move {
            PolicyEngine::decide(self, obs)
                .await
                .map_err(|e| DecideError {
                    kind: e.kind(),
                    message: e.to_string(),
                })
        })
    }

    fn active(&self) -> String {
        PolicyEngine::active(self).identity()
    }

    fn digest(&self) -> Option<String> {
        Some(format!("sha256:{}", PolicyEngine::active(self).sha256))
    }
}

/// The log target of every observation decided, as JSON at trace level
/// (`RUST_LOG=msp_operator::observation=trace`): what a policy is given, to
/// replay with `msp-policy eval --observation`, and what the tests check
/// against the tools' model of an observation.
pub const OBSERVATION_LOG: &str = "msp_operator::observation";

/// The policy's decision on `obs`; a failure is counted by kind and logged
/// before it is returned, whichever path asked.
pub async fn decide(
    decider: &dyn Decider,
    metrics: &Metrics,
    obs: &Observation,
) -> Result<Decision, DecideError> {
    // Serialised only when that target is enabled.
    tracing::trace!(
        target: OBSERVATION_LOG,
        observation = %serde_json::to_string(obs).unwrap_or_default(),
        "deciding"
    );
    let started = std::time::Instant::now();
    let result = decider.decide(obs).await;
    metrics.reconcile_step("decide", started.elapsed());
    if let Err(err) = &result {
        metrics.policy_failure(err.kind);
        tracing::warn!(policy = %decider.active(), error = %err, deleted = obs.pool.deleted, "policy decision failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn native_policy_decides() {
        let obs = Observation::default();
        let d = NativePolicy.decide(&obs).await.expect("decision");
        assert_eq!(d.state, msp_policy_sdk::model::PoolState::Pending);
        assert!(!d.reason.is_empty());
        assert!(NativePolicy.active().starts_with("msp-default@"));
    }
}
