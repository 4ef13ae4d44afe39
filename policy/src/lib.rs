//! The default MayastorPool policy: decides state transitions from an observation.
//!
//! `model` mirrors the WIT contract in plain Rust so that the decision logic is
//! unit-tested natively; `decide` is that logic; `wasm` is the export glue,
//! built only for wasm32, that makes this crate (or an example policy reusing
//! it) a component.

pub mod decide;
pub mod model;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use decide::{decide, info};
