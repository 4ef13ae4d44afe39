//! A pool's life on real loop devices through the storage-node binary:
//! create → online → node restarted → create imports (data intact) →
//! degraded (read-only disk) → faulted (disk detached) → destroy erases the
//! label. Also the same through the v0 API.

use std::time::Instant;

use msp_proto::{v0, v1};
use msp_tests::loopdev::{LoopDevice, MIB, pattern, read_at, require_loop_devices, write_at};
use msp_tests::storage_node::label::{LABEL_SIZE, Label, LabelRead, RESERVED_BYTES};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

fn label_on(path: &std::path::Path) -> anyhow::Result<LabelRead> {
    Ok(Label::decode(&read_at(path, 0, LABEL_SIZE)?))
}

async fn list(
    c: &mut v1::pool_rpc_client::PoolRpcClient<tonic::transport::Channel>,
) -> Vec<v1::Pool> {
    c.list_pools(v1::ListPoolOptions::default())
        .await
        .expect("ListPools")
        .into_inner()
        .pools
}

fn state(p: &v1::Pool) -> v1::PoolState {
    v1::PoolState::try_from(p.state).unwrap_or(v1::PoolState::PoolUnknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_restart_import_degrade_fault_destroy() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let a = LoopDevice::create(64 * MIB)?;
    let mut b = LoopDevice::create(32 * MIB)?;
    let mut node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-lifecycle"))?;
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;

    let req = v1::CreatePoolRequest {
        name: "life".into(),
        disks: vec![a.path_str(), b.path_str()],
        ..Default::default()
    };
    let t = Instant::now();
    let created = c.create_pool(req.clone()).await?.into_inner();
    println!("create (2 loop disks): {:?}", t.elapsed());
    assert_eq!(state(&created), v1::PoolState::PoolOnline);
    assert_eq!(created.capacity, (64 + 32) * MIB - 2 * RESERVED_BYTES);
    assert_eq!(created.disk_capacity, 96 * MIB);
    assert_eq!(created.used, 0);
    assert_eq!(created.disks.len(), 2);
    assert!(
        created.disks[0].starts_with(&format!("aio://{}?uuid=", a.path_str())),
        "disk URI: {}",
        created.disks[0]
    );
    uuid::Uuid::parse_str(&created.uuid)?;

    // As the io-engine: the same request again is ALREADY_EXISTS.
    let again = c
        .create_pool(req.clone())
        .await
        .expect_err("loaded already");
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let pools = list(&mut c).await;
    assert_eq!(pools.len(), 1);
    assert_eq!(state(&pools[0]), v1::PoolState::PoolOnline);

    // Data written into the pool's data area must survive the restart.
    let data_a = pattern(0x5A, MIB as usize);
    let data_b = pattern(0xA5, MIB as usize);
    write_at(a.path(), RESERVED_BYTES, &data_a)?;
    write_at(b.path(), RESERVED_BYTES + 7 * MIB, &data_b)?;

    node.restart()?;
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;
    assert!(
        list(&mut c).await.is_empty(),
        "pools are not re-imported by themselves"
    );

    // Create again, disks named as URIs this time: imports.
    let uri_req = v1::CreatePoolRequest {
        disks: created.disks.clone(),
        ..req.clone()
    };
    let t = Instant::now();
    let imported = c.create_pool(uri_req).await?.into_inner();
    println!("import (2 loop disks): {:?}", t.elapsed());
    assert_eq!(imported.uuid, created.uuid, "same pool imported");
    assert_eq!(imported.disks, created.disks);
    assert_eq!(imported.capacity, created.capacity);
    assert_eq!(state(&imported), v1::PoolState::PoolOnline);
    assert_eq!(read_at(a.path(), RESERVED_BYTES, MIB as usize)?, data_a);
    assert_eq!(
        read_at(b.path(), RESERVED_BYTES + 7 * MIB, MIB as usize)?,
        data_b
    );

    // A disk turned read-only: degraded; writable again: online.
    a.set_readonly(true)?;
    let t = Instant::now();
    let pools = list(&mut c).await;
    println!("ListPools (1 pool, 2 loop disks): {:?}", t.elapsed());
    assert_eq!(state(&pools[0]), v1::PoolState::PoolDegraded);
    a.set_readonly(false)?;
    assert_eq!(state(&list(&mut c).await[0]), v1::PoolState::PoolOnline);

    // A disk gone: faulted.
    let b_backing = b.backing_file().to_owned();
    b.detach()?;
    assert_eq!(state(&list(&mut c).await[0]), v1::PoolState::PoolFaulted);

    // Destroy: OK, the reachable disk's label is erased, its data untouched;
    // the detached disk could not be reached and keeps its label.
    c.destroy_pool(v1::DestroyPoolRequest {
        name: "life".into(),
        uuid: Some(created.uuid.clone()),
    })
    .await?;
    assert!(list(&mut c).await.is_empty());
    assert_eq!(label_on(a.path())?, LabelRead::Absent);
    assert_eq!(read_at(a.path(), 0, LABEL_SIZE)?, vec![0u8; LABEL_SIZE]);
    assert_eq!(read_at(a.path(), RESERVED_BYTES, MIB as usize)?, data_a);
    assert!(matches!(label_on(&b_backing)?, LabelRead::Valid(l) if l.pool_name == "life"));

    // Destroying an unknown pool is NOT_FOUND, as on the io-engine.
    let err = c
        .destroy_pool(v1::DestroyPoolRequest {
            name: "life".into(),
            uuid: None,
        })
        .await
        .expect_err("unknown pool");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The erased disk is blank again: a new pool can be created on it.
    let fresh = c
        .create_pool(v1::CreatePoolRequest {
            name: "life2".into(),
            disks: vec![a.path_str()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_ne!(fresh.uuid, created.uuid);
    c.destroy_pool(v1::DestroyPoolRequest {
        name: "life2".into(),
        uuid: None,
    })
    .await?;
    assert_eq!(label_on(a.path())?, LabelRead::Absent);

    let status = node.terminate()?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0_client_create_list_destroy() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let d = LoopDevice::create(16 * MIB)?;
    let node = StorageNodeProcess::start(BIN, StorageNodeOptions::new("sn-v0"))?;
    let mut c0 = v0::mayastor_client::MayastorClient::connect(node.uri()).await?;
    let mut c1 = v1::pool_rpc_client::PoolRpcClient::connect(node.uri()).await?;

    let p = c0
        .create_pool(v0::CreatePoolRequest {
            name: "v0pool".into(),
            disks: vec![d.path_str()],
        })
        .await?
        .into_inner();
    assert_eq!(p.state, v0::PoolState::PoolOnline as i32);
    assert_eq!(p.capacity, 15 * MIB);
    assert_eq!(p.used, 0);

    let listed = c0.list_pools(v0::Null {}).await?.into_inner().pools;
    assert_eq!(listed, vec![p.clone()]);
    // The v1 API sees the same pool.
    let v1_pools = list(&mut c1).await;
    assert_eq!(v1_pools.len(), 1);
    assert_eq!(v1_pools[0].name, "v0pool");
    assert_eq!(v1_pools[0].disks, p.disks);

    d.set_readonly(true)?;
    let listed = c0.list_pools(v0::Null {}).await?.into_inner().pools;
    assert_eq!(listed[0].state, v0::PoolState::PoolDegraded as i32);
    d.set_readonly(false)?;

    c0.destroy_pool(v0::DestroyPoolRequest {
        name: "v0pool".into(),
    })
    .await?;
    assert!(
        c0.list_pools(v0::Null {})
            .await?
            .into_inner()
            .pools
            .is_empty()
    );
    assert_eq!(label_on(d.path())?, LabelRead::Absent);
    // Unknown name: NOT_FOUND, as on the io-engine.
    let err = c0
        .destroy_pool(v0::DestroyPoolRequest {
            name: "v0pool".into(),
        })
        .await
        .expect_err("unknown pool");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    Ok(())
}
