//! The sandbox: one wasmtime engine for the process, compiled policies, and
//! running one decision under fuel, deadline and memory limits.
//!
//! Rooms as in Kubewarden's evaluator: bytes are checked and compiled once per
//! sha256 ([`compile`], cached); a compiled policy holds a pre-instance; each
//! decision runs in an instance taken from a small idle list or made fresh from
//! the pre-instance, and the instance is dropped after any error (a trapped
//! instance cannot be entered again) and after [`MAX_USES`] decisions, so state
//! a policy keeps in its memory cannot drift far.
//!
//! Memory is bounded twice: per instance (every linear memory of it together,
//! [`Limits::memory_bytes`]) and for all instances of the process together,
//! running and idle ([`Limits::total_memory_bytes`]): each growth of a linear
//! memory reserves its bytes in one process-wide account and a dropped
//! instance gives them back, so a module that touches a lot cannot multiply
//! it by the number of pools deciding at once. Only small instances are kept
//! idle ([`IDLE_MAX_BYTES`]), and only while the account is under half the
//! budget: an idle instance's memory stays resident.
//!
//! Calls here are synchronous and may take up to the deadline: the engine
//! runs them on an async worker only under a small fuel budget
//! ([`crate::INLINE_FUEL`]), and with the full limits on tokio's blocking pool,
//! at most [`Limits::concurrent`] at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use msp_policy_sdk::model;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};

use super::bindings::{
    Contract, DECIDER_UNVERSIONED, adapt_v0_1, adapt_v0_2, current, v0_1, v0_2, v0_3,
};
use super::error::PolicyError;

/// How often the epoch ticker advances the engine's epoch.
const TICK: Duration = Duration::from_millis(5);
/// An instance is retired after this many decisions.
pub const MAX_USES: u32 = 1_000;
/// Idle instances kept per compiled policy (one per concurrent decision).
const MAX_IDLE: usize = 16;
/// Compiled components kept for reuse (by sha256) beyond those in use.
const MAX_CACHED: usize = 16;
/// An instance whose linear memories hold more than this is dropped after
/// its call rather than kept idle.
pub const IDLE_MAX_BYTES: usize = 4 << 20;

/// Bytes of linear memory all instances of the process hold together.
static RESERVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes of linear memory all policy instances of the process hold now
/// (running and idle).
pub fn memory_reserved() -> usize {
    RESERVED.load(Ordering::SeqCst)
}

/// Limits applied to every policy call. Configuration, not constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (one default decision takes about 10,000).
    pub fuel: u64,
    /// Wall-clock backstop per call, enforced by epoch interruption.
    pub deadline: Duration,
    /// Linear memory per instance (all its memories together), in bytes.
    pub memory_bytes: usize,
    /// Linear memory of all instances of the process together, running and
    /// idle, in bytes.
    pub total_memory_bytes: usize,
    /// Decisions with the full limits (on tokio's blocking pool) at once.
    pub concurrent: usize,
    /// Largest module accepted, in bytes.
    pub module_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 5_000_000,
            deadline: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            // Within the pod's 256 MiB beside the operator's own: the heavy
            // decisions at once at the per-instance limit, and room for the
            // inline and idle ones.
            total_memory_bytes: 128 << 20,
            concurrent: 3,
            module_bytes: 8 << 20,
        }
    }
}

/// Per-store state: the limiter, which remembers a refused growth so that the
/// resulting failure is reported as a memory overrun (it does not surface as
/// a `Trap`), and the bytes this store holds in the process-wide account
/// (given back when the store is dropped).
struct StoreData {
    memory_limit: usize,
    total_limit: usize,
    memory_denied: bool,
    budget_denied: bool,
    reserved: usize,
}

impl StoreData {
    fn new(limits: &Limits) -> StoreData {
        StoreData {
            memory_limit: limits.memory_bytes,
            total_limit: limits.total_memory_bytes,
            memory_denied: false,
            budget_denied: false,
            reserved: 0,
        }
    }
}

impl Drop for StoreData {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.reserved, Ordering::SeqCst);
    }
}

impl ResourceLimiter for StoreData {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        // Every memory of the instance counts, not each one alone.
        if self.reserved.saturating_add(grow) > self.memory_limit {
            self.memory_denied = true;
            return Ok(false);
        }
        let total = self.total_limit;
        let reserved = RESERVED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            held.checked_add(grow).filter(|after| *after <= total)
        });
        if reserved.is_err() {
            self.budget_denied = true;
            return Ok(false);
        }
        self.reserved += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        16
    }
}

/// The process-wide wasmtime engine and its epoch ticker.
struct Sandbox {
    engine: Engine,
    cache: Mutex<HashMap<[u8; 32], Arc<CompiledPolicy>>>,
}

fn sandbox() -> Result<&'static Sandbox, PolicyError> {
    static SANDBOX: OnceLock<Result<Sandbox, String>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .consume_fuel(true)
                .epoch_interruption(true)
                .wasm_component_model(true);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let ticking = engine.clone();
            static STARTED: AtomicBool = AtomicBool::new(false);
            if !STARTED.swap(true, Ordering::SeqCst) {
                std::thread::Builder::new()
                    .name("policy-epoch".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(TICK);
                            ticking.increment_epoch();
                        }
                    })
                    .map_err(|e| format!("starting the epoch ticker: {e}"))?;
            }
            Ok(Sandbox {
                engine,
                cache: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .map_err(|e| PolicyError::Engine(e.clone()))
}

/// The process-wide wasmtime engine (for tests that need to make, for
/// example, precompiled bytes with the same configuration).
pub fn wasmtime_engine() -> Result<Engine, PolicyError> {
    Ok(sandbox()?.engine.clone())
}

/// A pre-instance with the bindings of the component's contract version.
enum Pre {
    V0_1(v0_1::PolicyPre<StoreData>),
    V0_2(v0_2::PolicyPre<StoreData>),
    V0_3(v0_3::PolicyPre<StoreData>),
}

/// An instance with the bindings of its contract version.
enum Instance {
    V0_1(v0_1::Policy),
    V0_2(v0_2::Policy),
    V0_3(v0_3::Policy),
}

/// An instance ready to decide, and how often it did.
struct Ready {
    store: Store<StoreData>,
    policy: Instance,
    uses: u32,
}

/// A compiled, structurally checked policy. Not yet conformance-tested: see
/// `validate::self_test`.
pub struct CompiledPolicy {
    pub sha256: [u8; 32],
    pub info: model::PolicyInfo,
    pub size: usize,
    /// The contract version the component implements (how it is called).
    pub contract: Contract,
    /// That version as the component's export names it, e.g. "0.1.0".
    pub contract_version: String,
    pre: Pre,
    idle: Mutex<Vec<Ready>>,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("contract", &self.contract_version)
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

/// Checks and compiles `bytes`, or returns the cached result for the same
/// sha256. Calls the module's `info()` under `limits`.
pub fn compile(bytes: &[u8], limits: &Limits) -> Result<Arc<CompiledPolicy>, PolicyError> {
    let sandbox = sandbox()?;
    if bytes.len() > limits.module_bytes {
        return Err(PolicyError::TooLarge {
            size: bytes.len(),
            limit: limits.module_bytes,
        });
    }
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(hit) = lock(&sandbox.cache).get(&sha256) {
        return Ok(hit.clone());
    }
    let compiled = Arc::new(compile_uncached(bytes, limits)?);
    let mut cache = lock(&sandbox.cache);
    if cache.len() >= MAX_CACHED {
        // Drop only modules nobody holds: clearing all would also drop the
        // running policy's, and the next check of it would compile it again.
        // Modules in use are few, so the cache stays small.
        cache.retain(|_, compiled| Arc::strong_count(compiled) > 1);
    }
    cache.insert(sha256, compiled.clone());
    Ok(compiled)
}

/// `compile` without the cache (the benchmark measures compile time with it).
pub fn compile_uncached(bytes: &[u8], limits: &Limits) -> Result<CompiledPolicy, PolicyError> {
    let sandbox = sandbox()?;
    if bytes.len() > limits.module_bytes {
        return Err(PolicyError::TooLarge {
            size: bytes.len(),
            limit: limits.module_bytes,
        });
    }
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    check_header(bytes)?;
    // `Component::new` parses and validates the binary and compiles it with
    // cranelift; it never treats input as precompiled code.
    let component = Component::new(&sandbox.engine, bytes)
        .map_err(|e| PolicyError::Garbage(format!("{e:#}")))?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&sandbox.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if !imports.is_empty() {
        return Err(PolicyError::Imports(imports));
    }
    let exports: Vec<String> = ty
        .exports(&sandbox.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let (contract, export) = contract_of(&exports)?;
    let contract_version = export
        .rsplit_once('@')
        .map_or_else(|| contract.as_str().to_string(), |(_, v)| v.to_string());
    let linker: Linker<StoreData> = Linker::new(&sandbox.engine);
    let wrong_world = |e: wasmtime::Error| PolicyError::WrongWorld {
        exports: exports.clone(),
        detail: format!("{e:#}"),
    };
    let pre = match contract {
        Contract::V0_1 => linker
            .instantiate_pre(&component)
            .and_then(v0_1::PolicyPre::new)
            .map(Pre::V0_1),
        Contract::V0_2 => linker
            .instantiate_pre(&component)
            .and_then(v0_2::PolicyPre::new)
            .map(Pre::V0_2),
        Contract::V0_3 => linker
            .instantiate_pre(&component)
            .and_then(v0_3::PolicyPre::new)
            .map(Pre::V0_3),
    }
    .map_err(wrong_world)?;
    let mut compiled = CompiledPolicy {
        sha256,
        info: model::PolicyInfo {
            name: String::new(),
            version: String::new(),
        },
        size: bytes.len(),
        contract,
        contract_version,
        pre,
        idle: Mutex::new(Vec::new()),
    };
    compiled.info = compiled.call(limits, |policy, store| match policy {
        Instance::V0_1(p) => p
            .openebs_msp_policy_decider()
            .call_info(store)
            .map(adapt_v0_1::info_from_wit),
        Instance::V0_2(p) => p
            .openebs_msp_policy_decider()
            .call_info(store)
            .map(adapt_v0_2::info_from_wit),
        Instance::V0_3(p) => p
            .openebs_msp_policy_decider()
            .call_info(store)
            .map(current::info_from_wit),
    })?;
    Ok(compiled)
}

/// The contract a component implements, from its exports: the newest
/// version the host runs among its decider exports (and that export's name).
/// A decider of a version the host does not run is refused as unknown, one
/// without any decider as not a policy.
fn contract_of(exports: &[String]) -> Result<(Contract, String), PolicyError> {
    let mut unknown = None;
    let mut best: Option<(Contract, &String)> = None;
    for export in exports {
        match Contract::of_export(export) {
            Some(Ok(c)) if best.is_none_or(|(b, _)| c > b) => best = Some((c, export)),
            Some(Err(_)) => unknown = unknown.or(Some(export)),
            _ => {}
        }
    }
    match (best, unknown) {
        (Some((c, export)), _) => Ok((c, export.clone())),
        (None, Some(found)) => Err(PolicyError::UnknownVersion {
            found: found.clone(),
            expected: Contract::accepted(),
        }),
        (None, None) => Err(PolicyError::WrongWorld {
            exports: exports.to_vec(),
            detail: format!(
                "no export {DECIDER_UNVERSIONED}@<version> (this host runs {})",
                Contract::accepted()
            ),
        }),
    }
}

/// Refuses precompiled code and core modules before any parsing.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), PolicyError> {
    if Engine::detect_precompiled(bytes).is_some() || bytes.starts_with(b"\x7fELF") {
        return Err(PolicyError::Precompiled);
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0, 0, 0]) => Err(PolicyError::NotAComponent),
        _ => Err(PolicyError::Garbage(
            "no wasm component header (\\0asm, version 0x0d, layer 1)".into(),
        )),
    }
}

impl CompiledPolicy {
    /// Runs one decision (not checked: see `validate::check_decision`). The
    /// observation is given in the component's contract version: an older
    /// component gets it without what later versions added.
    pub fn decide(
        &self,
        obs: &model::Observation,
        limits: &Limits,
    ) -> Result<model::Decision, PolicyError> {
        self.call(limits, |policy, store| match policy {
            Instance::V0_1(p) => p
                .openebs_msp_policy_decider()
                .call_decide(store, &adapt_v0_1::observation_to_wit(obs))
                .map(adapt_v0_1::decision_from_wit),
            Instance::V0_2(p) => p
                .openebs_msp_policy_decider()
                .call_decide(store, &adapt_v0_2::observation_to_wit(obs))
                .map(adapt_v0_2::decision_from_wit),
            Instance::V0_3(p) => p
                .openebs_msp_policy_decider()
                .call_decide(store, &current::observation_to_wit(obs))
                .map(current::decision_from_wit),
        })
    }

    /// Creates a fresh instance from the pre-instance (for the benchmark's
    /// instantiate cost and for `MAX_USES`).
    fn instantiate(&self, limits: &Limits) -> Result<Ready, PolicyError> {
        let sandbox = sandbox()?;
        let mut store = Store::new(&sandbox.engine, StoreData::new(limits));
        store.limiter(|data| data);
        arm(&mut store, limits)?;
        let policy = match &self.pre {
            Pre::V0_1(pre) => pre.instantiate(&mut store).map(Instance::V0_1),
            Pre::V0_2(pre) => pre.instantiate(&mut store).map(Instance::V0_2),
            Pre::V0_3(pre) => pre.instantiate(&mut store).map(Instance::V0_3),
        }
        .map_err(|e| classify(e, store.data(), limits))?;
        Ok(Ready {
            store,
            policy,
            uses: 0,
        })
    }

    /// Measures instantiation alone (benchmark helper).
    pub fn instantiate_fresh(&self, limits: &Limits) -> Result<(), PolicyError> {
        self.instantiate(limits).map(drop)
    }

    /// Drops idle instances so that the next call instantiates afresh.
    pub fn drop_idle(&self) {
        lock(&self.idle).clear();
    }

    fn call<T>(
        &self,
        limits: &Limits,
        f: impl FnOnce(&Instance, &mut Store<StoreData>) -> wasmtime::Result<T>,
    ) -> Result<T, PolicyError> {
        let idle = lock(&self.idle).pop();
        let mut ready = match idle {
            Some(r) => r,
            None => self.instantiate(limits)?,
        };
        arm(&mut ready.store, limits)?;
        let result = f(&ready.policy, &mut ready.store);
        match result {
            Ok(value) => {
                ready.uses += 1;
                // Kept idle only when small and while the budget is far
                // from spent: an idle instance's memory stays resident.
                let small = ready.store.data().reserved <= IDLE_MAX_BYTES;
                let room = memory_reserved() <= limits.total_memory_bytes / 2;
                if ready.uses < MAX_USES && small && room {
                    let mut idle = lock(&self.idle);
                    if idle.len() < MAX_IDLE {
                        idle.push(ready);
                    }
                }
                Ok(value)
            }
            // The instance is dropped here: never entered again after an error.
            Err(e) => Err(classify(e, ready.store.data(), limits)),
        }
    }
}

/// Sets the per-call fuel, deadline and memory flag on a store.
fn arm(store: &mut Store<StoreData>, limits: &Limits) -> Result<(), PolicyError> {
    store
        .set_fuel(limits.fuel)
        .map_err(|e| PolicyError::Engine(format!("{e:#}")))?;
    // The default epoch deadline is 0, which would trap at once.
    let ticks = limits
        .deadline
        .as_millis()
        .div_ceil(TICK.as_millis())
        .max(1) as u64
        + 1;
    store.set_epoch_deadline(ticks);
    // An idle instance made under other limits (the inline ones) gets this
    // call's.
    let data = store.data_mut();
    data.memory_limit = limits.memory_bytes;
    data.total_limit = limits.total_memory_bytes;
    data.memory_denied = false;
    data.budget_denied = false;
    Ok(())
}

/// Maps a wasmtime failure to its typed error. A refused memory growth is
/// known from the limiter, not from the error (it is not a `Trap`).
fn classify(err: wasmtime::Error, data: &StoreData, limits: &Limits) -> PolicyError {
    if data.memory_denied {
        return PolicyError::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    if data.budget_denied {
        return PolicyError::MemoryBudget {
            budget: limits.total_memory_bytes,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PolicyError::FuelExhausted {
            budget: limits.fuel,
        },
        Some(Trap::Interrupt) => PolicyError::Deadline {
            ms: limits.deadline.as_millis() as u64,
        },
        _ => PolicyError::Trap(format!("{err:#}")),
    }
}

/// Locks a mutex, also after a panic elsewhere poisoned it (the data are
/// caches and idle lists, valid in any state).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
