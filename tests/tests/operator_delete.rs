//! Deletion and claims end to end: the seed's kubectl create/list/delete with
//! the pool then gone from the node; two pools claiming one disk (the second
//! waits, then takes the disk once the first is deleted); a resource deleted
//! while the operator is stopped is cleaned up when it starts again; a pool
//! the operator did not create is never touched.

use std::io::Write;
use std::process::Stdio;

use kube::Api;
use kube::api::DeleteParams;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Operator, Scene, WAIT, create_pool, ledger_pools, node_pools, wait_for, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_kubectl_flow_and_two_pools_on_one_disk() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;

    // The seed's create, verbatim but for the device.
    let manifest = format!(
        "apiVersion: \"openebs.io/v1alpha1\"\nkind: MayastorPool\nmetadata:\n  name: my-new-pool\n  namespace: mayastor\nspec:\n  node: node1\n  disks: [\"{}\"]\n",
        disk.path_str()
    );
    let mut create = scene.cp.kubectl();
    create
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = create.spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The seed's list shows it online.
    wait_for(
        "kubectl -n mayastor get msp shows my-new-pool online",
        WAIT,
        || async {
            let mut get = scene.cp.kubectl();
            get.args(["-n", "mayastor", "get", "msp"]);
            msp_tests::control_plane::run(get).await.is_ok_and(|out| {
                out.lines()
                    .any(|l| l.starts_with("my-new-pool") && l.contains("online"))
            })
        },
    )
    .await?;
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["my-new-pool".to_string()]
    );
    assert_eq!(
        ledger_pools(&admin, "node1").await?,
        vec!["my-new-pool".to_string()]
    );

    // A second pool on the same disk waits, saying which pool holds it.
    create_pool(&admin, "second", "node1", &[disk.path_str()]).await?;
    let s = wait_pool(&admin, "second", WAIT, "pending: disk claimed", |s| {
        s.state == Some(PoolState::Pending)
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("my-new-pool"))
    })
    .await?;
    assert_eq!(s.node, None);

    // The seed's delete: the pool is gone from the node and the ledger.
    let mut delete = scene.cp.kubectl();
    delete.args(["-n", "mayastor", "delete", "msp", "my-new-pool"]);
    msp_tests::control_plane::run(delete).await?;
    wait_for("my-new-pool destroyed on the node", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| !p.contains(&"my-new-pool".to_string()))
    })
    .await?;
    // The disk is free: the second pool takes it.
    wait_pool(
        &admin,
        "second",
        WAIT,
        "online once the disk is free",
        |s| s.state == Some(PoolState::Online),
    )
    .await?;
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["second".to_string()]
    );
    wait_for("ledger holds only the second pool", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l == vec!["second".to_string()])
    })
    .await?;
    scene.op.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_while_stopped_is_cleaned_after_start_and_foreign_pools_are_kept()
-> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let foreign_disk = LoopDevice::create(64 * MIB)?;
    let keeper_disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "doomed", "node1", &[disk.path_str()]).await?;
    create_pool(&admin, "keeper", "node1", &[keeper_disk.path_str()]).await?;
    for name in ["doomed", "keeper"] {
        wait_pool(&admin, name, WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }

    // A pool made on the node by someone else, with no resource and no ledger entry.
    let mut grpc = msp_proto::v1::pool_rpc_client::PoolRpcClient::connect(format!(
        "http://{}",
        scene.sn.endpoint()
    ))
    .await?;
    grpc.create_pool(msp_proto::v1::CreatePoolRequest {
        name: "foreign".into(),
        disks: vec![foreign_disk.path_str()],
        ..Default::default()
    })
    .await?;

    // Stop the operator, delete the resource: nothing can destroy the pool now.
    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete("doomed", &DeleteParams::default()).await?;
    wait_for("resource gone", WAIT, || async {
        api.get_opt("doomed").await.is_ok_and(|p| p.is_none())
    })
    .await?;
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(on_node, vec!["doomed", "foreign", "keeper"]);

    // Start again on the same registration port: the ledger names the pool,
    // its uid is gone, the node re-registers, the pool is destroyed.
    let reg = format!("--registration-addr={registration}");
    // The production grace (10 s), not the fast one: the node's next 1 s
    // heartbeat lands well inside it even on a loaded machine, which a 3 s
    // grace counted from before the caches sync did not always allow.
    scene.op = Operator::start(admin.clone(), &[&reg, "--startup-grace=10s"]).await?;
    scene.op.wait_ready(WAIT).await?;
    wait_for("doomed destroyed after the restart", WAIT, || async {
        node_pools(scene.sn.endpoint()).await.is_ok_and(|mut p| {
            p.sort();
            p == vec!["foreign", "keeper"]
        })
    })
    .await?;
    wait_for("ledger holds only the keeper", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l == vec!["keeper"])
    })
    .await?;
    // The foreign pool, never in the ledger, is untouched; the live pool
    // stayed online across the restart (no flap to offline while its node
    // had not re-registered yet).
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(on_node, vec!["foreign", "keeper"]);
    let keeper = msp_tests::operator::pool_status(&admin, "keeper").await?;
    assert_eq!(keeper.state, Some(PoolState::Online), "{keeper:?}");
    let events = msp_tests::operator::pool_event_reasons(&admin, "keeper").await?;
    assert!(!events.iter().any(|r| r == "NodeLost"), "{events:?}");
    scene.op.stop().await?;
    Ok(())
}

/// Item 1 of issue 23: an operator restarted to watch another namespace
/// (the ledger in the same operator namespace) must not take the first
/// namespace's pools for deleted ones: a pool is swept only when its
/// resource is gone from a namespace the operator watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_of_a_namespace_not_watched_are_left_alone() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    let other_disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "first", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "first", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;

    // Restart watching namespace "other", on the same registration port.
    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    msp_tests::operator::ensure_namespace(&admin, "other").await?;
    let reg = format!("--registration-addr={registration}");
    scene.op = Operator::start(admin.clone(), &[&reg, "--namespace=other"]).await?;
    scene.op.wait_ready(WAIT).await?;

    // A pool in "other" coming online proves the node registered with this
    // operator, so the sweep could reach the first namespace's pool.
    let other: Api<MayastorPool> = Api::namespaced(admin.clone(), "other");
    other
        .create(
            &Default::default(),
            &MayastorPool::new(
                "second",
                msp_operator::state::crd::MayastorPoolSpec {
                    node: "node1".into(),
                    disks: vec![other_disk.path_str()],
                },
            ),
        )
        .await?;
    wait_for("second online in namespace other", WAIT, || async {
        other
            .get("second")
            .await
            .is_ok_and(|p| p.status.and_then(|s| s.state) == Some(PoolState::Online))
    })
    .await?;
    // Several sweeps (every second) later, the first pool is still there.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(
        on_node,
        vec!["first", "second"],
        "a pool of a namespace not watched was swept"
    );
    let mut ledger = ledger_pools(&admin, "node1").await?;
    ledger.sort();
    assert_eq!(ledger, vec!["first", "second"]);
    scene.op.stop().await?;
    Ok(())
}

/// Item 7 of issue 23: a storage node that accepts connections and never
/// answers (registered, so the sweep calls it) must not stall the deletion
/// of another node's pool: nodes are swept independently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_does_not_stall_another_nodes_deletion() -> anyhow::Result<()> {
    use msp_operator::state::ledger::{Ledger, LedgerEntry};
    use msp_proto::v1::RegisterRequest;
    use msp_proto::v1::registration_client::RegistrationClient;
    if !require_loop_devices() {
        return Ok(());
    }
    let (cp, operator_client) = msp_tests::operator::start_cluster().await?;
    let admin = cp.client().await?;
    // node2 on its own loopback address, its ledger naming pools of
    // resources that are gone: the sweep will try to destroy them there.
    msp_tests::operator::create_node_at(&admin, "node2", true, "127.0.0.2").await?;
    let ledger = Ledger::load(admin.clone(), "mayastor").await?;
    for i in 0..3 {
        ledger
            .record(
                LedgerEntry {
                    pool: format!("hung-{i}"),
                    namespace: "mayastor".into(),
                    uid: format!("gone-{i}"),
                    node: "node2".into(),
                    disks: vec!["/dev/hung".into()],
                    ..Default::default()
                },
                0,
            )
            .await?;
    }
    drop(ledger);
    let scene = Scene::start_on(cp, operator_client, BIN, "node1").await?;

    // node2's "storage node": accepts, holds the connection, never answers.
    let hung = tokio::net::TcpListener::bind(("127.0.0.2", 0)).await?;
    let hung_endpoint = hung.local_addr()?.to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let registration = scene.op.registration_endpoint();
    let heartbeats = tokio::spawn(async move {
        loop {
            if let Ok(mut client) = RegistrationClient::connect(registration.clone()).await {
                let _ = client
                    .register(RegisterRequest {
                        id: "node2".into(),
                        grpc_endpoint: hung_endpoint.clone(),
                        api_version: vec![msp_proto::v1::ApiVersion::V1 as i32],
                        ..Default::default()
                    })
                    .await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });

    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "a", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "a", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    // By now a sweep is waiting on node2.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete("a", &DeleteParams::default()).await?;
    // A serial sweep would wait out node2's calls (20 s each) first.
    wait_for(
        "a destroyed on node1 while node2 hangs",
        std::time::Duration::from_secs(10),
        || async {
            node_pools(scene.sn.endpoint())
                .await
                .is_ok_and(|p| p.is_empty())
        },
    )
    .await?;
    heartbeats.abort();
    holder.abort();
    Ok(())
}
