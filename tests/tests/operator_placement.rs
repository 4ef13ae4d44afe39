//! Placement after a crash (issue 23, item 4), end to end on the API server
//! with the stand-in: what was created (the ledger) wins over a spec edited
//! before the first create was reported.

use kube::Api;
use kube::api::{Patch, PatchParams};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_proto::v1 as pb;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{Scene, WAIT, create_pool, operator_again, wait_pool};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

/// The pools the scene's storage node has loaded, as it lists them.
async fn loaded(scene: &Scene) -> anyhow::Result<Vec<pb::Pool>> {
    let endpoint = format!("http://{}", scene.sn.endpoint());
    let mut grpc = pb::pool_rpc_client::PoolRpcClient::connect(endpoint).await?;
    Ok(grpc
        .list_pools(pb::ListPoolOptions::default())
        .await?
        .into_inner()
        .pools)
}

/// Item 4: CreatePool succeeded on disk A, the operator was killed before
/// its status write, the spec was edited to disk B, the operator restarts.
/// (The crash's state is made by hand: the pool created and recorded, the
/// status without node and disks.) Before: the status cached disk B while
/// the pool sat on disk A. Now: the status says disk A, the pool stays
/// there, nothing is made on disk B, and the reason says the edit is
/// ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_after_a_crash_comes_from_what_was_created() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let (disk_a, disk_b) = (LoopDevice::create(64 * MIB)?, LoopDevice::create(64 * MIB)?);
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    create_pool(&admin, "p", "node1", &[disk_a.path_str()]).await?;
    wait_pool(&admin, "p", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;

    // The crash: the status as it was before the first create was reported.
    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    let before_create = serde_json::json!({"status": {
        "state": "pending", "node": null, "disks": null, "capacity": null, "used": null,
        "reason": "creating the pool"}});
    api.patch_status("p", &PatchParams::default(), &Patch::Merge(&before_create))
        .await?;
    let edit = serde_json::json!({"spec": {"disks": [disk_b.path_str()]}});
    api.patch("p", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    let status = api.get("p").await?.status.unwrap_or_default();
    assert_eq!((status.node, status.disks), (None, None));

    scene.op = operator_again(&admin, registration).await?;
    let status = wait_pool(&admin, "p", WAIT, "online with its placement cached", |s| {
        s.state == Some(PoolState::Online) && s.disks.is_some()
    })
    .await;
    let status = match status {
        Ok(s) => s,
        Err(e) => anyhow::bail!("{e}; the node lists {:?}", loaded(&scene).await?),
    };
    assert_eq!(status.disks, Some(vec![disk_a.path_str()]), "{status:?}");
    assert_eq!(status.node.as_deref(), Some("node1"));
    let status = wait_pool(&admin, "p", WAIT, "the edit said ignored", |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("spec edited after creation is ignored"))
    })
    .await?;
    assert_eq!(status.state, Some(PoolState::Online), "{status:?}");
    // The pool is on disk A, nothing on disk B.
    let pools = loaded(&scene).await?;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert!(
        pools[0]
            .disks
            .iter()
            .all(|d| d.contains(&disk_a.path_str())),
        "{pools:?}"
    );
    let block = msp_tests::loopdev::read_at(disk_b.path(), 0, 4096)?;
    assert!(
        !block.starts_with(msp_tests::storage_node::label::MAGIC),
        "a pool was made on disk B"
    );
    scene.op.stop().await?;
    Ok(())
}
