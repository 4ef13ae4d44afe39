//! The Mayastor gRPC API, generated from the .proto files in this crate.
//!
//! - [`v0`]: package `mayastor`, service `Mayastor` (CreatePool, DestroyPool,
//!   ListPools, ListBlockDevices, CreateReplica, DestroyReplica, ListReplicas).
//! - [`v1`]: package `mayastor.v1`, services `PoolRpc`, `HostRpc`
//!   (ListBlockDevices), `ReplicaRpc` (create, destroy, list) and `Registration`.

pub mod v0 {
    tonic::include_proto!("mayastor");
}

pub mod v1 {
    tonic::include_proto!("mayastor.v1");
}
