//! The seed's responsibility split, enforced by the real API server: the
//! operator runs the whole lifecycle as its ServiceAccount
//! (system:serviceaccount:mayastor:msp-operator) bound by
//! deploy/rbac/operator.yaml, and that identity is refused every write to a
//! MayastorPool except its status: creating, updating spec, changing
//! metadata (labels, finalizers) and deleting are Forbidden.

use std::path::Path;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use msp_operator::state::crd::{MayastorPool, MayastorPoolSpec, PoolState};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Scene, WAIT, create_pool, ledger_pools, node_pools, start_cluster, wait_event, wait_for,
    wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const RBAC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac/operator.yaml");

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_as_the_restricted_service_account() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let (cp, admin) = start_cluster().await?;
    let mut apply = cp.kubectl();
    apply.arg("apply").arg("-f").arg(Path::new(RBAC));
    msp_tests::control_plane::run(apply).await?;
    let identity = cp.service_account("mayastor", "msp-operator")?;
    let restricted = identity.client().await?;

    let scene = Scene::start_on(cp, restricted.clone(), BIN, "node1").await?;
    let disk = LoopDevice::create(64 * MIB)?;

    // The whole lifecycle works with these rights: status, events, ledger.
    create_pool(&admin, "pool-r", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "pool-r", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    wait_event(&admin, "pool-r", "Created").await?;
    assert_eq!(
        ledger_pools(&admin, "node1").await?,
        vec!["pool-r".to_string()]
    );

    // Everything but status is forbidden to the operator's identity.
    let api: Api<MayastorPool> = Api::namespaced(restricted.clone(), "mayastor");
    let spec_edit = serde_json::json!({"spec": {"disks": ["/dev/loop-other"]}});
    forbidden(
        "patch spec",
        api.patch("pool-r", &PatchParams::default(), &Patch::Merge(&spec_edit))
            .await,
    );
    let mut replaced = api.get("pool-r").await?;
    replaced.spec.node = "node2".into();
    forbidden(
        "update spec",
        api.replace("pool-r", &PostParams::default(), &replaced)
            .await,
    );
    let labels = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    forbidden(
        "patch labels",
        api.patch("pool-r", &PatchParams::default(), &Patch::Merge(&labels))
            .await,
    );
    let finalizers = serde_json::json!({"metadata": {"finalizers": ["openebs.io/pool"]}});
    forbidden(
        "add a finalizer",
        api.patch(
            "pool-r",
            &PatchParams::default(),
            &Patch::Merge(&finalizers),
        )
        .await,
    );
    forbidden(
        "delete",
        api.delete("pool-r", &DeleteParams::default()).await,
    );
    let new_pool = MayastorPool::new(
        "made-by-operator",
        MayastorPoolSpec {
            node: "node1".into(),
            disks: vec![disk.path_str()],
        },
    );
    forbidden(
        "create",
        api.create(&PostParams::default(), &new_pool).await,
    );

    // The admin deletes; the operator (still restricted) destroys the pool.
    Api::<MayastorPool>::namespaced(admin.clone(), "mayastor")
        .delete("pool-r", &DeleteParams::default())
        .await?;
    wait_for("pool-r destroyed on the node", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| p.is_empty())
    })
    .await?;
    wait_for("ledger emptied", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
    })
    .await?;
    scene.op.stop().await?;
    Ok(())
}
