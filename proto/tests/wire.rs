//! Wire compatibility with the io-engine: encodes messages and compares the
//! bytes with encodings written by hand from the field tables in
//! docs/wire.md (tag byte = field number << 3 | wire type; 0 varint,
//! 2 length-delimited, 5 fixed32). A renumbered or retyped field changes the
//! bytes and fails here.

use msp_proto::{v0, v1};
use prost::Message;

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(msg: M, want: &[u8]) {
    assert_eq!(msg.encode_to_vec(), want, "encoding of {msg:?}");
    assert_eq!(M::decode(want).expect("decodes"), msg, "decoding");
}

#[test]
fn v0_pool() {
    let pool = v0::Pool {
        name: "p".into(),
        disks: vec!["/dev/a".into()],
        state: v0::PoolState::PoolOnline as i32,
        capacity: 300,
        used: 5,
    };
    #[rustfmt::skip]
    let want = [
        0x0A, 1, b'p',                                  // 1 name
        0x12, 6, b'/', b'd', b'e', b'v', b'/', b'a',    // 2 disks
        0x18, 1,                                        // 3 state = POOL_ONLINE
        0x28, 0xAC, 0x02,                               // 5 capacity = 300 (field 4 unused)
        0x30, 5,                                        // 6 used
    ];
    check(pool, &want);
}

#[test]
fn v0_requests_and_list() {
    check(
        v0::CreatePoolRequest {
            name: "p".into(),
            disks: vec!["d".into(), "e".into()],
        },
        &[0x0A, 1, b'p', 0x12, 1, b'd', 0x12, 1, b'e'],
    );
    check(
        v0::DestroyPoolRequest { name: "p".into() },
        &[0x0A, 1, b'p'],
    );
    check(
        v0::ListPoolsReply {
            pools: vec![v0::Pool {
                name: "p".into(),
                ..Default::default()
            }],
        },
        &[0x0A, 3, 0x0A, 1, b'p'],
    );
    assert_eq!(v0::PoolState::PoolFaulted as i32, 3);
    assert_eq!(v0::PoolState::PoolDegraded as i32, 2);
}

#[test]
fn v1_pool() {
    let pool = v1::Pool {
        uuid: "u".into(),
        name: "p".into(),
        disks: vec!["d".into()],
        state: v1::PoolState::PoolDegraded as i32,
        capacity: 1,
        used: 2,
        pooltype: v1::PoolType::Lvm as i32,
        committed: 3,
        cluster_size: 4,
        page_size: Some(9),
        disk_capacity: 5,
        md_info: Some(v1::PoolMetadataInfo {
            md_page_size: 6,
            md_pages: 7,
            md_used_pages: 8,
        }),
    };
    #[rustfmt::skip]
    let want = [
        0x0A, 1, b'u',          // 1 uuid
        0x12, 1, b'p',          // 2 name
        0x1A, 1, b'd',          // 3 disks
        0x20, 2,                // 4 state = POOL_DEGRADED
        0x28, 1,                // 5 capacity
        0x30, 2,                // 6 used
        0x38, 1,                // 7 pooltype = Lvm
        0x40, 3,                // 8 committed
        0x48, 4,                // 9 cluster_size
        0x50, 9,                // 10 page_size
        0x58, 5,                // 11 disk_capacity
        0x62, 6, 0x08, 6, 0x10, 7, 0x18, 8, // 12 md_info {1, 2, 3}
    ];
    check(pool, &want);
}

#[test]
fn v1_create_pool_request_with_uuid_wrapper() {
    let req = v1::CreatePoolRequest {
        name: "p".into(),
        uuid: Some("u".into()),
        disks: vec!["d".into()],
        pooltype: v1::PoolType::Lvs as i32,
        cluster_size: Some(0),
        md_args: Some(v1::PoolMetadataArgs {
            md_resv_ratio: Some(1.0),
        }),
    };
    #[rustfmt::skip]
    let want = [
        0x0A, 1, b'p',                      // 1 name
        0x12, 3, 0x0A, 1, b'u',             // 2 uuid: StringValue { 1: value }
        0x1A, 1, b'd',                      // 3 disks
                                            // 4 pooltype Lvs = 0: not sent
        0x28, 0,                            // 5 optional cluster_size, present
        0x32, 5, 0x0D, 0x00, 0x00, 0x80, 0x3F, // 6 md_args { 1: float 1.0 }
    ];
    check(req, &want);
}

#[test]
fn v1_other_pool_requests() {
    let uuid_then = |first: u8| vec![first, 1, b'p', 0x12, 3, 0x0A, 1, b'u'];
    check(
        v1::ImportPoolRequest {
            name: "p".into(),
            uuid: Some("u".into()),
            disks: vec!["d".into()],
            pooltype: v1::PoolType::Lvm as i32,
        },
        &[
            0x0A, 1, b'p', 0x12, 3, 0x0A, 1, b'u', 0x1A, 1, b'd', 0x20, 1,
        ],
    );
    check(
        v1::DestroyPoolRequest {
            name: "p".into(),
            uuid: Some("u".into()),
        },
        &uuid_then(0x0A),
    );
    check(
        v1::ExportPoolRequest {
            name: "p".into(),
            uuid: Some("u".into()),
        },
        &uuid_then(0x0A),
    );
    check(
        v1::GrowPoolRequest {
            name: "p".into(),
            uuid: Some("u".into()),
        },
        &uuid_then(0x0A),
    );
    check(
        v1::ListPoolOptions {
            name: Some("p".into()),
            pooltype: Some(v1::PoolTypeValue {
                value: v1::PoolType::Lvm as i32,
            }),
            uuid: Some("u".into()),
        },
        &[
            0x0A, 3, 0x0A, 1, b'p', 0x12, 2, 0x08, 1, 0x1A, 3, 0x0A, 1, b'u',
        ],
    );
    check(
        v1::GrowPoolResponse {
            previous_pool: Some(v1::Pool {
                name: "a".into(),
                ..Default::default()
            }),
            current_pool: Some(v1::Pool {
                name: "b".into(),
                ..Default::default()
            }),
        },
        &[0x0A, 3, 0x12, 1, b'a', 0x12, 3, 0x12, 1, b'b'],
    );
}

#[test]
fn register_request() {
    let req = v1::RegisterRequest {
        id: "n".into(),
        grpc_endpoint: "1:2".into(),
        instance_uuid: Some("u".into()),
        api_version: vec![v1::ApiVersion::V0 as i32, v1::ApiVersion::V1 as i32],
        hostnqn: Some("q".into()),
        features: Some(v1::MayastorFeatures {
            asymmetric_namespace_access: true,
            logical_volume_manager: Some(false),
            snapshot_rebuild: None,
            rdma_capable_io_engine: Some(true),
        }),
        bugfixes: Some(v1::MayastorBugFixes {
            nexus_rebuild_replica_ancestry: true,
        }),
        version: Some("v".into()),
    };
    #[rustfmt::skip]
    let want = [
        0x0A, 1, b'n',                       // 1 id
        0x12, 3, b'1', b':', b'2',           // 2 grpc_endpoint
        0x1A, 3, 0x0A, 1, b'u',              // 3 instance_uuid: StringValue
        0x22, 2, 0, 1,                       // 4 api_version, packed [V0, V1]
        0x2A, 3, 0x0A, 1, b'q',              // 5 hostnqn: StringValue
        0x32, 6, 0x08, 1, 0x10, 0, 0x20, 1,  // 6 features {1: true, 2: false, 4: true}
        0x3A, 2, 0x08, 1,                    // 7 bugfixes {1: true}
        0x42, 1, b'v',                       // 8 version
    ];
    check(req, &want);
    check(v1::DeregisterRequest { id: "n".into() }, &[0x0A, 1, b'n']);
}

#[test]
fn method_paths() {
    // The paths are part of the wire: check the generated service names.
    assert_eq!(
        <v0::mayastor_server::MayastorServer<Stub> as tonic::server::NamedService>::NAME,
        "mayastor.Mayastor"
    );
    assert_eq!(
        <v1::pool_rpc_server::PoolRpcServer<Stub> as tonic::server::NamedService>::NAME,
        "mayastor.v1.PoolRpc"
    );
    assert_eq!(
        <v1::host_rpc_server::HostRpcServer<Stub> as tonic::server::NamedService>::NAME,
        "mayastor.v1.HostRpc"
    );
    assert_eq!(
        <v1::registration_server::RegistrationServer<Stub> as tonic::server::NamedService>::NAME,
        "mayastor.v1.Registration"
    );
}

#[test]
fn v1_replica_messages() {
    // replica.proto: ListReplicaOptions 2 poolname (StringValue), 5 query
    // {1 replica, 2 snapshot, 3 clone}.
    check(
        v1::ListReplicaOptions {
            poolname: Some("p".into()),
            query: Some(v1::list_replica_options::Query {
                replica: true,
                snapshot: true,
                clone: true,
            }),
            ..Default::default()
        },
        &[0x12, 3, 0x0A, 1, b'p', 0x2A, 6, 0x08, 1, 0x10, 1, 0x18, 1],
    );
    // Replica: 2 uuid, 4 size, 8 poolname, 11 is_snapshot, 12 is_clone, 15 pooltype.
    check(
        v1::Replica {
            uuid: "u".into(),
            size: 5,
            poolname: "p".into(),
            is_snapshot: true,
            is_clone: true,
            pooltype: v1::PoolType::Lvm as i32,
            ..Default::default()
        },
        &[
            0x12, 1, b'u', 0x20, 5, 0x42, 1, b'p', 0x58, 1, 0x60, 1, 0x78, 1,
        ],
    );
    // CreateReplicaRequest: 1 name, 2 uuid, 3 pooluuid, 4 size, 5 thin.
    check(
        v1::CreateReplicaRequest {
            name: "n".into(),
            uuid: "u".into(),
            pooluuid: "p".into(),
            size: 5,
            thin: true,
            ..Default::default()
        },
        &[
            0x0A, 1, b'n', 0x12, 1, b'u', 0x1A, 1, b'p', 0x20, 5, 0x28, 1,
        ],
    );
    // DestroyReplicaRequest: 1 uuid, oneof pool {2 pool_name, 3 pool_uuid}.
    check(
        v1::DestroyReplicaRequest {
            uuid: "u".into(),
            pool: Some(v1::destroy_replica_request::Pool::PoolName("p".into())),
        },
        &[0x0A, 1, b'u', 0x12, 1, b'p'],
    );
    assert_eq!(
        <v1::replica_rpc_server::ReplicaRpcServer<Stub> as tonic::server::NamedService>::NAME,
        "mayastor.v1.ReplicaRpc"
    );
}

#[test]
fn v0_replica_messages() {
    // mayastor.proto: Replica 1 uuid, 2 pool, 3 thin, 4 size;
    // CreateReplicaRequest 1 uuid, 2 pool, 3 size, 4 thin.
    check(
        v0::Replica {
            uuid: "u".into(),
            pool: "p".into(),
            thin: true,
            size: 5,
            ..Default::default()
        },
        &[0x0A, 1, b'u', 0x12, 1, b'p', 0x18, 1, 0x20, 5],
    );
    check(
        v0::CreateReplicaRequest {
            uuid: "u".into(),
            pool: "p".into(),
            size: 5,
            thin: true,
            ..Default::default()
        },
        &[0x0A, 1, b'u', 0x12, 1, b'p', 0x18, 5, 0x20, 1],
    );
}

#[tonic::async_trait]
impl v1::replica_rpc_server::ReplicaRpc for Stub {
    async fn create_replica(
        &self,
        _: tonic::Request<v1::CreateReplicaRequest>,
    ) -> Result<tonic::Response<v1::Replica>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn destroy_replica(
        &self,
        _: tonic::Request<v1::DestroyReplicaRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn list_replicas(
        &self,
        _: tonic::Request<v1::ListReplicaOptions>,
    ) -> Result<tonic::Response<v1::ListReplicasResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn share_replica(
        &self,
        _: tonic::Request<v1::ShareReplicaRequest>,
    ) -> Result<tonic::Response<v1::Replica>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn unshare_replica(
        &self,
        _: tonic::Request<v1::UnshareReplicaRequest>,
    ) -> Result<tonic::Response<v1::Replica>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

/// A service type for naming the generated servers; never called.
struct Stub;

#[tonic::async_trait]
impl v0::mayastor_server::Mayastor for Stub {
    async fn create_pool(
        &self,
        _: tonic::Request<v0::CreatePoolRequest>,
    ) -> Result<tonic::Response<v0::Pool>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn destroy_pool(
        &self,
        _: tonic::Request<v0::DestroyPoolRequest>,
    ) -> Result<tonic::Response<v0::Null>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn list_pools(
        &self,
        _: tonic::Request<v0::Null>,
    ) -> Result<tonic::Response<v0::ListPoolsReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn list_block_devices(
        &self,
        _: tonic::Request<v0::ListBlockDevicesRequest>,
    ) -> Result<tonic::Response<v0::ListBlockDevicesReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn create_replica(
        &self,
        _: tonic::Request<v0::CreateReplicaRequest>,
    ) -> Result<tonic::Response<v0::Replica>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn destroy_replica(
        &self,
        _: tonic::Request<v0::DestroyReplicaRequest>,
    ) -> Result<tonic::Response<v0::Null>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn list_replicas(
        &self,
        _: tonic::Request<v0::Null>,
    ) -> Result<tonic::Response<v0::ListReplicasReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[tonic::async_trait]
impl v1::host_rpc_server::HostRpc for Stub {
    async fn list_block_devices(
        &self,
        _: tonic::Request<v1::ListBlockDevicesRequest>,
    ) -> Result<tonic::Response<v1::ListBlockDevicesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[tonic::async_trait]
impl v1::pool_rpc_server::PoolRpc for Stub {
    async fn create_pool(
        &self,
        _: tonic::Request<v1::CreatePoolRequest>,
    ) -> Result<tonic::Response<v1::Pool>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn destroy_pool(
        &self,
        _: tonic::Request<v1::DestroyPoolRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn export_pool(
        &self,
        _: tonic::Request<v1::ExportPoolRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn import_pool(
        &self,
        _: tonic::Request<v1::ImportPoolRequest>,
    ) -> Result<tonic::Response<v1::Pool>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn list_pools(
        &self,
        _: tonic::Request<v1::ListPoolOptions>,
    ) -> Result<tonic::Response<v1::ListPoolsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn grow_pool(
        &self,
        _: tonic::Request<v1::GrowPoolRequest>,
    ) -> Result<tonic::Response<v1::GrowPoolResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[tonic::async_trait]
impl v1::registration_server::Registration for Stub {
    async fn register(
        &self,
        _: tonic::Request<v1::RegisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    async fn deregister(
        &self,
        _: tonic::Request<v1::DeregisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[test]
fn v1_block_device() {
    let dev = v1::BlockDevice {
        devname: "/dev/a".into(),
        size: 300,
        filesystem: Some(v1::block_device::Filesystem {
            fstype: "x".into(),
            mountpoints: vec!["/m".into()],
            ..Default::default()
        }),
        available: true,
        is_rotational: Some(false),
        ..Default::default()
    };
    #[rustfmt::skip]
    let want = [
        0x0A, 6, b'/', b'd', b'e', b'v', b'/', b'a',    // 1 devname
        0x40, 0xAC, 0x02,                               // 8 size = 300
        0x52, 7, 0x0A, 1, b'x', 0x22, 2, b'/', b'm',    // 10 filesystem { 1 fstype, 4 mountpoints }
        0x58, 1,                                        // 11 available
        0x68, 0,                                        // 13 is_rotational (optional: sent when set)
    ];
    check(dev, &want);
    let part = v1::BlockDevice {
        partition: Some(v1::block_device::Partition {
            parent: "p".into(),
            number: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    check(part, &[0x4A, 5, 0x0A, 1, b'p', 0x10, 1]); // 9 partition { 1 parent, 2 number }
    check(v1::ListBlockDevicesRequest { all: true }, &[0x08, 1]);
}

#[test]
fn v0_block_device_has_one_mountpoint() {
    let dev = v0::BlockDevice {
        devname: "d".into(),
        filesystem: Some(v0::block_device::Filesystem {
            mountpoint: "/m".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    check(dev, &[0x0A, 1, b'd', 0x52, 4, 0x22, 2, b'/', b'm']);
    check(
        v0::ListBlockDevicesReply {
            devices: vec![v0::BlockDevice::default()],
        },
        &[0x0A, 0],
    );
}
