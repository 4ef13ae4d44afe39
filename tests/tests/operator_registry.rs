//! The operator's node registry and pool clients against the real storage
//! node (in-process, in-memory `malloc://` disks, so no root is needed):
//! Register → registered and listed; both pool APIs (v0 and v1) create,
//! list, import and destroy; Deregister → unregistered at once; heartbeats
//! stopping without a Deregister → offline only after the deadline and a
//! failed probe.

use std::time::Duration;

use msp_operator::lifecycle::shutdown::Shutdown;
use msp_operator::nodes::client::PoolHealth;
use msp_operator::nodes::client::{ApiVersion, NodeClient};
use msp_operator::nodes::data_safety::Contents;
use msp_operator::nodes::pool_calls::{self, Destroyed, Load, Loaded};
use msp_operator::nodes::registry::{self, NodeRegistry, RegistrySettings};
use msp_tests::operator::wait_for;
use msp_tests::storage_node::node::{NodeConfig, RunningNode};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn node_config(name: &str, registration: Option<String>) -> NodeConfig {
    NodeConfig {
        registration_endpoint: registration,
        ..NodeConfig::on_loopback(name)
    }
}

#[tokio::test]
async fn both_pool_apis_create_list_import_destroy() -> anyhow::Result<()> {
    let node = RunningNode::start(node_config("n-api", None)).await?;
    for (api, name) in [(ApiVersion::V0, "pool-v0"), (ApiVersion::V1, "pool-v1")] {
        let client = NodeClient::new(
            &node.endpoint().to_string(),
            api,
            Duration::from_secs(2),
            Duration::from_secs(5),
        )?;
        let disks = vec![format!("malloc:///{name}?size_mb=64")];
        let created = client.create_pool(name, None, &disks).await?;
        assert_eq!(created.state, PoolHealth::Online);
        assert!(created.capacity > 0 && created.capacity <= 64 << 20);
        // Create or import again: ALREADY_EXISTS from the node, success
        // through the operator's idempotent calls.
        let again = client
            .create_pool(name, None, &disks)
            .await
            .expect_err("loaded");
        assert_eq!(again.code(), Code::AlreadyExists, "{again}");
        let t = Duration::from_secs(2);
        for load in [Load::Create, Load::Import] {
            let loaded = pool_calls::load_pool(&client, load, name, None, &disks, t).await?;
            let Loaded::Pool(pool) = loaded else {
                panic!("{loaded:?}");
            };
            assert_eq!(pool.name, name);
        }
        // Another pool's disks: still the error.
        let other = vec!["malloc:///elsewhere?size_mb=64".to_string()];
        let err = pool_calls::load_pool(&client, Load::Create, name, None, &other, t)
            .await
            .expect_err("other disks");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let listed = client.list_pools(Duration::from_secs(2)).await?;
        assert!(listed.iter().any(|p| p.name == name), "{listed:?}");
        // Disks come back as paths or URIs without the query.
        let mine = listed.iter().find(|p| p.name == name).expect("listed");
        assert!(mine.disks.iter().all(|d| !d.contains('?')), "{mine:?}");
        client.destroy_pool(name, None).await?;
        let gone = client.destroy_pool(name, None).await.expect_err("unknown");
        assert_eq!(gone.code(), Code::NotFound, "{gone}");
        // Not loaded and not on its disk (malloc disks die with the pool):
        // on v1 the import says so, gone, and the operator's destroy
        // succeeds; v0 cannot load a pool to check it, so it is kept.
        let destroyed =
            pool_calls::destroy_pool(&client, name, None, &disks, &[], false, t).await?;
        match api {
            ApiVersion::V1 => assert_eq!(destroyed, Destroyed::Gone),
            ApiVersion::V0 => assert_eq!(destroyed, Destroyed::Kept(Contents::NotLoaded)),
        }
        assert!(
            !client
                .list_pools(Duration::from_secs(2))
                .await?
                .iter()
                .any(|p| p.name == name)
        );
    }
    node.stop().await?;
    Ok(())
}

#[tokio::test]
async fn register_deregister_and_deadline() -> anyhow::Result<()> {
    let registry = NodeRegistry::new(RegistrySettings {
        deadline: Duration::from_secs(2),
        sync_period: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(500),
        rpc_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
    });
    let shutdown = Shutdown::new();
    let listener = registry::service::bind("127.0.0.1:0".parse()?).await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    // No admission gate: this test is about the registry's own lifecycle.
    let server = tokio::spawn(registry::service::serve(
        listener,
        registry::service::RegistrationService::new(registry.clone(), None),
        shutdown.wait(),
    ));
    let monitor = tokio::spawn(registry.clone().run(shutdown.wait()));

    // Register: registered, reachable, and its (empty) pool list known.
    let node = RunningNode::start(node_config("n-reg", Some(endpoint.clone()))).await?;
    wait_for("n-reg registered and listed", WAIT, || async {
        let v = registry.view("n-reg");
        v.registered && v.reachable && v.pools.is_some()
    })
    .await?;
    assert_eq!(registry.view("n-reg").endpoint, node.endpoint().to_string());
    // A pool made through the registry's client shows in the cache after a refresh.
    let client = registry.client("n-reg")?;
    assert_eq!(client.api(), ApiVersion::V1);
    client
        .create_pool("cached", None, &["malloc:///cached?size_mb=32".to_string()])
        .await?;
    registry.refresh("n-reg").await?;
    assert!(
        registry
            .view("n-reg")
            .pools
            .is_some_and(|p| p.iter().any(|p| p.name == "cached"))
    );

    // Graceful stop: Deregister, unregistered at once.
    node.stop().await?;
    wait_for("n-reg deregistered", Duration::from_secs(2), || async {
        !registry.view("n-reg").registered
    })
    .await?;
    assert!(registry.client("n-reg").is_err());

    // A node that registered once and then fell silent (no Deregister):
    // online until the deadline, then offline once the probe fails (nothing
    // listens on its endpoint).
    registry
        .register(&msp_proto::v1::RegisterRequest {
            id: "n-silent".into(),
            grpc_endpoint: "127.0.0.1:1".into(),
            instance_uuid: Some("one-heartbeat".into()),
            api_version: vec![1],
            ..Default::default()
        })
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    assert!(registry.view("n-silent").reachable);
    wait_for(
        "n-silent offline after the deadline",
        Duration::from_secs(6),
        || async {
            let v = registry.view("n-silent");
            v.registered && !v.reachable
        },
    )
    .await?;
    assert!(
        registry
            .view("n-silent")
            .heartbeat_age
            .is_some_and(|a| a >= Duration::from_secs(2))
    );

    shutdown.trigger();
    server.await??;
    monitor.await?;
    Ok(())
}

/// The Node cache of a registration check: `nodes` (name, address), listed.
fn admission_over(
    nodes: &[(&str, &str)],
) -> (
    registry::admission::Admission,
    kube::runtime::reflector::store::Writer<k8s_openapi::api::core::v1::Node>,
) {
    use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
    use kube::runtime::watcher::Event;
    let (store, mut writer) = kube::runtime::reflector::store::<Node>();
    writer.apply_watcher_event(&Event::Init);
    for (name, address) in nodes {
        writer.apply_watcher_event(&Event::InitApply(Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    address: address.to_string(),
                    type_: "InternalIP".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    writer.apply_watcher_event(&Event::InitDone);
    let admission = registry::admission::Admission::new(store, Default::default());
    (admission, writer)
}

/// A new leader whose nodes' heartbeats still go to the old one (frozen,
/// holding their connections): the nodes the old leader recorded are
/// adopted when their recorded endpoint passes the registration check and
/// answers; their answers keep them online past the heartbeat deadline; their
/// own Register later is a heartbeat, not a change; a node that stops
/// answering goes offline after the deadline as before.
#[tokio::test]
async fn a_new_leader_adopts_the_recorded_nodes_that_answer() -> anyhow::Result<()> {
    let settings = RegistrySettings {
        deadline: Duration::from_secs(1),
        sync_period: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(500),
        rpc_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
    };
    // A node that never heartbeats (its Register goes elsewhere), with a pool.
    let node = RunningNode::start(node_config("n-rec", None)).await?;
    let endpoint = node.endpoint().to_string();
    NodeClient::new(
        &endpoint,
        ApiVersion::V1,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )?
    .create_pool("kept", None, &["malloc:///kept?size_mb=32".to_string()])
    .await?;
    let register = |id: &str, at: &str| msp_proto::v1::RegisterRequest {
        id: id.into(),
        grpc_endpoint: at.into(),
        instance_uuid: Some(format!("{id}-instance")),
        api_version: vec![0, 1],
        ..Default::default()
    };
    // The old leader's registry records what registered with it.
    let old = NodeRegistry::new(settings.clone());
    for (id, at) in [
        ("n-rec", endpoint.as_str()),
        ("n-elsewhere", endpoint.as_str()),
        ("n-dead", "127.0.0.1:1"),
        ("n-unknown", endpoint.as_str()),
    ] {
        old.register(&register(id, at))
            .map_err(|s| anyhow::anyhow!("{s}"))?;
    }
    let recorded = old.recorded().borrow().clone();
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert_eq!(recorded["n-rec"].endpoint, endpoint);

    // The new leader: n-elsewhere's Node is at another address (a record
    // edited to point a node's calls elsewhere is refused like such a
    // Register), n-dead does not answer, n-unknown has no Node.
    let (admission, _writer) = admission_over(&[
        ("n-rec", "127.0.0.1"),
        ("n-elsewhere", "10.0.0.9"),
        ("n-dead", "127.0.0.1"),
    ]);
    let new = NodeRegistry::new(settings.clone());
    let shutdown = Shutdown::new();
    let monitor = tokio::spawn(new.clone().run(shutdown.wait()));
    let adopted = new.adopt(recorded, &admission).await;
    assert_eq!(adopted, vec!["n-rec".to_string()]);
    // Listed with its replica counts at once (a count arriving later would
    // be a second status write).
    let view = new.view("n-rec");
    assert!(view.registered && view.reachable, "{view:?}");
    assert!(
        view.pools
            .as_ref()
            .is_some_and(|p| p.iter().any(|p| p.name == "kept" && p.replicas == Some(0))),
        "{view:?}"
    );
    for other in ["n-elsewhere", "n-dead", "n-unknown"] {
        assert!(!new.knows(other), "{other} adopted");
    }
    // Three deadlines without a heartbeat: its answers keep it online.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let view = new.view("n-rec");
        assert!(view.reachable, "adopted node went offline: {view:?}");
        assert!(
            view.heartbeat_age
                .is_some_and(|age| age <= settings.deadline),
            "adopted node late: {view:?}"
        );
    }
    // Its own Register (the same instance) is a heartbeat, not a change.
    let changed = new
        .register(&register("n-rec", &endpoint))
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    assert!(!changed, "the node's own Register re-registered it");
    // Registered by itself now: silent and not answering, it goes offline
    // after the deadline as any node does.
    node.stop().await?;
    wait_for("n-rec offline", Duration::from_secs(5), || async {
        !new.view("n-rec").reachable
    })
    .await?;
    shutdown.trigger();
    monitor.await?;
    Ok(())
}
