//! The v0 pool API (`mayastor.Mayastor`). It has no ImportPool: its
//! CreatePool imports a disk that carries the pool's label.

use std::time::Duration;

use msp_proto::v0::mayastor_client::MayastorClient;
use msp_proto::v0::{CreatePoolRequest, DestroyPoolRequest, Null, Pool};
use tonic::transport::Channel;

use super::api::{BlockDeviceInfo, ContentKind, NodePool, PoolApi, PoolContent, node_pool, timed};

pub(super) fn client(channel: Channel) -> MayastorClient<Channel> {
    MayastorClient::new(channel)
}

fn from_v0(pool: Pool) -> NodePool {
    node_pool(pool.name, &pool.disks, pool.state, pool.capacity, pool.used)
}

impl PoolApi for MayastorClient<Channel> {
    async fn list_pools(mut self, timeout: Duration) -> Result<Vec<NodePool>, tonic::Status> {
        let reply = MayastorClient::list_pools(&mut self, timed(Null {}, timeout))
            .await?
            .into_inner();
        Ok(reply.pools.into_iter().map(from_v0).collect())
    }

    // v0 knows no pool uuid: the uuid is not sent.
    async fn create_pool(
        mut self,
        name: &str,
        _uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status> {
        let req = CreatePoolRequest {
            name: name.to_string(),
            disks: disks.to_vec(),
        };
        Ok(from_v0(
            MayastorClient::create_pool(&mut self, req)
                .await?
                .into_inner(),
        ))
    }

    async fn import_pool(
        self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
    ) -> Result<NodePool, tonic::Status> {
        PoolApi::create_pool(self, name, uuid, disks).await
    }

    async fn destroy_pool(mut self, name: &str, _uuid: Option<&str>) -> Result<(), tonic::Status> {
        let req = DestroyPoolRequest {
            name: name.to_string(),
        };
        MayastorClient::destroy_pool(&mut self, req).await?;
        Ok(())
    }
}

/// v0 `ListBlockDevices` with `all: true` (the unavailable ones too).
pub(super) async fn list_block_devices(
    channel: Channel,
    timeout: Duration,
) -> Result<Vec<BlockDeviceInfo>, tonic::Status> {
    let req = timed(
        msp_proto::v0::ListBlockDevicesRequest { all: true },
        timeout,
    );
    let reply = client(channel).list_block_devices(req).await?.into_inner();
    Ok(reply.devices.into_iter().map(device_from_v0).collect())
}

fn device_from_v0(d: msp_proto::v0::BlockDevice) -> BlockDeviceInfo {
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
        size: d.size.saturating_mul(512),
    }
}

/// v0 `ListReplicas` (it lists the node's every replica), those of `pool`
/// (all with `None`).
pub(super) async fn list_replicas(
    channel: Channel,
    pool: Option<&str>,
    timeout: Duration,
) -> Result<Vec<PoolContent>, tonic::Status> {
    let reply = client(channel)
        .list_replicas(timed(Null {}, timeout))
        .await?
        .into_inner();
    Ok(reply
        .replicas
        .into_iter()
        .filter(|r| pool.is_none_or(|p| r.pool == p))
        .map(|r| PoolContent {
            pool: r.pool,
            uuid: r.uuid,
            kind: ContentKind::Replica,
            size: r.size,
        })
        .collect())
}
