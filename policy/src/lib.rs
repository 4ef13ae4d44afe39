//! The default MayastorPool policy: decides state transitions from an observation.
//!
//! `model` mirrors the WIT contract in plain Rust so that the decision logic is
//! unit-tested natively; the wasm export glue converts to and from it.

pub mod model;
