//! What can go wrong with a policy module, as one typed error.
//!
//! Every failure of loading or running a policy maps to exactly one variant,
//! so the operator can report it (status reason, Warning event, metric label
//! from [`PolicyError::kind`]) and carry on with the last good policy.

use thiserror::Error;

use crate::signature::SignatureError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("precompiled native code (.cwasm) is never accepted: supply the .wasm component")]
    Precompiled,
    #[error(
        "a core wasm module, not a component: wrap it with `wasm-tools component new` (or wit-component)"
    )]
    NotAComponent,
    #[error("not a valid wasm component: {0}")]
    Garbage(String),
    #[error("the module imports {0:?}: a policy must import nothing (no WASI, no host functions)")]
    Imports(Vec<String>),
    /// `expected` lists the versions the host runs ("0.1.x, 0.2.x").
    #[error("the module implements contract {found}; this host runs contract versions {expected}")]
    UnknownVersion { found: String, expected: String },
    #[error("the module is not a MayastorPool policy (exports {exports:?}): {detail}")]
    WrongWorld {
        exports: Vec<String>,
        detail: String,
    },
    #[error("the policy trapped: {0}")]
    Trap(String),
    #[error("the policy ran out of fuel (budget {budget} units)")]
    FuelExhausted { budget: u64 },
    #[error("the policy tried to use more than {limit} bytes of memory")]
    MemoryLimit { limit: usize },
    #[error("the policy ran past its deadline of {ms} ms")]
    Deadline { ms: u64 },
    #[error("the policy returned a nonsensical decision: {0}")]
    Nonsense(String),
    #[error("conformance self-test \"{case}\" failed: {source}")]
    Conformance {
        case: String,
        #[source]
        source: Box<PolicyError>,
    },
    #[error("policy engine failure: {0}")]
    Engine(String),
    /// Trust is configured and the module's signature does not verify.
    #[error("{0}")]
    Signature(SignatureError),
    /// Trust is configured and its keys cannot be had (`cause`: a
    /// `trust-*` kind), so no module can be verified.
    #[error("no module can be verified: {detail}")]
    Trust { cause: &'static str, detail: String },
}

impl PolicyError {
    /// A short stable name for metric labels and event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::TooLarge { .. } => "too-large",
            PolicyError::Precompiled => "precompiled",
            PolicyError::NotAComponent => "not-a-component",
            PolicyError::Garbage(_) => "garbage",
            PolicyError::Imports(_) => "imports",
            PolicyError::UnknownVersion { .. } => "unknown-version",
            PolicyError::WrongWorld { .. } => "wrong-world",
            PolicyError::Trap(_) => "trap",
            PolicyError::FuelExhausted { .. } => "fuel-exhausted",
            PolicyError::MemoryLimit { .. } => "memory-limit",
            PolicyError::Deadline { .. } => "deadline",
            PolicyError::Nonsense(_) => "nonsense",
            PolicyError::Conformance { .. } => "conformance",
            PolicyError::Engine(_) => "engine",
            PolicyError::Signature(e) => e.kind(),
            PolicyError::Trust { cause, .. } => cause,
        }
    }

    /// The error beneath a conformance failure (itself otherwise).
    pub fn root(&self) -> &PolicyError {
        match self {
            PolicyError::Conformance { source, .. } => source.root(),
            other => other,
        }
    }
}
