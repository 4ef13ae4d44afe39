//! `msp-cluster-demo` (`tests/demo.sh --cluster`): the production shape in a
//! real single-node Kubernetes (`msp_tests::cluster`): `deploy/base` and the
//! `io-engine` overlay installed with images built here, the real Mayastor
//! io-engine as a DaemonSet pod, the node labelled, and the seed's example
//! pool online on a loop device. With `--stand-in` the `stand-in` overlay
//! instead (the project's test double of the engine: no io-engine build, no
//! hugepages). Prints how to use kubectl against it and runs until Ctrl-C or
//! SIGTERM, then stops everything and leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use msp_operator::state::crd::PoolState;
use msp_tests::cluster::{Binaries, Cluster, NODE_IP, NODE_NAME};
use msp_tests::loopdev::{LoopDevice, MIB};
use msp_tests::operator::wait_pool;
use tokio::signal::unix::{SignalKind, signal};

const EXAMPLE_POOL: &str = include_str!("../../../deploy/overlays/seed-example/pool.yaml");

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// The main job in a real single-node Kubernetes: deploy/base and the
/// io-engine overlay installed as pods, the seed's example pool online on a
/// loop device on the real io-engine (root). Runs until Ctrl-C or SIGTERM,
/// then stops the cluster and leaves nothing behind.
#[derive(clap::Parser)]
#[command(name = "msp-cluster-demo", version)]
struct Args {
    /// The project's stand-in storage node (stores nothing real) instead of
    /// the io-engine: no io-engine build, no hugepages.
    #[arg(long)]
    stand_in: bool,
}

// One thread: the components' death signal is bound to the thread that
// started them, which must live as long as the cluster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Args { stand_in } = clap::Parser::parse();
    msp_tests::init_logging("warn,msp_tests=info,kube_client=off");
    anyhow::ensure!(
        LoopDevice::available(),
        "the cluster demo runs as root (kubelet, containerd, a network namespace, a loop device)"
    );
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .context("the demo's directory")?;
    let binaries = Binaries {
        operator: bin_dir.join("msp-operator"),
        storage_node: bin_dir.join("storage-node"),
        io_engine: (!stand_in).then(msp_tests::io_engine::binary),
    };
    for binary in [&binaries.operator, &binaries.storage_node] {
        anyhow::ensure!(
            binary.exists(),
            "{} missing: cargo build -p msp-operator -p msp-tests --bins",
            binary.display()
        );
    }
    if let Some(engine) = &binaries.io_engine {
        anyhow::ensure!(
            engine.exists(),
            "{} missing: tests/io-engine/build.sh builds it (or run with --stand-in)",
            engine.display()
        );
    }
    let (overlay, storage_node_app) = if stand_in {
        ("deploy/overlays/stand-in", "msp-storage-node")
    } else {
        ("deploy/overlays/io-engine", "msp-io-engine")
    };

    let started = Instant::now();
    let cluster = Cluster::start(&binaries)
        .await
        .context("starting the cluster")?;
    let cluster_up = started.elapsed();
    cluster
        .install(&repo(overlay))
        .await
        .with_context(|| format!("installing {overlay}"))?;
    let disk = LoopDevice::create(256 * MIB)?;
    let example = cluster.dir().join("my-new-pool.yaml");
    std::fs::write(
        &example,
        EXAMPLE_POOL.replace("/dev/loop0", &disk.path_str()),
    )?;
    print!(
        "{}",
        cluster
            .kubectl_ok(|k| {
                k.arg("create").arg("-f").arg(&example);
            })
            .await?
    );
    let admin = cluster.client().await?;
    let status = wait_pool(
        &admin,
        "my-new-pool",
        Duration::from_secs(60),
        "online",
        |s| s.state == Some(PoolState::Online),
    )
    .await?;

    println!(
        "\nUp in {:.1}s (cluster {:.1}s):",
        started.elapsed().as_secs_f64(),
        cluster_up.as_secs_f64()
    );
    println!(
        "  Kubernetes          single node {NODE_NAME} ({NODE_IP}, in network namespace {}): etcd, kube-apiserver,",
        cluster.netns_name()
    );
    println!(
        "                      controller-manager, scheduler, containerd, kubelet, kube-proxy, CoreDNS"
    );
    println!(
        "  installed           kubectl apply --server-side -k {overlay} (deploy/base and {}; images built here)",
        if stand_in {
            "the stand-in storage node, which stores nothing real"
        } else {
            "the Mayastor io-engine DaemonSet"
        }
    );
    println!(
        "  policy              {}",
        status.policy.as_deref().unwrap_or("?")
    );
    println!(
        "  the seed's example  my-new-pool on {NODE_NAME} with {}\n",
        msp_tests::example_disk(&disk.path_str())
    );
    for args in [
        &["get", "nodes"][..],
        &["-n", "mayastor", "get", "pods"],
        &["-n", "mayastor", "get", "msp"],
    ] {
        println!("$ kubectl {}", args.join(" "));
        print!(
            "{}",
            cluster
                .kubectl_ok(|k| {
                    k.args(args);
                })
                .await?
        );
    }
    println!("\nTry it from another shell:\n");
    println!("  export KUBECONFIG={}", cluster.kubeconfig().display());
    println!(
        "  export PATH={}:$PATH   # the matching kubectl",
        cluster
            .kubectl_path()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!("  kubectl -n mayastor get msp,pods");
    println!("  kubectl -n mayastor logs deploy/msp-operator      # JSON, one line per event");
    println!("  kubectl -n mayastor delete pod -l app.kubernetes.io/name={storage_node_app}");
    println!(
        "  kubectl -n mayastor delete msp my-new-pool        # the pool is destroyed on the node"
    );
    println!("\nPress Ctrl-C (or send SIGTERM) to stop everything cleanly.");

    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    println!("Stopping: the cluster (every process, mount, cgroup, the namespace), then the disk.");
    cluster.stop().context("stopping the cluster")?;
    drop(disk);
    println!("Stopped; nothing left behind.");
    Ok(())
}
