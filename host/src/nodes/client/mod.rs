//! gRPC client for one storage node's pool API.
//!
//! One [`NodeClient`] per registered node holds one lazily connected tonic
//! `Channel` (cheap to clone, reused by every call) and speaks v1 `PoolRpc`
//! when the node advertised V1 at registration, else v0 `Mayastor` (the
//! [`PoolApi`] trait, implemented in `v0.rs` and `v1.rs`). Each call has a
//! deadline. Replies are converted to the policy model's
//! [`ReportedPool`], with disks normalised from URIs (`aio:///dev/sdb?uuid=…`)
//! to the device paths the resources name.
//!
//! It also asks the node which block devices it has (v1
//! `HostRpc.ListBlockDevices`, v0 `ListBlockDevices`), reduced to
//! [`BlockDeviceInfo`], for the disk safety check before a create, and what
//! a pool holds (v1 `ReplicaRpc.ListReplicas` by pool, v0 `ListReplicas`
//! kept to the pool), [`PoolContent`], for the check before a destroy.

use std::time::Duration;

mod api;
mod v0;
mod v1;

use msp_policy_sdk::model::{ErrorKind, OperationError, ReportedPool};

use crate::lifecycle::fence::{Fence, Fenced};
use api::PoolApi;
pub use api::{BlockDeviceInfo, ContentKind, PoolContent, disk_path};
use tonic::transport::{Channel, Endpoint};

/// Calls `PoolApi::$method` on the client of the node's API version.
macro_rules! on_api {
    ($node:expr, $method:ident($($arg:expr),*)) => {
        match $node.api {
            ApiVersion::V1 => PoolApi::$method(v1::client($node.channel.clone()), $($arg),*).await,
            ApiVersion::V0 => PoolApi::$method(v0::client($node.channel.clone()), $($arg),*).await,
        }
    };
}

/// Which pool API a node speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V0,
    V1,
}

impl ApiVersion {
    /// The newest API the node advertised (V1 when listed, else V0).
    pub fn from_advertised(versions: &[i32]) -> ApiVersion {
        if versions.contains(&(msp_proto::v1::ApiVersion::V1 as i32)) {
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
    #[error(transparent)]
    Fenced(#[from] Fenced),
}

impl NodeError {
    /// The policy model's classification of this error.
    pub fn kind(&self) -> ErrorKind {
        use tonic::Code;
        match self {
            NodeError::Endpoint { .. } => ErrorKind::InvalidArgument,
            NodeError::Fenced(_) => ErrorKind::Unavailable,
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

/// Client of one storage node: one reused channel, one API version.
#[derive(Clone, Debug)]
pub struct NodeClient {
    endpoint: String,
    api: ApiVersion,
    channel: Channel,
    /// Checked before every call: only the leader calls storage nodes.
    fence: Fence,
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
            fence: Fence::open(),
        })
    }

    /// The client, each call checked against `fence` first.
    pub fn fenced(self, fence: Fence) -> NodeClient {
        NodeClient { fence, ..self }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn api(&self) -> ApiVersion {
        self.api
    }

    /// All pools the node has loaded.
    pub async fn list_pools(&self, timeout: Duration) -> Result<Vec<ReportedPool>, NodeError> {
        self.fence.check()?;
        Ok(on_api!(self, list_pools(timeout))?)
    }

    /// CreatePool: create, or import when the disks carry this pool's label.
    pub async fn create_pool(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<ReportedPool, NodeError> {
        self.fence.check()?;
        Ok(on_api!(self, create_pool(name, disks))?)
    }

    /// ImportPool: load a pool from its labelled disks, never formatting one.
    pub async fn import_pool(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<ReportedPool, NodeError> {
        self.fence.check()?;
        Ok(on_api!(self, import_pool(name, disks))?)
    }

    /// DestroyPool (OK when the node does not know the pool).
    pub async fn destroy_pool(&self, name: &str) -> Result<(), NodeError> {
        self.fence.check()?;
        Ok(on_api!(self, destroy_pool(name))?)
    }

    /// Every block device of the node (the unavailable ones too).
    pub async fn list_block_devices(
        &self,
        timeout: Duration,
    ) -> Result<Vec<BlockDeviceInfo>, NodeError> {
        self.fence.check()?;
        let channel = self.channel.clone();
        Ok(match self.api {
            ApiVersion::V1 => v1::list_block_devices(channel, timeout).await?,
            ApiVersion::V0 => v0::list_block_devices(channel, timeout).await?,
        })
    }

    /// What pool `pool` holds: its replicas, snapshots and clones. Only
    /// meaningful on a loaded pool (the engine lists nothing of one it has
    /// not loaded).
    pub async fn list_replicas(
        &self,
        pool: &str,
        timeout: Duration,
    ) -> Result<Vec<PoolContent>, NodeError> {
        self.fence.check()?;
        let channel = self.channel.clone();
        Ok(match self.api {
            ApiVersion::V1 => v1::list_replicas(channel, pool, timeout).await?,
            ApiVersion::V0 => v0::list_replicas(channel, pool, timeout).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::api::reported_state;
    use super::*;
    use msp_policy_sdk::model::ReportedState;

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
