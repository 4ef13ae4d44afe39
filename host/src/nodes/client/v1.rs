//! The v1 pool API (`mayastor.v1.PoolRpc`), as the io-engine serves it.

use std::time::Duration;

use msp_proto::v1::pool_rpc_client::PoolRpcClient;
use msp_proto::v1::{
    CreatePoolRequest, DestroyPoolRequest, ImportPoolRequest, ListPoolOptions, Pool,
};
use tonic::transport::Channel;

use super::api::{
    BlockDeviceInfo, ContentKind, LoadedPool, NodePool, PoolApi, PoolContent, node_pool, timed,
};

pub(super) fn client(channel: Channel) -> PoolRpcClient<Channel> {
    PoolRpcClient::new(channel)
}

fn from_v1(pool: Pool) -> NodePool {
    node_pool(pool.name, &pool.disks, pool.state, pool.capacity, pool.used)
}

impl PoolApi for PoolRpcClient<Channel> {
    async fn list_pools(self, timeout: Duration) -> Result<Vec<NodePool>, tonic::Status> {
        Ok(pools(self, timeout)
            .await?
            .into_iter()
            .map(from_v1)
            .collect())
    }

    async fn create_pool(
        mut self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status> {
        let req = CreatePoolRequest {
            name: name.to_string(),
            uuid: uuid.map(str::to_string),
            disks: disks.to_vec(),
            ..Default::default()
        };
        Ok(from_v1(
            PoolRpcClient::create_pool(&mut self, req)
                .await?
                .into_inner(),
        ))
    }

    async fn import_pool(
        mut self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status> {
        let req = ImportPoolRequest {
            name: name.to_string(),
            uuid: uuid.map(str::to_string),
            disks: disks.to_vec(),
            ..Default::default()
        };
        Ok(from_v1(
            PoolRpcClient::import_pool(&mut self, req)
                .await?
                .into_inner(),
        ))
    }

    async fn destroy_pool(mut self, name: &str, uuid: Option<&str>) -> Result<(), tonic::Status> {
        let req = DestroyPoolRequest {
            name: name.to_string(),
            uuid: uuid.map(str::to_string),
        };
        PoolRpcClient::destroy_pool(&mut self, req).await?;
        Ok(())
    }
}

/// The pools the node has loaded, as it lists them.
async fn pools(
    mut client: PoolRpcClient<Channel>,
    timeout: Duration,
) -> Result<Vec<Pool>, tonic::Status> {
    let req = timed(ListPoolOptions::default(), timeout);
    Ok(PoolRpcClient::list_pools(&mut client, req)
        .await?
        .into_inner()
        .pools)
}

/// The pool named `name` among those the node has loaded: its uuid and disks.
pub(super) async fn identify(
    channel: Channel,
    name: &str,
    timeout: Duration,
) -> Result<Option<LoadedPool>, tonic::Status> {
    Ok(pools(client(channel), timeout)
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| LoadedPool {
            uuid: Some(p.uuid),
            disks: p.disks.iter().map(|d| super::disk_path(d)).collect(),
        }))
}

/// `HostRpc.ListBlockDevices` with `all: true` (the unavailable ones too).
pub(super) async fn list_block_devices(
    channel: Channel,
    timeout: Duration,
) -> Result<Vec<BlockDeviceInfo>, tonic::Status> {
    let req = timed(
        msp_proto::v1::ListBlockDevicesRequest { all: true },
        timeout,
    );
    let mut client = msp_proto::v1::host_rpc_client::HostRpcClient::new(channel);
    let reply = client.list_block_devices(req).await?.into_inner();
    Ok(reply.devices.into_iter().map(device_from_v1).collect())
}

fn device_from_v1(d: msp_proto::v1::BlockDevice) -> BlockDeviceInfo {
    BlockDeviceInfo {
        devname: d.devname,
        devlinks: d.devlinks,
        partition_parent: d.partition.map(|p| p.parent),
        fstype: d.filesystem.as_ref().map(|f| f.fstype.clone()),
        mountpoints: d.filesystem.map(|f| f.mountpoints).unwrap_or_default(),
        available: d.available,
        size: d.size.saturating_mul(512),
    }
}

/// `ReplicaRpc.ListReplicas` of one pool (by name) or, with `None`, of every
/// pool of the node in one call; every kind: replicas, snapshots and clones
/// (no query lists all of them).
pub(super) async fn list_replicas(
    channel: Channel,
    pool: Option<&str>,
    timeout: Duration,
) -> Result<Vec<PoolContent>, tonic::Status> {
    let options = msp_proto::v1::ListReplicaOptions {
        poolname: pool.map(str::to_string),
        ..Default::default()
    };
    let req = timed(options, timeout);
    let mut client = msp_proto::v1::replica_rpc_client::ReplicaRpcClient::new(channel);
    let reply = client.list_replicas(req).await?.into_inner();
    Ok(reply
        .replicas
        .into_iter()
        // The engine filters by pool; a reply naming another pool is not trusted to.
        .filter(|r| pool.is_none_or(|p| r.poolname == p))
        .map(|r| PoolContent {
            pool: r.poolname,
            kind: if r.is_snapshot {
                ContentKind::Snapshot
            } else if r.is_clone {
                ContentKind::Clone
            } else {
                ContentKind::Replica
            },
            uuid: r.uuid,
            size: r.size,
        })
        .collect())
}
