//! A disk's health on the real io-engine. The pinned engine lists an lvs
//! pool online whatever happens to its disk (its ListPools state is a
//! constant), so the operator checks each pool's disks against the node's
//! own ListBlockDevices at every pool-list period
//! (`host/src/nodes/disk_health.rs`): a disk gone, or of size 0, or smaller
//! than the pool, faults the pool with a reason naming it.
//!
//! - a pool's loop device detached while the engine holds it (the kernel
//!   defers the detach of a busy loop device), then its backing file
//!   truncated to 0 and the capacity re-read: faulted, never online, with
//!   the reason the stand-in's pool gets for the same; its bytes back:
//!   online again;
//! - a pool's disk set read-only: the engine shows nothing of it (its pool
//!   and device listings are unchanged), so the pool stays as it was until
//!   the engine must open the disk again: after an engine restart the
//!   import fails and the pool is faulted with the engine's answer, its
//!   bytes unchanged; writable again, it is imported and online.
//!
//! Each test takes the machine's io-engine slot (one engine at a time).

use std::time::{Duration, Instant};

use msp_operator::state::crd::{MayastorPoolStatus, PoolState};
use msp_proto::v1;
use msp_tests::io_engine::{EngineScene, IoEngine, require_io_engine};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{Scene, WAIT, create_pool, online, pool_status, wait_pool};
use msp_tests::sh;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

/// Large enough for an lvs pool with room to spare (4 MiB clusters).
const DISK: u64 = 128 * MIB;

/// The engine's pools: name and state number.
async fn engine_pool_states(engine: &IoEngine) -> anyhow::Result<Vec<(String, i32)>> {
    Ok(engine
        .pools()
        .await?
        .into_iter()
        .map(|p| (p.name, p.state))
        .collect())
}

/// The engine's ListBlockDevices entry (all devices) for `devname`.
async fn engine_device(
    engine: &IoEngine,
    devname: &str,
) -> anyhow::Result<Option<v1::BlockDevice>> {
    let mut c = v1::host_rpc_client::HostRpcClient::connect(engine.uri()).await?;
    Ok(
        c.list_block_devices(v1::ListBlockDevicesRequest { all: true })
            .await?
            .into_inner()
            .devices
            .into_iter()
            .find(|d| d.devname == devname),
    )
}

/// Times `n` ListBlockDevices calls (every device) on the engine: the
/// operator's added call per node and pool-list period.
async fn time_list_block_devices(engine: &IoEngine, n: u32) -> anyhow::Result<()> {
    let mut c = v1::host_rpc_client::HostRpcClient::connect(engine.uri()).await?;
    let mut times = Vec::new();
    let mut count = 0;
    for _ in 0..n {
        let t = Instant::now();
        count = c
            .list_block_devices(v1::ListBlockDevicesRequest { all: true })
            .await?
            .into_inner()
            .devices
            .len();
        times.push(t.elapsed());
    }
    times.sort();
    let total: Duration = times.iter().sum();
    eprintln!(
        "ListBlockDevices on the real engine ({count} devices), {n} calls: median {:?}, max {:?}, mean {:?}",
        times[times.len() / 2],
        times[times.len() - 1],
        total / n
    );
    Ok(())
}

/// Makes `disk` look dead to the host, its size 0 (its backing file
/// truncated, the loop capacity re-read), its bytes kept aside for
/// [`revive`].
fn kill(disk: &LoopDevice) -> anyhow::Result<std::path::PathBuf> {
    let backing = disk.backing_file();
    let saved = backing.with_extension("saved");
    sh(&format!(
        "cp --sparse=always {b} {s} && truncate -s 0 {b} && losetup -c {d}",
        b = backing.display(),
        s = saved.display(),
        d = disk.path_str()
    ))?;
    let name = disk.path_str().trim_start_matches("/dev/").to_string();
    let size = std::fs::read_to_string(format!("/sys/block/{name}/size"))?;
    assert_eq!(size.trim(), "0", "{} still has a size", disk.path_str());
    Ok(saved)
}

/// Gives `disk` its bytes and size back (a LUN that returns).
fn revive(disk: &LoopDevice, saved: &std::path::Path) -> anyhow::Result<()> {
    sh(&format!(
        "cp --sparse=always {s} {b} && losetup -c {d}",
        s = saved.display(),
        b = disk.backing_file().display(),
        d = disk.path_str()
    ))?;
    Ok(())
}

/// Waits for pool `name` on the dead `disk` to be faulted, with a reason
/// naming the disk and its size, and to stay so over a few periods.
async fn faulted_for(
    admin: &kube::Client,
    name: &str,
    disk: &LoopDevice,
) -> anyhow::Result<MayastorPoolStatus> {
    let gone = Instant::now();
    let s = wait_pool(admin, name, WAIT, "faulted", |s| {
        s.state == Some(PoolState::Faulted)
    })
    .await?;
    eprintln!(
        "disk of size 0 -> pool faulted in {:?}: {:?}",
        gone.elapsed(),
        s.reason
    );
    let said = format!("disk {} has size 0 on the node", disk.path_str());
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains(&said)),
        "the reason names the disk: {s:?}"
    );
    // A later period does not flip it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = pool_status(admin, name).await?;
    assert_eq!(later.state, Some(PoolState::Faulted), "{later:?}");
    Ok(s)
}

/// Waits for pool `name` to be online again, its reason cleared.
async fn online_again(admin: &kube::Client, name: &str) -> anyhow::Result<()> {
    let back = Instant::now();
    let s = wait_pool(admin, name, WAIT, "online again", online).await?;
    eprintln!("disk back -> online in {:?}", back.elapsed());
    assert_eq!(s.reason, None, "{s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_disk_faults_its_pool_on_the_real_engine() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(DISK)?;
    let path = disk.path_str();
    let loop_name = path.trim_start_matches("/dev/").to_string();
    create_pool(&admin, "vanishing", "node1", std::slice::from_ref(&path)).await?;
    wait_pool(&admin, "vanishing", WAIT, "online", online).await?;
    time_list_block_devices(&scene.engine, 20).await?;
    let listed_before = scene.engine.pools().await?;

    // The kernel does not detach a loop device someone holds open: it marks
    // it to be cleared at the last close (autoclear) and says nothing.
    sh(&format!("losetup -d {path}"))?;
    let attached =
        std::fs::read_to_string(format!("/sys/block/{loop_name}/loop/backing_file")).is_ok();
    eprintln!(
        "losetup -d on the engine's busy {path}: {}",
        if attached {
            "deferred (autoclear), still attached"
        } else {
            "detached at once"
        }
    );
    if !attached {
        // Let go at once (another kernel): back on the same device for
        // the rest of the test.
        sh(&format!("losetup {path} {}", disk.backing_file().display()))?;
    }
    let saved = kill(&disk)?;
    faulted_for(&admin, "vanishing", &disk).await?;
    // The engine itself still calls it online, with the sizes it had: the
    // verdict is the operator's.
    let listed = engine_pool_states(&scene.engine).await?;
    assert_eq!(listed, vec![("vanishing".to_string(), 1)], "{listed:?}");
    assert_eq!(scene.engine.pools().await?, listed_before);

    revive(&disk, &saved)?;
    online_again(&admin, "vanishing").await?;
    scene.op.stop().await?;
    Ok(())
}

/// The same on the stand-in (which reports the pool faulted itself): the
/// operator says the same of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_disk_reads_the_same_on_the_stand_in() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "vanishing", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "vanishing", WAIT, "online", online).await?;
    let saved = kill(&disk)?;
    faulted_for(&admin, "vanishing", &disk).await?;
    revive(&disk, &saved)?;
    online_again(&admin, "vanishing").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_disk_on_the_real_engine_faults_at_its_next_import() -> anyhow::Result<()> {
    if !require_io_engine() {
        return Ok(());
    }
    let mut scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(DISK)?;
    let path = disk.path_str();
    create_pool(&admin, "frozen", "node1", std::slice::from_ref(&path)).await?;
    wait_pool(&admin, "frozen", WAIT, "online", online).await?;
    let before = engine_device(&scene.engine, &path).await?;
    assert!(before.is_some(), "the engine lists {path}");

    disk.set_readonly(true)?;
    let hash = disk.sha256_hex()?;
    // Ten pool-list periods: the engine shows nothing of a read-only disk,
    // neither in its pool list nor in its device list.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        engine_pool_states(&scene.engine).await?,
        vec![("frozen".to_string(), 1)]
    );
    let after = engine_device(&scene.engine, &path).await?;
    assert_eq!(after, before, "the engine's entry for the read-only {path}");
    let s = pool_status(&admin, "frozen").await?;
    eprintln!("read-only disk, 3 s later, the engine showing nothing: {s:?}");

    // The engine must open the disk again after a restart: it cannot.
    tokio::task::block_in_place(|| scene.engine.restart())?;
    let restarted = Instant::now();
    let s = wait_pool(&admin, "frozen", WAIT, "faulted after the restart", |s| {
        s.state == Some(PoolState::Faulted)
    })
    .await?;
    eprintln!(
        "engine restarted over the read-only disk -> faulted in {:?}: {:?}",
        restarted.elapsed(),
        s.reason
    );
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains("import")),
        "{s:?}"
    );
    assert_eq!(disk.sha256_hex()?, hash, "the read-only disk was written");

    // Writable again: imported, online.
    disk.set_readonly(false)?;
    let t = Instant::now();
    wait_pool(&admin, "frozen", WAIT, "online once writable", online).await?;
    eprintln!("disk writable again -> online in {:?}", t.elapsed());
    scene.op.stop().await?;
    Ok(())
}
