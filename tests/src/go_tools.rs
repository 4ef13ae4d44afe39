//! Go tools the tests run without a cluster: helm and promtool, each built by
//! `tests/<tool>/build.sh` from its pinned wrapper module into the cache (a
//! no-op once built), and the control plane's kubectl.

use std::path::PathBuf;

use crate::control_plane::HarnessError;
use crate::control_plane::assets::{bin_dir, run_build_script};

/// The path of `tests/<name>/build.sh`'s binary `name`, building it first
/// when needed.
pub async fn go_tool(name: &str) -> Result<PathBuf, HarnessError> {
    let script = format!("{}/{name}/build.sh", env!("CARGO_MANIFEST_DIR"));
    let dir = run_build_script(&script, &[]).await?;
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::Assets(format!(
            "{script} built no {name} in {}",
            dir.display()
        )))
    }
}

/// [`go_tool`] behind [`crate::require`]: None when it cannot be built and
/// the test is not under CI (where that fails the test, saying why).
pub async fn required_go_tool(name: &str) -> Option<PathBuf> {
    match go_tool(name).await {
        Ok(bin) => Some(bin),
        Err(e) => {
            crate::require(&format!("{name} (tests/{name}/build.sh: {e})"), false);
            None
        }
    }
}

/// The real kubectl of the control plane (`KUBEBUILDER_ASSETS`, or built).
pub async fn kubectl() -> Result<PathBuf, HarnessError> {
    Ok(bin_dir().await?.join("kubectl"))
}
