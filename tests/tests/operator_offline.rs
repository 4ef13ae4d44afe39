//! Offline and back: the storage node is killed (SIGKILL: no deregistration),
//! the pool goes offline once heartbeats stop and the probe fails; after the
//! node restarts, the operator re-imports the pool and it is online with its
//! data intact. A graceful stop (Deregister) makes it offline at once.

use std::time::{Duration, Instant};

use msp_operator::state::crd::PoolState;
use msp_tests::loopdev::{LoopDevice, MIB, pattern, read_at, require_loop_devices, write_at};
use msp_tests::operator::{
    Scene, WAIT, create_pool, node_pools, pool_events, wait_event, wait_pool,
};
use msp_tests::storage_node::label::RESERVED_BYTES;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_goes_offline_and_comes_back_with_data() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "pool-1", "node1", &[disk.path_str()]).await?;
    let online = wait_pool(&admin, "pool-1", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let data = pattern(0x3C, MIB as usize);
    write_at(disk.path(), RESERVED_BYTES, &data)?;

    // SIGKILL: heartbeats stop, the probe fails, offline (deadline 3 s).
    scene.sn.kill();
    let killed = Instant::now();
    let s = wait_pool(&admin, "pool-1", WAIT, "offline", |s| {
        s.state == Some(PoolState::Offline)
    })
    .await?;
    eprintln!("killed -> offline in {:?}", killed.elapsed());
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains("node1")),
        "{s:?}"
    );
    assert_eq!(
        s.capacity, online.capacity,
        "last known capacity kept while offline"
    );
    assert_eq!(s.conditions[0].status, "False");

    // Restart: the node comes up without pools, the operator imports it.
    scene.sn.restart()?;
    let s = wait_pool(&admin, "pool-1", WAIT, "online after restart", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    assert_eq!(s.disks, Some(vec![disk.path_str()]));
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["pool-1".to_string()]
    );
    assert_eq!(
        read_at(disk.path(), RESERVED_BYTES, data.len())?,
        data,
        "data changed across the re-import"
    );

    // Graceful stop: Deregister makes it offline without waiting for a deadline.
    let status = scene.sn.terminate()?;
    assert!(status.success(), "storage node exit: {status:?}");
    let s = wait_pool(
        &admin,
        "pool-1",
        Duration::from_secs(2),
        "offline on deregister",
        |s| s.state == Some(PoolState::Offline),
    )
    .await?;
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("not registered")),
        "{s:?}"
    );
    scene.sn.restart()?;
    wait_pool(&admin, "pool-1", WAIT, "online again", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    assert_eq!(read_at(disk.path(), RESERVED_BYTES, data.len())?, data);

    // (The recorder folds repeats of one reason into a series of one Event.)
    for expected in ["Created", "NodeLost", "Imported"] {
        wait_event(&admin, "pool-1", expected).await?;
    }
    // Each transition's own message, never an older one under its reason.
    let events = pool_events(&admin, "pool-1").await?;
    for (reason, note) in &events {
        let want = match reason.as_str() {
            // Before the first create, when the node's list comes late.
            "Pending" => "waiting to create the pool on node1: ",
            "Created" => "created on node1 and online",
            "Imported" => "pool imported again on node1: online",
            "NodeLost" => "storage node on node1 lost: pool offline: ",
            "Reimporting" => "storage node on node1 runs: bringing the pool back: ",
            // A loop device is a kernel name (issue 26), pointed out once.
            "KernelDiskName" => "spec.disks names kernel names, which can name another disk",
            other => panic!("unexpected event {other}: {note}"),
        };
        assert!(note.starts_with(want), "{reason}: {note} ({events:?})");
    }
    scene.op.stop().await?;
    Ok(())
}
