//! Pools that hold data, end to end on the real API server with the stand-in
//! storage node: a live pool's `status.replicas` follows what the node lists
//! (the `Replicas` column of the real kubectl's `get msp`); a deleted
//! resource's pool holding a replica is kept (Event,
//! gauge, ledger entry marked held) and destroyed once the replica is gone;
//! a purge confirmed on the resource destroys it with its replica; any other
//! value of the annotation changes nothing; both hold across a deletion
//! while the operator is down.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use msp_operator::nodes::data_safety::{PURGE_ANNOTATION, PURGE_VALUE};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_operator::state::ledger::{LedgerEntry, configmap_name};
use msp_proto::v1::replica_rpc_client::ReplicaRpcClient;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Operator, Scene, WAIT, create_pool, node_pools, pool_events, wait_event, wait_for, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const HELD: &str = "msp_pools_held{node=\"node1\"}";

/// Creates a 8 MiB replica on `pool`, as Mayastor's control plane would.
async fn create_replica(
    endpoint: std::net::SocketAddr,
    pool: &str,
    uuid: &str,
) -> anyhow::Result<()> {
    let mut c = ReplicaRpcClient::connect(format!("http://{endpoint}")).await?;
    c.create_replica(msp_proto::v1::CreateReplicaRequest {
        name: uuid.into(),
        uuid: uuid.into(),
        pooluuid: pool.into(),
        size: 8 * MIB,
        ..Default::default()
    })
    .await?;
    Ok(())
}

async fn destroy_replica(endpoint: std::net::SocketAddr, uuid: &str) -> anyhow::Result<()> {
    let mut c = ReplicaRpcClient::connect(format!("http://{endpoint}")).await?;
    c.destroy_replica(msp_proto::v1::DestroyReplicaRequest {
        uuid: uuid.into(),
        pool: None,
    })
    .await?;
    Ok(())
}

/// The ledger entry of `pool` on node1, if any.
async fn ledger_entry(admin: &kube::Client, pool: &str) -> anyhow::Result<Option<LedgerEntry>> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(admin.clone(), "mayastor");
    let cm = api.get_opt(&configmap_name("node1")).await?;
    let Some(value) = cm.and_then(|cm| cm.data).and_then(|mut d| d.remove(pool)) else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&value)?))
}

async fn annotate(admin: &kube::Client, pool: &str, value: &str) -> anyhow::Result<()> {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let patch = serde_json::json!({"metadata": {"annotations": {PURGE_ANNOTATION: value}}});
    api.patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn delete(admin: &kube::Client, pool: &str) -> anyhow::Result<()> {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete(pool, &DeleteParams::default()).await?;
    wait_for("resource gone", WAIT, || async {
        api.get_opt(pool).await.is_ok_and(|p| p.is_none())
    })
    .await
}

async fn online_with_replica(scene: &Scene, pool: &str, disk: &LoopDevice) -> anyhow::Result<()> {
    create_pool(&scene.admin, pool, "node1", &[disk.path_str()]).await?;
    wait_pool(&scene.admin, pool, WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    create_replica(scene.sn.endpoint(), pool, &format!("{pool}-r1")).await
}

/// The mean time of the deleted path's node calls, from the operator's
/// histograms (printed, not asserted: a benchmark figure): `contents` is the
/// rail's listing of a pool then kept, `destroy` the listing and DestroyPool.
async fn print_rail_cost(op: &Operator) {
    for step in ["contents", "destroy"] {
        let sum = op
            .metric(&format!(
                "msp_reconcile_step_seconds_sum{{step=\"{step}\"}}"
            ))
            .await;
        let count = op
            .metric(&format!(
                "msp_reconcile_step_seconds_count{{step=\"{step}\"}}"
            ))
            .await;
        if let (Some(sum), Some(count)) = (sum, count)
            && count > 0.0
        {
            println!(
                "deleted path, {step}: {count} times, mean {:.2} ms",
                sum / count * 1000.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holding_a_replica_is_kept_until_empty() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    online_with_replica(&scene, "data", &disk).await?;
    // The count follows the node within a pool-list period (300 ms here).
    let counted = Instant::now();
    wait_pool(&admin, "data", WAIT, "1 replica", |s| s.replicas == Some(1)).await?;
    println!(
        "status.replicas at 1 {:?} after CreateReplica",
        counted.elapsed()
    );
    let get = scene
        .cp
        .kubectl()
        .args(["-n", "mayastor", "get", "msp", "data"])
        .output()?;
    let table = String::from_utf8_lossy(&get.stdout);
    println!("{table}");
    let mut lines = table.lines();
    let (head, row) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let column = head
        .split_whitespace()
        .position(|c| c == "REPLICAS")
        .expect("a REPLICAS column");
    assert_eq!(row.split_whitespace().nth(column), Some("1"), "{table}");
    create_replica(scene.sn.endpoint(), "data", "data-r2").await?;
    wait_pool(&admin, "data", WAIT, "2 replicas", |s| {
        s.replicas == Some(2)
    })
    .await?;
    destroy_replica(scene.sn.endpoint(), "data-r2").await?;
    wait_pool(&admin, "data", WAIT, "1 replica", |s| s.replicas == Some(1)).await?;

    delete(&admin, "data").await?;
    wait_event(&admin, "data", "PoolKept").await?;
    let events = pool_events(&admin, "data").await?;
    let (_, note) = events
        .iter()
        .find(|(r, _)| r == "PoolKept")
        .expect("waited for");
    assert!(
        note.contains("1 replica (data-r1)") && note.contains(PURGE_VALUE),
        "{note}"
    );
    let entry = ledger_entry(&admin, "data").await?.expect("entry stays");
    let held = entry.held.expect("marked held");
    assert_eq!(
        (held.replicas, held.first.clone()),
        (1, vec!["data-r1".to_string()])
    );
    wait_for("gauge of held pools at 1", WAIT, || async {
        scene.op.metric(HELD).await == Some(1.0)
    })
    .await?;
    // Still kept several sweeps later (the sweep runs every second here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(node_pools(scene.sn.endpoint()).await?, vec!["data"]);

    // Empty now: destroyed within a sweep period or so.
    destroy_replica(scene.sn.endpoint(), "data-r1").await?;
    let emptied = Instant::now();
    wait_for("the emptied pool destroyed", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| p.is_empty())
    })
    .await?;
    println!(
        "held pool destroyed {:?} after its last replica",
        emptied.elapsed()
    );
    wait_for("ledger entry gone, gauge 0", WAIT, || async {
        ledger_entry(&admin, "data")
            .await
            .is_ok_and(|e| e.is_none())
            && scene.op.metric(HELD).await == Some(0.0)
    })
    .await?;
    wait_event(&admin, "data", "PoolDestroyed").await?;
    print_rail_cost(&scene.op).await;
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_typed_purge_destroys_data() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let (d1, d2) = (LoopDevice::create(64 * MIB)?, LoopDevice::create(64 * MIB)?);
    online_with_replica(&scene, "purged", &d1).await?;
    online_with_replica(&scene, "typo", &d2).await?;

    annotate(&admin, "purged", PURGE_VALUE).await?;
    annotate(&admin, "typo", "yes").await?;
    wait_event(&admin, "purged", "PurgeRecorded").await?;
    wait_event(&admin, "typo", "PurgeNotConfirmed").await?;
    assert!(ledger_entry(&admin, "purged").await?.expect("entry").purge);
    assert!(!ledger_entry(&admin, "typo").await?.expect("entry").purge);

    delete(&admin, "purged").await?;
    delete(&admin, "typo").await?;
    wait_for(
        "the purged pool destroyed, the other kept",
        WAIT,
        || async {
            node_pools(scene.sn.endpoint())
                .await
                .is_ok_and(|p| p == vec!["typo".to_string()])
        },
    )
    .await?;
    wait_event(&admin, "purged", "PoolDestroyed").await?;
    let events = pool_events(&admin, "purged").await?;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "PoolDestroyed" && n.contains("1 replica (purged-r1)")),
        "{events:?}"
    );
    wait_event(&admin, "typo", "PoolKept").await?;
    assert!(ledger_entry(&admin, "purged").await?.is_none());
    assert!(
        ledger_entry(&admin, "typo")
            .await?
            .expect("kept")
            .held
            .is_some()
    );
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_while_down_held_and_purged_as_recorded() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let (d1, d2) = (LoopDevice::create(64 * MIB)?, LoopDevice::create(64 * MIB)?);
    online_with_replica(&scene, "kept", &d1).await?;
    online_with_replica(&scene, "gone", &d2).await?;
    annotate(&admin, "gone", PURGE_VALUE).await?;
    wait_event(&admin, "gone", "PurgeRecorded").await?;

    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    delete(&admin, "kept").await?;
    delete(&admin, "gone").await?;
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(on_node, vec!["gone", "kept"]);

    let reg = format!("--registration-addr={registration}");
    scene.op = Operator::start(admin.clone(), &[&reg, "--startup-grace=10s"]).await?;
    scene.op.wait_ready(WAIT).await?;
    wait_for(
        "the purged pool destroyed after the restart",
        WAIT,
        || async {
            node_pools(scene.sn.endpoint())
                .await
                .is_ok_and(|p| p == vec!["kept".to_string()])
        },
    )
    .await?;
    wait_event(&admin, "kept", "PoolKept").await?;
    wait_for("gauge of held pools at 1", WAIT, || async {
        scene.op.metric(HELD).await == Some(1.0)
    })
    .await?;
    assert!(ledger_entry(&admin, "gone").await?.is_none());
    let kept = ledger_entry(&admin, "kept").await?.expect("kept");
    assert_eq!(kept.held.map(|h| h.replicas), Some(1));
    scene.op.stop().await?;
    Ok(())
}

/// The rail itself, on both APIs against an in-process stand-in: empty →
/// destroyed; a replica → kept, listed; purge → destroyed with it; not
/// loaded → imported and checked on v1, kept on v0; the node down → kept.
#[tokio::test]
async fn the_rail_destroys_only_an_empty_listing_or_a_purge() -> anyhow::Result<()> {
    use msp_operator::nodes::client::{ApiVersion, ContentKind, NodeClient};
    use msp_operator::nodes::data_safety::Contents;
    use msp_operator::nodes::pool_calls::{Destroyed, destroy_pool};
    use msp_tests::storage_node::node::{NodeConfig, RunningNode};

    let node = RunningNode::start(NodeConfig::on_loopback("n-rail")).await?;
    let t = Duration::from_secs(2);
    let endpoint = node.endpoint();
    for api in [ApiVersion::V0, ApiVersion::V1] {
        let client = NodeClient::new(&endpoint.to_string(), api, t, t)?;
        let name = format!("rail-{api:?}").to_lowercase();
        let disks = vec![format!("malloc:///{name}?size_mb=64")];
        // Empty: destroyed.
        client.create_pool(&name, None, &disks).await?;
        assert_eq!(
            destroy_pool(&client, &name, None, &disks, &[], false, t).await?,
            Destroyed::Destroyed(Vec::new())
        );
        // A replica: kept, and listed by the client of either API.
        client.create_pool(&name, None, &disks).await?;
        create_replica(endpoint, &name, &format!("{name}-r")).await?;
        let listed = client.list_replicas(&name, t).await?;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (listed[0].uuid.as_str(), listed[0].kind, listed[0].size),
            (format!("{name}-r").as_str(), ContentKind::Replica, 8 * MIB)
        );
        assert!(client.list_replicas("other", t).await?.is_empty());
        assert_eq!(
            destroy_pool(&client, &name, None, &disks, &[], false, t).await?,
            Destroyed::Kept(Contents::Holds(listed.clone()))
        );
        assert!(node_pools(endpoint).await?.contains(&name));
        // Not loaded (a node restart): v1 imports it to check, and keeps it;
        // v0 cannot check, and keeps it.
        let mut pools =
            msp_proto::v1::pool_rpc_client::PoolRpcClient::connect(format!("http://{endpoint}"))
                .await?;
        pools
            .export_pool(msp_proto::v1::ExportPoolRequest {
                name: name.clone(),
                uuid: None,
            })
            .await?;
        let kept = destroy_pool(&client, &name, None, &disks, &[], false, t).await?;
        match api {
            ApiVersion::V1 => assert_eq!(kept, Destroyed::Kept(Contents::Holds(listed.clone()))),
            ApiVersion::V0 => assert_eq!(kept, Destroyed::Kept(Contents::NotLoaded)),
        }
        client.import_pool(&name, None, &disks).await.ok();
        // Purged: destroyed with the replica, which goes with it.
        assert_eq!(
            destroy_pool(&client, &name, None, &disks, &[], true, t).await?,
            Destroyed::Destroyed(listed)
        );
        assert!(!node_pools(endpoint).await?.contains(&name));
    }
    // The node down: nothing can be listed, nothing is destroyed.
    let client = NodeClient::new(&endpoint.to_string(), ApiVersion::V1, t, t)?;
    node.stop().await?;
    let down = destroy_pool(&client, "any", None, &[], &[], false, t).await?;
    assert!(
        matches!(down, Destroyed::Kept(Contents::Unknown(_))),
        "{down:?}"
    );
    Ok(())
}
