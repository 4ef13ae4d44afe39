//! Pending, each cause with its own reason, and the way out of each: the
//! node is not in the cluster, is not labelled openebs.io/engine=mayastor,
//! has no registered storage node, or the disk holds a filesystem.

use msp_operator::state::crd::PoolState;
use msp_tests::loopdev::{LoopDevice, MIB};
use msp_tests::operator::{
    Scene, WAIT, create_node, create_pool, label_node, node_pools, start_storage_node, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

fn can_run() -> bool {
    msp_tests::require(
        "root, loop devices (losetup) and mkfs.ext4",
        LoopDevice::available() && which("mkfs.ext4"),
    )
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pending_with(s: &msp_operator::state::crd::MayastorPoolStatus, needle: &str) -> bool {
    s.state == Some(PoolState::Pending) && s.reason.as_deref().is_some_and(|r| r.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pending_cause_has_its_reason_and_its_way_out() -> anyhow::Result<()> {
    if !can_run() {
        return Ok(());
    }
    // node-a with its storage node; node-u unlabelled; node-b without one.
    let scene = Scene::start(BIN, "node-a").await?;
    let admin = scene.admin.clone();
    create_node(&admin, "node-u", false).await?;
    create_node(&admin, "node-b", true).await?;
    let d_ghost = LoopDevice::create(32 * MIB)?;
    let d_unlabelled = LoopDevice::create(32 * MIB)?;
    let d_unregistered = LoopDevice::create(32 * MIB)?;
    let d_fs = LoopDevice::create(32 * MIB)?;
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(d_fs.path())
        .output()?;
    assert!(
        mkfs.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let fs_before = d_fs.sha256_hex()?;

    create_pool(&admin, "p-ghost", "ghost", &[d_ghost.path_str()]).await?;
    create_pool(&admin, "p-unlabelled", "node-u", &[d_unlabelled.path_str()]).await?;
    create_pool(
        &admin,
        "p-unregistered",
        "node-b",
        &[d_unregistered.path_str()],
    )
    .await?;
    create_pool(&admin, "p-fs", "node-a", &[d_fs.path_str()]).await?;

    wait_pool(
        &admin,
        "p-ghost",
        WAIT,
        "pending: node not in the cluster",
        |s| pending_with(s, "does not exist"),
    )
    .await?;
    wait_pool(
        &admin,
        "p-unlabelled",
        WAIT,
        "pending: node not labelled",
        |s| pending_with(s, "not labelled"),
    )
    .await?;
    wait_pool(
        &admin,
        "p-unregistered",
        WAIT,
        "pending: no storage node",
        |s| pending_with(s, "not registered"),
    )
    .await?;
    let s = wait_pool(
        &admin,
        "p-fs",
        WAIT,
        "pending: filesystem on the disk",
        |s| pending_with(s, "filesystem"),
    )
    .await?;
    assert_eq!(
        s.node, None,
        "node and disks are cached only at a successful create: {s:?}"
    );
    assert!(
        !node_pools(scene.sn.endpoint())
            .await?
            .contains(&"p-fs".to_string())
    );

    // The ways out: add the node (with its storage node), label the node
    // (and run a storage node there), start the missing storage node.
    create_node(&admin, "ghost", true).await?;
    let _sn_ghost = start_storage_node(BIN, "ghost", &scene.op.registration_endpoint())?;
    label_node(&admin, "node-u").await?;
    let _sn_u = start_storage_node(BIN, "node-u", &scene.op.registration_endpoint())?;
    let _sn_b = start_storage_node(BIN, "node-b", &scene.op.registration_endpoint())?;
    for (pool, node) in [
        ("p-ghost", "ghost"),
        ("p-unlabelled", "node-u"),
        ("p-unregistered", "node-b"),
    ] {
        let s = wait_pool(&admin, pool, WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
        assert_eq!(s.node.as_deref(), Some(node));
    }
    // The disk with a filesystem is still refused and left byte-identical.
    let s = msp_tests::operator::pool_status(&admin, "p-fs").await?;
    assert!(pending_with(&s, "filesystem"), "{s:?}");
    assert_eq!(d_fs.sha256_hex()?, fs_before);
    scene.op.stop().await?;
    Ok(())
}
