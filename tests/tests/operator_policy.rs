//! The host's safety rails against a misbehaving policy, end to end: a
//! custom policy from the ConfigMap that panics for one pool and orders the
//! destruction of another. Each failed decision leaves the last good status
//! with a reason, a Warning event and a metric, and the operator goes on
//! deciding the other pools; the destroy of a live pool is refused and the
//! pool stays on its node, and so does its deleted pool while it holds a
//! replica. Deleting the ConfigMap returns to the bundled policy.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use msp_operator::state::crd::PoolState;
use msp_policy_engine::bundled;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{Scene, WAIT, create_pool, node_pools, wait_event, wait_pool};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_policy_is_contained() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let module_path = bundled::built_component("hostile-misbehave")
        .ok_or_else(|| anyhow::anyhow!("the hostile test policy was not built"))?;
    let module = std::fs::read(module_path)?;

    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disks = [
        LoopDevice::create(32 * MIB)?,
        LoopDevice::create(32 * MIB)?,
        LoopDevice::create(32 * MIB)?,
    ];
    let names = ["hostile-panic", "hostile-destroy", "plain"];
    for (name, disk) in names.iter().zip(&disks) {
        create_pool(&admin, name, "node1", &[disk.path_str()]).await?;
    }
    for name in names {
        wait_pool(&admin, name, WAIT, "online under the bundled policy", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }

    // Ship the hostile policy.
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("msp-policy".into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "policy.wasm".to_string(),
            ByteString(module),
        )])),
        ..Default::default()
    };
    configmaps.create(&PostParams::default(), &cm).await?;

    // The other pools are decided by it.
    wait_pool(&admin, "plain", WAIT, "decided by the new policy", |s| {
        s.state == Some(PoolState::Online)
            && s.policy
                .as_deref()
                .is_some_and(|p| p.starts_with("msp-hostile-misbehave@"))
    })
    .await?;
    // A panic keeps the last good status, says why, warns, counts.
    let s = wait_pool(
        &admin,
        "hostile-panic",
        WAIT,
        "policy failure reported",
        |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("last good status kept"))
        },
    )
    .await?;
    assert_eq!(s.state, Some(PoolState::Online), "{s:?}");
    wait_event(&admin, "hostile-panic", "PolicyFailed").await?;
    // A destroy of a live pool is refused (the engine's validation already
    // calls it nonsense; the actuator would refuse it too); the pool stays.
    let s = wait_pool(&admin, "hostile-destroy", WAIT, "destroy refused", |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("last good status kept") && r.contains("Destroy"))
    })
    .await?;
    assert_eq!(s.state, Some(PoolState::Online), "{s:?}");
    wait_event(&admin, "hostile-destroy", "PolicyFailed").await?;
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(on_node, vec!["hostile-destroy", "hostile-panic", "plain"]);
    let (_, metrics) = scene.op.http_get("/metrics").await?;
    // The hostile module panics: a trap, counted under its kind.
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("msp_policy_decision_failures_total{kind=\"trap\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    msp_tests::operator::wait_for(
        "policy info metric names the hostile policy",
        WAIT,
        || async {
            scene
                .op
                .http_get("/metrics")
                .await
                .is_ok_and(|(_, m)| m.contains("msp_policy_info{name=\"msp-hostile-misbehave\""))
        },
    )
    .await?;

    // The policy decides destroy for its deleted pool too; holding a
    // replica, the pool is kept whatever the policy says.
    let mut replicas = msp_proto::v1::replica_rpc_client::ReplicaRpcClient::connect(format!(
        "http://{}",
        scene.sn.endpoint()
    ))
    .await?;
    replicas
        .create_replica(msp_proto::v1::CreateReplicaRequest {
            name: "r1".into(),
            uuid: "r1".into(),
            pooluuid: "hostile-destroy".into(),
            size: 4 << 20,
            ..Default::default()
        })
        .await?;
    let pools: Api<msp_operator::state::crd::MayastorPool> =
        Api::namespaced(admin.clone(), "mayastor");
    pools
        .delete("hostile-destroy", &DeleteParams::default())
        .await?;
    wait_event(&admin, "hostile-destroy", "PoolKept").await?;
    assert!(
        node_pools(scene.sn.endpoint())
            .await?
            .contains(&"hostile-destroy".to_string())
    );

    // Back to the bundled policy: the failure reason goes away.
    configmaps
        .delete("msp-policy", &DeleteParams::default())
        .await?;
    wait_pool(
        &admin,
        "hostile-panic",
        WAIT,
        "decided by the bundled policy again",
        |s| {
            s.state == Some(PoolState::Online)
                && s.reason.is_none()
                && s.policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("msp-default@"))
        },
    )
    .await?;
    scene.op.stop().await?;
    Ok(())
}
