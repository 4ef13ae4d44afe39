//! A stand-in for the Mayastor io-engine: a storage node that speaks the
//! io-engine's gRPC pool API (v0 `mayastor.Mayastor` and v1
//! `mayastor.v1.PoolRpc`) and registers with the control plane
//! (`mayastor.v1.Registration`), keeping pools on real block devices.
//!
//! It is not the io-engine: it creates no volumes (a pool's `used` is 0), it
//! accepts several disks per pool where the io-engine takes one, and its
//! on-disk format is its own label ([`label`]), not an SPDK blobstore. What it
//! shares with the io-engine is the wire API and the pool behaviour the
//! operator relies on: create-or-import, the io-engine's answers to a repeated
//! create or an unknown destroy ([`pools`]), no re-import by
//! itself after a restart, state derived from the disks.
//!
//! Rooms: [`label`] (on-disk format), [`probe`] (foreign signatures by their
//! magic numbers), [`libblkid`] (every signature, as libblkid finds them),
//! [`devices`] (the block devices ListBlockDevices reports),
//! [`disk`] (disk names and I/O), [`pools`] (pool semantics), [`grpc`] (the
//! services), [`registration`] (heartbeat), [`node`] (one running node),
//! [`process`] (the binary as a child process, for tests), [`recorder`] (a
//! registration server that records heartbeats, for tests).

pub mod devices;
pub mod disk;
pub mod grpc;
pub mod label;
pub mod libblkid;
pub mod node;
pub mod pools;
pub mod probe;
pub mod process;
pub mod recorder;
pub mod registration;
pub mod replicas;
