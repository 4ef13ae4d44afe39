//! The gRPC face of a node: the v0 `mayastor.Mayastor` and v1
//! `mayastor.v1.PoolRpc` and `mayastor.v1.HostRpc` services, all over the
//! same [`Pools`].
//!
//! Pool operations do blocking disk I/O, so each call runs on the blocking
//! thread pool. Errors map one to one onto gRPC codes.

use std::sync::Arc;

use msp_proto::{v0, v1};
use tonic::{Request, Response, Status};

use super::devices::{self, BlockDevice};
use super::pools::{Health, Mode, PoolError, PoolInfo, Pools, ReplicaInfo};
use super::replicas::Replica;

impl From<PoolError> for Status {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::InvalidArgument(m) => Status::invalid_argument(m),
            PoolError::NotFound(m) => Status::not_found(m),
            PoolError::AlreadyExists(m) => Status::already_exists(m),
            PoolError::FailedPrecondition(m) => Status::failed_precondition(m),
            PoolError::ResourceExhausted(m) => Status::resource_exhausted(m),
            PoolError::Aborted(m) => Status::aborted(m),
            PoolError::Internal(m) => Status::internal(m),
        }
    }
}

/// Runs a pool operation off the async workers.
async fn blocking<T: Send + 'static>(
    pools: &Arc<Pools>,
    f: impl FnOnce(&Pools) -> Result<T, PoolError> + Send + 'static,
) -> Result<T, Status> {
    let pools = Arc::clone(pools);
    tokio::task::spawn_blocking(move || f(&pools))
        .await
        .map_err(|e| Status::internal(format!("pool task failed: {e}")))?
        .map_err(Status::from)
}

/// Both services share one pool set.
#[derive(Debug, Clone)]
pub struct PoolService {
    pools: Arc<Pools>,
    create_reply_delay: std::time::Duration,
}

impl PoolService {
    pub fn new(pools: Arc<Pools>) -> Self {
        Self {
            pools,
            create_reply_delay: std::time::Duration::ZERO,
        }
    }

    /// Fault injection: CreatePool answers `delay` after the pool was made
    /// (a test kills the operator in that window).
    pub fn with_create_reply_delay(mut self, delay: std::time::Duration) -> Self {
        self.create_reply_delay = delay;
        self
    }

    async fn reply_delay(&self) {
        if !self.create_reply_delay.is_zero() {
            tokio::time::sleep(self.create_reply_delay).await;
        }
    }
}

fn v0_state(h: Health) -> v0::PoolState {
    match h {
        Health::Online => v0::PoolState::PoolOnline,
        Health::Degraded => v0::PoolState::PoolDegraded,
        Health::Faulted => v0::PoolState::PoolFaulted,
    }
}

fn v1_state(h: Health) -> v1::PoolState {
    match h {
        Health::Online => v1::PoolState::PoolOnline,
        Health::Degraded => v1::PoolState::PoolDegraded,
        Health::Faulted => v1::PoolState::PoolFaulted,
    }
}

fn v0_pool(p: PoolInfo) -> v0::Pool {
    v0::Pool {
        name: p.name,
        disks: p.disks,
        state: v0_state(p.state) as i32,
        capacity: p.capacity,
        used: p.used,
    }
}

fn v1_pool(p: PoolInfo) -> v1::Pool {
    v1::Pool {
        uuid: p.uuid.to_string(),
        name: p.name,
        disks: p.disks,
        state: v1_state(p.state) as i32,
        capacity: p.capacity,
        used: p.used,
        pooltype: v1::PoolType::Lvs as i32,
        committed: p.used,
        cluster_size: p.cluster_size,
        page_size: None,
        disk_capacity: p.disk_capacity,
        md_info: None,
    }
}

/// The node's devices; all of them, or those it calls available.
async fn block_devices(pools: &Arc<Pools>, all: bool) -> Result<Vec<BlockDevice>, Status> {
    let devices = blocking(pools, |p| Ok(devices::list(p.allowed_prefixes()))).await?;
    Ok(devices.into_iter().filter(|d| all || d.available).collect())
}

fn v1_device(d: BlockDevice) -> v1::BlockDevice {
    v1::BlockDevice {
        partition: d.parent.map(|parent| v1::block_device::Partition {
            parent,
            number: d.partition_number,
            ..Default::default()
        }),
        filesystem: (d.fstype.is_some() || !d.mountpoints.is_empty()).then(|| {
            v1::block_device::Filesystem {
                fstype: d.fstype.unwrap_or_default(),
                mountpoints: d.mountpoints,
                ..Default::default()
            }
        }),
        devname: d.devname,
        devtype: d.devtype,
        devmajor: d.major,
        devminor: d.minor,
        devpath: d.devpath,
        devlinks: d.devlinks,
        size: d.size,
        available: d.available,
        ..Default::default()
    }
}

fn v0_device(d: BlockDevice) -> v0::BlockDevice {
    v0::BlockDevice {
        partition: d.parent.map(|parent| v0::block_device::Partition {
            parent,
            number: d.partition_number,
            ..Default::default()
        }),
        filesystem: (d.fstype.is_some() || !d.mountpoints.is_empty()).then(|| {
            v0::block_device::Filesystem {
                fstype: d.fstype.unwrap_or_default(),
                mountpoint: d.mountpoints.into_iter().next().unwrap_or_default(),
                ..Default::default()
            }
        }),
        devname: d.devname,
        devtype: d.devtype,
        devmajor: d.major,
        devminor: d.minor,
        devpath: d.devpath,
        devlinks: d.devlinks,
        size: d.size,
        available: d.available,
        ..Default::default()
    }
}

/// Only lvs-type pools exist here (the io-engine's default type).
fn check_pooltype(pooltype: i32) -> Result<(), Status> {
    if pooltype == v1::PoolType::Lvs as i32 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "pool type {pooltype} is not supported by this storage node (only Lvs)"
        )))
    }
}

#[tonic::async_trait]
impl v0::mayastor_server::Mayastor for PoolService {
    async fn create_pool(
        &self,
        request: Request<v0::CreatePoolRequest>,
    ) -> Result<Response<v0::Pool>, Status> {
        let r = request.into_inner();
        let p = blocking(&self.pools, move |p| {
            p.create(&r.name, None, &r.disks, Mode::CreateOrImport)
        })
        .await?;
        self.reply_delay().await;
        Ok(Response::new(v0_pool(p)))
    }

    async fn destroy_pool(
        &self,
        request: Request<v0::DestroyPoolRequest>,
    ) -> Result<Response<v0::Null>, Status> {
        let r = request.into_inner();
        blocking(&self.pools, move |p| p.destroy(&r.name, None)).await?;
        Ok(Response::new(v0::Null {}))
    }

    async fn list_pools(
        &self,
        _request: Request<v0::Null>,
    ) -> Result<Response<v0::ListPoolsReply>, Status> {
        let pools = blocking(&self.pools, |p| Ok(p.list())).await?;
        Ok(Response::new(v0::ListPoolsReply {
            pools: pools.into_iter().map(v0_pool).collect(),
        }))
    }

    async fn list_block_devices(
        &self,
        request: Request<v0::ListBlockDevicesRequest>,
    ) -> Result<Response<v0::ListBlockDevicesReply>, Status> {
        let all = request.into_inner().all;
        let devices = block_devices(&self.pools, all).await?;
        Ok(Response::new(v0::ListBlockDevicesReply {
            devices: devices.into_iter().map(v0_device).collect(),
        }))
    }

    async fn create_replica(
        &self,
        request: Request<v0::CreateReplicaRequest>,
    ) -> Result<Response<v0::Replica>, Status> {
        let r = request.into_inner();
        let replica = Replica {
            name: r.uuid.clone(),
            uuid: r.uuid,
            size: r.size,
            thin: r.thin,
        };
        let made = blocking(&self.pools, move |p| p.create_replica(&r.pool, replica)).await?;
        Ok(Response::new(v0_replica(made)))
    }

    async fn destroy_replica(
        &self,
        request: Request<v0::DestroyReplicaRequest>,
    ) -> Result<Response<v0::Null>, Status> {
        let r = request.into_inner();
        blocking(&self.pools, move |p| p.destroy_replica(&r.uuid, None)).await?;
        Ok(Response::new(v0::Null {}))
    }

    async fn list_replicas(
        &self,
        _request: Request<v0::Null>,
    ) -> Result<Response<v0::ListReplicasReply>, Status> {
        let list = blocking(&self.pools, |p| Ok(p.list_replicas())).await?;
        Ok(Response::new(v0::ListReplicasReply {
            replicas: list.into_iter().map(v0_replica).collect(),
        }))
    }
}

fn v0_replica(r: ReplicaInfo) -> v0::Replica {
    v0::Replica {
        uri: format!("bdev:///{}", r.replica.uuid),
        uuid: r.replica.uuid,
        pool: r.pool,
        thin: r.replica.thin,
        size: r.replica.size,
        share: v0::ShareProtocolReplica::ReplicaNone as i32,
        allowed_hosts: Vec::new(),
    }
}

fn v1_replica(r: ReplicaInfo) -> v1::Replica {
    v1::Replica {
        uri: format!("bdev:///{}?uuid={}", r.replica.name, r.replica.uuid),
        name: r.replica.name,
        uuid: r.replica.uuid,
        pooluuid: r.pool_uuid.to_string(),
        poolname: r.pool,
        size: r.replica.size,
        thin: r.replica.thin,
        share: v1::ShareProtocol::None as i32,
        pooltype: v1::PoolType::Lvs as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl v1::replica_rpc_server::ReplicaRpc for PoolService {
    async fn create_replica(
        &self,
        request: Request<v1::CreateReplicaRequest>,
    ) -> Result<Response<v1::Replica>, Status> {
        let r = request.into_inner();
        if r.share != v1::ShareProtocol::None as i32 {
            // The stand-in exposes nothing over a fabric.
            return Err(Status::invalid_argument(format!(
                "invalid replica share protocol value: {}",
                r.share
            )));
        }
        let replica = Replica {
            name: r.name,
            uuid: r.uuid,
            size: r.size,
            thin: r.thin,
        };
        let made = blocking(&self.pools, move |p| p.create_replica(&r.pooluuid, replica)).await?;
        Ok(Response::new(v1_replica(made)))
    }

    async fn destroy_replica(
        &self,
        request: Request<v1::DestroyReplicaRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let pool = r.pool.map(|p| match p {
            v1::destroy_replica_request::Pool::PoolName(n) => n,
            v1::destroy_replica_request::Pool::PoolUuid(u) => u,
        });
        blocking(&self.pools, move |p| {
            p.destroy_replica(&r.uuid, pool.as_deref())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn list_replicas(
        &self,
        request: Request<v1::ListReplicaOptions>,
    ) -> Result<Response<v1::ListReplicasResponse>, Status> {
        let o = request.into_inner();
        let list = blocking(&self.pools, |p| Ok(p.list_replicas())).await?;
        // No snapshots or clones here: a query for only those matches none.
        let kinds_ok = o
            .query
            .as_ref()
            .is_none_or(|q| q.replica || (!q.snapshot && !q.clone));
        let replicas = list
            .into_iter()
            .filter(|_| kinds_ok)
            .filter(|r| o.name.as_ref().is_none_or(|n| *n == r.replica.name))
            .filter(|r| o.uuid.as_ref().is_none_or(|u| *u == r.replica.uuid))
            .filter(|r| o.poolname.as_ref().is_none_or(|n| *n == r.pool))
            .filter(|r| {
                o.pooluuid
                    .as_ref()
                    .is_none_or(|u| *u == r.pool_uuid.to_string())
            })
            .map(v1_replica)
            .collect();
        Ok(Response::new(v1::ListReplicasResponse { replicas }))
    }

    // The stand-in keeps no data in a replica: nothing to share.
    async fn share_replica(
        &self,
        _: Request<v1::ShareReplicaRequest>,
    ) -> Result<Response<v1::Replica>, Status> {
        Err(Status::unimplemented("the stand-in shares no replica"))
    }

    async fn unshare_replica(
        &self,
        _: Request<v1::UnshareReplicaRequest>,
    ) -> Result<Response<v1::Replica>, Status> {
        Err(Status::unimplemented("the stand-in shares no replica"))
    }
}

#[tonic::async_trait]
impl v1::host_rpc_server::HostRpc for PoolService {
    async fn list_block_devices(
        &self,
        request: Request<v1::ListBlockDevicesRequest>,
    ) -> Result<Response<v1::ListBlockDevicesResponse>, Status> {
        let all = request.into_inner().all;
        let devices = block_devices(&self.pools, all).await?;
        Ok(Response::new(v1::ListBlockDevicesResponse {
            devices: devices.into_iter().map(v1_device).collect(),
        }))
    }
}

#[tonic::async_trait]
impl v1::pool_rpc_server::PoolRpc for PoolService {
    async fn create_pool(
        &self,
        request: Request<v1::CreatePoolRequest>,
    ) -> Result<Response<v1::Pool>, Status> {
        let r = request.into_inner();
        check_pooltype(r.pooltype)?;
        let p = blocking(&self.pools, move |p| {
            p.create(&r.name, r.uuid.as_deref(), &r.disks, Mode::CreateOrImport)
        })
        .await?;
        self.reply_delay().await;
        Ok(Response::new(v1_pool(p)))
    }

    async fn destroy_pool(
        &self,
        request: Request<v1::DestroyPoolRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        blocking(&self.pools, move |p| p.destroy(&r.name, r.uuid.as_deref())).await?;
        Ok(Response::new(()))
    }

    async fn export_pool(
        &self,
        request: Request<v1::ExportPoolRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        blocking(&self.pools, move |p| p.export(&r.name, r.uuid.as_deref())).await?;
        Ok(Response::new(()))
    }

    async fn import_pool(
        &self,
        request: Request<v1::ImportPoolRequest>,
    ) -> Result<Response<v1::Pool>, Status> {
        let r = request.into_inner();
        check_pooltype(r.pooltype)?;
        let p = blocking(&self.pools, move |p| {
            p.create(&r.name, r.uuid.as_deref(), &r.disks, Mode::ImportOnly)
        })
        .await?;
        Ok(Response::new(v1_pool(p)))
    }

    async fn list_pools(
        &self,
        request: Request<v1::ListPoolOptions>,
    ) -> Result<Response<v1::ListPoolsResponse>, Status> {
        let r = request.into_inner();
        // Only lvs pools exist here: a filter on another type matches none.
        if let Some(pt) = &r.pooltype
            && pt.value != v1::PoolType::Lvs as i32
        {
            return Ok(Response::new(v1::ListPoolsResponse { pools: Vec::new() }));
        }
        let pools = blocking(&self.pools, |p| Ok(p.list())).await?;
        let pools = pools
            .into_iter()
            .filter(|p| r.name.as_ref().is_none_or(|n| *n == p.name))
            .filter(|p| r.uuid.as_ref().is_none_or(|u| *u == p.uuid.to_string()))
            .map(v1_pool)
            .collect();
        Ok(Response::new(v1::ListPoolsResponse { pools }))
    }

    async fn grow_pool(
        &self,
        _request: Request<v1::GrowPoolRequest>,
    ) -> Result<Response<v1::GrowPoolResponse>, Status> {
        Err(Status::unimplemented(
            "GrowPool is not implemented by this storage node",
        ))
    }
}
