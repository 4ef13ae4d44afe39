//! A pool stays bound to its disk when kernel names move (issue 26), end to
//! end on a real kube-apiserver, on the stand-in storage node and on the real
//! io-engine, with loop devices given what a real disk has: a persistent
//! `/dev/disk/by-id/…` link that follows the disk ([`msp_tests::udev_links`]).
//!
//! - What each node reports as a loop device's devlinks, with and without
//!   the link's udev rule (printed): the by-diskseq link changes at every
//!   attach, the by-id link follows the backing file.
//! - Two loop devices swapped under their running pools (the node stopped,
//!   each backing file attached at the other's device, the node started):
//!   no pool call touches either disk, both pools pending with a reason that
//!   says where their disk is now; the bytes of both backing files unchanged;
//!   each spec pointed at its disk's persistent link, both online with their
//!   data.
//! - A path edit from the kernel name to the persistent link of the same
//!   disk updates the status without a pool call; an edit to another disk is
//!   ignored, as before.
//! - A disk whose persistent link the node does not report (the rule not
//!   there yet) is neither another disk nor the same one: pending, retried,
//!   online once the link is there.
//!
//! "No pool call" is counted by the operator (`msp_node_operations_total`,
//! every create, import and destroy it sends), on the stand-in by the node
//! itself (its call log: every call received that is not a listing), and
//! checked on the disks (their hashes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_proto::v1;
use msp_tests::io_engine::host::settle;
use msp_tests::io_engine::{EngineScene, IoEngine, IoEngineOptions, require_io_engine};
use msp_tests::loopdev::{LoopDevice, MIB, pattern, read_at, write_at};
use msp_tests::operator::{
    Operator, Scene, WAIT, create_pool, online, pool_events, pool_status, wait_event, wait_pool,
};
use msp_tests::storage_node::process::StorageNodeProcess;
use msp_tests::udev_links::{ByIdLink, UdevLinks, require_udev_links};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
/// Large enough for an lvs pool on the engine, with room for a replica.
const DISK: u64 = 128 * MIB;
/// How long a pool must stay pending, untouched, to show it is not a
/// passing state (several retries at the tests' backoff and sync periods).
const STAYS: Duration = Duration::from_secs(4);

/// The devlinks the node at `endpoint` reports for `devname`
/// (ListBlockDevices, all devices).
async fn devlinks(endpoint: SocketAddr, devname: &str) -> anyhow::Result<Vec<String>> {
    let mut host =
        v1::host_rpc_client::HostRpcClient::connect(format!("http://{endpoint}")).await?;
    let devices = host
        .list_block_devices(v1::ListBlockDevicesRequest { all: true })
        .await?
        .into_inner()
        .devices;
    let device = devices
        .into_iter()
        .find(|d| d.devname == devname)
        .ok_or_else(|| anyhow::anyhow!("{devname} not listed"))?;
    Ok(device.devlinks)
}

/// The pools the node at `endpoint` has loaded: name → (uuid, disks).
async fn loaded(endpoint: SocketAddr) -> anyhow::Result<BTreeMap<String, (String, Vec<String>)>> {
    let mut c = v1::pool_rpc_client::PoolRpcClient::connect(format!("http://{endpoint}")).await?;
    Ok(c.list_pools(v1::ListPoolOptions::default())
        .await?
        .into_inner()
        .pools
        .into_iter()
        .map(|p| (p.name, (p.uuid, p.disks)))
        .collect())
}

/// Every pool call the operator has sent (create, import, destroy; answered
/// or not), from its `msp_node_operations_total`.
async fn pool_calls(op: &Operator) -> anyhow::Result<f64> {
    let (_, body) = op.http_get("/metrics").await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("msp_node_operations_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

async fn set_disks(admin: &kube::Client, pool: &str, disks: &[String]) -> anyhow::Result<()> {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let edit = serde_json::json!({"spec": {"disks": disks}});
    api.patch(pool, &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    Ok(())
}

/// The note of the first Event with `reason` about pool `name`.
async fn event_note(admin: &kube::Client, name: &str, reason: &str) -> anyhow::Result<String> {
    pool_events(admin, name)
        .await?
        .into_iter()
        .find(|(r, _)| r == reason)
        .map(|(_, note)| note)
        .ok_or_else(|| anyhow::anyhow!("no {reason} event about {name}"))
}

/// Asserts the stand-in received no call that may write after its first
/// `written` ones.
fn no_call_since(sn: &StorageNodeProcess, written: usize) {
    let calls = sn.writing_calls();
    assert_eq!(
        calls.get(written..).unwrap_or_default(),
        &[] as &[String],
        "calls received by the node"
    );
}

fn is_by_id(link: &str) -> bool {
    link.starts_with("/dev/disk/by-id/")
}

/// The same on each node: a loop device's devlinks without the rule (no
/// by-id link), with it (the by-id link), and across a detach and attach at
/// the same number (by-diskseq changes, by-id stays), printed.
async fn report_devlinks(node: &str, endpoint: SocketAddr, udev: &UdevLinks) -> anyhow::Result<()> {
    let mut disk = LoopDevice::create(64 * MIB)?;
    settle();
    let dev = disk.path_str();
    let without = devlinks(endpoint, &dev).await?;
    println!("{node}: {dev} without the rule: devlinks {without:?}");
    assert!(!without.iter().any(|l| is_by_id(l)), "{without:?}");

    let link = udev.link(&disk)?;
    let with = devlinks(endpoint, &dev).await?;
    println!("{node}: {dev} with the rule: devlinks {with:?}");
    assert!(with.contains(&link.path_str()), "{with:?}");

    // The same file attached again at the same number: a new diskseq, the
    // same by-id link.
    disk.detach()?;
    disk.attach_at(std::path::Path::new(&dev))?;
    link.wait_target(Some(disk.path()))?;
    settle();
    let again = devlinks(endpoint, &dev).await?;
    println!("{node}: {dev} attached again: devlinks {again:?}");
    assert!(again.contains(&link.path_str()), "{again:?}");
    let seq = |links: &[String]| {
        links
            .iter()
            .find(|l| l.starts_with("/dev/disk/by-diskseq/"))
            .cloned()
    };
    if let (Some(before), Some(after)) = (seq(&with), seq(&again)) {
        assert_ne!(before, after, "by-diskseq did not change across an attach");
    }

    drop(link);
    let removed = devlinks(endpoint, &dev).await?;
    println!("{node}: {dev} after the rule is removed: devlinks {removed:?}");
    assert!(!removed.iter().any(|l| is_by_id(l)), "{removed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_reports_a_loop_devices_by_id_link_with_the_rule() -> anyhow::Result<()> {
    use msp_tests::storage_node::node::{NodeConfig, RunningNode};
    if !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let node = RunningNode::start(NodeConfig::on_loopback("n-links")).await?;
    report_devlinks("stand-in", node.endpoint(), &udev).await?;
    node.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_engine_reports_a_loop_devices_by_id_link_with_the_rule() -> anyhow::Result<()> {
    if !require_io_engine() || !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let engine = tokio::task::block_in_place(|| IoEngine::start(IoEngineOptions::new("n-links")))?;
    report_devlinks("io-engine", engine.endpoint(), &udev).await?;
    Ok(())
}

/// One of the two pools of a swap: its disk, the disk's persistent link,
/// and what it held before the swap.
struct Swapped {
    pool: &'static str,
    disk: LoopDevice,
    link: ByIdLink,
    /// The kernel name the resource was created with.
    created_on: String,
    /// Seed of the bytes written in the pool's unallocated end.
    seed: u8,
}

/// Where the test writes its raw pattern: the last MiB, in the pool's
/// unallocated clusters on the engine, after the label on the stand-in; no
/// pool operation writes there, so a format or a stray write shows.
const PATTERN_AT: u64 = DISK - MIB;

/// Two pools online, each with a raw pattern on its disk and a by-id link
/// (made before the pools: a disk whose link comes after another pool's
/// create is [`a_link_made_between_two_creates_is_pinned`]'s case).
async fn two_pools(admin: &kube::Client, udev: &UdevLinks) -> anyhow::Result<Vec<Swapped>> {
    let mut out = Vec::new();
    for (pool, seed) in [("pool-a", 0xa1), ("pool-b", 0xb2)] {
        let disk = LoopDevice::create(DISK)?;
        let link = udev.link(&disk)?;
        out.push(Swapped {
            pool,
            created_on: disk.path_str(),
            disk,
            link,
            seed,
        });
    }
    for s in &out {
        create_pool(admin, s.pool, "node1", std::slice::from_ref(&s.created_on)).await?;
    }
    for s in &out {
        let st = wait_pool(admin, s.pool, WAIT, "online", online).await?;
        assert_eq!(
            st.disk_ids,
            Some(vec![s.link.path_str()]),
            "not pinned: {st:?}"
        );
        write_at(s.disk.path(), PATTERN_AT, &pattern(s.seed, MIB as usize))?;
    }
    Ok(out)
}

/// The node stopped: swaps the two disks' kernel names, waits until each
/// link follows its disk, and returns the backing files' hashes.
fn swap(pools: &mut [Swapped]) -> anyhow::Result<Vec<String>> {
    let [a, b] = pools else {
        anyhow::bail!("two pools to swap");
    };
    LoopDevice::swap_names(&mut a.disk, &mut b.disk)?;
    for s in [&*a, &*b] {
        s.link.wait_target(Some(s.disk.path()))?;
        assert_ne!(s.disk.path_str(), s.created_on);
        println!(
            "{}: created on {}, its disk now {} ({})",
            s.pool,
            s.created_on,
            s.disk.path_str(),
            s.link.path_str()
        );
    }
    settle();
    Ok(pools
        .iter()
        .map(|s| s.disk.backing_sha256_hex())
        .collect::<Result<_, _>>()?)
}

/// After the node came back on swapped disks: both pools pending, each
/// reason naming where its disk is now; nothing loaded, no pool call sent,
/// no byte changed, for [`STAYS`].
async fn pending_untouched(
    admin: &kube::Client,
    op: &Operator,
    node: SocketAddr,
    pools: &[Swapped],
    hashes: &[String],
    calls_before: f64,
) -> anyhow::Result<()> {
    let since = Instant::now();
    for s in pools {
        let status = wait_pool(
            admin,
            s.pool,
            WAIT,
            "pending, saying where its disk is",
            |st| {
                st.state == Some(PoolState::Pending)
                    && st.reason.as_deref().is_some_and(|r| {
                        r.contains(&s.created_on)
                            && (r.contains(&s.disk.path_str()) || r.contains(&s.link.path_str()))
                    })
            },
        )
        .await?;
        println!(
            "{} pending {:?} after the node's restart: {}",
            s.pool,
            since.elapsed(),
            status.reason.unwrap_or_default()
        );
    }
    tokio::time::sleep(STAYS).await;
    for s in pools {
        let st = pool_status(admin, s.pool).await?;
        assert_eq!(st.state, Some(PoolState::Pending), "{}: {st:?}", s.pool);
    }
    assert_eq!(pool_calls(op).await?, calls_before, "a pool call was sent");
    assert!(loaded(node).await?.is_empty(), "a pool was loaded");
    for (s, hash) in pools.iter().zip(hashes) {
        assert_eq!(
            &s.disk.backing_sha256_hex()?,
            hash,
            "{}: its disk was written",
            s.pool
        );
    }
    Ok(())
}

/// Each spec pointed at its disk's persistent link: both online, the same
/// pools (uuids) on their own disks, their raw patterns intact.
async fn found_through_links(
    admin: &kube::Client,
    node: SocketAddr,
    pools: &[Swapped],
    uuids: &BTreeMap<String, (String, Vec<String>)>,
) -> anyhow::Result<()> {
    let edited = Instant::now();
    for s in pools {
        set_disks(admin, s.pool, &[s.link.path_str()]).await?;
    }
    for s in pools {
        let st = wait_pool(admin, s.pool, WAIT, "online through its link", online).await?;
        println!(
            "{} online {:?} after the edit to its link",
            s.pool,
            edited.elapsed()
        );
        assert_eq!(st.disks, Some(vec![s.link.path_str()]), "{st:?}");
    }
    let now = loaded(node).await?;
    for s in pools {
        let (uuid, disks) = &now[s.pool];
        assert_eq!(uuid, &uuids[s.pool].0, "{}: another pool", s.pool);
        println!("{}: the node reports disks {disks:?}", s.pool);
        assert_eq!(
            read_at(s.disk.path(), PATTERN_AT, MIB as usize)?,
            pattern(s.seed, MIB as usize),
            "{}: its bytes changed",
            s.pool
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_loop_devices_are_left_alone_and_found_by_link_on_the_stand_in()
-> anyhow::Result<()> {
    if !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let mut pools = two_pools(&admin, &udev).await?;
    let uuids = loaded(scene.sn.endpoint()).await?;

    scene.sn.kill();
    let hashes = swap(&mut pools)?;
    let calls = pool_calls(&scene.op).await?;
    let written = scene.sn.writing_calls().len();
    tokio::task::block_in_place(|| scene.sn.restart())?;
    pending_untouched(
        &admin,
        &scene.op,
        scene.sn.endpoint(),
        &pools,
        &hashes,
        calls,
    )
    .await?;
    no_call_since(&scene.sn, written);

    found_through_links(&admin, scene.sn.endpoint(), &pools, &uuids).await?;
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_loop_devices_are_left_alone_and_found_by_link_on_the_real_engine()
-> anyhow::Result<()> {
    if !require_io_engine() || !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let mut scene = EngineScene::start("node1").await?;
    let admin = scene.admin.clone();
    let mut pools = two_pools(&admin, &udev).await?;
    let uuids = loaded(scene.engine.endpoint()).await?;
    // A replica on pool-a with a pattern written through the engine's own
    // NVMe-oF target (as an application's data is).
    let replica = "aaaaaaaa-1111-4111-8111-111111111111";
    let mut rep = v1::replica_rpc_client::ReplicaRpcClient::connect(scene.engine.uri()).await?;
    rep.create_replica(v1::CreateReplicaRequest {
        name: replica.into(),
        uuid: replica.into(),
        pooluuid: "pool-a".into(),
        size: 32 * MIB,
        ..Default::default()
    })
    .await?;
    let (offset, data) = (4 * MIB, pattern(0x3c, MIB as usize));
    let mut host = scene.engine.replica_host(replica).await?;
    host.write(offset, &data).await?;
    drop(host);
    rep.unshare_replica(v1::UnshareReplicaRequest {
        uuid: replica.into(),
    })
    .await?;

    scene.engine.kill();
    let hashes = swap(&mut pools)?;
    let calls = pool_calls(&scene.op).await?;
    tokio::task::block_in_place(|| scene.engine.restart())?;
    pending_untouched(
        &admin,
        &scene.op,
        scene.engine.endpoint(),
        &pools,
        &hashes,
        calls,
    )
    .await?;

    found_through_links(&admin, scene.engine.endpoint(), &pools, &uuids).await?;
    assert!(
        scene
            .engine
            .read_replica(replica, offset, data.len())
            .await?
            == data,
        "the pattern written through the replica changed"
    );
    println!("the pattern written through pool-a's replica read back intact");
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_edit_to_the_same_disk_is_taken_and_to_another_ignored() -> anyhow::Result<()> {
    if !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let other = LoopDevice::create(64 * MIB)?;
    let link = udev.link(&disk)?;
    create_pool(&admin, "p", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "p", WAIT, "online", online).await?;
    // The kernel name pointed out once, with the link the node reports.
    wait_event(&admin, "p", "KernelDiskName").await?;
    let told = event_note(&admin, "p", "KernelDiskName").await?;
    println!("KernelDiskName: {told}");
    assert!(told.contains(&link.path_str()), "{told}");
    let before = loaded(scene.sn.endpoint()).await?;
    let calls = pool_calls(&scene.op).await?;
    let written = scene.sn.writing_calls().len();
    let other_hash = other.sha256_hex()?;

    // Kernel name → the persistent link of the same disk: taken.
    let edited = Instant::now();
    set_disks(&admin, "p", &[link.path_str()]).await?;
    let st = wait_pool(&admin, "p", WAIT, "the link cached, online", |s| {
        online(s) && s.disks.as_deref() == Some(&[link.path_str()][..])
    })
    .await?;
    println!(
        "edit to the same disk's link in status {:?}: {st:?}",
        edited.elapsed()
    );
    assert_eq!(st.disk_ids, Some(vec![link.path_str()]), "{st:?}");
    wait_event(&admin, "p", "DisksRenamed").await?;
    tokio::time::sleep(STAYS).await;
    let st = pool_status(&admin, "p").await?;
    assert!(online(&st), "{st:?}");
    assert!(
        !st.reason.as_deref().unwrap_or("").contains("ignored"),
        "{st:?}"
    );
    assert_eq!(pool_calls(&scene.op).await?, calls, "a pool call was sent");
    no_call_since(&scene.sn, written);
    assert_eq!(
        loaded(scene.sn.endpoint()).await?,
        before,
        "the pool changed"
    );

    // → another disk: ignored, as any other edit of the disks.
    set_disks(&admin, "p", &[other.path_str()]).await?;
    let st = wait_pool(&admin, "p", WAIT, "the edit said ignored", |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("spec edited after creation is ignored"))
    })
    .await?;
    println!("edit to another disk: {st:?}");
    assert!(online(&st), "{st:?}");
    assert_eq!(st.disks, Some(vec![link.path_str()]), "{st:?}");
    tokio::time::sleep(STAYS).await;
    assert_eq!(pool_calls(&scene.op).await?, calls, "a pool call was sent");
    no_call_since(&scene.sn, written);
    assert_eq!(
        loaded(scene.sn.endpoint()).await?,
        before,
        "the pool changed"
    );
    assert_eq!(
        other.sha256_hex()?,
        other_hash,
        "the other disk was written"
    );
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_without_its_link_waits_for_it() -> anyhow::Result<()> {
    if !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let mut link = udev.link(&disk)?;
    create_pool(&admin, "p", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "p", WAIT, "online", online).await?;
    let before = loaded(scene.sn.endpoint()).await?;
    let hash_of = |d: &LoopDevice| d.backing_sha256_hex();

    // A reboot after which udev has not (yet) made the link.
    scene.sn.kill();
    link.remove()?;
    let hash = hash_of(&disk)?;
    let calls = pool_calls(&scene.op).await?;
    let written = scene.sn.writing_calls().len();
    tokio::task::block_in_place(|| scene.sn.restart())?;
    let restarted = Instant::now();
    // The reason names what is missing: the link the disk was pinned by.
    let st = wait_pool(&admin, "p", WAIT, "pending, naming the link", |s| {
        s.state == Some(PoolState::Pending)
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains(&link.path_str()))
    })
    .await?;
    println!(
        "the link missing: pending {:?} after the restart: {}",
        restarted.elapsed(),
        st.reason.clone().unwrap_or_default()
    );
    tokio::time::sleep(STAYS).await;
    let st = pool_status(&admin, "p").await?;
    assert_eq!(st.state, Some(PoolState::Pending), "{st:?}");
    let reason = st.reason.unwrap_or_default();
    // Not called another disk: the node gave no identity to compare.
    assert!(!reason.contains("another disk"), "{reason}");
    assert_eq!(pool_calls(&scene.op).await?, calls, "a pool call was sent");
    no_call_since(&scene.sn, written);
    assert!(loaded(scene.sn.endpoint()).await?.is_empty(), "loaded");
    assert_eq!(hash_of(&disk)?, hash, "the disk was written");

    // The link appears: online, the same pool.
    let linked = Instant::now();
    let _link = udev.link(&disk)?;
    wait_pool(&admin, "p", WAIT, "online once the link is there", online).await?;
    println!("online {:?} after the link appeared", linked.elapsed());
    assert_eq!(loaded(scene.sn.endpoint()).await?, before);
    scene.op.stop().await?;
    Ok(())
}

/// A disk whose link udev made after the node's last listing (here: just
/// after another pool's create) is pinned by that link all the same: the
/// pin is what the node reports when the pool is created, not a listing
/// from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_between_two_creates_is_pinned() -> anyhow::Result<()> {
    if !require_udev_links() {
        return Ok(());
    }
    let udev = UdevLinks::start()?;
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let (first, second) = (LoopDevice::create(64 * MIB)?, LoopDevice::create(64 * MIB)?);
    let first_link = udev.link(&first)?;
    create_pool(&admin, "first", "node1", &[first.path_str()]).await?;
    let st = wait_pool(&admin, "first", WAIT, "online", online).await?;
    assert_eq!(st.disk_ids, Some(vec![first_link.path_str()]), "{st:?}");
    let second_link = udev.link(&second)?;
    create_pool(&admin, "second", "node1", &[second.path_str()]).await?;
    let st = wait_pool(&admin, "second", WAIT, "online", online).await?;
    assert_eq!(st.disk_ids, Some(vec![second_link.path_str()]), "{st:?}");
    scene.op.stop().await?;
    Ok(())
}
