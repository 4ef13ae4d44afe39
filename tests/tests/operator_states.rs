//! The operator end to end, with a real control plane, real storage-node
//! processes and loop devices: a pool reaches online, turns degraded when its
//! disk goes read-only, faulted when its disk is detached; a spec edit after
//! creation is ignored with a reason; events, conditions and metrics follow.

use kube::Api;
use kube::api::{Patch, PatchParams};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_policy_engine::Contract;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{Scene, WAIT, create_pool, node_pools, wait_event, wait_pool};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_degraded_faulted_and_spec_edit_ignored() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let disk_a = LoopDevice::create(64 * MIB)?;
    let mut disk_b = LoopDevice::create(64 * MIB)?;
    create_pool(&admin, "pool-a", "node1", &[disk_a.path_str()]).await?;
    create_pool(&admin, "pool-b", "node1", &[disk_b.path_str()]).await?;

    // Online, with node and disks cached, capacity, Ready and the policy.
    for (name, disk) in [("pool-a", &disk_a), ("pool-b", &disk_b)] {
        let s = wait_pool(&admin, name, WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
        assert_eq!(s.node.as_deref(), Some("node1"));
        assert_eq!(s.disks, Some(vec![disk.path_str()]));
        assert!(s.capacity.is_some_and(|c| c > 0 && c <= 64 * MIB), "{s:?}");
        assert_eq!(s.used, Some(0));
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.observed_generation),
            ("True", Some(1))
        );
        assert!(
            s.policy
                .as_deref()
                .is_some_and(|p| p.starts_with("msp-default@")),
            "{s:?}"
        );
    }
    let mut on_node = node_pools(scene.sn.endpoint()).await?;
    on_node.sort();
    assert_eq!(on_node, vec!["pool-a".to_string(), "pool-b".to_string()]);

    // Degraded: the disk turned read-only. The other pool stays online.
    disk_a.set_readonly(true)?;
    let s = wait_pool(&admin, "pool-a", WAIT, "degraded", |s| {
        s.state == Some(PoolState::Degraded)
    })
    .await?;
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains("degraded")),
        "{s:?}"
    );
    assert_eq!(
        s.conditions[0].status, "True",
        "degraded is still usable: {s:?}"
    );
    assert_eq!(
        msp_tests::operator::pool_status(&admin, "pool-b")
            .await?
            .state,
        Some(PoolState::Online)
    );
    // And back: writable again, online again.
    disk_a.set_readonly(false)?;
    wait_pool(&admin, "pool-a", WAIT, "online again", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;

    // Faulted: the disk is gone.
    disk_b.detach()?;
    let s = wait_pool(&admin, "pool-b", WAIT, "faulted", |s| {
        s.state == Some(PoolState::Faulted)
    })
    .await?;
    assert!(
        s.reason.as_deref().is_some_and(|r| r.contains("faulted")),
        "{s:?}"
    );
    assert_eq!(s.conditions[0].status, "False");

    // A spec edit after creation is ignored, and the reason says so.
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let edit = serde_json::json!({"spec": {"node": "node2", "disks": ["/dev/loop-moved"]}});
    api.patch("pool-a", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    let s = wait_pool(&admin, "pool-a", WAIT, "edit noted", |s| {
        s.reason.as_deref().is_some_and(|r| r.contains("ignored"))
    })
    .await?;
    assert_eq!(s.state, Some(PoolState::Online));
    assert_eq!(s.node.as_deref(), Some("node1"));
    assert_eq!(s.disks, Some(vec![disk_a.path_str()]));
    assert_eq!(s.conditions[0].observed_generation, Some(2));

    // Events on each transition.
    for expected in ["Created", "Degraded", "Recovered"] {
        wait_event(&admin, "pool-a", expected).await?;
    }
    wait_event(&admin, "pool-b", "Faulted").await?;
    let events = msp_tests::operator::pool_events(&admin, "pool-a").await?;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Recovered" && n == "pool on node1 healthy again: online"),
        "{events:?}"
    );

    // Operations endpoint.
    assert_eq!(scene.op.http_get("/healthz").await?.0, 200);
    assert_eq!(scene.op.http_get("/readyz").await?.0, 200);
    let (code, metrics) = scene.op.http_get("/metrics").await?;
    assert_eq!(code, 200);
    for line in [
        "msp_pool_state{namespace=\"mayastor\",name=\"pool-b\",state=\"faulted\"} 1",
        "msp_pool_state{namespace=\"mayastor\",name=\"pool-a\",state=\"online\"} 1",
        "msp_policy_info{name=\"msp-default\"",
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    // The bundled default names the contract it was built against.
    let contract = format!("contract=\"{}\"}} 1", Contract::CURRENT.as_str());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("msp_policy_info{") && l.ends_with(&contract)),
        "no msp_policy_info with {contract} in:\n{metrics}"
    );
    assert!(metrics.contains("msp_reconcile_total"), "{metrics}");
    assert!(
        metrics.contains("msp_reconcile_time_seconds_bucket"),
        "{metrics}"
    );

    // The Mayastor label removed from a node with pools: still online, and
    // the reason says what is coming.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    let unlabel = serde_json::json!({"metadata": {"labels": {"openebs.io/engine": null}}});
    nodes
        .patch("node1", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await?;
    let s = wait_pool(&admin, "pool-a", WAIT, "label removal noted", |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("no longer labelled openebs.io/engine=mayastor"))
    })
    .await?;
    assert_eq!(s.state, Some(PoolState::Online), "{s:?}");
    scene.op.stop().await?;
    Ok(())
}
