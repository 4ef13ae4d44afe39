//! `msp-demo`: the README's main job. The whole system, locally:
//! - a Kubernetes control plane (real etcd and kube-apiserver) with the
//!   MayastorPool CRD and namespace `mayastor`;
//! - Node `node1` labelled `openebs.io/engine=mayastor` (a record only: no
//!   kubelet runs);
//! - a storage node for `node1` (the io-engine stand-in, in this process)
//!   with one disk: a loop device when run as root, else a plain sparse file
//!   under /dev/shm (said so in the output); with `--io-engine`, the real
//!   Mayastor io-engine instead (tests/io-engine/build.sh; root, hugepages,
//!   udev, a loop device);
//! - the operator (in this process, the same code as `msp-operator run`)
//!   with the bundled wasm policy;
//! - the seed's example pool, with its disk replaced by the demo's disk.
//!
//! It waits until the pool is online, prints `kubectl -n mayastor get msp`,
//! tells how to try kubectl against it, and runs until Ctrl-C or SIGTERM,
//! then stops everything and removes its temp files and devices.

use std::time::{Duration, Instant};

use anyhow::Context;
use msp_operator::state::crd::PoolState;
use msp_tests::control_plane::{self, ControlPlane};
use msp_tests::io_engine::{IoEngine, IoEngineOptions};
use msp_tests::loopdev::LoopDevice;
use msp_tests::operator::{Operator, create_node, wait_pool};
use msp_tests::storage_node::node::{NodeConfig, RunningNode};
use tokio::signal::unix::{SignalKind, signal};

/// The seed's example pool, as the deploy overlay ships it; `/dev/loop0` is
/// replaced by the demo's disk.
const EXAMPLE_POOL: &str = include_str!("../../../deploy/overlays/seed-example/pool.yaml");

const DISK_BYTES: u64 = 256 * 1024 * 1024;

/// The demo's disk: a loop device (root) or a sparse file under /dev/shm.
enum Disk {
    Loop(LoopDevice),
    /// The directory is kept for its Drop (removes the file).
    File {
        _dir: tempfile::TempDir,
        path: String,
    },
}

impl Disk {
    fn create() -> anyhow::Result<Disk> {
        if LoopDevice::available() {
            return Ok(Disk::Loop(LoopDevice::create(DISK_BYTES)?));
        }
        // Pools must be on paths under /dev (the CRD says so); /dev/shm is
        // the one place there an ordinary user may create a file.
        let dir = tempfile::Builder::new()
            .prefix("msp-demo-")
            .tempdir_in("/dev/shm")
            .context("creating a directory under /dev/shm for the demo disk")?;
        let path = dir.path().join("disk0");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(DISK_BYTES))
            .with_context(|| format!("creating {}", path.display()))?;
        let path = path.to_string_lossy().into_owned();
        Ok(Disk::File { _dir: dir, path })
    }

    fn path(&self) -> String {
        match self {
            Disk::Loop(dev) => dev.path_str(),
            Disk::File { path, .. } => path.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Disk::Loop(dev) => format!(
                "loop device {} (256 MiB, sparse backing file)",
                dev.path_str()
            ),
            Disk::File { path, .. } => format!(
                "plain file {path} (256 MiB, sparse): not running as root, so no loop device; \
                 the storage node treats the file as its disk"
            ),
        }
    }
}

/// The storage node serving `node1`.
enum StorageNode {
    StandIn(RunningNode),
    // Boxed: it holds the engine's whole harness state.
    Engine(Box<IoEngine>),
}

impl StorageNode {
    async fn start(real_engine: bool, registration: String) -> anyhow::Result<StorageNode> {
        if real_engine {
            let mut options = IoEngineOptions::new("node1");
            options.registration_endpoint = Some(registration);
            // Blocks while another engine runs on this machine.
            let engine = tokio::task::block_in_place(|| IoEngine::start(options))
                .context("starting the io-engine")?;
            return Ok(StorageNode::Engine(Box::new(engine)));
        }
        let node = RunningNode::start(NodeConfig {
            registration_endpoint: Some(registration),
            use_blkid: true,
            ..NodeConfig::on_loopback("node1")
        })
        .await
        .context("starting the storage node")?;
        Ok(StorageNode::StandIn(node))
    }

    fn describe(&self) -> String {
        match self {
            StorageNode::StandIn(node) => format!("{} (io-engine stand-in)", node.endpoint()),
            StorageNode::Engine(engine) => format!(
                "{} (the real Mayastor io-engine, pid {}, started in {:.1}s)",
                engine.endpoint(),
                engine.pid().unwrap_or_default(),
                engine.started_in().as_secs_f64()
            ),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            StorageNode::StandIn(node) => node.stop().await.context("stopping the storage node"),
            StorageNode::Engine(mut engine) => {
                tokio::task::block_in_place(|| engine.terminate());
                Ok(())
            }
        }
    }
}

/// The README's main job: a local control plane, a storage node and the
/// operator with the bundled policy, the seed's example pool online. Runs
/// until Ctrl-C or SIGTERM, then stops everything and removes what it made.
#[derive(clap::Parser)]
#[command(name = "msp-demo", version)]
struct Args {
    /// The real Mayastor io-engine as node1's storage node instead of the
    /// stand-in (root, 2 MiB hugepages, udev; tests/io-engine/build.sh).
    #[arg(long)]
    io_engine: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let real_engine = <Args as clap::Parser>::parse().io_engine;
    if real_engine {
        anyhow::ensure!(
            msp_tests::io_engine::require_io_engine(),
            "--io-engine needs what the line above names"
        );
    }
    msp_tests::init_logging("warn,msp_operator=info,kube_client=off");
    // Registered first, so a Ctrl-C during the start still stops cleanly.
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;

    let started = Instant::now();
    let cp = ControlPlane::start()
        .await
        .context("starting the control plane")?;
    cp.apply_crd()
        .await
        .context("installing the MayastorPool CRD")?;
    let admin = cp.client().await?;
    let mut namespace = cp.kubectl();
    namespace.args(["create", "namespace", "mayastor"]);
    control_plane::run(namespace).await?;
    create_node(&admin, "node1", true)
        .await
        .context("creating Node node1")?;

    let mut operator = Operator::start(admin.clone(), &[])
        .await
        .context("starting the operator")?;
    operator.wait_ready(Duration::from_secs(60)).await?;

    let disk = Disk::create()?;
    let storage_node = StorageNode::start(real_engine, operator.registration_endpoint()).await?;

    let example = cp.dir().join("my-new-pool.yaml");
    std::fs::write(&example, EXAMPLE_POOL.replace("/dev/loop0", &disk.path()))
        .context("writing the example pool")?;
    let mut create = cp.kubectl();
    create.arg("create").arg("-f").arg(&example);
    print!("{}", control_plane::run(create).await?);
    let status = wait_pool(
        &admin,
        "my-new-pool",
        Duration::from_secs(60),
        "online",
        |s| s.state == Some(PoolState::Online),
    )
    .await?;

    println!("\nUp in {:.1}s:", started.elapsed().as_secs_f64());
    println!(
        "  Kubernetes API server  {} (etcd + kube-apiserver; no kubelet: Node node1 is a record)",
        cp.server()
    );
    println!(
        "  operator               registration {}, metrics http://{}/metrics",
        operator.registration_endpoint(),
        operator.metrics_addr()
    );
    println!(
        "  policy                 {}",
        status.policy.as_deref().unwrap_or("?")
    );
    println!("  storage node node1     {}", storage_node.describe());
    println!("  disk                   {}", disk.describe());
    println!(
        "  the seed's example     my-new-pool on node1 with {}\n",
        msp_tests::example_disk(&disk.path())
    );
    println!("$ kubectl -n mayastor get msp");
    let mut list = cp.kubectl();
    list.args(["-n", "mayastor", "get", "msp"]);
    print!("{}", control_plane::run(list).await?);

    println!("\nTry it from another shell:\n");
    println!("  export KUBECONFIG={}", cp.kubeconfig().display());
    println!(
        "  export PATH={}:$PATH   # the matching kubectl",
        cp.bin_dir().display()
    );
    println!(
        "  export MSP_METRICS=http://{}/metrics   # the operator's metrics",
        operator.metrics_addr()
    );
    println!("  kubectl -n mayastor get msp");
    println!("  kubectl -n mayastor describe msp my-new-pool      # status, conditions, events");
    println!(
        "  kubectl -n mayastor delete msp my-new-pool        # the pool is destroyed on the node"
    );
    println!("  curl -s $MSP_METRICS | grep msp_pool");
    println!("\nPress Ctrl-C (or send SIGTERM) to stop everything cleanly.");

    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    // The storage node first, so that its Deregister still reaches the operator.
    println!("Stopping: storage node, operator, disk, control plane.");
    storage_node.stop().await?;
    operator.stop().await.context("stopping the operator")?;
    drop(disk);
    drop(cp);
    Ok(())
}
