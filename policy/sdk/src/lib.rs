//! The MayastorPool policy SDK: everything a policy crate needs, and nothing
//! of the default policy.
//!
//! `model` mirrors the WIT contract (`wit/policy.wit`) in plain Rust so that a
//! policy's logic is unit-tested natively; `wasm`, built only for wasm32,
//! holds the generated bindings and `export_policy!`, which makes a crate a
//! component; `testing` builds observations for a policy's unit tests.

pub mod model;
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
