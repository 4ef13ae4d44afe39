//! Which pool is the resource's (issue 23, items 5 and 2), end to end on the
//! API server with the stand-in: a pool of the resource's name that the
//! operator did not create is never taken for its own (pending, naming the
//! pool and its uuid, until the admin adopts it by annotation); a resource
//! re-created under the same name gets its own ledger entry and never
//! reports another uid's pool as its own.

use std::time::Duration;

use kube::Api;
use kube::api::DeleteParams;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_operator::state::ledger::configmap_name;
use msp_proto::v1 as pb;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Scene, WAIT, create_pool, ledger_pools, node_pools, operator_again, wait_for, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
/// The annotation by which the admin adopts a pool (as documented; the
/// admin types it).
const ADOPT_ANNOTATION: &str = "openebs.io/adopt-pool-uuid";

/// The ledger entries of `node`, as stored.
async fn ledger_entries(
    admin: &kube::Client,
    node: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(admin.clone(), "mayastor");
    let data = api
        .get_opt(&configmap_name(node))
        .await?
        .and_then(|cm| cm.data)
        .unwrap_or_default();
    data.values()
        .map(|v| Ok(serde_json::from_str(v)?))
        .collect()
}

async fn pool_rpc(
    scene: &Scene,
) -> anyhow::Result<pb::pool_rpc_client::PoolRpcClient<tonic::transport::Channel>> {
    Ok(
        pb::pool_rpc_client::PoolRpcClient::connect(format!("http://{}", scene.sn.endpoint()))
            .await?,
    )
}

/// Item 5 (confirmed): a pool made by hand, its node restarted (so it is not
/// loaded), then a resource of its name on its disk. Before: CreatePool
/// (create-or-import) imported it, the resource went online, and deleting
/// the resource destroyed a pool someone else made. Now: pending, the reason
/// naming the pool and its uuid, no ledger entry, the pool left as it was
/// across the resource's deletion; adopted only by the annotation with its
/// uuid, after which it is the resource's pool (destroyed with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_made_by_hand_is_not_adopted_until_the_admin_says_so() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");

    // Made by hand on the node, then the node restarts: not loaded.
    let made = pool_rpc(&scene)
        .await?
        .create_pool(pb::CreatePoolRequest {
            name: "handmade".into(),
            disks: vec![disk.path_str()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let uuid = made.uuid.clone();
    scene.sn.restart()?;
    wait_for("the restarted node answers", WAIT, || async {
        node_pools(scene.sn.endpoint()).await.is_ok()
    })
    .await?;
    assert!(node_pools(scene.sn.endpoint()).await?.is_empty());

    create_pool(&admin, "handmade", "node1", &[disk.path_str()]).await?;
    let status = wait_pool(
        &admin,
        "handmade",
        WAIT,
        "pending, naming the pool and its uuid",
        |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains(&uuid) && r.contains("handmade"))
        },
    )
    .await;
    let status = match status {
        Ok(status) => status,
        Err(err) => {
            let now = msp_tests::operator::pool_status(&admin, "handmade").await?;
            let ledger = ledger_entries(&admin, "node1").await?;
            anyhow::bail!(
                "{err}\nstatus now: {now:?}\nledger: {ledger:?}\nnode lists: {:?}",
                node_pools(scene.sn.endpoint()).await?
            );
        }
    };
    assert_eq!(status.state, Some(PoolState::Pending), "{status:?}");
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(ADOPT_ANNOTATION)),
        "the reason says how to adopt: {status:?}"
    );
    assert_eq!(status.node, None, "{status:?}");
    // Never recorded, never loaded as the resource's, and still so after
    // a few more attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        ledger_pools(&admin, "node1").await?.is_empty(),
        "{:?}",
        ledger_entries(&admin, "node1").await?
    );
    let status = msp_tests::operator::pool_status(&admin, "handmade").await?;
    assert_eq!(status.state, Some(PoolState::Pending), "{status:?}");

    // Deleted unadopted: the pool is left as it was (it imports by hand).
    api.delete("handmade", &DeleteParams::default()).await?;
    wait_for("resource gone", WAIT, || async {
        api.get_opt("handmade").await.is_ok_and(|p| p.is_none())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut grpc = pool_rpc(&scene).await?;
    let imported = grpc
        .import_pool(pb::ImportPoolRequest {
            name: "handmade".into(),
            disks: vec![disk.path_str()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(imported.uuid, uuid, "the pool made by hand is still there");
    grpc.export_pool(pb::ExportPoolRequest {
        name: "handmade".into(),
        uuid: None,
    })
    .await?;

    // Adopted: the resource again, annotated with the pool's uuid.
    let mut adopting = MayastorPool::new(
        "handmade",
        msp_operator::state::crd::MayastorPoolSpec {
            node: "node1".into(),
            disks: vec![disk.path_str()],
        },
    );
    adopting.metadata.annotations = Some([(ADOPT_ANNOTATION.to_string(), uuid.clone())].into());
    api.create(&Default::default(), &adopting).await?;
    wait_pool(&admin, "handmade", WAIT, "online once adopted", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let entries = ledger_entries(&admin, "node1").await?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0]["poolUuid"].as_str(),
        Some(uuid.as_str()),
        "{entries:?}"
    );
    // Adopted, it is the resource's: deleting it destroys it (it is empty).
    api.delete("handmade", &DeleteParams::default()).await?;
    wait_for(
        "the adopted pool destroyed with its resource",
        WAIT,
        || async {
            node_pools(scene.sn.endpoint())
                .await
                .is_ok_and(|p| p.is_empty())
        },
    )
    .await?;
    let gone = pool_rpc(&scene)
        .await?
        .import_pool(pb::ImportPoolRequest {
            name: "handmade".into(),
            disks: vec![disk.path_str()],
            ..Default::default()
        })
        .await;
    assert!(gone.is_err(), "the adopted pool was destroyed: {gone:?}");

    // A value that is not a uuid is refused, saying so; nothing is loaded.
    let mut wrong = adopting.clone();
    wrong.metadata.annotations = Some([(ADOPT_ANNOTATION.to_string(), "yes".to_string())].into());
    wrong.metadata.name = Some("typo".into());
    api.create(&Default::default(), &wrong).await?;
    wait_pool(&admin, "typo", WAIT, "pending: not a uuid", |s| {
        s.state == Some(PoolState::Pending)
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("not a pool uuid"))
    })
    .await?;
    scene.op.stop().await?;
    Ok(())
}

/// The pool whose label is on `disk` (the stand-in's), if any.
fn label_on(disk: &LoopDevice) -> anyhow::Result<Option<String>> {
    use msp_tests::storage_node::label::{LABEL_SIZE, Label, LabelRead};
    let block = msp_tests::loopdev::read_at(disk.path(), 0, LABEL_SIZE)?;
    Ok(match Label::decode(&block) {
        LabelRead::Valid(label) => Some(label.pool_name),
        _ => None,
    })
}

/// The node's loaded pool `name`: its uuid and disks.
async fn listed(scene: &Scene, name: &str) -> anyhow::Result<Option<(String, Vec<String>)>> {
    let pools = pool_rpc(scene)
        .await?
        .list_pools(pb::ListPoolOptions::default())
        .await?
        .into_inner()
        .pools;
    Ok(pools.into_iter().find(|p| p.name == name).map(|p| {
        let disks = p
            .disks
            .iter()
            .map(|d| msp_operator::nodes::client::disk_path(d))
            .collect();
        (p.uuid, disks)
    }))
}

/// Deletes resource `name` and waits until it is gone.
async fn delete_resource(api: &Api<MayastorPool>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    wait_for("resource gone", WAIT, || async {
        api.get_opt(name).await.is_ok_and(|p| p.is_none())
    })
    .await
}

/// Item 2 (confirmed): p on disk A; its node goes down; p is deleted and
/// re-created on disk B; the node comes back. Before: the new uid's ledger
/// entry replaced the old one, and the pool on disk A was in no ledger and
/// never destroyed. Now the old entry stays until its pool is destroyed;
/// the new resource waits for it (a node holds one pool of a name), then
/// gets its own pool on disk B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_created_on_other_disks_while_the_node_is_down_the_old_pool_is_destroyed()
-> anyhow::Result<()> {
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

    scene.sn.kill();
    wait_pool(&admin, "p", WAIT, "offline", |s| {
        s.state == Some(PoolState::Offline)
    })
    .await?;
    delete_resource(&api, "p").await?;
    let new = create_pool(&admin, "p", "node1", &[disk_b.path_str()]).await?;
    let new_uid = new.metadata.uid.clone().unwrap_or_default();
    scene.sn.restart()?;

    wait_pool(&admin, "p", WAIT, "online on disk B", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let (_, disks) = listed(&scene, "p").await?.expect("p loaded");
    assert_eq!(disks, vec![disk_b.path_str()], "the node's p");
    let gone = wait_for("the old pool's label gone from disk A", WAIT, || async {
        label_on(&disk_a).is_ok_and(|l| l.is_none())
    })
    .await;
    if let Err(e) = gone {
        anyhow::bail!(
            "{e}: disk A still holds pool {:?}; ledger: {:?}",
            label_on(&disk_a)?,
            ledger_entries(&admin, "node1").await?
        );
    }
    assert_eq!(label_on(&disk_b)?.as_deref(), Some("p"));
    let entries = ledger_entries(&admin, "node1").await?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0]["uid"].as_str(),
        Some(new_uid.as_str()),
        "{entries:?}"
    );
    scene.op.stop().await?;
    Ok(())
}

/// Item 2: p on disk A, loaded; deleted and re-created on disk B while the
/// operator is stopped. Before: the new resource reported online from the
/// old pool on disk A (the node lists a pool of its name). Now it is not
/// its pool: the old one is destroyed, the new one created on disk B, and
/// the resource is online only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_created_on_other_disks_never_reports_the_old_pool_as_its_own() -> anyhow::Result<()> {
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

    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    delete_resource(&api, "p").await?;
    create_pool(&admin, "p", "node1", &[disk_b.path_str()]).await?;
    scene.op = operator_again(&admin, registration).await?;

    wait_pool(&admin, "p", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let (_, disks) = listed(&scene, "p").await?.expect("p loaded");
    assert_eq!(
        disks,
        vec![disk_b.path_str()],
        "online from the node's pool p on {disks:?}, not on its own disk"
    );
    let status = msp_tests::operator::pool_status(&admin, "p").await?;
    assert_eq!(status.disks, Some(vec![disk_b.path_str()]), "{status:?}");
    assert_eq!(label_on(&disk_a)?, None, "the old pool is destroyed");
    scene.op.stop().await?;
    Ok(())
}

/// Item 2: re-created under the same name on the same disks while the
/// operator is stopped (also what kill -9 under churn left): the resource
/// takes the pool over. Before: online as "pool found ... not created by
/// this operator" (so left behind on delete), the ledger still naming the
/// old uid (the sweep trying to destroy it). Now: online with no such
/// reason, the ledger entry the new uid's with the same pool uuid, and the
/// pool destroyed when the resource is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_created_on_the_same_disks_takes_the_pool_over() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    create_pool(&admin, "p", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "p", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let (uuid, _) = listed(&scene, "p").await?.expect("p loaded");

    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    delete_resource(&api, "p").await?;
    let new = create_pool(&admin, "p", "node1", &[disk.path_str()]).await?;
    let new_uid = new.metadata.uid.clone().unwrap_or_default();
    scene.op = operator_again(&admin, registration).await?;

    let taken = wait_for("the ledger entry is the new uid's", WAIT, || async {
        ledger_entries(&admin, "node1")
            .await
            .is_ok_and(|e| e.len() == 1 && e[0]["uid"].as_str() == Some(new_uid.as_str()))
    })
    .await;
    if let Err(e) = taken {
        let status = msp_tests::operator::pool_status(&admin, "p").await?;
        anyhow::bail!(
            "{e}: ledger {:?}; status {status:?}",
            ledger_entries(&admin, "node1").await?
        );
    }
    let status = wait_pool(&admin, "p", WAIT, "online, its own", |s| {
        s.state == Some(PoolState::Online) && s.node.is_some()
    })
    .await?;
    assert!(
        !status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not created by this operator")),
        "{status:?}"
    );
    assert_eq!(listed(&scene, "p").await?.map(|(u, _)| u), Some(uuid));
    // Its own now: deleting it destroys it.
    delete_resource(&api, "p").await?;
    wait_for("destroyed with its resource", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| p.is_empty())
    })
    .await?;
    assert_eq!(label_on(&disk)?, None);
    scene.op.stop().await?;
    Ok(())
}
