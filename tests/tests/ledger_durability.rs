//! The ledger's promise across a crash, with the operator binary and real
//! storage nodes on loop devices:
//! - every pool of a batch that exists on its node has a durable ledger
//!   entry; kill -9 the operator after the ledger write and before CreatePool
//!   returns, delete the resources while it is down, start it: their pools
//!   are destroyed, the one still alive comes online;
//! - entries recorded ahead (a node's other new pools, in the first pool's
//!   write) survive a kill -9 before their CreatePool: after the restart the
//!   pool whose resource is gone is never made and its entry goes, the live
//!   one is created from its entry;
//! - while the API server refuses ledger writes, no CreatePool is sent for
//!   any pool of a batch; once it takes them again, all come online.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::DeleteParams;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    WAIT, create_node, create_pool, kubectl_stdin, ledger_pools, node_pools, start_cluster,
    wait_for, wait_pool,
};
use msp_tests::replicas::{Replica, require_operator_binary, wait_leader};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const STORAGE_NODE: &str = env!("CARGO_BIN_EXE_storage-node");

fn can_run() -> Option<std::path::PathBuf> {
    require_operator_binary().filter(|_| require_loop_devices())
}

/// A storage node for `node` registering with `replica`, its CreatePool
/// answering `delay` after the pool is made.
fn storage_node(
    node: &str,
    replica: &Replica,
    delay: Duration,
) -> anyhow::Result<StorageNodeProcess> {
    let mut options = StorageNodeOptions::new(node);
    options.registration_endpoint = Some(format!("http://{}", replica.addrs().0));
    options.heartbeat_secs = 1;
    options.extra_args = vec![format!("--create-reply-delay-ms={}", delay.as_millis())];
    Ok(StorageNodeProcess::start(STORAGE_NODE, options)?)
}

async fn online(admin: &kube::Client, name: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_pool(admin, name, timeout, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await
    .map(drop)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_ledger_write_and_create_reply_loses_no_pool() -> anyhow::Result<()> {
    let Some(bin) = can_run() else {
        return Ok(());
    };
    let (cp, admin) = start_cluster().await?;
    create_node(&admin, "node1", true).await?;
    let logs = tempfile::tempdir()?;
    let mut op = Replica::start(&bin, cp.kubeconfig(), "op-a", &[], logs.path())?;
    wait_leader(&[&op], WAIT).await?;
    // Replies come a minute after the pool is made: the kill lands in between.
    let sn = storage_node("node1", &op, Duration::from_secs(60))?;
    let disks: Vec<LoopDevice> = (0..3)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    let names = ["batch-0", "batch-1", "batch-2"];
    for (name, disk) in names.iter().zip(&disks) {
        create_pool(&admin, name, "node1", &[disk.path_str()]).await?;
    }
    wait_for("all three pools made on the node", WAIT, || async {
        node_pools(sn.endpoint()).await.is_ok_and(|p| p.len() == 3)
    })
    .await?;
    // Each pool on the node has its entry on the API server already.
    assert_eq!(sorted(ledger_pools(&admin, "node1").await?), names);
    op.kill();

    // Two resources deleted while the operator is down.
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    for name in &names[..2] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    op.restart()?;
    wait_for("the deleted resources' pools destroyed", WAIT, || async {
        node_pools(sn.endpoint())
            .await
            .is_ok_and(|p| p == vec!["batch-2".to_string()])
    })
    .await?;
    wait_for("their ledger entries gone", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|p| p == vec!["batch-2".to_string()])
    })
    .await?;
    online(&admin, "batch-2", WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_recorded_ahead_survive_a_crash_and_a_deleted_ones_pool_is_never_made()
-> anyhow::Result<()> {
    let Some(bin) = can_run() else {
        return Ok(());
    };
    let (cp, admin) = start_cluster().await?;
    create_node(&admin, "node3", true).await?;
    let logs = tempfile::tempdir()?;
    // One reconcile at a time: while the first pool's CreatePool waits for
    // its reply, the other two have entries (written ahead with the first's)
    // and no CreatePool yet.
    let mut op = Replica::start(
        &bin,
        cp.kubeconfig(),
        "op-a",
        &["--concurrency=1"],
        logs.path(),
    )?;
    wait_leader(&[&op], WAIT).await?;
    let disks: Vec<LoopDevice> = (0..3)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    let names = ["ahead-0", "ahead-1", "ahead-2"];
    // All three known (pending: no storage node yet) before the node comes.
    for (name, disk) in names.iter().zip(&disks) {
        create_pool(&admin, name, "node3", &[disk.path_str()]).await?;
    }
    for name in names {
        wait_pool(&admin, name, WAIT, "pending", |s| {
            s.state == Some(PoolState::Pending)
        })
        .await?;
    }
    let sn = storage_node("node3", &op, Duration::from_secs(10))?;
    wait_for("the first pool made on the node", WAIT, || async {
        node_pools(sn.endpoint()).await.is_ok_and(|p| p.len() == 1)
    })
    .await?;
    // One write holds all three entries, though only one CreatePool was sent.
    assert_eq!(sorted(ledger_pools(&admin, "node3").await?), names);
    let first = node_pools(sn.endpoint()).await?.remove(0);
    op.kill();
    let unmade: Vec<&str> = names.into_iter().filter(|n| **n != first).collect();
    assert_eq!(unmade.len(), 2, "{first} is not one of {names:?}");

    // One resource whose pool was never made is deleted while the operator
    // is down; the other stays, its entry waiting for its CreatePool.
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    api.delete(unmade[0], &DeleteParams::default()).await?;
    op.restart()?;
    wait_for("the deleted resource's entry gone", WAIT, || async {
        ledger_pools(&admin, "node3")
            .await
            .is_ok_and(|p| !p.iter().any(|n| n == unmade[0]))
    })
    .await?;
    online(&admin, &first, WAIT).await?;
    online(&admin, unmade[1], WAIT).await?;
    let on_node = sorted(node_pools(sn.endpoint()).await?);
    assert_eq!(on_node, sorted(vec![first.clone(), unmade[1].to_string()]));
    assert_eq!(sorted(ledger_pools(&admin, "node3").await?), on_node);
    Ok(())
}

/// A ValidatingAdmissionPolicy that refuses every write of a ledger ConfigMap.
const DENY_LEDGER: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: deny-ledger-writes
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "!has(object.metadata.labels) || !('msp.openebs.io/ledger' in object.metadata.labels)"
    message: "ledger writes refused by the test"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: deny-ledger-writes
spec:
  policyName: deny-ledger-writes
  validationActions: [Deny]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pool_of_a_batch_is_created_while_its_ledger_write_fails() -> anyhow::Result<()> {
    let Some(bin) = can_run() else {
        return Ok(());
    };
    let (cp, admin) = start_cluster().await?;
    create_node(&admin, "node2", true).await?;
    kubectl_stdin(&cp, &["apply", "-f", "-"], DENY_LEDGER)?;
    // The policy is in force once a ledger-labelled ConfigMap is refused.
    let probe = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), "mayastor");
    wait_for("the API server refusing ledger writes", WAIT, || async {
        let cm = msp_operator::state::ledger::configmap_of("probe-node", &Default::default());
        match cm {
            Ok(cm) => probe
                .create(&Default::default(), &cm)
                .await
                .is_err_and(|e| e.to_string().contains("ledger writes refused by the test")),
            Err(_) => false,
        }
    })
    .await?;

    let logs = tempfile::tempdir()?;
    let op = Replica::start(&bin, cp.kubeconfig(), "op-a", &[], logs.path())?;
    wait_leader(&[&op], WAIT).await?;
    let sn = storage_node("node2", &op, Duration::ZERO)?;
    let disks: Vec<LoopDevice> = (0..3)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    let names = ["refused-0", "refused-1", "refused-2"];
    for (name, disk) in names.iter().zip(&disks) {
        create_pool(&admin, name, "node2", &[disk.path_str()]).await?;
    }
    // The operator tries (and fails) to record them ...
    wait_for("ledger write failures", WAIT, || async {
        op.metric("msp_reconcile_errors_total{error=\"ledger\"}")
            .await
            .is_some_and(|n| n >= 3.0)
    })
    .await?;
    // ... and, for as long as it fails, the node makes no pool.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let pools = node_pools(sn.endpoint()).await?;
        assert!(
            pools.is_empty(),
            "CreatePool without a durable entry: {pools:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ledger_pools(&admin, "node2").await?.is_empty());

    kubectl_stdin(&cp, &["delete", "-f", "-"], DENY_LEDGER)?;
    for name in names {
        online(&admin, name, Duration::from_secs(90)).await?;
    }
    assert_eq!(sorted(ledger_pools(&admin, "node2").await?), names);
    assert_eq!(sorted(node_pools(sn.endpoint()).await?), names);
    Ok(())
}
