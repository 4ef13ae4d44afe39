//! Benchmark: leader failover of two operator processes (the `msp-operator`
//! binary) with the production election timing (lease 15 s, renew deadline
//! 10 s, retry 2 s), on the real API server, one storage-node process on
//! loop devices registering through a loopback Service stand-in, five pools
//! online throughout.
//!
//! Prints:
//! - failover time after kill -9 of the leader (p50, max over
//!   `MSP_BENCH_KILLS`, default and at least 10): from the kill to the other
//!   replica's `msp_leader 1`. Bounded by the lease duration: the standby
//!   must see the lease unrenewed for 15 s on its own clock;
//! - failover time after SIGTERM (p50, max over 5): the leader releases the
//!   Lease and the standby, watching it, takes it at once;
//! - the API writes made during each failover: by the new leader from the
//!   kill or SIGTERM to 5 s after it leads (status, ledger, Events: none
//!   is needed when nothing changed), and by the old one after SIGTERM
//!   (none may be: its fence closes first).
//!
//! Run: `cargo build -p msp-operator && cargo bench -p msp-tests --bench
//! failover --profile dev` (root: loop devices; the bench runs the operator
//! binary of its own profile's target directory). Takes about 4 minutes.

use std::time::{Duration, Instant};

use msp_operator::state::crd::PoolState;
use msp_policy_engine::percentile::percentile;
use msp_tests::loopdev::{LoopDevice, MIB};
use msp_tests::operator::{create_node, create_pool, start_cluster, start_storage_node, wait_pool};
use msp_tests::replicas::{Replica, ServiceProxy, operator_binary, wait_leader, writes_sent};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const WAIT: Duration = Duration::from_secs(60);
/// How long after taking over the new leader's writes are counted.
const SETTLE: Duration = Duration::from_secs(5);

fn summary(what: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    println!(
        "  {what}: n {}   p50 {:.2} s   max {:.2} s   min {:.2} s",
        sorted.len(),
        percentile(&sorted, 50.0).unwrap_or_default().as_secs_f64(),
        percentile(&sorted, 100.0).unwrap_or_default().as_secs_f64(),
        percentile(&sorted, 0.0).unwrap_or_default().as_secs_f64(),
    );
}

/// One failover: `act` on the leader, then the time until the other leads
/// and the writes the new leader made until `SETTLE` after that.
async fn failover(
    replicas: &mut [Replica; 2],
    kill: bool,
) -> anyhow::Result<(Duration, usize, usize)> {
    let leader = wait_leader(&[&replicas[0], &replicas[1]], WAIT).await?;
    let other = 1 - leader;
    let before = writes_sent(&replicas[other].logs());
    let old_log = replicas[leader].logs().len();
    let start = Instant::now();
    if kill {
        replicas[leader].kill();
    } else {
        replicas[leader].terminate()?;
    }
    replicas[other].wait_leading(WAIT).await?;
    let took = start.elapsed();
    tokio::time::sleep(SETTLE).await;
    let new_writes = writes_sent(&replicas[other].logs()) - before;
    let old_writes = if kill {
        0
    } else {
        replicas[leader].wait_exit(Duration::from_secs(30)).await?;
        let logs = replicas[leader].logs();
        writes_sent(&logs[old_log.min(logs.len())..])
    };
    // Back as a standby.
    replicas[leader].restart()?;
    replicas[leader].wait_ready(WAIT).await?;
    Ok((took, new_writes, old_writes))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let bin = operator_binary();
    if !msp_tests::require("root and loop devices (losetup)", LoopDevice::available())
        || !msp_tests::require(
            "the msp-operator binary of this profile (cargo build -p msp-operator)",
            bin.is_some(),
        )
    {
        return Ok(());
    }
    let Some(bin) = bin else { return Ok(()) };
    let kills: usize = std::env::var("MSP_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(10);
    let (cp, admin) = start_cluster().await?;
    let logs = tempfile::tempdir()?;
    // Production timing: no election flags.
    let a = Replica::start(&bin, cp.kubeconfig(), "op-a", &[], logs.path())?;
    a.wait_leading(WAIT).await?;
    let b = Replica::start(&bin, cp.kubeconfig(), "op-b", &[], logs.path())?;
    b.wait_ready(WAIT).await?;
    let proxy = ServiceProxy::start(vec![a.addrs(), b.addrs()]).await?;
    let mut replicas = [a, b];
    create_node(&admin, "node1", true).await?;
    let sn = start_storage_node(BIN, "node1", &proxy.endpoint())?;
    let disks = (0..5)
        .map(|_| LoopDevice::create(16 * MIB))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, disk) in disks.iter().enumerate() {
        create_pool(&admin, &format!("kept{i}"), "node1", &[disk.path_str()]).await?;
    }
    for i in 0..disks.len() {
        wait_pool(&admin, &format!("kept{i}"), WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }

    let (mut kill_times, mut kill_writes) = (Vec::new(), Vec::new());
    for round in 0..kills {
        // A different phase of the renew period each time.
        tokio::time::sleep(Duration::from_millis(700 + 300 * (round as u64 % 7))).await;
        let (took, writes, _) = failover(&mut replicas, true).await?;
        eprintln!("kill -9 #{round}: {took:?}, {writes} writes by the new leader");
        kill_times.push(took);
        kill_writes.push(writes);
    }
    let (mut term_times, mut term_writes, mut old_writes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let (took, writes, old) = failover(&mut replicas, false).await?;
        eprintln!(
            "SIGTERM #{round}: {took:?}, {writes} writes by the new leader, {old} by the old"
        );
        term_times.push(took);
        term_writes.push(writes);
        old_writes.push(old);
    }
    for i in 0..disks.len() {
        wait_pool(&admin, &format!("kept{i}"), WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }
    let on_node = msp_tests::operator::node_pools(sn.endpoint()).await?;

    println!(
        "leader failover, two msp-operator processes, lease 15 s / renew deadline 10 s / retry 2 s, real kube-apiserver, {} pools online:",
        disks.len()
    );
    summary("after kill -9 (to the other's msp_leader 1)", &kill_times);
    summary("after SIGTERM (Lease released)", &term_times);
    println!(
        "  API writes by the new leader, failover to {} s after: kill -9 {:?}, SIGTERM {:?}",
        SETTLE.as_secs(),
        kill_writes,
        term_writes
    );
    println!("  API writes by the old leader after SIGTERM: {old_writes:?}");
    println!(
        "  pools on the node at the end: {} of {}",
        on_node.len(),
        disks.len()
    );
    Ok(())
}
