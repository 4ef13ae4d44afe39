//! gRPC client for one storage node's pool API.
//!
//! One [`NodeClient`] per registered node holds one lazily connected tonic
//! `Channel` (cheap to clone, reused by every call) and speaks v1 `PoolRpc`
//! when the node advertised V1 at registration, else v0 `Mayastor` (the
//! [`PoolApi`] trait, implemented in `v0.rs` and `v1.rs`). Each call has a
//! deadline. Replies are the client's own types ([`NodePool`], not the
//! policy contract's), with disks normalised from URIs
//! (`aio:///dev/sdb?uuid=…`) to the device paths the resources name.
//!
//! It also asks the node which block devices it has (v1
//! `HostRpc.ListBlockDevices`, v0 `ListBlockDevices`), reduced to
//! [`BlockDeviceInfo`], for the disk safety check before a create, and what
//! a pool holds (v1 `ReplicaRpc.ListReplicas` by pool, v0 `ListReplicas`
//! kept to the pool), [`PoolContent`], for the check before a destroy; and,
//! in one call per node, how many each of its pools holds (for
//! `status.replicas`).

use std::time::Duration;

mod api;
mod v0;
mod v1;

use msp_policy_sdk::model::{ErrorKind, OperationError};

use crate::lifecycle::fence::{Fence, Fenced};
use api::PoolApi;
pub use api::{
    BlockDeviceInfo, ContentKind, LoadedPool, NodePool, PoolContent, PoolHealth, disk_path,
};
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

/// How a pool is loaded: created (or imported, CreatePool being
/// create-or-import), or imported only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Create,
    Import,
}

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
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
            NodeError::Endpoint(_) => ErrorKind::InvalidArgument,
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
                // The connection failed under the call (a reset while the
                // node restarts): the call did not complete, as UNAVAILABLE.
                Code::Unknown if from_transport(status) => ErrorKind::Unavailable,
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

/// True when `status` was made here from a failed connection (its source
/// is the transport's error), not received from the node.
fn from_transport(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A node endpoint the operator will not call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node endpoint {endpoint:?}: {why}")]
pub struct BadEndpoint {
    pub endpoint: String,
    pub why: String,
}

/// The URI the node's channel connects to, read by the URI parser the gRPC
/// client uses (so the admission check judges the host that is connected
/// to, not one cut out of the string): "host:port" means http. Only a
/// scheme (http, https), a host and a port are allowed: user-info
/// (`<node's address>@<elsewhere>`), a path or a query is refused.
pub fn endpoint_uri(endpoint: &str) -> Result<http::Uri, BadEndpoint> {
    let bad = |why: &str| BadEndpoint {
        endpoint: endpoint.to_string(),
        why: why.to_string(),
    };
    let text = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let uri: http::Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("user-info is not allowed"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(bad("a path is not allowed"));
    }
    if uri.query().is_some() {
        return Err(bad("a query is not allowed"));
    }
    Ok(uri)
}

/// The host a node URI connects to: an IPv6 address without its brackets.
pub fn uri_host(uri: &http::Uri) -> &str {
    let host = uri.host().unwrap_or_default();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Client of one storage node: one reused channel, one API version.
#[derive(Clone, Debug)]
pub struct NodeClient {
    endpoint: String,
    api: ApiVersion,
    channel: Channel,
    /// Checked before every call, which it also bounds (a call still
    /// pending when it closes is abandoned): only the leader calls nodes.
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
        let channel = Endpoint::from(endpoint_uri(endpoint)?)
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

    /// Whether the node tells pools of a name apart by uuid (v1): a load or
    /// a destroy then names the pool's uuid. v0 pools are matched by name
    /// and disks.
    pub fn knows_pool_uuids(&self) -> bool {
        self.api == ApiVersion::V1
    }

    /// Whether `load` may format the disks: a create may; an import never
    /// does, except on v0, which has no import (its CreatePool is what
    /// imports too).
    pub fn may_format(&self, load: Load) -> bool {
        load == Load::Create || self.api == ApiVersion::V0
    }

    /// CreatePool or ImportPool, as `load` says (see [`Self::create_pool`]
    /// and [`Self::import_pool`]).
    pub async fn load_pool(
        &self,
        load: Load,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, NodeError> {
        match load {
            Load::Create => self.create_pool(name, uuid, disks).await,
            Load::Import => self.import_pool(name, uuid, disks).await,
        }
    }

    /// `call` behind the fence: refused when it is closed, abandoned when it
    /// closes before the call completes.
    async fn behind_fence<T, E>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, NodeError>
    where
        NodeError: From<E>,
    {
        Ok(self.fence.bounded(call).await??)
    }

    /// All pools the node has loaded.
    pub async fn list_pools(&self, timeout: Duration) -> Result<Vec<NodePool>, NodeError> {
        self.behind_fence(async { on_api!(self, list_pools(timeout)) })
            .await
    }

    /// CreatePool: create, or import when the disks carry this pool's label.
    /// With `uuid` (v1), a new pool gets it and a pool of another uuid on
    /// the disks is refused, not imported (INVALID_ARGUMENT naming its uuid).
    pub async fn create_pool(
        &self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, NodeError> {
        self.behind_fence(async { on_api!(self, create_pool(name, uuid, disks)) })
            .await
    }

    /// ImportPool: load a pool from its labelled disks, never formatting
    /// one; with `uuid` (v1) only the pool of that uuid.
    pub async fn import_pool(
        &self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, NodeError> {
        self.behind_fence(async { on_api!(self, import_pool(name, uuid, disks)) })
            .await
    }

    /// DestroyPool (OK when the node does not know the pool).
    pub async fn destroy_pool(&self, name: &str, uuid: Option<&str>) -> Result<(), NodeError> {
        self.behind_fence(async { on_api!(self, destroy_pool(name, uuid)) })
            .await
    }

    /// The loaded pool `name`, by uuid (v1) and disks; `None` when the
    /// node has no pool of that name loaded.
    pub async fn identify(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<LoadedPool>, NodeError> {
        let channel = self.channel.clone();
        self.behind_fence(async {
            match self.api {
                ApiVersion::V1 => v1::identify(channel, name, timeout).await,
                ApiVersion::V0 => Ok(PoolApi::list_pools(v0::client(channel), timeout)
                    .await?
                    .into_iter()
                    .find(|p| p.name == name)
                    .map(|p| LoadedPool {
                        uuid: None,
                        disks: p.disks,
                    })),
            }
        })
        .await
    }

    /// Every block device of the node (the unavailable ones too).
    pub async fn list_block_devices(
        &self,
        timeout: Duration,
    ) -> Result<Vec<BlockDeviceInfo>, NodeError> {
        let channel = self.channel.clone();
        self.behind_fence(async {
            match self.api {
                ApiVersion::V1 => v1::list_block_devices(channel, timeout).await,
                ApiVersion::V0 => v0::list_block_devices(channel, timeout).await,
            }
        })
        .await
    }

    /// What pool `pool` holds: its replicas, snapshots and clones. Only
    /// meaningful on a loaded pool (the engine lists nothing of one it has
    /// not loaded).
    pub async fn list_replicas(
        &self,
        pool: &str,
        timeout: Duration,
    ) -> Result<Vec<PoolContent>, NodeError> {
        self.list_contents(Some(pool), timeout).await
    }

    /// What each pool of the node holds, in one call: the count of its
    /// replicas, snapshots and clones by pool name (pools holding nothing
    /// are absent).
    pub async fn count_contents(
        &self,
        timeout: Duration,
    ) -> Result<std::collections::BTreeMap<String, u32>, NodeError> {
        let mut counts = std::collections::BTreeMap::new();
        for content in self.list_contents(None, timeout).await? {
            *counts.entry(content.pool).or_insert(0u32) += 1;
        }
        Ok(counts)
    }

    async fn list_contents(
        &self,
        pool: Option<&str>,
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
    use super::api::pool_health;
    use super::*;

    #[test]
    fn disk_uris_become_paths() {
        assert_eq!(disk_path("aio:///dev/sdb?uuid=1234"), "/dev/sdb");
        assert_eq!(disk_path("uring:///dev/loop3"), "/dev/loop3");
        assert_eq!(disk_path("/dev/loop0"), "/dev/loop0");
    }

    #[test]
    fn endpoints_are_read_as_the_client_reads_them() {
        let host = |e: &str| endpoint_uri(e).map(|u| uri_host(&u).to_string());
        assert_eq!(host("10.0.0.1:10124").as_deref(), Ok("10.0.0.1"));
        assert_eq!(host("http://node1:10124").as_deref(), Ok("node1"));
        assert_eq!(host("[fd00::1]:10124").as_deref(), Ok("fd00::1"));
        assert_eq!(host("node1").as_deref(), Ok("node1"));
        for bad in [
            "[10.0.0.1]@10.0.0.9:10124",
            "10.0.0.1@10.0.0.9:10124",
            "http://10.0.0.1:x@10.0.0.9:10124",
            "10.0.0.1:10124/elsewhere",
            "10.0.0.1:10124?x=1",
            "ftp://10.0.0.1:10124",
            "",
        ] {
            assert!(endpoint_uri(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn newest_advertised_api_wins() {
        assert_eq!(ApiVersion::from_advertised(&[0, 1]), ApiVersion::V1);
        assert_eq!(ApiVersion::from_advertised(&[0]), ApiVersion::V0);
        assert_eq!(ApiVersion::from_advertised(&[]), ApiVersion::V0);
    }

    #[test]
    fn states_map_from_both_apis() {
        assert_eq!(pool_health(1), PoolHealth::Online);
        assert_eq!(pool_health(2), PoolHealth::Degraded);
        assert_eq!(pool_health(3), PoolHealth::Faulted);
        assert_eq!(pool_health(0), PoolHealth::Unknown);
        assert_eq!(pool_health(42), PoolHealth::Unknown);
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
