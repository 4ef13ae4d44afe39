//! The policy engine: runs a MayastorPool policy, a wasm component, in a
//! wasmtime sandbox, and swaps it for another at run time. It knows nothing
//! of Kubernetes or of the operator: bytes in, decisions out.
//!
//! Start with [`PolicyEngine`]: cheap to clone, `decide` runs the active
//! policy (on the caller's worker under a small fuel budget, on the blocking
//! pool for a policy that needs more), `load` checks a new module and swaps
//! it in atomically (a bad one leaves the running policy). The rooms, in the
//! order a module goes through them:
//! - [`bundled`]: the default policy, built by `build.rs` and embedded;
//! - [`sandbox`]: compile once per module, then a fresh, limited instance per call;
//! - [`bindings`]: each WIT contract version on the engine side (0.1 and the
//!   current 0.2) and the model conversions;
//! - [`validate`]: decision sanity and the conformance self-test a module must pass;
//! - [`error`]: why a module or a decision was refused;
//! - [`sample`]: generated observations for tests and benchmarks;
//! - [`signature`]: a module's detached signature against trusted keys;
//! - [`componentize`]: an author's core module wrapped as a component;
//! - [`compare`]: two outcomes on one observation, field by field;
//! - [`shadow`]: a candidate policy deciding beside the live one, off its path;
//! - [`percentile`]: the percentile every benchmark prints.

pub mod bindings;
pub mod bundled;
pub mod compare;
pub mod componentize;
pub mod error;
pub mod percentile;
pub mod sample;
pub mod sandbox;
pub mod shadow;
pub mod signature;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use msp_policy_sdk::model::{Decision, Observation};

pub use bindings::Contract;
pub use error::PolicyError;
pub use sandbox::{CompiledPolicy, Limits};
pub use validate::CaseResult;

/// Where the active policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicySource {
    /// The default policy embedded in the binary.
    Bundled,
    /// A module from the policy ConfigMap.
    ConfigMap,
    /// A file given on the command line (`policy check`/`eval`).
    File,
}

impl PolicySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicySource::Bundled => "bundled",
            PolicySource::ConfigMap => "configmap",
            PolicySource::File => "file",
        }
    }
}

/// Who decides: shown in logs, metrics labels and each pool's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    pub name: String,
    pub version: String,
    /// Hex sha256 of the module's bytes.
    pub sha256: String,
    pub source: PolicySource,
    /// The contract version the module implements, as its export names it
    /// ("0.2.0"; "0.1.0" for a module built against the first contract).
    pub contract: String,
}

impl ActivePolicy {
    /// `name@version (sha256 prefix)`: how status, logs and Events name it.
    pub fn identity(&self) -> String {
        let short: String = self.sha256.chars().take(12).collect();
        format!("{}@{} ({short})", self.name, self.version)
    }
}

/// The outcome of checking a module: what `load` swaps in and what
/// `msp-policy check` prints.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub policy: ActivePolicy,
    pub size: usize,
    pub compile_time: Duration,
    pub cases: Vec<CaseResult>,
    compiled: Arc<CompiledPolicy>,
}

impl CheckReport {
    pub fn compiled(&self) -> &Arc<CompiledPolicy> {
        &self.compiled
    }
}

/// Checks `bytes` the way `load` does: size and header, compile (cached by
/// sha256), no imports, contract version, `info()`, conformance self-test.
pub fn check(
    bytes: &[u8],
    source: PolicySource,
    limits: &Limits,
) -> Result<CheckReport, PolicyError> {
    let started = Instant::now();
    let compiled = sandbox::compile(bytes, limits)?;
    let compile_time = started.elapsed();
    let cases = validate::self_test(&compiled, limits)?;
    Ok(CheckReport {
        policy: ActivePolicy {
            name: compiled.info.name.clone(),
            version: compiled.info.version.clone(),
            sha256: hex::encode(compiled.sha256),
            source,
            contract: compiled.contract_version.clone(),
        },
        size: compiled.size,
        compile_time,
        cases,
        compiled,
    })
}

/// Runs one decision on a compiled policy and checks it (synchronous: call
/// from a blocking context).
pub fn decide_with(
    compiled: &CompiledPolicy,
    obs: &Observation,
    limits: &Limits,
) -> Result<Decision, PolicyError> {
    let decision = compiled.decide(obs, limits)?;
    validate::check_decision(obs, &decision)?;
    Ok(decision)
}

/// One decision with the full limits on tokio's blocking pool.
async fn decide_on_blocking_pool(
    loaded: Arc<Loaded>,
    obs: Observation,
    limits: Limits,
) -> Result<Decision, PolicyError> {
    tokio::task::spawn_blocking(move || loaded.compiled.decide(&obs, &limits))
        .await
        .map_err(|e| PolicyError::Engine(format!("policy task: {e}")))
        .and_then(|r| r)
}

/// Counts the metrics module reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    pub decisions_total: u64,
    /// Failed decisions by [`PolicyError::kind`].
    pub decision_failures: BTreeMap<&'static str, u64>,
    pub loads_total: u64,
    /// Refused modules by [`PolicyError::kind`] of the root cause.
    pub load_failures: BTreeMap<&'static str, u64>,
}

/// Fuel a decision gets on the caller's async worker: far more than the
/// default policy needs, and little enough (well under a millisecond of wasm)
/// that a module spinning in a loop holds the worker no longer than that
/// before its decisions move to the blocking pool.
pub const INLINE_FUEL: u64 = 200_000;

struct Loaded {
    compiled: Arc<CompiledPolicy>,
    active: ActivePolicy,
    /// Set once a decision needed more than [`INLINE_FUEL`]: this policy's
    /// decisions run on tokio's blocking pool from then on.
    heavy: AtomicBool,
}

impl Loaded {
    fn new(compiled: Arc<CompiledPolicy>, active: ActivePolicy) -> Loaded {
        Loaded {
            compiled,
            active,
            heavy: AtomicBool::new(false),
        }
    }
}

struct Inner {
    limits: Limits,
    bundled: Arc<Loaded>,
    current: RwLock<Arc<Loaded>>,
    decisions: AtomicU64,
    loads: AtomicU64,
    decision_failures: Mutex<BTreeMap<&'static str, u64>>,
    load_failures: Mutex<BTreeMap<&'static str, u64>>,
}

/// The running policy and the means to replace it. Clones share everything.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("active", &self.active())
            .finish()
    }
}

impl PolicyEngine {
    /// Loads and self-tests the bundled default policy.
    pub fn new(limits: Limits) -> Result<Self, PolicyError> {
        let report = check(bundled::DEFAULT_COMPONENT, PolicySource::Bundled, &limits)?;
        let bundled = Arc::new(Loaded::new(report.compiled, report.policy));
        tracing::info!(
            policy = %bundled.active.name, version = %bundled.active.version,
            contract = %bundled.active.contract, sha256 = %bundled.active.sha256,
            "bundled policy loaded"
        );
        Ok(PolicyEngine {
            inner: Arc::new(Inner {
                limits,
                current: RwLock::new(bundled.clone()),
                bundled,
                decisions: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                decision_failures: Mutex::new(BTreeMap::new()),
                load_failures: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// Decides about one pool with the active policy. The call runs on the
    /// caller's worker with [`INLINE_FUEL`] (a hand-off to another thread
    /// costs more than the decision); a policy that needs more is given its
    /// full limits on tokio's blocking pool, then and for every later call.
    /// A swap while the call runs does not affect it.
    pub async fn decide(&self, obs: &Observation) -> Result<Decision, PolicyError> {
        let loaded = self.current();
        let limits = self.inner.limits;
        let inline = Limits {
            fuel: limits.fuel.min(INLINE_FUEL),
            ..limits
        };
        let result = match loaded.heavy.load(Ordering::Relaxed) {
            false => match loaded.compiled.decide(obs, &inline) {
                Err(PolicyError::FuelExhausted { .. }) if limits.fuel > INLINE_FUEL => {
                    loaded.heavy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        policy = %loaded.active.name, inline_fuel = INLINE_FUEL,
                        "policy needs more fuel than a decision on the async worker gets: its decisions run on the blocking pool from now on"
                    );
                    decide_on_blocking_pool(loaded, obs.clone(), limits).await
                }
                other => other,
            },
            true => decide_on_blocking_pool(loaded, obs.clone(), limits).await,
        }
        .and_then(|d| validate::check_decision(obs, &d).map(|()| d));
        self.count_decision(&result);
        result
    }

    /// Whether the active policy's decisions run on the caller's worker
    /// (false once one needed more than [`INLINE_FUEL`]).
    pub fn decides_inline(&self) -> bool {
        !self.current().heavy.load(Ordering::Relaxed)
    }

    /// `decide` for callers that are not async (CLI, benchmarks, tests).
    pub fn decide_blocking(&self, obs: &Observation) -> Result<Decision, PolicyError> {
        let result = decide_with(&self.current().compiled, obs, &self.inner.limits);
        self.count_decision(&result);
        result
    }

    /// The policy that decides now.
    pub fn active(&self) -> ActivePolicy {
        self.current().active.clone()
    }

    /// The bundled default's identity.
    pub fn bundled(&self) -> ActivePolicy {
        self.inner.bundled.active.clone()
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Validates `bytes` and, when it passes, makes it the active policy.
    /// On failure the running policy stays and the failure is counted.
    pub fn load(&self, bytes: &[u8], source: PolicySource) -> Result<ActivePolicy, PolicyError> {
        match check(bytes, source, &self.inner.limits) {
            Ok(report) => {
                let loaded = Arc::new(Loaded::new(report.compiled, report.policy));
                let active = loaded.active.clone();
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = loaded;
                self.inner.loads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    policy = %active.name, version = %active.version, sha256 = %active.sha256,
                    contract = %active.contract, source = active.source.as_str(),
                    "policy swapped in"
                );
                Ok(active)
            }
            Err(e) => {
                *lock(&self.inner.load_failures)
                    .entry(e.root().kind())
                    .or_default() += 1;
                tracing::warn!(error = %e, "policy refused; the running policy stays");
                Err(e)
            }
        }
    }

    /// Makes the bundled default active again.
    pub fn reset_to_bundled(&self) -> ActivePolicy {
        let bundled = self.inner.bundled.clone();
        let active = bundled.active.clone();
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current, &bundled) {
            *current = bundled;
            tracing::info!(policy = %active.name, sha256 = %active.sha256, "back to the bundled policy");
        }
        active
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> PolicyCounters {
        PolicyCounters {
            decisions_total: self.inner.decisions.load(Ordering::Relaxed),
            decision_failures: lock(&self.inner.decision_failures).clone(),
            loads_total: self.inner.loads.load(Ordering::Relaxed),
            load_failures: lock(&self.inner.load_failures).clone(),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count_decision(&self, result: &Result<Decision, PolicyError>) {
        self.inner.decisions.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            *lock(&self.inner.decision_failures)
                .entry(e.kind())
                .or_default() += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
