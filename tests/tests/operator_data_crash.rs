//! The data safety rail across kill -9 of the operator, under churn: the
//! operator binary and the stand-in storage node (in-memory `malloc://`
//! disks, which the test's CRD admits), 20 resources a batch, a replica on
//! half of them. Ten times: the last batch is deleted while the next one is
//! created and the replicas of the batch before are destroyed (its held
//! pools then go), and the operator is killed: in even rounds at a point
//! further into that work each time (0 to 1.6 s in: before the sweep, while
//! it lists), in odd rounds once the first deleted pool is gone from the
//! node, and a little later each time (10 to 90 ms: between a listing and
//! its DestroyPool, between a DestroyPool and the ledger write, and so on
//! down the batch). After each restart: every replica
//! still exists (the stand-in's DestroyPool takes a pool's replicas with it,
//! so a pool holding one destroyed shows as a missing replica), the pools
//! holding one are held in the ledger, every other deleted pool is gone from
//! node and ledger. The held pools are what `msp-operator pools held` lists.
//! At the end, with every replica destroyed: no pool, no ledger entry, the
//! held gauge at 0, nothing listed as held (nothing leaked).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_operator::state::ledger::{LedgerEntry, configmap_name, entries_of};
use msp_proto::v1::replica_rpc_client::ReplicaRpcClient;
use msp_tests::control_plane::ControlPlane;
use msp_tests::operator::{
    WAIT, apply_crd_admitting_malloc, create_node, create_pool, ensure_namespace, node_pools,
    wait_for,
};
use msp_tests::replicas::{ELECTION_FLAGS, Replica, require_operator_binary, wait_leader};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const STORAGE_NODE: &str = env!("CARGO_BIN_EXE_storage-node");
const ROUNDS: u64 = 10;
const BATCH: usize = 20;
/// The whole test's bound.
const BOUND: Duration = Duration::from_secs(420);

fn batch(b: u64) -> Vec<String> {
    (0..BATCH).map(|i| format!("b{b}-{i:02}")).collect()
}

/// The pools of batch `b` that hold a replica (every other one).
fn holding(b: u64) -> Vec<String> {
    batch(b).into_iter().step_by(2).collect()
}

fn replica_of(pool: &str) -> String {
    format!("{pool}-r")
}

/// Every replica on the node, by uuid, with its pool (v1 ListReplicas
/// without a filter).
async fn node_replicas(sn: &StorageNodeProcess) -> anyhow::Result<BTreeMap<String, String>> {
    let mut c = ReplicaRpcClient::connect(format!("http://{}", sn.endpoint())).await?;
    let list = c
        .list_replicas(msp_proto::v1::ListReplicaOptions::default())
        .await?
        .into_inner();
    Ok(list
        .replicas
        .into_iter()
        .map(|r| (r.uuid, r.poolname))
        .collect())
}

async fn create_replicas(sn: &StorageNodeProcess, pools: &[String]) -> anyhow::Result<()> {
    let mut c = ReplicaRpcClient::connect(format!("http://{}", sn.endpoint())).await?;
    for pool in pools {
        c.create_replica(msp_proto::v1::CreateReplicaRequest {
            name: replica_of(pool),
            uuid: replica_of(pool),
            pooluuid: pool.clone(),
            size: 4 << 20,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

async fn destroy_replicas(sn: &StorageNodeProcess, pools: &[String]) -> anyhow::Result<()> {
    let mut c = ReplicaRpcClient::connect(format!("http://{}", sn.endpoint())).await?;
    for pool in pools {
        c.destroy_replica(msp_proto::v1::DestroyReplicaRequest {
            uuid: replica_of(pool),
            pool: None,
        })
        .await?;
    }
    Ok(())
}

async fn ledger(admin: &kube::Client) -> anyhow::Result<BTreeMap<String, LedgerEntry>> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(admin.clone(), "mayastor");
    Ok(api
        .get_opt(&configmap_name("node1"))
        .await?
        .map(|cm| entries_of(&cm))
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.pool.clone(), e))
        .collect())
}

async fn create_batch(admin: &kube::Client, b: u64) -> anyhow::Result<()> {
    try_join_all(batch(b).into_iter().map(|name| async move {
        let disk = format!("malloc:///{name}?size_mb=16");
        create_pool(admin, &name, "node1", &[disk]).await
    }))
    .await?;
    Ok(())
}

async fn delete_batch(admin: &kube::Client, b: u64) -> anyhow::Result<()> {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    try_join_all(batch(b).into_iter().map(|name| {
        let api = api.clone();
        async move { api.delete(&name, &DeleteParams::default()).await }
    }))
    .await?;
    Ok(())
}

async fn batch_online(admin: &kube::Client, b: u64) -> bool {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let Ok(list) = api.list(&ListParams::default()).await else {
        return false;
    };
    let online: BTreeSet<String> = list
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.state) == Some(PoolState::Online))
        .filter_map(|p| p.metadata.name)
        .collect();
    batch(b).iter().all(|n| online.contains(n))
}

/// The pools `msp-operator pools held` lists (the NAME column).
fn listed_held(bin: &std::path::Path, kubeconfig: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(bin)
        .args(["pools", "held", "--operator-namespace=mayastor"])
        .env("KUBECONFIG", kubeconfig)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pools held failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    anyhow::ensure!(
        lines.next().is_some_and(|h| h.starts_with("NAMESPACE")),
        "no header: {stdout}"
    );
    Ok(lines
        .map(|l| {
            assert!(l.contains("1 replica ("), "{l}");
            l.split_whitespace().nth(1).unwrap_or_default().to_string()
        })
        .collect())
}

fn set(names: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    names.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_deletions_never_destroys_a_pool_holding_data() -> anyhow::Result<()> {
    let Some(bin) = require_operator_binary() else {
        return Ok(());
    };
    let started = Instant::now();
    let cp = ControlPlane::start().await?;
    apply_crd_admitting_malloc(&cp).await?;
    let admin = cp.client().await?;
    ensure_namespace(&admin, "mayastor").await?;
    create_node(&admin, "node1", true).await?;
    let logs = tempfile::tempdir()?;
    let mut op = Replica::start(&bin, cp.kubeconfig(), "op-a", ELECTION_FLAGS, logs.path())?;
    wait_leader(&[&op], WAIT).await?;
    let mut options = StorageNodeOptions::new("node1");
    options.registration_endpoint = Some(format!("http://{}", op.addrs().0));
    options.heartbeat_secs = 1;
    let sn = StorageNodeProcess::start(STORAGE_NODE, options)?;

    create_batch(&admin, 0).await?;
    wait_for("batch 0 online", WAIT, || batch_online(&admin, 0)).await?;
    create_replicas(&sn, &holding(0)).await?;
    // Replicas that exist and must go on existing, by uuid.
    let mut alive: BTreeSet<String> = holding(0).iter().map(|p| replica_of(p)).collect();
    let mut landed = Vec::new();

    for round in 0..ROUNDS {
        let (old, new) = (round, round + 1);
        let work = async {
            delete_batch(&admin, old).await?;
            create_batch(&admin, new).await?;
            if round > 0 {
                // The pools held since the last round empty out: the rail's
                // re-check destroys them, in the window of the kill too.
                destroy_replicas(&sn, &holding(old - 1)).await?;
            }
            anyhow::Ok(())
        };
        let kill_at = Duration::from_millis(round * if round % 2 == 0 { 200 } else { 10 });
        let endpoint = sn.endpoint();
        let kill = async {
            if round % 2 == 1 {
                // Once the first of the old batch's empty pools is gone.
                let empty: Vec<String> = batch(old).into_iter().skip(1).step_by(2).collect();
                let since = Instant::now();
                while since.elapsed() < WAIT
                    && !node_pools(endpoint)
                        .await
                        .is_ok_and(|p| empty.iter().any(|e| !p.contains(e)))
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            tokio::time::sleep(kill_at).await;
            op.kill();
        };
        let (done, ()) = tokio::join!(work, kill);
        done?;
        if round > 0 {
            for pool in holding(old - 1) {
                alive.remove(&replica_of(&pool));
            }
        }
        // Where the kill landed: how many of the old batch's empty pools
        // were still on the node.
        let on_node = set(node_pools(sn.endpoint()).await?);
        let empty_left = batch(old)
            .into_iter()
            .skip(1)
            .step_by(2)
            .filter(|p| on_node.contains(p))
            .count();
        landed.push(empty_left);

        // Whatever the kill interrupted, no replica is lost.
        let replicas = node_replicas(&sn).await?;
        let lost: Vec<&String> = alive
            .iter()
            .filter(|r| !replicas.contains_key(*r))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: replicas lost with their pool while the operator ran: {lost:?}"
        );

        op.restart()?;
        wait_leader(&[&op], WAIT).await?;
        let expected = set(holding(old).into_iter().chain(batch(new)));
        let settled = wait_for(
            &format!("round {round}: the node holds the held pools and the new batch"),
            Duration::from_secs(60),
            || async {
                node_pools(sn.endpoint())
                    .await
                    .is_ok_and(|p| set(p) == expected)
            },
        )
        .await;
        if let Err(err) = settled {
            let on_node = set(node_pools(sn.endpoint()).await?);
            let log = op.logs();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            anyhow::bail!(
                "{err}\nmissing: {:?}\nextra: {:?}\nledger: {:?}\noperator log, last lines first:\n{}",
                expected.difference(&on_node).collect::<Vec<_>>(),
                on_node.difference(&expected).collect::<Vec<_>>(),
                ledger(&admin).await?.keys().collect::<Vec<_>>(),
                tail.join("\n")
            );
        }
        let replicas = node_replicas(&sn).await?;
        let lost: Vec<&String> = alive
            .iter()
            .filter(|r| !replicas.contains_key(*r))
            .collect();
        assert!(lost.is_empty(), "round {round}: replicas lost: {lost:?}");
        wait_for(
            &format!("round {round}: ledger holds the held pools and the new batch"),
            WAIT,
            || async {
                ledger(&admin).await.is_ok_and(|l| {
                    set(l.keys().cloned()) == expected
                        && holding(old).iter().all(|p| {
                            l[p].held
                                .as_ref()
                                .is_some_and(|h| h.replicas == 1 && h.first == [replica_of(p)])
                        })
                })
            },
        )
        .await?;
        wait_for(&format!("round {round}: batch {new} online"), WAIT, || {
            batch_online(&admin, new)
        })
        .await?;
        create_replicas(&sn, &holding(new)).await?;
        alive.extend(holding(new).iter().map(|p| replica_of(p)));
        println!(
            "round {round}: killed {kill_at:?} {}, {empty_left} of 10 empty pools left; \
             {:?} so far",
            if round % 2 == 0 {
                "into the round"
            } else {
                "after the first destroy"
            },
            started.elapsed()
        );
    }
    assert!(
        landed.iter().any(|n| (1..10).contains(n)),
        "no kill landed in the middle of the deletions: {landed:?}"
    );

    // The last batch goes without a kill; then every replica: nothing stays.
    delete_batch(&admin, ROUNDS).await?;
    destroy_replicas(&sn, &holding(ROUNDS - 1)).await?;
    wait_for("the last batch's held pools held", WAIT, || async {
        node_pools(sn.endpoint())
            .await
            .is_ok_and(|p| set(p) == set(holding(ROUNDS)))
            && ledger(&admin).await.is_ok_and(|l| {
                set(l.keys().cloned()) == set(holding(ROUNDS))
                    && l.values().all(|e| e.held.is_some())
            })
    })
    .await?;
    assert_eq!(
        set(listed_held(&bin, cp.kubeconfig())?),
        set(holding(ROUNDS))
    );
    destroy_replicas(&sn, &holding(ROUNDS)).await?;
    wait_for("no pool, no ledger entry, no held pool", WAIT, || async {
        node_pools(sn.endpoint()).await.is_ok_and(|p| p.is_empty())
            && ledger(&admin).await.is_ok_and(|l| l.is_empty())
            && op.metric("msp_pools_held{node=\"node1\"}").await == Some(0.0)
    })
    .await?;
    assert!(listed_held(&bin, cp.kubeconfig())?.is_empty());
    println!(
        "kills landed with {landed:?} empty pools of 10 left; {:?} in all",
        started.elapsed()
    );
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    Ok(())
}
