//! A label-keyed policy decides about deleted resources with their labels:
//! the operator keeps a resource's labels (and annotations) as last seen in
//! its ledger entry, so the observation of the deleted resource has them.
//! The example policy `keep-labelled` keeps the pool of a resource labelled
//! keep=true and lets the default destroy the others; end to end, with the
//! operator running and with the resource deleted while it was down (the
//! ConfigMap's policy decides from the first decision after a start, never
//! the bundled default).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_operator::state::ledger::{LedgerEntry, configmap_name};
use msp_policy_engine::bundled;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Operator, Scene, WAIT, create_pool, ledger_pools, node_pools, wait_for, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

async fn set_label(api: &Api<MayastorPool>, name: &str, value: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"labels": {"keep": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The ledger entry of `pool` on node1, as stored.
async fn ledger_entry(admin: &kube::Client, pool: &str) -> anyhow::Result<Option<LedgerEntry>> {
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let cm = api.get_opt(&configmap_name("node1")).await?;
    Ok(cm
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(pool).cloned())
        .map(|v| serde_json::from_str(&v))
        .transpose()?)
}

async fn sorted_node_pools(scene: &Scene) -> anyhow::Result<Vec<String>> {
    let mut pools = node_pools(scene.sn.endpoint()).await?;
    pools.sort();
    Ok(pools)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_keyed_policy_keeps_labelled_pools_of_deleted_resources() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let module = std::fs::read(
        bundled::built_component("keep-labelled")
            .ok_or_else(|| anyhow::anyhow!("the keep-labelled example was not built"))?,
    )?;
    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    configmaps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("msp-policy".into()),
                    ..Default::default()
                },
                binary_data: Some(BTreeMap::from([(
                    "policy.wasm".to_string(),
                    ByteString(module),
                )])),
                ..Default::default()
            },
        )
        .await?;

    // kept: labelled from the start; relabelled: labelled once online (the
    // ledger entry follows); dropped: never labelled; offline: labelled,
    // deleted while the operator is down.
    let names = ["kept", "relabelled", "dropped", "offline"];
    let disks = [
        LoopDevice::create(32 * MIB)?,
        LoopDevice::create(32 * MIB)?,
        LoopDevice::create(32 * MIB)?,
        LoopDevice::create(32 * MIB)?,
    ];
    for (name, disk) in names.iter().zip(&disks) {
        create_pool(&admin, name, "node1", &[disk.path_str()]).await?;
    }
    for name in ["kept", "offline"] {
        set_label(&api, name, "true").await?;
    }
    for name in names {
        wait_pool(&admin, name, WAIT, "online under keep-labelled", |s| {
            s.state == Some(PoolState::Online)
                && s.policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("msp-keep-labelled@"))
        })
        .await?;
    }
    set_label(&api, "relabelled", "true").await?;
    for name in ["kept", "relabelled", "offline"] {
        wait_for(
            &format!("{name}'s label in its ledger entry"),
            WAIT,
            || async {
                ledger_entry(&admin, name).await.is_ok_and(|e| {
                    e.is_some_and(|e| e.labels.get("keep").map(String::as_str) == Some("true"))
                })
            },
        )
        .await?;
    }
    let dropped = ledger_entry(&admin, "dropped").await?;
    assert!(
        dropped.as_ref().is_some_and(|e| e.labels.is_empty()),
        "{dropped:?}"
    );

    // Deleted while the operator runs: the labelled pools stay on the node
    // (retained: out of the ledger), the other is destroyed.
    for name in ["kept", "relabelled", "dropped"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_for("only offline left in the ledger", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l == vec!["offline"])
    })
    .await?;
    assert_eq!(
        sorted_node_pools(&scene).await?,
        vec!["kept", "offline", "relabelled"]
    );

    // Deleted while the operator is down: after the start, the label kept
    // in the ledger keeps the pool.
    let registration = scene.op.registration_addr();
    scene.op.stop().await?;
    api.delete("offline", &DeleteParams::default()).await?;
    wait_for("offline's resource gone", WAIT, || async {
        api.get_opt("offline").await.is_ok_and(|p| p.is_none())
    })
    .await?;
    let reg = format!("--registration-addr={registration}");
    scene.op = Operator::start(admin.clone(), &[&reg, "--startup-grace=10s"]).await?;
    scene.op.wait_ready(WAIT).await?;
    wait_for("the ledger emptied after the start", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
    })
    .await?;
    assert_eq!(
        sorted_node_pools(&scene).await?,
        vec!["kept", "offline", "relabelled"]
    );
    scene.op.stop().await?;
    Ok(())
}
