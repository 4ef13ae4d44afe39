//! The MayastorPool operator: watches `MayastorPool` resources and makes the
//! pools they describe real on Mayastor storage nodes over gRPC.
//!
//! The seed's split of responsibilities holds throughout: the operator reads
//! spec and metadata and writes only the status subresource.
//!
//! Newcomers start with [`controller::reconcile`]: one pool, observed,
//! decided by the policy, acted on, reported. Around it:
//! - [`controller`]: the reconcile and the sweep of deleted resources;
//! - [`nodes`]: storage nodes, their registration and their pool API;
//! - [`state`]: the resource type, watch caches, the ledger, Events;
//! - [`policy`]: the policy ConfigMap watch and shadow mode;
//! - [`lifecycle`]: flags, wiring, leader election, probes, shutdown;
//! - [`metrics`]: what the operator exports to Prometheus.

pub mod controller;
pub mod lifecycle;
pub mod metrics;
pub mod nodes;
pub mod policy;
pub mod state;
