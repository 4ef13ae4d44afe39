//! How long the test control plane takes: start (etcd and kube-apiserver
//! healthy), CRD applied and usable by kubectl, stop. Prints numbers; asserts
//! nothing. `cargo bench -p msp-tests --bench control_plane [-- ROUNDS]`.

use std::time::{Duration, Instant};

use msp_policy_engine::percentile::percentile;
use msp_tests::control_plane::ControlPlane;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<12} min {:>7.0} ms  median {:>7.0} ms  max {:>7.0} ms  ({} rounds)",
        ms(samples[0]),
        ms(percentile(&samples, 50.0).unwrap_or_default()),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    // Builds or finds the binaries once, outside the measurement.
    drop(ControlPlane::start().await?);
    let (mut start, mut crd, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let cp = ControlPlane::start().await?;
        start.push(t.elapsed());
        let t = Instant::now();
        cp.apply_crd().await?;
        crd.push(t.elapsed());
        let t = Instant::now();
        drop(cp);
        stop.push(t.elapsed());
    }
    summary("start", start);
    summary("apply_crd", crd);
    summary("stop", stop);
    Ok(())
}
