//! `msp-demo`: the README's main job. Starts a local Kubernetes control plane
//! (real etcd and kube-apiserver), installs the MayastorPool CRD, creates
//! namespace `mayastor` and the seed's example pool, tells how to use kubectl
//! against it, and keeps running until Ctrl-C or SIGTERM, then stops
//! everything and removes its temp files.

use anyhow::Context;
use msp_tests::control_plane::{self, ControlPlane};
use tokio::signal::unix::{SignalKind, signal};

/// The seed's example pool: `my-new-pool` on `node1` with `/dev/loop0`.
const EXAMPLE_POOL: &str = r#"apiVersion: "openebs.io/v1alpha1"
kind: MayastorPool
metadata:
  name: my-new-pool
  namespace: mayastor
spec:
  node: node1
  disks: ["/dev/loop0"]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube's client logs every 5xx as an error, and the API server answers its
    // health checks with 500 until it is ready: silence that during the start.
    let default_filter = "info,kube_client::client::builder=off";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Registered first, so a Ctrl-C during the start still stops cleanly.
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;

    let started = std::time::Instant::now();
    let cp = ControlPlane::start().await.context("starting the control plane")?;
    cp.apply_crd().await.context("installing the MayastorPool CRD")?;
    let mut namespace = cp.kubectl();
    namespace.args(["create", "namespace", "mayastor"]);
    control_plane::run(namespace).await?;
    let example = cp.dir().join("my-new-pool.yaml");
    std::fs::write(&example, EXAMPLE_POOL).context("writing the example pool")?;
    let mut create = cp.kubectl();
    create.arg("create").arg("-f").arg(&example);
    print!("{}", control_plane::run(create).await?);

    println!(
        "\nKubernetes API server {} is up ({:.1}s), with the MayastorPool CRD and the seed's example pool.\n",
        cp.server(),
        started.elapsed().as_secs_f64()
    );
    println!("Use it from another shell:\n");
    println!("  export KUBECONFIG={}", cp.kubeconfig().display());
    println!("  export PATH={}:$PATH   # the matching kubectl", cp.bin_dir().display());
    println!("  kubectl -n mayastor get msp\n");
    println!("$ kubectl -n mayastor get msp");
    let mut list = cp.kubectl();
    list.args(["-n", "mayastor", "get", "msp"]);
    print!("{}", control_plane::run(list).await?);
    println!("\nPress Ctrl-C to stop.");

    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    println!("Stopping the control plane.");
    drop(cp);
    Ok(())
}
