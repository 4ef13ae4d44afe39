//! Benchmark: create → online latency of a MayastorPool on the real API
//! server, with the operator (in-process, bundled wasm policy) and a
//! storage-node process on loop devices. Pools are created one after the
//! other, each on its own loop device; the latency of each is from just
//! before the create call to the watch event that shows `state: online`.
//! Prints p50/p90/p99/max over the pools. Target: p50 ≤ 100 ms.
//!
//! Run: `cargo bench -p msp-tests --bench create_to_online` (root: loop
//! devices). `MSP_BENCH_POOLS` sets the pool count (default 60, at least 50).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use msp_operator::crd::{MayastorPool, PoolState};
use msp_tests::loopdev::LoopDevice;
use msp_tests::operator::{Operator, create_node, create_pool, start_cluster, start_storage_node};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const MIB: u64 = 1024 * 1024;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !msp_tests::require("root and loop devices (losetup)", LoopDevice::available()) {
        return Ok(());
    }
    let n: usize = std::env::var("MSP_BENCH_POOLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(50);
    let (_cp, admin) = start_cluster().await?;
    let mut op = Operator::start(admin.clone(), &["--resync=60s"]).await?;
    op.wait_ready(Duration::from_secs(60)).await?;
    create_node(&admin, "node1", true).await?;
    let _sn = start_storage_node(BIN, "node1", &op.registration_endpoint())?;
    let disks = (0..n)
        .map(|_| LoopDevice::create(16 * MIB))
        .collect::<Result<Vec<_>, _>>()?;

    // Online times as the watch sees them.
    let online: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = Arc::new(Notify::new());
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let watch = tokio::spawn({
        let (online, seen) = (online.clone(), seen.clone());
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |pool| {
                let (online, seen) = (online.clone(), seen.clone());
                async move {
                    if let Ok(pool) = pool
                        && pool.status.as_ref().and_then(|s| s.state) == Some(PoolState::Online)
                        && let Some(name) = pool.metadata.name
                    {
                        online
                            .lock()
                            .expect("lock")
                            .entry(name)
                            .or_insert_with(Instant::now);
                        seen.notify_waiters();
                    }
                }
            })
    });
    // Wait until the storage node is registered (a warm-up pool goes online).
    let warm = LoopDevice::create(16 * MIB)?;
    create_pool(&admin, "warm-up", "node1", &[warm.path_str()]).await?;
    wait_online(&online, &seen, "warm-up").await?;

    let mut latencies = Vec::with_capacity(n);
    for (i, disk) in disks.iter().enumerate() {
        let name = format!("bench-{i:03}");
        let start = Instant::now();
        create_pool(&admin, &name, "node1", &[disk.path_str()]).await?;
        let at = wait_online(&online, &seen, &name).await?;
        latencies.push(at.duration_since(start));
    }
    watch.abort();
    let mut sorted = latencies.clone();
    sorted.sort();
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "create -> online, {} pools, one storage node on loop devices, real kube-apiserver:",
        sorted.len()
    );
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms   mean {:.1} ms   (target p50 <= 100 ms)",
        percentile(&sorted, 50.0).as_secs_f64() * 1e3,
        percentile(&sorted, 90.0).as_secs_f64() * 1e3,
        percentile(&sorted, 99.0).as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
    op.stop().await?;
    Ok(())
}

async fn wait_online(
    online: &Mutex<HashMap<String, Instant>>,
    seen: &Notify,
    name: &str,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let notified = seen.notified();
        if let Some(at) = online.lock().expect("lock").get(name) {
            return Ok(*at);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} not online within 60 s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
}
