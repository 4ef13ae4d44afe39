//! Who may register as a node: a registration for node2 whose endpoint is not
//! one of Kubernetes Node node2's addresses is refused with PERMISSION_DENIED,
//! changes nothing (node2's pool is not created on the impostor's endpoint), and
//! leaves a Warning Event on the Node and a metric; node2's real storage node,
//! on node2's address, then registers and the pool comes online.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use msp_operator::state::crd::PoolState;
use msp_proto::v1::RegisterRequest;
use msp_proto::v1::registration_client::RegistrationClient;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Scene, WAIT, create_node_at, create_pool, node_pools, pool_status, wait_for, wait_pool,
};
use msp_tests::storage_node::node::{NodeConfig, RunningNode};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
/// node2's address: another loopback address, so that it is a real one.
const NODE2_IP: &str = "127.0.0.2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_an_endpoint_off_the_node_is_refused_and_changes_nothing()
-> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    create_node_at(&admin, "node2", true, NODE2_IP).await?;
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "pool-2", "node2", &[disk.path_str()]).await?;
    wait_pool(
        &admin,
        "pool-2",
        WAIT,
        "pending: node2 not registered",
        |s| {
            s.state == Some(PoolState::Pending)
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("not registered"))
        },
    )
    .await?;

    // The impostor: registers as node2, pointing at node1's storage node.
    let mut client = RegistrationClient::connect(scene.op.registration_endpoint()).await?;
    let elsewhere = scene.sn.endpoint().to_string();
    for _ in 0..3 {
        let refused = client
            .register(RegisterRequest {
                id: "node2".into(),
                grpc_endpoint: elsewhere.clone(),
                instance_uuid: Some("impostor".into()),
                ..Default::default()
            })
            .await
            .expect_err("a registration off node2's addresses was accepted");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("not on Kubernetes Node \"node2\"")
                && refused.message().contains(NODE2_IP),
            "{refused:?}"
        );
    }
    // Nothing changed: still waiting for node2, and nothing was created on
    // the endpoint the impostor named.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = pool_status(&admin, "pool-2").await?;
    assert_eq!(s.state, Some(PoolState::Pending), "{s:?}");
    assert!(node_pools(scene.sn.endpoint()).await?.is_empty());

    // A Warning Event on the Node (one, though three were refused), a metric.
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    wait_for("a RegistrationRefused event on node2", WAIT, || async {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("RegistrationRefused")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node2")
                })
                .count()
                == 1
        })
    })
    .await?;
    let (_, metrics) = scene.op.http_get("/metrics").await?;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("msp_registrations_refused_total{kind=\"endpoint_not_on_node\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(refused, Some(3.0), "{metrics}");

    // node2's own storage node, on node2's address, is accepted.
    let node2 = RunningNode::start(NodeConfig {
        listen: format!("{NODE2_IP}:0").parse()?,
        registration_endpoint: Some(scene.op.registration_endpoint()),
        use_blkid: true,
        ..NodeConfig::on_loopback("node2")
    })
    .await?;
    wait_pool(&admin, "pool-2", WAIT, "online on node2", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    assert_eq!(
        node_pools(node2.endpoint()).await?,
        vec!["pool-2".to_string()]
    );
    node2.stop().await?;
    Ok(())
}

/// Item 9 of issue 23: the endpoint is judged as the gRPC client will read
/// it. `[<node1's address>]@<elsewhere>` names node1's address as user-info
/// while the client connects to `<elsewhere>`; paths and queries are refused
/// too. And a Deregister is admitted only from the node's own address: a
/// stranger sending Deregister for node1 every 0.2 s must not take node1's
/// pool offline; once node1 stops answering, a Deregister from elsewhere
/// (NAT, a Service, a standby's forward) is believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_connects_elsewhere_and_a_strangers_deregister_are_refused()
-> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "pool-1", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "pool-1", WAIT, "online on node1", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;

    // The stranger's server: counts the connections the operator makes to it.
    let trap = tokio::net::TcpListener::bind((NODE2_IP, 0)).await?;
    let trap_port = trap.local_addr()?.port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((socket, _)) = trap.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });

    let mut client = RegistrationClient::connect(scene.op.registration_endpoint()).await?;
    for endpoint in [
        format!("[127.0.0.1]@{NODE2_IP}:{trap_port}"),
        format!("127.0.0.1@{NODE2_IP}:{trap_port}"),
        format!("http://127.0.0.1:x@{NODE2_IP}:{trap_port}"),
        format!("127.0.0.1:{trap_port}/elsewhere"),
        format!("127.0.0.1:{trap_port}?x=1"),
    ] {
        let refused = client
            .register(RegisterRequest {
                id: "node1".into(),
                grpc_endpoint: endpoint.clone(),
                instance_uuid: Some("impostor".into()),
                ..Default::default()
            })
            .await
            .expect_err(&format!("registration with endpoint {endpoint} accepted"));
        assert!(
            matches!(
                refused.code(),
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ),
            "{endpoint}: {refused:?}"
        );
    }

    // A stranger (another address than node1's) deregisters node1 again and
    // again: refused, and the pool stays online throughout.
    let stranger = tonic::transport::Endpoint::from_shared(scene.op.registration_endpoint())?
        .local_address(Some(NODE2_IP.parse()?))
        .connect()
        .await?;
    let mut stranger = RegistrationClient::new(stranger);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let refused = stranger
            .deregister(msp_proto::v1::DeregisterRequest { id: "node1".into() })
            .await
            .expect_err("a Deregister of node1 from another address was accepted");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let s = pool_status(&admin, "pool-1").await?;
        assert_eq!(s.state, Some(PoolState::Online), "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the operator connected to the endpoint a refused registration named"
    );
    trap_task.abort();

    // A Deregister from another address is what a node behind NAT, a Service
    // or a standby's forward sends: once the node really stopped answering
    // (it is shutting down), it is believed and the pool goes offline.
    scene.sn.kill();
    stranger
        .deregister(msp_proto::v1::DeregisterRequest { id: "node1".into() })
        .await
        .map_err(|e| anyhow::anyhow!("the Deregister of a node that stopped was refused: {e:?}"))?;
    wait_pool(
        &admin,
        "pool-1",
        WAIT,
        "offline on the believed Deregister",
        |s| s.state == Some(PoolState::Offline),
    )
    .await?;
    Ok(())
}
