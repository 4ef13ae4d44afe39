//! Offline and back: the storage node is killed (SIGKILL: no deregistration),
//! the pool goes offline once heartbeats stop and the probe fails; after the
//! node restarts, the operator re-imports the pool and it is online with its
//! data intact. A graceful stop (Deregister) makes it offline at once.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use msp_operator::crd::PoolState;
use msp_tests::loopdev::LoopDevice;
use msp_tests::operator::{
    Operator, create_node, create_pool, node_pools, pool_event_reasons, start_cluster,
    start_storage_node, wait_pool,
};
use msp_tests::storage_node::label::RESERVED_BYTES;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const MIB: u64 = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(30);

fn can_run() -> bool {
    msp_tests::require("root and loop devices (losetup)", LoopDevice::available())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ 0x3C)
        .collect()
}

fn write_pattern(dev: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(dev)?;
    f.write_all_at(data, RESERVED_BYTES)?;
    f.sync_all()?;
    Ok(())
}

fn read_pattern(dev: &std::path::Path, len: usize) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(dev)?;
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, RESERVED_BYTES)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_goes_offline_and_comes_back_with_data() -> anyhow::Result<()> {
    if !can_run() {
        return Ok(());
    }
    let (_cp, admin) = start_cluster().await?;
    let mut op = Operator::start(admin.clone(), &[]).await?;
    op.wait_ready(WAIT).await?;
    create_node(&admin, "node1", true).await?;
    let mut sn = start_storage_node(BIN, "node1", &op.registration_endpoint())?;
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "pool-1", "node1", &[disk.path_str()]).await?;
    let online = wait_pool(&admin, "pool-1", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let data = pattern(MIB as usize);
    write_pattern(disk.path(), &data)?;

    // SIGKILL: heartbeats stop, the probe fails, offline (deadline 2 s).
    sn.kill();
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
    sn.restart()?;
    let s = wait_pool(&admin, "pool-1", WAIT, "online after restart", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    assert_eq!(s.disks, Some(vec![disk.path_str()]));
    assert_eq!(node_pools(sn.endpoint()).await?, vec!["pool-1".to_string()]);
    assert_eq!(
        read_pattern(disk.path(), data.len())?,
        data,
        "data changed across the re-import"
    );

    // Graceful stop: Deregister makes it offline without waiting for a deadline.
    let status = sn.terminate()?;
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
    sn.restart()?;
    wait_pool(&admin, "pool-1", WAIT, "online again", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    assert_eq!(read_pattern(disk.path(), data.len())?, data);

    let reasons = pool_event_reasons(&admin, "pool-1").await?;
    // (The recorder folds repeats of one reason into a series of one Event.)
    for expected in ["Online", "Offline"] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} event in {reasons:?}"
        );
    }
    op.stop().await?;
    Ok(())
}
