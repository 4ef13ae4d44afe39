//! gRPC client for one storage node's pool API.
//!
//! One [`NodeClient`] per registered node holds one lazily connected tonic
//! `Channel` (cheap to clone, reused by every call) and speaks v1 `PoolRpc`
//! when the node advertised V1 at registration, else v0 `Mayastor`. Each call
//! has a deadline. Replies are converted to the policy model's
//! [`ReportedPool`], with disks normalised from URIs (`aio:///dev/sdb?uuid=…`)
//! to the device paths the resources name.
//!
//! It also asks the node which block devices it has (v1
//! `HostRpc.ListBlockDevices`, v0 `ListBlockDevices`), reduced to
//! [`BlockDeviceInfo`], for the disk safety check before a create.

use std::time::Duration;

use msp_policy::model::{ErrorKind, OperationError, ReportedPool, ReportedState};
use msp_proto::{v0, v1};
use tonic::transport::{Channel, Endpoint};

/// Which pool API a node speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V0,
    V1,
}

impl ApiVersion {
    /// The newest API the node advertised (V1 when listed, else V0).
    pub fn from_advertised(versions: &[i32]) -> ApiVersion {
        if versions.contains(&(v1::ApiVersion::V1 as i32)) {
            ApiVersion::V1
        } else {
            ApiVersion::V0
        }
    }
}

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
}

impl NodeError {
    /// The policy model's classification of this error.
    pub fn kind(&self) -> ErrorKind {
        use tonic::Code;
        match self {
            NodeError::Endpoint { .. } => ErrorKind::InvalidArgument,
            NodeError::Rpc(status) => match status.code() {
                Code::InvalidArgument => ErrorKind::InvalidArgument,
                Code::FailedPrecondition => ErrorKind::FailedPrecondition,
                Code::AlreadyExists => ErrorKind::AlreadyExists,
                Code::NotFound => ErrorKind::NotFound,
                Code::Unavailable => ErrorKind::Unavailable,
                Code::DeadlineExceeded | Code::Cancelled => ErrorKind::DeadlineExceeded,
                Code::ResourceExhausted => ErrorKind::ResourceExhausted,
                Code::Internal | Code::DataLoss => ErrorKind::Internal,
                _ => ErrorKind::Other,
            },
        }
    }

    /// The error as the observation carries it.
    pub fn to_operation_error(&self) -> OperationError {
        let message = match self {
            NodeError::Rpc(status) => status.message().to_string(),
            other => other.to_string(),
        };
        OperationError {
            kind: self.kind(),
            message,
        }
    }
}

/// A block device as the node reports it: what the disk safety check needs.
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
}

/// Client of one storage node: one reused channel, one API version.
#[derive(Clone, Debug)]
pub struct NodeClient {
    endpoint: String,
    api: ApiVersion,
    channel: Channel,
}

impl NodeClient {
    /// A client for `endpoint` ("ip:port" as the node registered it). The
    /// channel connects on first use and reconnects by itself; every request
    /// is bounded by `timeout`.
    pub fn new(
        endpoint: &str,
        api: ApiVersion,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<NodeClient, NodeError> {
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|source| NodeError::Endpoint {
                endpoint: endpoint.to_string(),
                source,
            })?
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(NodeClient {
            endpoint: endpoint.to_string(),
            api,
            channel,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn api(&self) -> ApiVersion {
        self.api
    }

    /// All pools the node has loaded.
    pub async fn list_pools(&self, timeout: Duration) -> Result<Vec<ReportedPool>, NodeError> {
        match self.api {
            ApiVersion::V1 => {
                let mut req = tonic::Request::new(v1::ListPoolOptions::default());
                req.set_timeout(timeout);
                let reply = self.v1().list_pools(req).await?.into_inner();
                Ok(reply.pools.into_iter().map(from_v1).collect())
            }
            ApiVersion::V0 => {
                let mut req = tonic::Request::new(v0::Null {});
                req.set_timeout(timeout);
                let reply = self.v0().list_pools(req).await?.into_inner();
                Ok(reply.pools.into_iter().map(from_v0).collect())
            }
        }
    }

    /// CreatePool: create, or import when the disks carry this pool's label.
    pub async fn create_pool(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<ReportedPool, NodeError> {
        match self.api {
            ApiVersion::V1 => {
                let req = v1::CreatePoolRequest {
                    name: name.to_string(),
                    disks: disks.to_vec(),
                    ..Default::default()
                };
                Ok(from_v1(self.v1().create_pool(req).await?.into_inner()))
            }
            ApiVersion::V0 => {
                let req = v0::CreatePoolRequest {
                    name: name.to_string(),
                    disks: disks.to_vec(),
                };
                Ok(from_v0(self.v0().create_pool(req).await?.into_inner()))
            }
        }
    }

    /// ImportPool on v1 (never formats a disk); v0 has no import, and its
    /// CreatePool imports a labelled disk.
    pub async fn import_pool(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<ReportedPool, NodeError> {
        match self.api {
            ApiVersion::V1 => {
                let req = v1::ImportPoolRequest {
                    name: name.to_string(),
                    disks: disks.to_vec(),
                    ..Default::default()
                };
                Ok(from_v1(self.v1().import_pool(req).await?.into_inner()))
            }
            ApiVersion::V0 => self.create_pool(name, disks).await,
        }
    }

    /// DestroyPool (OK when the node does not know the pool).
    pub async fn destroy_pool(&self, name: &str) -> Result<(), NodeError> {
        match self.api {
            ApiVersion::V1 => {
                let req = v1::DestroyPoolRequest {
                    name: name.to_string(),
                    uuid: None,
                };
                self.v1().destroy_pool(req).await?;
            }
            ApiVersion::V0 => {
                let req = v0::DestroyPoolRequest {
                    name: name.to_string(),
                };
                self.v0().destroy_pool(req).await?;
            }
        }
        Ok(())
    }

    /// Every block device of the node (`all: true`: the unavailable ones too).
    pub async fn list_block_devices(
        &self,
        timeout: Duration,
    ) -> Result<Vec<BlockDeviceInfo>, NodeError> {
        match self.api {
            ApiVersion::V1 => {
                let mut req = tonic::Request::new(v1::ListBlockDevicesRequest { all: true });
                req.set_timeout(timeout);
                let mut client = v1::host_rpc_client::HostRpcClient::new(self.channel.clone());
                let reply = client.list_block_devices(req).await?.into_inner();
                Ok(reply.devices.into_iter().map(device_from_v1).collect())
            }
            ApiVersion::V0 => {
                let mut req = tonic::Request::new(v0::ListBlockDevicesRequest { all: true });
                req.set_timeout(timeout);
                let reply = self.v0().list_block_devices(req).await?.into_inner();
                Ok(reply.devices.into_iter().map(device_from_v0).collect())
            }
        }
    }

    fn v1(&self) -> v1::pool_rpc_client::PoolRpcClient<Channel> {
        v1::pool_rpc_client::PoolRpcClient::new(self.channel.clone())
    }

    fn v0(&self) -> v0::mayastor_client::MayastorClient<Channel> {
        v0::mayastor_client::MayastorClient::new(self.channel.clone())
    }
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

fn reported_state(state: i32) -> ReportedState {
    // v0 and v1 share the numbers: UNKNOWN 0, ONLINE 1, DEGRADED 2, FAULTED 3.
    match state {
        1 => ReportedState::Online,
        2 => ReportedState::Degraded,
        3 => ReportedState::Faulted,
        _ => ReportedState::Unknown,
    }
}

fn from_v1(pool: v1::Pool) -> ReportedPool {
    ReportedPool {
        name: pool.name,
        disks: pool.disks.iter().map(|d| disk_path(d)).collect(),
        state: reported_state(pool.state),
        capacity: pool.capacity,
        used: pool.used,
    }
}

fn from_v0(pool: v0::Pool) -> ReportedPool {
    ReportedPool {
        name: pool.name,
        disks: pool.disks.iter().map(|d| disk_path(d)).collect(),
        state: reported_state(pool.state),
        capacity: pool.capacity,
        used: pool.used,
    }
}

fn device_from_v1(d: v1::BlockDevice) -> BlockDeviceInfo {
    BlockDeviceInfo {
        devname: d.devname,
        devlinks: d.devlinks,
        partition_parent: d.partition.map(|p| p.parent),
        fstype: d.filesystem.as_ref().map(|f| f.fstype.clone()),
        mountpoints: d.filesystem.map(|f| f.mountpoints).unwrap_or_default(),
        available: d.available,
    }
}

fn device_from_v0(d: v0::BlockDevice) -> BlockDeviceInfo {
    BlockDeviceInfo {
        devname: d.devname,
        devlinks: d.devlinks,
        partition_parent: d.partition.map(|p| p.parent),
        fstype: d.filesystem.as_ref().map(|f| f.fstype.clone()),
        mountpoints: d
            .filesystem
            .map(|f| f.mountpoint)
            .filter(|m| !m.is_empty())
            .into_iter()
            .collect(),
        available: d.available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_uris_become_paths() {
        assert_eq!(disk_path("aio:///dev/sdb?uuid=1234"), "/dev/sdb");
        assert_eq!(disk_path("uring:///dev/loop3"), "/dev/loop3");
        assert_eq!(disk_path("/dev/loop0"), "/dev/loop0");
    }

    #[test]
    fn newest_advertised_api_wins() {
        assert_eq!(ApiVersion::from_advertised(&[0, 1]), ApiVersion::V1);
        assert_eq!(ApiVersion::from_advertised(&[0]), ApiVersion::V0);
        assert_eq!(ApiVersion::from_advertised(&[]), ApiVersion::V0);
    }

    #[test]
    fn states_map_from_both_apis() {
        assert_eq!(reported_state(1), ReportedState::Online);
        assert_eq!(reported_state(2), ReportedState::Degraded);
        assert_eq!(reported_state(3), ReportedState::Faulted);
        assert_eq!(reported_state(0), ReportedState::Unknown);
        assert_eq!(reported_state(42), ReportedState::Unknown);
    }

    #[test]
    fn rpc_codes_classify() {
        let e = NodeError::Rpc(tonic::Status::invalid_argument("Missing devices"));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.to_operation_error().message, "Missing devices");
        let e = NodeError::Rpc(tonic::Status::unavailable("down"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
}
