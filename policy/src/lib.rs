//! The default MayastorPool policy: decides state transitions from an observation.
//!
//! `decide` is the logic, written against the SDK's `model` and unit-tested
//! natively. With the `export-default` feature (the host's build turns it on)
//! the wasm build exports it as a component; example policies reuse this
//! crate without the feature and export their own.

pub mod decide;

pub use decide::{decide, info};

#[cfg(all(target_arch = "wasm32", feature = "export-default"))]
msp_policy_sdk::export_policy!(crate::decide::info, crate::decide::decide);
