//! Storage nodes: who is registered and alive and what pools each reports
//! ([`registry`], fed by the `Registration` gRPC service), the gRPC client of
//! one node's pool API, v0 or v1 ([`client`]), pool calls made safe to retry
//! over the io-engine's answers ([`pool_calls`]), whether a disk may be
//! written ([`disk_safety`]), whether a path still names the disk a pool
//! was created on ([`disk_identity`]), whether a pool may be destroyed
//! ([`data_safety`]) and which pool of a name is the operator's
//! ([`pool_identity`]).

pub mod client;
pub mod data_safety;
pub mod disk_identity;
pub mod disk_safety;
pub mod pool_calls;
pub mod pool_identity;
pub mod registry;
