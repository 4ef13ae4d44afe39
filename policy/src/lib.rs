//! The default MayastorPool policy: decides state transitions from an observation.
//!
//! `model` mirrors the WIT contract in plain Rust so that the decision logic is
//! unit-tested natively; `decide` is that logic; the wasm export glue (built
//! only for wasm32) converts to and from the generated bindings.

pub mod decide;
pub mod model;

pub use decide::{decide, info};
