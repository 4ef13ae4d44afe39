//! The MayastorPool operator: watches `MayastorPool` resources and makes the
//! pools they describe real on Mayastor storage nodes over gRPC.
//!
//! The seed's split of responsibilities holds throughout: the operator reads
//! spec and metadata and writes only the status subresource.

pub mod cache;
pub mod controller;
pub mod crd;
pub mod disk_safety;
pub mod events;
pub mod fence;
pub mod flags;
pub mod health;
pub mod idempotent;
pub mod leader;
pub mod leading;
pub mod ledger;
pub mod metrics;
pub mod node_client;
pub mod policy_cli;
pub mod policy_reload;
pub mod policy_shadow;
pub mod policy_watch;
pub mod registry;
pub mod run;
pub mod shutdown;
pub mod telemetry;
