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
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_policy_engine::percentile::percentile;
use msp_tests::control_plane::requests::label;
use msp_tests::loopdev::LoopDevice;
use msp_tests::operator::{Operator, create_node, create_pool, start_cluster, start_storage_node};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const MIB: u64 = 1024 * 1024;

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

    // When the watch first sees each pool, and sees it online.
    let added: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let online: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = Arc::new(Notify::new());
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let watch = tokio::spawn({
        let (added, online, seen) = (added.clone(), online.clone(), seen.clone());
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |pool| {
                let (added, online, seen) = (added.clone(), online.clone(), seen.clone());
                async move {
                    if let Ok(pool) = &pool
                        && let Some(name) = &pool.metadata.name
                    {
                        added
                            .lock()
                            .expect("lock")
                            .entry(name.clone())
                            .or_insert_with(Instant::now);
                    }
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

    let steps_before = op.http_get("/metrics").await?.1;
    let mut latencies = Vec::with_capacity(n);
    // (name, create -> the watch sees it, seen -> online)
    let mut splits = Vec::with_capacity(n);
    for (i, disk) in disks.iter().enumerate() {
        let name = format!("bench-{i:03}");
        let start = Instant::now();
        create_pool(&admin, &name, "node1", &[disk.path_str()]).await?;
        let at = wait_online(&online, &seen, &name).await?;
        latencies.push(at.duration_since(start));
        let first = added
            .lock()
            .expect("lock")
            .get(&name)
            .copied()
            .unwrap_or(at);
        splits.push((name, first.duration_since(start), at.duration_since(first)));
    }
    watch.abort();
    let steps_after = op.http_get("/metrics").await?.1;
    let mut sorted = latencies.clone();
    sorted.sort();
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "create -> online, {} pools, one storage node on loop devices, real kube-apiserver:",
        sorted.len()
    );
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms   mean {:.1} ms   (target p50 <= 100 ms)",
        percentile(&sorted, 50.0).unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&sorted, 90.0).unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&sorted, 99.0).unwrap_or_default().as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut watch_delay: Vec<Duration> = splits.iter().map(|s| s.1).collect();
    let mut rest: Vec<Duration> = splits.iter().map(|s| s.2).collect();
    watch_delay.sort();
    rest.sort();
    println!(
        "  split, p50 / p99: create -> the watch sees it {:.1} / {:.1} ms; seen -> online {:.1} / {:.1} ms",
        ms(percentile(&watch_delay, 50.0).unwrap_or_default()),
        ms(percentile(&watch_delay, 99.0).unwrap_or_default()),
        ms(percentile(&rest, 50.0).unwrap_or_default()),
        ms(percentile(&rest, 99.0).unwrap_or_default()),
    );
    println!(
        "  the operator's steps (its reconcile_step_seconds over the run; p50 / p99 are bucket bounds):"
    );
    for (step, line) in step_split(&steps_before, &steps_after) {
        println!("    {step:<7} {line}");
    }
    splits.sort_by_key(|s| std::cmp::Reverse(s.1 + s.2));
    for (name, seen_after, online_after) in splits.iter().take(3) {
        println!(
            "  slowest: {name}: {:.1} ms = watch {:.1} ms + seen -> online {:.1} ms",
            ms(*seen_after + *online_after),
            ms(*seen_after),
            ms(*online_after)
        );
    }
    op.stop().await?;
    Ok(())
}

/// Per step of `msp_reconcile_step_seconds`, between two scrapes: count,
/// mean, and the p50 and p99 bucket bounds.
fn step_split(before: &str, after: &str) -> Vec<(String, String)> {
    // (step, le) -> cumulative count; step -> (sum, count)
    let parse = |text: &str| {
        let mut buckets: HashMap<(String, String), f64> = HashMap::new();
        let mut totals: HashMap<(String, &'static str), f64> = HashMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("msp_reconcile_step_seconds"))
        {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            let label = |key: &str| label(head, key).to_string();
            let step = label("step");
            if head.starts_with("msp_reconcile_step_seconds_bucket") {
                buckets.insert((step, label("le")), value);
            } else if head.starts_with("msp_reconcile_step_seconds_sum") {
                totals.insert((step, "sum"), value);
            } else if head.starts_with("msp_reconcile_step_seconds_count") {
                totals.insert((step, "count"), value);
            }
        }
        (buckets, totals)
    };
    let (b0, t0) = parse(before);
    let (b1, t1) = parse(after);
    let mut steps: Vec<String> = t1.keys().map(|(s, _)| s.clone()).collect();
    steps.sort();
    steps.dedup();
    steps
        .into_iter()
        .map(|step| {
            let grown = |m1: &HashMap<(String, &'static str), f64>,
                         m0: &HashMap<(String, &'static str), f64>,
                         k: &'static str| {
                m1.get(&(step.clone(), k)).copied().unwrap_or(0.0)
                    - m0.get(&(step.clone(), k)).copied().unwrap_or(0.0)
            };
            let count = grown(&t1, &t0, "count");
            let sum = grown(&t1, &t0, "sum");
            let mut bounds: Vec<(f64, f64)> = b1
                .iter()
                .filter(|((s, _), _)| *s == step)
                .map(|((s, le), n)| {
                    let before = b0.get(&(s.clone(), le.clone())).copied().unwrap_or(0.0);
                    (le.parse::<f64>().unwrap_or(f64::INFINITY), n - before)
                })
                .collect();
            bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let at = |q: f64| {
                bounds
                    .iter()
                    .find(|(_, n)| *n >= q * count)
                    .map_or(f64::INFINITY, |(le, _)| *le)
            };
            (
                step,
                format!(
                    "n {count:>4.0}   mean {:>7.2} ms   p50 <= {:.2} ms   p99 <= {:.2} ms",
                    1e3 * sum / count.max(1.0),
                    1e3 * at(0.5),
                    1e3 * at(0.99)
                ),
            )
        })
        .collect()
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
