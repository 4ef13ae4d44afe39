//! Two operator processes electing a leader on the real API server, with
//! real storage-node processes registering through a loopback stand-in for
//! the Service ([`ServiceProxy`]):
//! - kill -9 the leader ten times during create/delete churn of 20
//!   resources: each time the other leads within 15 s, every resource
//!   converges, no pool of a live resource leaves its node, none is leaked,
//!   and no pool's state flaps once online;
//! - freeze the leader (SIGSTOP) longer than the lease: the other takes
//!   over; resumed (SIGCONT), the old one sends no write before it exits;
//! - SIGTERM the leader: the other leads within 2 s (the default lease of
//!   15 s: only the release makes it that fast).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::DeleteParams;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    WAIT, create_node, create_pool, ledger_pools, node_pools, start_cluster, start_storage_node,
    wait_for, wait_pool,
};
use msp_tests::replicas::{
    ELECTION_FLAGS, Replica, ServiceProxy, require_operator_binary, wait_leader, writes_sent,
};
use msp_tests::storage_node::process::StorageNodeProcess;

const STORAGE_NODE: &str = env!("CARGO_BIN_EXE_storage-node");

/// One scenario at a time: each runs a control plane, two operators and
/// storage nodes, and the timing it checks must not suffer from the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn can_run() -> Option<PathBuf> {
    require_operator_binary().filter(|_| require_loop_devices())
}

/// A resource's name and the states it has shown, in order.
type Shown = (String, Vec<PoolState>);

/// Every state each resource (by uid) has shown, in order, from a watch.
#[derive(Clone, Default)]
struct States(Arc<Mutex<BTreeMap<String, Shown>>>);

impl States {
    fn watch(client: &Client) -> (States, tokio::task::JoinHandle<()>) {
        let states = States::default();
        let api: Api<MayastorPool> = Api::namespaced(client.clone(), "mayastor");
        let s = states.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let (Ok(watcher::Event::Apply(pool)) | Ok(watcher::Event::InitApply(pool))) = event
                else {
                    continue;
                };
                let Some(state) = pool.status.as_ref().and_then(|s| s.state) else {
                    continue;
                };
                let mut all = s.0.lock().unwrap_or_else(|e| e.into_inner());
                let entry = all
                    .entry(pool.uid().unwrap_or_default())
                    .or_insert_with(|| (pool.name_any(), Vec::new()));
                if entry.1.last() != Some(&state) {
                    entry.1.push(state);
                }
            }
        });
        (states, task)
    }

    /// Resources whose state changed after they were online: "name: states".
    fn flaps(&self) -> Vec<String> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.values()
            .filter(|(_, seq)| {
                seq.iter()
                    .skip_while(|s| **s != PoolState::Online)
                    .any(|s| *s != PoolState::Online)
            })
            .map(|(name, seq)| format!("{name}: {seq:?}"))
            .collect()
    }
}

/// Two replicas (the first one leading), the proxy in front of them.
struct Pair {
    replicas: [Replica; 2],
    proxy: ServiceProxy,
    _logs: tempfile::TempDir,
}

impl Pair {
    async fn start(
        bin: &std::path::Path,
        cp: &msp_tests::control_plane::ControlPlane,
        flags: &[&str],
    ) -> anyhow::Result<Pair> {
        let logs = tempfile::tempdir()?;
        let a = Replica::start(bin, cp.kubeconfig(), "op-a", flags, logs.path())?;
        wait_leader(&[&a], WAIT).await?;
        let b = Replica::start(bin, cp.kubeconfig(), "op-b", flags, logs.path())?;
        let proxy = ServiceProxy::start(vec![a.addrs(), b.addrs()]).await?;
        let pair = Pair {
            replicas: [a, b],
            proxy,
            _logs: logs,
        };
        pair.wait_standby_ready(1).await?;
        Ok(pair)
    }

    /// Waits until replica `i` answers /readyz 200 (a standby that knows the leader).
    async fn wait_standby_ready(&self, i: usize) -> anyhow::Result<()> {
        self.replicas[i].wait_ready(WAIT).await
    }

    async fn leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        wait_leader(&[&self.replicas[0], &self.replicas[1]], timeout).await
    }

    /// Both replicas' logs, for a failure message.
    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.name(), r.logs()))
            .collect()
    }
}

async fn live_pools(admin: &Client) -> anyhow::Result<BTreeSet<String>> {
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect())
}

async fn pools_on_nodes(nodes: &[&StorageNodeProcess]) -> anyhow::Result<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for node in nodes {
        all.extend(node_pools(node.endpoint()).await?);
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_ten_times_under_churn() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cp, admin) = start_cluster().await?;
    let (states, watch) = States::watch(&admin);
    for node in ["node1", "node2"] {
        create_node(&admin, node, true).await?;
    }
    let mut pair = Pair::start(&bin, &cp, ELECTION_FLAGS).await?;
    let sn1 = start_storage_node(STORAGE_NODE, "node1", &pair.proxy.endpoint())?;
    let sn2 = start_storage_node(STORAGE_NODE, "node2", &pair.proxy.endpoint())?;
    let disks: Vec<LoopDevice> = (0..20)
        .map(|_| LoopDevice::create(16 * MIB))
        .collect::<Result<_, _>>()?;
    let name = |i: usize| format!("r{i:02}");
    let node = |i: usize| {
        if i.is_multiple_of(2) {
            "node1"
        } else {
            "node2"
        }
    };
    for (i, disk) in disks.iter().enumerate() {
        create_pool(&admin, &name(i), node(i), &[disk.path_str()]).await?;
    }
    for i in 0..20 {
        wait_pool(&admin, &name(i), WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }

    // Churn: r10..r19 deleted and created again in turn; r00..r09 stay,
    // and their pools must be on their nodes at every look.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (admin, stop) = (admin.clone(), stop.clone());
        let paths: Vec<String> = disks.iter().map(LoopDevice::path_str).collect();
        tokio::spawn(async move {
            let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
            let mut ops = 0u32;
            for i in (10..20).cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let result = match api.get_opt(&name(i)).await {
                    Ok(Some(_)) => api
                        .delete(&name(i), &DeleteParams::default())
                        .await
                        .map(|_| ()),
                    Ok(None) => create_pool(&admin, &name(i), node(i), &[paths[i].clone()])
                        .await
                        .map(|_| ())
                        .map_err(|e| kube::Error::Service(e.into())),
                    Err(e) => Err(e),
                };
                if result.is_ok() {
                    ops += 1;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            ops
        })
    };
    let stable: BTreeSet<String> = (0..10).map(name).collect();
    let missing = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (stop, missing) = (stop.clone(), missing.clone());
        let endpoints = [sn1.endpoint(), sn2.endpoint()];
        let stable = stable.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut seen = BTreeSet::new();
                for e in endpoints {
                    if let Ok(pools) = node_pools(e).await {
                        seen.extend(pools);
                    }
                }
                let gone: Vec<_> = stable.difference(&seen).cloned().collect();
                if !gone.is_empty() {
                    missing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{gone:?}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut takeovers = Vec::new();
    for round in 0..10 {
        let leader = pair.leader(WAIT).await?;
        let other = 1 - leader;
        // Let the churn reach the leader before it dies.
        tokio::time::sleep(Duration::from_millis(700)).await;
        pair.replicas[leader].kill();
        let took = pair.replicas[other]
            .wait_leading(Duration::from_secs(15))
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", pair.logs()))?;
        takeovers.push(took);
        // Back as a standby (same identity, as a container restart).
        pair.replicas[leader].restart()?;
        pair.wait_standby_ready(leader).await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ops = churn.await?;
    sampler.await?;
    eprintln!("takeovers after kill -9: {takeovers:?}; churn operations: {ops}");
    assert!(ops >= 20, "the churn barely ran: {ops} operations");

    // Converged: every resource online, exactly their pools on the nodes and
    // in the ledger (none leaked, none missing).
    let converged = wait_for(
        "every resource converged",
        Duration::from_secs(60),
        || async {
            let Ok(live) = live_pools(&admin).await else {
                return false;
            };
            let mut online = true;
            for name in &live {
                let status = msp_tests::operator::pool_status(&admin, name).await;
                online &= status.is_ok_and(|s| s.state == Some(PoolState::Online));
            }
            let on_nodes = pools_on_nodes(&[&sn1, &sn2]).await.ok();
            let mut ledgered = BTreeSet::new();
            for n in ["node1", "node2"] {
                ledgered.extend(ledger_pools(&admin, n).await.unwrap_or_default());
            }
            online && on_nodes.as_ref() == Some(&live) && ledgered == live
        },
    )
    .await;
    if let Err(e) = converged {
        let live = live_pools(&admin).await?;
        let on_nodes = pools_on_nodes(&[&sn1, &sn2]).await?;
        anyhow::bail!("{e}: live {live:?}, on nodes {on_nodes:?}\n{}", pair.logs());
    }
    let missing = missing.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        missing.is_empty(),
        "pools of live resources were gone from their node: {missing:?}"
    );
    let flaps = states.flaps();
    assert!(flaps.is_empty(), "states flapped after online: {flaps:?}");
    watch.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_resumed_writes_nothing() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cp, admin) = start_cluster().await?;
    create_node(&admin, "node1", true).await?;
    let mut pair = Pair::start(&bin, &cp, ELECTION_FLAGS).await?;
    let _sn = start_storage_node(STORAGE_NODE, "node1", &pair.proxy.endpoint())?;
    let disks: Vec<LoopDevice> = (0..6)
        .map(|_| LoopDevice::create(16 * MIB))
        .collect::<Result<_, _>>()?;
    for (i, disk) in disks.iter().enumerate().take(3) {
        create_pool(&admin, &format!("p{i}"), "node1", &[disk.path_str()]).await?;
    }
    for i in 0..3 {
        wait_pool(&admin, &format!("p{i}"), WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }
    let leader = pair.leader(WAIT).await?;
    let other = 1 - leader;

    // Work for it right before it freezes: pools on a node that does not
    // exist, which it will want to report pending.
    for i in 0..5 {
        create_pool(
            &admin,
            &format!("ghost{i}"),
            "nowhere",
            &[format!("/dev/loop-none{i}")],
        )
        .await?;
    }
    pair.replicas[leader].freeze()?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = writes_sent(&pair.replicas[leader].logs());
    let frozen_log_len = pair.replicas[leader].logs().len();

    // While it is frozen: the other takes over and does the work.
    let took = pair.replicas[other]
        .wait_leading(Duration::from_secs(15))
        .await?;
    for (i, disk) in disks.iter().enumerate().skip(3) {
        create_pool(&admin, &format!("p{i}"), "node1", &[disk.path_str()]).await?;
    }
    Api::<MayastorPool>::namespaced(admin.clone(), "mayastor")
        .delete("p0", &DeleteParams::default())
        .await?;
    for i in 1..6 {
        wait_pool(&admin, &format!("p{i}"), WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }
    for i in 0..5 {
        wait_pool(&admin, &format!("ghost{i}"), WAIT, "pending", |s| {
            s.state == Some(PoolState::Pending)
        })
        .await?;
    }
    // Frozen for well over the lease (5 s) in all.
    tokio::time::sleep(Duration::from_secs(2)).await;

    pair.replicas[leader].resume()?;
    let status = pair.replicas[leader]
        .wait_exit(Duration::from_secs(15))
        .await?;
    let logs = pair.replicas[leader].logs();
    let after = &logs[frozen_log_len.min(logs.len())..];
    eprintln!(
        "takeover during the freeze: {took:?}; the resumed replica fenced {} writes, sent {}",
        after.matches("\"write fenced\"").count(),
        writes_sent(after)
    );
    assert!(
        !status.success(),
        "a replica that lost the lease exits non-zero: {status:?}"
    );
    assert!(
        after.contains("lost the lease"),
        "the resumed replica did not see it lost the lease:\n{after}"
    );
    assert_eq!(
        writes_sent(after),
        0,
        "the resumed replica sent writes ({before} before the freeze):\n{after}"
    );
    assert!(
        before > 0,
        "the leader wrote nothing before the freeze: the count is broken"
    );
    // The new leader stays the leader and the state stands.
    assert!(pair.replicas[other].is_leader().await);
    assert!(
        !node_pools(_sn.endpoint())
            .await?
            .contains(&"p0".to_string())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_within_two_seconds() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cp, admin) = start_cluster().await?;
    create_node(&admin, "node1", true).await?;
    // The default lease (15 s): without the release the standby would wait for it.
    let mut pair = Pair::start(&bin, &cp, &[]).await?;
    let sn = start_storage_node(STORAGE_NODE, "node1", &pair.proxy.endpoint())?;
    let disk = LoopDevice::create(16 * MIB)?;
    create_pool(&admin, "kept", "node1", &[disk.path_str()]).await?;
    wait_pool(&admin, "kept", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let (states, watch) = States::watch(&admin);
    for round in 0..2 {
        let leader = pair.leader(WAIT).await?;
        let other = 1 - leader;
        pair.replicas[leader].terminate()?;
        let took = pair.replicas[other]
            .wait_leading(Duration::from_secs(2))
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: {e}\n{}", pair.logs()))?;
        eprintln!("round {round}: the standby led {took:?} after SIGTERM");
        let status = pair.replicas[leader]
            .wait_exit(Duration::from_secs(15))
            .await?;
        assert!(status.success(), "SIGTERM exits 0: {status:?}");
        assert!(pair.replicas[leader].logs().contains("lease released"));
        pair.replicas[leader].restart()?;
        pair.wait_standby_ready(leader).await?;
    }
    // The pool stayed where it was, online throughout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node_pools(sn.endpoint()).await?, vec!["kept".to_string()]);
    assert_eq!(
        msp_tests::operator::pool_status(&admin, "kept")
            .await?
            .state,
        Some(PoolState::Online)
    );
    let flaps = states.flaps();
    assert!(flaps.is_empty(), "states flapped: {flaps:?}");
    watch.abort();
    Ok(())
}
