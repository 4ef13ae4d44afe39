//! The pool API both versions offer ([`PoolApi`], implemented by `v0` and
//! `v1` on their generated clients) and the client's own types for what the
//! node answers ([`NodePool`], ...); the policy contract's types are made of
//! them in the controller's observe step.

use std::time::Duration;

/// The pool API as both versions offer it; `v0` and `v1` implement it on
/// their generated clients and differ only where the APIs do.
pub(crate) trait PoolApi {
    async fn list_pools(self, timeout: Duration) -> Result<Vec<NodePool>, tonic::Status>;
    /// `uuid`: the pool's, when the caller knows which pool it means (v1
    /// only; v0 has no pool uuid).
    async fn create_pool(
        self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status>;
    async fn import_pool(
        self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status>;
    async fn destroy_pool(self, name: &str, uuid: Option<&str>) -> Result<(), tonic::Status>;
}

/// A pool as the node lists it (v0 and v1 share the fields), its disks as
/// the device paths the resources name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePool {
    pub name: String,
    pub disks: Vec<String>,
    pub state: PoolHealth,
    /// Bytes.
    pub capacity: u64,
    pub used: u64,
    /// Replicas, snapshots and clones on it: not in a pool's listing, set
    /// by the registry's refresh from one listing of the node (`None`
    /// until then).
    pub replicas: Option<u32>,
}

/// A pool's health as the node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolHealth {
    Unknown,
    Online,
    Degraded,
    Faulted,
}

/// A pool as the node reports it (v0 and v1 share the fields and the state
/// numbers).
pub(super) fn node_pool(
    name: String,
    disks: &[String],
    state: i32,
    capacity: u64,
    used: u64,
) -> NodePool {
    NodePool {
        name,
        disks: disks.iter().map(|d| disk_path(d)).collect(),
        state: pool_health(state),
        capacity,
        used,
        // Counted by the pool-list refresh, one listing per node.
        replicas: None,
    }
}

/// A request of `message` bounded by `timeout` (the listings; the pool
/// calls are bounded by the channel's timeout).
pub(super) fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(timeout);
    req
}

/// A disk as the node reports it, reduced to the device path: io-engine
/// reports `aio:///dev/sdb?uuid=…`, resources name `/dev/sdb`.
pub fn disk_path(reported: &str) -> String {
    let without_query = reported.split('?').next().unwrap_or(reported);
    match without_query.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        None => without_query.to_string(),
    }
}

pub(super) fn pool_health(state: i32) -> PoolHealth {
    // v0 and v1 share the numbers: UNKNOWN 0, ONLINE 1, DEGRADED 2, FAULTED 3.
    match state {
        1 => PoolHealth::Online,
        2 => PoolHealth::Degraded,
        3 => PoolHealth::Faulted,
        _ => PoolHealth::Unknown,
    }
}

/// Which pool a loaded pool of a name is: its uuid (v1; v0 has none) and
/// disks (as paths).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedPool {
    pub uuid: Option<String>,
    pub disks: Vec<String>,
}

/// A block device as the node reports it: what the disk safety check and
/// the disk identity check need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockDeviceInfo {
    /// `/dev/...` (or the path of a file the node serves as a disk).
    pub devname: String,
    /// Other names of it (`/dev/disk/by-id/...`).
    pub devlinks: Vec<String>,
    /// The disk this partition is part of, for a partition.
    pub partition_parent: Option<String>,
    /// Set when the node found a filesystem or another content signature
    /// (possibly empty when only a mount told it).
    pub fstype: Option<String>,
    pub mountpoints: Vec<String>,
    /// False when the node calls the device in use.
    pub available: bool,
    /// Bytes (the node reports 512-byte sectors); 0 when it reports none.
    pub size: u64,
}

/// What a pool holds, as the node lists it: a replica, a snapshot or a clone
/// (v0 knows only replicas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolContent {
    /// The pool's name.
    pub pool: String,
    pub uuid: String,
    pub kind: ContentKind,
    /// Bytes.
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    Replica,
    Snapshot,
    Clone,
}

impl ContentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Replica => "replica",
            ContentKind::Snapshot => "snapshot",
            ContentKind::Clone => "clone",
        }
    }
}
