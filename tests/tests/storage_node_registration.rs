//! Registration as the io-engine does it, observed by a test registration
//! server: heartbeats every interval with name, endpoint, a per-start
//! instance uuid and api versions [V0, V1]; retries while the server is down;
//! Deregister on SIGTERM and exit 0. Also the virtual-node scale mode.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use msp_proto::v1;
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};
use msp_tests::storage_node::recorder::RegistrationRecorder;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_deregister_on_sigterm() -> anyhow::Result<()> {
    let reg = RegistrationRecorder::start("127.0.0.1:0".parse()?).await?;
    let mut opts = StorageNodeOptions::new("sn-reg-hb");
    opts.registration_endpoint = Some(reg.endpoint());
    opts.heartbeat_secs = 1;
    let mut node = StorageNodeProcess::start(BIN, opts)?;

    assert!(
        reg.wait_until(Duration::from_secs(10), |r| r
            .registers_of("sn-reg-hb")
            .len()
            >= 3)
            .await,
        "three heartbeats expected within 10 s, got {:?}",
        reg.registers_of("sn-reg-hb")
    );
    let beats = reg.registers_of("sn-reg-hb");
    let first = &beats[0].1;
    assert_eq!(first.grpc_endpoint, node.endpoint().to_string());
    assert_eq!(
        first.api_version,
        vec![v1::ApiVersion::V0 as i32, v1::ApiVersion::V1 as i32]
    );
    let instance = first.instance_uuid.clone().expect("instance uuid");
    uuid::Uuid::parse_str(&instance)?;
    assert!(
        beats
            .iter()
            .all(|(_, b)| b.instance_uuid.as_deref() == Some(&instance))
    );
    // Heartbeats are spaced by the interval (1 s), not sent in a burst.
    let gap = beats[2].0 - beats[1].0;
    assert!(
        gap >= Duration::from_millis(700),
        "gap between heartbeats {gap:?}"
    );

    // A restart registers with a fresh instance uuid.
    node.restart()?;
    assert!(
        reg.wait_until(Duration::from_secs(10), |r| {
            r.registers_of("sn-reg-hb")
                .iter()
                .any(|(_, b)| b.instance_uuid.as_deref() != Some(&instance))
        })
        .await,
        "no registration with a new instance uuid after the restart"
    );
    assert!(
        !reg.deregistered("sn-reg-hb"),
        "SIGKILL must not deregister"
    );

    // SIGTERM: Deregister, exit 0, no more heartbeats.
    let status = tokio::task::spawn_blocking(move || node.terminate().map(|s| (s, node))).await??;
    assert!(status.0.success(), "exit status {}", status.0);
    assert!(reg.deregistered("sn-reg-hb"), "no Deregister on SIGTERM");
    let after = reg.registers_of("sn-reg-hb").len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        reg.registers_of("sn-reg-hb").len(),
        after,
        "heartbeats after exit"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_while_the_endpoint_is_down() -> anyhow::Result<()> {
    let port = free_port(Ipv4Addr::LOCALHOST)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut opts = StorageNodeOptions::new("sn-reg-retry");
    opts.registration_endpoint = Some(format!("http://{addr}"));
    opts.heartbeat_secs = 1;
    let mut node = StorageNodeProcess::start(BIN, opts)?;

    // Nobody listens for a few heartbeats; the node keeps running.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(node.is_running());
    let reg = RegistrationRecorder::start(addr).await?;
    assert!(
        reg.wait_until(Duration::from_secs(10), |r| !r
            .registers_of("sn-reg-retry")
            .is_empty())
            .await,
        "the node did not register once the endpoint came up"
    );
    // SIGTERM while registered: deregisters.
    let status = tokio::task::spawn_blocking(move || node.terminate()).await??;
    assert!(status.success());
    assert!(reg.deregistered("sn-reg-retry"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_registration_server_still_exits() -> anyhow::Result<()> {
    let port = free_port(Ipv4Addr::LOCALHOST)?;
    let mut opts = StorageNodeOptions::new("sn-reg-none");
    opts.registration_endpoint = Some(format!("http://127.0.0.1:{port}"));
    opts.heartbeat_secs = 1;
    let mut node = StorageNodeProcess::start(BIN, opts)?;
    let status = tokio::task::spawn_blocking(move || node.terminate()).await??;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_nodes_register_and_serve_malloc_pools() -> anyhow::Result<()> {
    const COUNT: u8 = 4;
    let reg = RegistrationRecorder::start("127.0.0.1:0".parse()?).await?;
    let base = Ipv4Addr::new(127, 0, 77, 1);
    let port = free_port(base)?;
    let mut opts = StorageNodeOptions::new("unused");
    opts.grpc_endpoint = Some(SocketAddr::from((base, port)));
    opts.registration_endpoint = Some(reg.endpoint());
    opts.heartbeat_secs = 1;
    opts.extra_args = [
        "--virtual-nodes",
        &COUNT.to_string(),
        "--virtual-base",
        &base.to_string(),
        "--virtual-name-prefix",
        "vn-test-",
    ]
    .map(String::from)
    .to_vec();
    let mut node = StorageNodeProcess::start(BIN, opts)?;

    let names: Vec<String> = (1..=COUNT).map(|i| format!("vn-test-{i}")).collect();
    assert!(
        reg.wait_until(Duration::from_secs(10), |r| names
            .iter()
            .all(|n| !r.registers_of(n).is_empty()))
            .await,
        "not every virtual node registered: {:?}",
        reg.events()
    );
    for (i, name) in names.iter().enumerate() {
        let beat = &reg.registers_of(name)[0].1;
        let want = SocketAddr::from((Ipv4Addr::new(127, 0, 77, 1 + i as u8), port));
        assert_eq!(beat.grpc_endpoint, want.to_string(), "{name}");

        let mut c = v1::pool_rpc_client::PoolRpcClient::connect(format!("http://{want}")).await?;
        let pool = c
            .create_pool(v1::CreatePoolRequest {
                name: format!("pool-{i}"),
                disks: vec![format!("malloc:///disk-{i}?size_mb=64")],
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(pool.state, v1::PoolState::PoolOnline as i32);
        assert_eq!(pool.capacity, 63 * 1024 * 1024);
        assert!(pool.disks[0].starts_with(&format!("malloc:///disk-{i}?size_mb=64&uuid=")));
        // Each virtual node has its own pools, and no block devices.
        let listed = c
            .list_pools(v1::ListPoolOptions::default())
            .await?
            .into_inner()
            .pools;
        assert_eq!(
            listed.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            [format!("pool-{i}")]
        );
        let err = c
            .create_pool(v1::CreatePoolRequest {
                name: "real".into(),
                disks: vec!["/dev/loop0".into()],
                ..Default::default()
            })
            .await
            .expect_err("virtual nodes take in-memory disks only");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    let status = tokio::task::spawn_blocking(move || node.terminate()).await??;
    assert!(status.success());
    for n in &names {
        assert!(reg.deregistered(n), "{n} did not deregister");
    }
    Ok(())
}
