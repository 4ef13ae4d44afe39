//! Benchmark: many pools on many simulated nodes converging to online,
//! against the API server's raw status-write rate measured in the same run,
//! and what happens at that scale afterwards.
//! Targets (the project's scale goal, 5,000 pools on 1,000 nodes): the
//! operator's API writes/s ≥ 70 % of the raw rate and pools/s ≥ 30 % of it,
//! ≤ 2.2 operator writes per pool, no write on restart, offline ≤ 15 s after
//! nodes stop, ≤ 100 MiB resident, ≤ 5 % of a core while nothing changes.
//! Nothing is asserted: it prints the figures and says met or MISSED.
//!
//! One run, one real control plane (etcd + kube-apiserver):
//! 1. **baseline**: with no operator running, create the pools in a namespace
//!    of their own, then patch each one's status subresource to online the way
//!    the operator does (server-side apply, forced, a status of the same
//!    shape), `CONCURRENCY` requests at a time, as fast as possible → writes/s;
//! 2. **operator**: the `msp-operator` binary as a child process when it is
//!    built next to the bench (`cargo build --profile bench -p msp-operator`;
//!    its memory and CPU are then read from its own /proc entry), else the
//!    operator in this process (`--concurrency=CONCURRENCY`, production
//!    periods either way), and two `storage-node` processes running the
//!    virtual nodes (127.0.1.1, 127.0.1.2, …, in-memory disks), the last tenth
//!    in the second; Node objects labelled for Mayastor; once every node
//!    listens and has had a heartbeat, the pools are created (`CONCURRENCY` at
//!    a time) and the phase ends when a watch has seen every one online →
//!    pools/s and the operator's API writes/s (the API server's own request
//!    counts, less the bench's creates) from the first create to the last
//!    online, create → online latency per pool, resident memory;
//! 3. **idle**: nothing changes for `MSP_BENCH_IDLE_SECS` (30) while every
//!    node heartbeats → CPU share of one core, writes (0 expected);
//! 4. **restart**: the operator stopped and started again on the same
//!    registration port → time to ready, then writes and pool changes over
//!    the next 20 s (0 expected) and the new operator's node operations;
//! 5. **nodes stop**: the second storage-node process is frozen (SIGSTOP: its
//!    nodes neither heartbeat nor answer) → time until all their pools are
//!    offline, writes to every other pool meanwhile (0 expected); then it
//!    resumes (SIGCONT) → time until those pools are online again.
//!
//! Virtual nodes take `malloc://` disks only, and the shipped CRD admits
//! `/dev/...` paths only, so this benchmark's control plane gets the CRD with
//! its disk pattern widened to also admit `malloc:///NAME?size_mb=N` (still
//! one regex per disk to validate). Nothing else differs from the shipped one.
//!
//! Run: `cargo bench -p msp-tests --bench scale` (add `--profile dev` to skip
//! the release build). Environment: `MSP_BENCH_NODES` (default 1000),
//! `MSP_BENCH_POOLS_PER_NODE` (5), `MSP_BENCH_CONCURRENCY` (64),
//! `MSP_BENCH_STOP_NODES` (a tenth of the nodes), `MSP_BENCH_SYNC_SECS` (5: the
//! operator's `--node-sync-period`),
//! `MSP_BENCH_TIMEOUT_SECS` (600: the whole run; on expiry it prints how far
//! it got and fails); `RUST_LOG` (default `warn`) for the operator's logs,
//! `MSP_BENCH_LOG_DIR` to keep them (a child operator's); `MSP_BENCH_PERF=FILE`
//! records the child operator's idle phase with `perf record -g`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use msp_operator::state::crd::{MayastorPool, MayastorPoolSpec, MayastorPoolStatus, PoolState};
use msp_policy_engine::percentile::percentile;
use msp_tests::control_plane::ControlPlane;
use msp_tests::control_plane::requests::{grown, writes_so_far};
use msp_tests::operator::{
    Operator, apply_crd_admitting_malloc, create_node_at, ensure_namespace, http_get, wait_for,
};
use msp_tests::replicas::{Replica, operator_binary};
use msp_tests::storage_node::process::{StorageNodeOptions, StorageNodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const NAMESPACE: &str = "mayastor";
const BASELINE_NAMESPACE: &str = "msp-bench-baseline";
const NODE_PREFIX: &str = "bench-node-";
const VIRTUAL_BASE: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
const DISK_MB: u64 = 64;
const HEARTBEAT_SECS: u64 = 5;
/// The bench's own writes (the resources it creates), not the operator's.
const BENCH_CREATES: &str = "POST mayastorpools";
/// The operator's production periods (FAST_FLAGS suit one node, not a
/// thousand: a 300 ms pool-list refresh per node would be 3,300 ListPools/s).
const OPERATOR_FLAGS: &[&str] = &[
    "--node-deadline=10s",
    "--probe-timeout=3s",
    "--rpc-timeout=60s",
    "--sweep-period=10s",
    "--resync=60s",
    "--startup-grace=10s",
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

struct Sizes {
    nodes: usize,
    per_node: usize,
    concurrency: usize,
}

impl Sizes {
    fn pools(&self) -> usize {
        self.nodes * self.per_node
    }

    fn node(&self, i: usize) -> String {
        format!("{NODE_PREFIX}{}", i + 1)
    }

    /// (pool name, node name, disk) of pool `p`.
    fn pool(&self, p: usize) -> (String, String, String) {
        let (n, k) = (p / self.per_node, p % self.per_node);
        (
            format!("pool-{}-{k}", n + 1),
            self.node(n),
            format!("malloc:///disk-{k}?size_mb={DISK_MB}"),
        )
    }
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pool_resource(name: &str, node: &str, disk: &str) -> MayastorPool {
    MayastorPool::new(
        name,
        MayastorPoolSpec {
            node: node.into(),
            disks: vec![disk.into()],
        },
    )
}

/// Step 2: creates the pools in their own namespace, then writes each one's
/// status to online; returns (creates/s, status writes/s).
async fn baseline(client: &Client, sizes: &Sizes) -> anyhow::Result<(f64, f64)> {
    ensure_namespace(client, BASELINE_NAMESPACE).await?;
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), BASELINE_NAMESPACE);
    let start = Instant::now();
    let created: Vec<MayastorPool> = stream::iter(0..sizes.pools())
        .map(|p| {
            let api = api.clone();
            let (name, node, disk) = sizes.pool(p);
            async move {
                api.create(&PostParams::default(), &pool_resource(&name, &node, &disk))
                    .await
            }
        })
        .buffer_unordered(sizes.concurrency)
        .try_collect()
        .await?;
    let create_took = start.elapsed();

    let params = PatchParams::apply("msp-bench").force();
    let start = Instant::now();
    stream::iter(created)
        .map(|pool| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let name = pool.metadata.name.clone().unwrap_or_default();
                let now = pool
                    .metadata
                    .creation_timestamp
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("{name}: no creationTimestamp"))?;
                let message = format!("pool is online on \"{}\"", pool.spec.node);
                let status = MayastorPoolStatus {
                    state: Some(PoolState::Online),
                    node: Some(pool.spec.node.clone()),
                    disks: Some(pool.spec.disks.clone()),
                    disk_ids: None,
                    reason: Some(message.clone()),
                    capacity: Some((DISK_MB - 1) * 1024 * 1024),
                    used: Some(0),
                    replicas: None,
                    policy: Some("msp-bench@baseline".into()),
                    format_version: Some(msp_operator::state::format::STATUS_FORMAT),
                    policy_digest: None,
                    conditions: vec![msp_operator::controller::report::ready_condition(
                        &[],
                        PoolState::Online,
                        &message,
                        pool.metadata.generation,
                        now,
                    )],
                };
                let patch = serde_json::json!({
                    "apiVersion": MayastorPool::api_version(&()),
                    "kind": MayastorPool::kind(&()),
                    "status": status,
                });
                api.patch_status(&name, &params, &Patch::Apply(&patch))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(sizes.concurrency)
        .try_collect::<()>()
        .await?;
    let write_took = start.elapsed();
    let online = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.state) == Some(PoolState::Online))
        .count();
    anyhow::ensure!(
        online == sizes.pools(),
        "baseline: {online} of {} pools online after the status writes",
        sizes.pools()
    );
    println!(
        "baseline (no operator): {} creates in {:.2} s = {:.0}/s; {} status writes in {:.2} s = {:.0} writes/s",
        sizes.pools(),
        create_took.as_secs_f64(),
        rate(sizes.pools(), create_took),
        sizes.pools(),
        write_took.as_secs_f64(),
        rate(sizes.pools(), write_took),
    );
    Ok((
        rate(sizes.pools(), create_took),
        rate(sizes.pools(), write_took),
    ))
}

/// One version of a pool the watch saw: when, its name, state and
/// resourceVersion.
type Change = (Instant, String, Option<PoolState>, String);

/// Every change of a pool the watch saw.
#[derive(Default)]
struct Seen {
    changes: Mutex<Vec<Change>>,
}

impl Seen {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Change>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When each of `pools` was first seen in `state` at or after `since`.
    fn first_in(&self, state: PoolState, since: Instant) -> HashMap<String, Instant> {
        let mut at = HashMap::new();
        for (t, name, s, _) in self.lock().iter() {
            if *t >= since && *s == Some(state) {
                at.entry(name.clone()).or_insert(*t);
            }
        }
        at
    }

    /// How many of `pools` are in `state` now (as last seen).
    fn count_now(&self, state: PoolState, pools: &dyn Fn(&str) -> bool) -> usize {
        let mut last: HashMap<&str, Option<PoolState>> = HashMap::new();
        let changes = self.lock();
        for (_, name, s, _) in changes.iter() {
            last.insert(name, *s);
        }
        last.iter()
            .filter(|(n, s)| pools(n) && **s == Some(state))
            .count()
    }

    /// Distinct versions seen at or after `since` of the pools `pools` selects
    /// (each one a write to that pool).
    fn writes_since(&self, since: Instant, pools: &dyn Fn(&str) -> bool) -> usize {
        let changes = self.lock();
        let versions: std::collections::HashSet<(&str, &str)> = changes
            .iter()
            .filter(|(t, name, _, _)| *t >= since && pools(name))
            .map(|(_, name, _, rv)| (name.as_str(), rv.as_str()))
            .collect();
        versions.len()
    }
}

fn watch_pools(client: &Client) -> (Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), NAMESPACE);
    let task = tokio::spawn({
        let seen = seen.clone();
        watcher(api, watcher::Config::default())
            .applied_objects()
            .for_each(move |pool| {
                if let Ok(pool) = pool
                    && let (Some(name), Some(rv)) = (
                        pool.metadata.name.clone(),
                        pool.metadata.resource_version.clone(),
                    )
                {
                    let state = pool.status.as_ref().and_then(|s| s.state);
                    seen.lock().push((Instant::now(), name, state, rv));
                }
                futures::future::ready(())
            })
    });
    (seen, task)
}

/// Waits until `count` pools that `pools` selects are in `state`.
async fn wait_state(
    seen: &Seen,
    state: PoolState,
    pools: &dyn Fn(&str) -> bool,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(&format!("{count} pools {state}"), timeout, || {
        futures::future::ready(seen.count_now(state, pools) >= count)
    })
    .await
}

/// Pools in `NAMESPACE` by state ("none" without one), for the timeout report.
async fn states(client: &Client) -> anyhow::Result<Vec<(String, usize)>> {
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), NAMESPACE);
    let mut by: HashMap<String, usize> = HashMap::new();
    for p in api.list(&ListParams::default()).await?.items {
        let state = p
            .status
            .and_then(|s| s.state)
            .map_or("none".to_string(), |s| s.to_string());
        *by.entry(state).or_default() += 1;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort();
    Ok(by)
}

/// Prints the writes between two snapshots, per pool; returns the
/// operator's (all but the bench's own creates of the resources).
fn print_writes(before: &HashMap<String, f64>, after: &HashMap<String, f64>, pools: usize) -> f64 {
    let rows = write_deltas(before, after);
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let operator: f64 = rows
        .iter()
        .filter(|(what, _)| what != BENCH_CREATES)
        .map(|r| r.1)
        .sum();
    println!(
        "  API server writes: {total:.0} ({:.2} per pool); the operator's (without the bench's creates): {operator:.0} ({:.2} per pool, target <= 2.2)",
        total / pools as f64,
        operator / pools as f64
    );
    for (what, n) in rows {
        println!("    {what}: {n:.0} ({:.2} per pool)", n / pools as f64);
    }
    operator
}

/// The writes of each kind between two snapshots, most first (none left out
/// but the kinds that did not grow).
fn write_deltas(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = after
        .keys()
        .map(|k| (k.clone(), grown(before, after, k)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

/// The writes in a snapshot pair that are status writes of MayastorPools.
fn status_writes(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> f64 {
    [
        "APPLY mayastorpools/status",
        "PATCH mayastorpools/status",
        "PUT mayastorpools/status",
    ]
    .iter()
    .map(|k| grown(before, after, k))
    .sum()
}

/// The operator under test: the `msp-operator` binary as a child process
/// when it is built next to this benchmark (its memory and CPU are then its
/// own), else in this process.
enum Op {
    Process(Box<Replica>),
    InProcess(Operator),
}

impl Op {
    async fn start(
        cp: &ControlPlane,
        flags: &[&str],
        logs: &std::path::Path,
    ) -> anyhow::Result<Op> {
        match operator_binary() {
            Some(bin) => {
                let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
                let replica = Replica::start_logging(
                    &bin,
                    cp.kubeconfig(),
                    "msp-bench",
                    flags,
                    logs,
                    &filter,
                )?;
                Ok(Op::Process(Box::new(replica)))
            }
            None => Ok(Op::InProcess(
                Operator::start(cp.client().await?, flags).await?,
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Process(r) => format!(
                "the msp-operator binary, pid {}, log {}",
                r.pid().unwrap_or(0),
                r.log_path().display()
            ),
            Op::InProcess(_) => "in this process (no msp-operator binary next to the bench: \
                                 cargo build --release -p msp-operator to measure it apart)"
                .into(),
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        match self {
            Op::Process(r) => r.wait_ready(timeout).await,
            Op::InProcess(o) => o.wait_ready(timeout).await,
        }
    }

    fn registration_endpoint(&self) -> String {
        match self {
            Op::Process(r) => format!("http://{}", r.addrs().0),
            Op::InProcess(o) => o.registration_endpoint(),
        }
    }

    fn metrics_addr(&self) -> SocketAddr {
        match self {
            Op::Process(r) => r.addrs().1,
            Op::InProcess(o) => o.metrics_addr(),
        }
    }

    /// Stops it gracefully and starts it again on the same ports.
    async fn restart(self, cp: &ControlPlane, flags: &[&str]) -> anyhow::Result<Op> {
        match self {
            Op::Process(mut r) => {
                r.terminate()?;
                r.wait_exit(Duration::from_secs(30)).await?;
                r.restart()?;
                Ok(Op::Process(r))
            }
            Op::InProcess(o) => {
                let registration = format!("--registration-addr={}", o.registration_addr());
                o.stop().await?;
                let flags: Vec<&str> = flags
                    .iter()
                    .copied()
                    .chain([registration.as_str()])
                    .collect();
                Ok(Op::InProcess(
                    Operator::start(cp.client().await?, &flags).await?,
                ))
            }
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Op::Process(mut r) => {
                r.terminate()?;
                r.wait_exit(Duration::from_secs(30)).await.map(drop)
            }
            Op::InProcess(o) => o.stop().await,
        }
    }

    /// (resident now, its peak) in MiB and CPU time so far, of the operator
    /// process (of this whole process when it runs in it).
    fn usage(&self) -> (f64, f64, Duration) {
        let pid = match self {
            Op::Process(r) => r.pid().map_or("self".to_string(), |p| p.to_string()),
            Op::InProcess(_) => "self".to_string(),
        };
        let (rss, hwm) = memory_mib(&pid);
        (rss, hwm, cpu_time(&pid))
    }
}

/// VmRSS and VmHWM of process `pid` ("self" for this one), in MiB.
fn memory_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) process `pid` ("self" for this one) has used.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The operator's metrics that say where its time went.
async fn print_operator_metrics(op: &Op) {
    match http_get(op.metrics_addr(), "/metrics").await {
        Ok((200, body)) => {
            for line in body.lines().filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with("msp_status_writes")
                        || l.starts_with("msp_reconcile_total")
                        || l.starts_with("msp_reconcile_errors")
                        || l.starts_with("msp_reconcile_time_seconds_sum")
                        || l.starts_with("msp_reconcile_time_seconds_count")
                        || l.starts_with("msp_node_operations"))
            }) {
                println!("  operator metric: {line}");
            }
        }
        other => println!("  operator metrics unavailable: {other:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if !msp_tests::require(
        "control plane binaries (tests/control-plane/build.sh)",
        ControlPlane::binaries_available().await,
    ) {
        return Ok(());
    }
    // The operator holds a registration and a pool-API connection per virtual node.
    msp_tests::raise_fd_limit();
    // Warnings only unless RUST_LOG says otherwise: two info lines per pool
    // from the in-process operator would bury the figures (the operator's
    // own init keeps a subscriber already installed).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let sizes = Sizes {
        nodes: env_or("MSP_BENCH_NODES", 1000),
        per_node: env_or("MSP_BENCH_POOLS_PER_NODE", 5),
        concurrency: env_or("MSP_BENCH_CONCURRENCY", 64),
    };
    let timeout = Duration::from_secs(env_or("MSP_BENCH_TIMEOUT_SECS", 600) as u64);
    let deadline = Instant::now() + timeout;
    let profile = if cfg!(debug_assertions) {
        "dev (debug assertions)"
    } else {
        "release"
    };
    println!(
        "scale: {} pools on {} virtual nodes ({} per node), concurrency {}, {profile} build, timeout {timeout:?}",
        sizes.pools(),
        sizes.nodes,
        sizes.per_node,
        sizes.concurrency
    );
    let run_start = Instant::now();

    // 1. Control plane, CRD, namespace.
    let cp = ControlPlane::start().await?;
    apply_crd_admitting_malloc(&cp).await?;
    let admin = cp.client().await?;
    ensure_namespace(&admin, NAMESPACE).await?;

    // 2. Baseline, on a client of its own.
    let (_, raw_writes) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        baseline(&cp.client().await?, &sizes),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out during the baseline"))??;

    // 3. Operator, virtual nodes (the last `stop` of them in a process of
    // their own, to stop them at once later), Node objects.
    let concurrency = format!("--concurrency={}", sizes.concurrency);
    // The pool-list period is most of what the idle operator pays for.
    let sync_secs = env_or("MSP_BENCH_SYNC_SECS", 5);
    let mut flags: Vec<String> = OPERATOR_FLAGS.iter().map(|f| f.to_string()).collect();
    flags.push(concurrency);
    flags.push(format!("--node-sync-period={sync_secs}s"));
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    // MSP_BENCH_LOG_DIR keeps the operator's logs; else they go with the run.
    let temp_logs = tempfile::tempdir()?;
    let logs = std::env::var_os("MSP_BENCH_LOG_DIR")
        .map_or_else(|| temp_logs.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&logs)?;
    let mut op = Op::start(&cp, &flag_refs, &logs).await?;
    op.wait_ready(Duration::from_secs(60)).await?;
    println!("operator: {}", op.describe());
    // Resident memory at each stage, to tell what the nodes cost from what
    // the pools do.
    let rss_ready = op.usage().0;
    let port = TcpListener::bind((VIRTUAL_BASE, 0))?.local_addr()?.port();
    let stop = env_or("MSP_BENCH_STOP_NODES", sizes.nodes / 10).min(sizes.nodes - 1);
    let running = sizes.nodes - stop;
    let virtual_nodes = |first: usize, count: usize| {
        let base = Ipv4Addr::from(u32::from(VIRTUAL_BASE) + first as u32);
        let mut options = StorageNodeOptions::new("unused-in-virtual-mode");
        options.grpc_endpoint = Some(SocketAddr::from((base, port)));
        options.registration_endpoint = Some(op.registration_endpoint());
        options.heartbeat_secs = HEARTBEAT_SECS;
        options.extra_args = vec![
            "--virtual-nodes".into(),
            count.to_string(),
            "--virtual-base".into(),
            base.to_string(),
            "--virtual-name-prefix".into(),
            NODE_PREFIX.into(),
            "--virtual-first-number".into(),
            (first + 1).to_string(),
        ];
        StorageNodeProcess::start(BIN, options)
    };
    let nodes_start = Instant::now();
    // Node objects first: a registration for a node without one is refused.
    stream::iter(0..sizes.nodes)
        .map(|i| {
            let (admin, name) = (admin.clone(), sizes.node(i));
            // Virtual node i listens on VIRTUAL_BASE + i (storage-node's
            // virtual mode), the address its Node must list.
            let ip = Ipv4Addr::from(u32::from(VIRTUAL_BASE) + i as u32).to_string();
            async move { create_node_at(&admin, &name, true, &ip).await }
        })
        .buffer_unordered(sizes.concurrency)
        .try_collect::<()>()
        .await?;
    // Started from the main thread, which lives as long as the run (the
    // child's death signal is bound to the spawning thread).
    let _storage = virtual_nodes(0, running)?;
    let stoppable = virtual_nodes(running, stop)?;
    // Every virtual node listening; each registers as soon as it starts.
    let (first, count) = (u32::from(VIRTUAL_BASE), sizes.nodes);
    let listening = Arc::new(AtomicUsize::new(0));
    wait_for(
        "every virtual node listening",
        deadline.saturating_duration_since(Instant::now()),
        || {
            let listening = listening.clone();
            async move {
                let from = listening.load(Ordering::Relaxed);
                for i in from..count {
                    let ip = Ipv4Addr::from(first + i as u32);
                    if tokio::net::TcpStream::connect((ip, port)).await.is_err() {
                        return false;
                    }
                    listening.store(i + 1, Ordering::Relaxed);
                }
                true
            }
        },
    )
    .await?;
    // The last one started just now: one heartbeat period covers its first
    // registration even if that one failed.
    tokio::time::sleep(Duration::from_secs(HEARTBEAT_SECS + 1)).await;
    println!(
        "{} virtual nodes listening and registered, {} Node objects, in {:.1} s",
        sizes.nodes,
        sizes.nodes,
        nodes_start.elapsed().as_secs_f64()
    );
    let rss_nodes = op.usage().0;

    // 4. The pools, through the operator.
    let writes_before = writes_so_far(&admin).await?;
    let (seen, watch) = watch_pools(&admin);
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), NAMESPACE);
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let creates = stream::iter(0..sizes.pools())
        .map(|p| {
            let (api, created_at) = (api.clone(), created_at.clone());
            let (name, node, disk) = sizes.pool(p);
            async move {
                let at = Instant::now();
                api.create(&PostParams::default(), &pool_resource(&name, &node, &disk))
                    .await?;
                created_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, at);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(sizes.concurrency)
        .try_collect::<()>();
    tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), creates)
        .await
        .map_err(|_| anyhow::anyhow!("timed out creating the pools"))??;
    let creates_took = start.elapsed();
    let all = |_: &str| true;
    let converged = wait_state(
        &seen,
        PoolState::Online,
        &all,
        sizes.pools(),
        deadline.saturating_duration_since(Instant::now()),
    )
    .await;
    let took = start.elapsed();
    println!(
        "operator: {} pools created in {:.2} s ({:.0} creates/s)",
        sizes.pools(),
        creates_took.as_secs_f64(),
        rate(sizes.pools(), creates_took)
    );
    print_operator_metrics(&op).await;
    let operator_writes = match writes_so_far(&admin).await {
        Ok(after) => print_writes(&writes_before, &after, sizes.pools()),
        Err(err) => {
            println!("  API server metrics unavailable: {err}");
            f64::NAN
        }
    };
    if let Err(err) = converged {
        println!(
            "NOT CONVERGED: {} of {} pools online after {:.1} s (run {:.1} s); by state: {:?}",
            seen.count_now(PoolState::Online, &all),
            sizes.pools(),
            took.as_secs_f64(),
            run_start.elapsed().as_secs_f64(),
            states(&admin).await.unwrap_or_default()
        );
        return Err(err);
    }
    let online_at = seen.first_in(PoolState::Online, start);
    let mut latencies: Vec<Duration> = {
        let created = created_at.lock().unwrap_or_else(|e| e.into_inner());
        created
            .iter()
            .filter_map(|(name, c)| Some(online_at.get(name)?.saturating_duration_since(*c)))
            .collect()
    };
    latencies.sort();
    let pools_per_s = rate(sizes.pools(), took);
    let writes_per_s = operator_writes / took.as_secs_f64();
    println!(
        "operator: {} pools online in {:.2} s = {:.0} pools/s (first create to last online)",
        sizes.pools(),
        took.as_secs_f64(),
        pools_per_s
    );
    if !latencies.is_empty() {
        println!(
            "  create -> online: p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
            ms(percentile(&latencies, 50.0).unwrap_or_default()),
            ms(percentile(&latencies, 99.0).unwrap_or_default()),
            ms(latencies[latencies.len() - 1])
        );
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "ratio: operator writes {:.0}/s / {:.0} raw status writes/s = {:.1} % (target >= 70 %: {}); pools {:.0}/s = {:.1} % (target >= 30 %: {})",
        writes_per_s,
        raw_writes,
        100.0 * writes_per_s / raw_writes,
        verdict(writes_per_s >= 0.7 * raw_writes),
        pools_per_s,
        100.0 * pools_per_s / raw_writes,
        verdict(pools_per_s >= 0.3 * raw_writes),
    );
    let (rss, hwm, _) = op.usage();
    let whose = match &op {
        Op::Process(_) => "the operator process",
        Op::InProcess(_) => "this process: the operator and the bench's own watch",
    };
    println!(
        "memory: {rss:.0} MiB resident with {} pools, peak {hwm:.0} MiB ({whose}; target operator <= 100 MiB)",
        sizes.pools()
    );
    println!(
        "  resident when ready with no node {rss_ready:.0} MiB; with {} nodes registered and no pool {rss_nodes:.0} MiB (+{:.0} KiB a node); the pools +{:.0} KiB a pool",
        sizes.nodes,
        1024.0 * (rss_nodes - rss_ready) / sizes.nodes as f64,
        1024.0 * (rss - rss_nodes) / sizes.pools() as f64
    );

    // 5. Nothing changing, every node heartbeating: CPU and writes.
    let idle = Duration::from_secs(env_or("MSP_BENCH_IDLE_SECS", 30) as u64);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu_before, writes_before, idle_start) =
        (op.usage().2, writes_so_far(&admin).await?, Instant::now());
    // MSP_BENCH_PERF=FILE: the operator process's idle profile, for `perf report -i FILE`.
    let perf = match (&op, std::env::var("MSP_BENCH_PERF")) {
        (Op::Process(r), Ok(file)) => r.pid().and_then(|pid| {
            std::process::Command::new("perf")
                .args(["record", "-g", "-F", "499", "-o", file.as_str(), "-p"])
                .arg(pid.to_string())
                .args(["--", "sleep"])
                .arg(idle.as_secs().to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .inspect_err(|err| println!("  perf record: {err}"))
                .ok()
        }),
        _ => None,
    };
    tokio::time::sleep(idle).await;
    if let Some(mut perf) = perf {
        let _ = perf.wait();
    }
    let cpu =
        op.usage().2.saturating_sub(cpu_before).as_secs_f64() / idle_start.elapsed().as_secs_f64();
    let idle_writes = writes_so_far(&admin).await?;
    let by_kind = write_deltas(&writes_before, &idle_writes);
    println!(
        "idle ({:.0} s, {} nodes heartbeating every {HEARTBEAT_SECS} s, pool lists every {sync_secs} s): CPU {:.1} % of one core (target <= 5 %); {:.0} operator writes ({})",
        idle.as_secs_f64(),
        sizes.nodes,
        100.0 * cpu,
        by_kind.iter().map(|(_, n)| n).sum::<f64>(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 6. Restart with everything online.
    let writes_before = writes_so_far(&admin).await?;
    let restart_at = Instant::now();
    let mut op = op.restart(&cp, &flag_refs).await?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let ready_in = restart_at.elapsed();
    // The startup grace, a node sync period and a resync margin.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = writes_so_far(&admin).await?;
    println!(
        "restart with {} online: ready in {:.2} s; in the next 20 s: {:.0} status writes (target 0), {:.0} API writes in all, {} pool changes seen",
        sizes.pools(),
        ready_in.as_secs_f64(),
        status_writes(&writes_before, &after),
        after
            .iter()
            .map(|(k, v)| v - writes_before.get(k).copied().unwrap_or(0.0))
            .sum::<f64>(),
        seen.writes_since(restart_at, &all)
    );
    print_operator_metrics(&op).await;

    // 7. The last `stop` nodes stop at once (their process frozen: no
    // heartbeat, no answer), then come back.
    let stopped_nodes: std::collections::HashSet<String> =
        (running..sizes.nodes).map(|i| sizes.node(i)).collect();
    let on_stopped = |pool: &str| {
        // pool-<node number>-<k>
        pool.strip_prefix("pool-")
            .and_then(|rest| rest.rsplit_once('-'))
            .is_some_and(|(n, _)| stopped_nodes.contains(&format!("{NODE_PREFIX}{n}")))
    };
    let others = |pool: &str| !on_stopped(pool);
    let stopped_pools = stop * sizes.per_node;
    let pid = stoppable
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the stoppable storage node has no pid"))?;
    let stopped_at = Instant::now();
    // SAFETY: kill(2) on our own child.
    anyhow::ensure!(
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) } == 0,
        "SIGSTOP"
    );
    let offline = wait_state(
        &seen,
        PoolState::Offline,
        &on_stopped,
        stopped_pools,
        Duration::from_secs(120),
    )
    .await;
    let offline_in = stopped_at.elapsed();
    let back_at = Instant::now();
    // SAFETY: as above.
    anyhow::ensure!(
        unsafe { libc::kill(pid as i32, libc::SIGCONT) } == 0,
        "SIGCONT"
    );
    offline?;
    println!(
        "{stop} nodes stopped: their {stopped_pools} pools offline in {:.2} s (target <= 15 s); writes to the other {} pools meanwhile: {}",
        offline_in.as_secs_f64(),
        sizes.pools() - stopped_pools,
        seen.writes_since(stopped_at, &others)
    );
    wait_state(
        &seen,
        PoolState::Online,
        &on_stopped,
        stopped_pools,
        Duration::from_secs(120),
    )
    .await?;
    println!(
        "{stop} nodes back: their pools online again in {:.2} s; writes to the other pools since the stop: {}",
        back_at.elapsed().as_secs_f64(),
        seen.writes_since(stopped_at, &others)
    );
    println!("run {:.1} s", run_start.elapsed().as_secs_f64());
    watch.abort();
    op.stop().await?;
    Ok(())
}
