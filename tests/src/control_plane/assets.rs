//! Where the control plane binaries (etcd, kube-apiserver, kubectl) come from.
//!
//! `KUBEBUILDER_ASSETS` wins, as in envtest. Otherwise `tests/control-plane/build.sh`
//! builds them from Go modules into a versioned cache (a no-op once built) and
//! prints the directory; it runs at most once per test process.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::sync::OnceCell;

use super::HarnessError;

/// The binaries a control plane needs, all in one directory.
pub const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kubectl"];

const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/control-plane/build.sh");

/// The directory holding [`BINARIES`], building them first when needed.
pub async fn bin_dir() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(dir);
        check(&dir, "KUBEBUILDER_ASSETS")?;
        return Ok(dir);
    }
    BUILT.get_or_try_init(build).await.cloned()
}

async fn build() -> Result<PathBuf, HarnessError> {
    let dir = run_build_script(BUILD_SCRIPT, &[]).await?;
    check(&dir, BUILD_SCRIPT)?;
    Ok(dir)
}

/// Runs a build script of `tests/` (with `args`) that builds into the cache (a no-op once
/// built) and prints the output directory as its last line.
pub(crate) async fn run_build_script(
    script: &str,
    args: &[&Path],
) -> Result<PathBuf, HarnessError> {
    tracing::info!(script, "finding or building binaries");
    // stderr passes through: a cold build takes minutes and says what it does.
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| HarnessError::io(format!("running {script}"), e))?;
    if !output.status.success() {
        return Err(HarnessError::Assets(format!(
            "{script} failed ({})",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| HarnessError::Assets(format!("{script} printed no directory")))
}

fn check(dir: &Path, source: &str) -> Result<(), HarnessError> {
    for name in BINARIES {
        if !dir.join(name).is_file() {
            return Err(HarnessError::Assets(format!(
                "{} (from {source}) has no {name}",
                dir.display()
            )));
        }
    }
    Ok(())
}
