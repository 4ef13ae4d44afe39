//! Installing the operator as a user does: `kubectl apply --server-side -k` of
//! a kustomization from `deploy/` (the base, or an overlay adding a storage
//! node) through an overlay that only points the images at the ones built for
//! this cluster (never pulled), then the node label that enables the storage
//! node.

use std::path::{Path, PathBuf};

use super::{Cluster, HarnessError, NODE_NAME, run, write};

/// The namespace `deploy/base` installs into.
pub const INSTALL_NAMESPACE: &str = "mayastor";

const ROLLOUT_TIMEOUT: &str = "--timeout=180s";

impl Cluster {
    /// Applies `kustomization` (e.g. `deploy/overlays/io-engine`) with the
    /// images of this cluster, labels the node for Mayastor, and waits until
    /// the operator Deployment is rolled out and every DaemonSet of the
    /// namespace (the storage node of the overlay) is ready.
    /// Returns the overlay's directory (for `kubectl delete -k`).
    pub async fn install(&self, kustomization: &Path) -> Result<PathBuf, HarnessError> {
        let overlay = self.image_overlay(kustomization)?;
        self.kubectl_ok(|k| {
            k.args(["apply", "--server-side", "-k"]).arg(&overlay);
        })
        .await?;
        self.kubectl_ok(|k| {
            k.args([
                "label",
                "node",
                NODE_NAME,
                "openebs.io/engine=mayastor",
                "--overwrite",
            ]);
        })
        .await?;
        self.wait_rolled_out().await?;
        Ok(overlay)
    }

    /// Waits until the operator Deployment is rolled out and every
    /// DaemonSet of the namespace (a storage node) has its pod ready.
    pub async fn wait_rolled_out(&self) -> Result<(), HarnessError> {
        self.kubectl_ok(|k| {
            k.args(["-n", INSTALL_NAMESPACE, "rollout", "status"])
                .args(["deployment/msp-operator", ROLLOUT_TIMEOUT]);
        })
        .await?;
        let daemonsets = self
            .kubectl_ok(|k| {
                k.args(["-n", INSTALL_NAMESPACE, "get", "daemonsets", "-o", "name"]);
            })
            .await?;
        // The DaemonSets update OnDelete, for which `rollout status` says nothing.
        for daemonset in daemonsets.lines().filter(|l| !l.trim().is_empty()) {
            self.kubectl_ok(|k| {
                k.args(["-n", INSTALL_NAMESPACE, "wait"])
                    .arg("--for=jsonpath={.status.numberReady}=1")
                    .arg(daemonset.trim())
                    .arg(ROLLOUT_TIMEOUT);
            })
            .await?;
        }
        Ok(())
    }

    /// Runs kubectl as admin with the arguments `args` adds; its stdout.
    pub async fn kubectl_ok(
        &self,
        args: impl FnOnce(&mut std::process::Command),
    ) -> Result<String, HarnessError> {
        let mut command = self.kubectl();
        args(&mut command);
        run(command).await
    }

    /// A kustomization over `base` that only sets the images of this
    /// cluster (and, since nothing can be pulled, `imagePullPolicy: Never`)
    /// on whichever workloads `base` has (patches matching nothing are
    /// ignored by kustomize), and lets the io-engine's reactor sleep between
    /// polls: on the test machines' two shared cores a busy-polling reactor
    /// would take one whole (the engine's `MAYASTOR_DELAY`, a developer
    /// setting that production leaves off).
    fn image_overlay(&self, base: &Path) -> Result<PathBuf, HarnessError> {
        let base = base
            .canonicalize()
            .map_err(|e| HarnessError::io(format!("finding {}", base.display()), e))?;
        let name = base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = self.dir().join("overlays").join(name);
        super::mkdir(&dir)?;
        let dir = dir
            .canonicalize()
            .map_err(|e| HarnessError::io(format!("finding {}", dir.display()), e))?;
        let relative = relative_path(&dir, &base);
        let mut images = String::new();
        let mut patches = String::new();
        for (role, kind, workload) in WORKLOADS {
            // An image this cluster was started without (the io-engine's)
            // stays as the manifest names it: its pod would not start.
            let Ok(image) = self.images().get(role) else {
                continue;
            };
            let (name, tag) = image.reference.rsplit_once(':').ok_or_else(|| {
                HarnessError::Setup(format!(
                    "image reference without a tag: {}",
                    image.reference
                ))
            })?;
            images.push_str(&format!(
                "  - {{name: {workload}, newName: {name}, newTag: \"{tag}\"}}\n"
            ));
            patches.push_str(&format!(
                "  - target: {{kind: {kind}, name: {workload}}}\n    patch: |-\n      - op: replace\n        path: /spec/template/spec/containers/0/imagePullPolicy\n        value: Never\n"
            ));
        }
        patches.push_str(
            "  - target: {kind: DaemonSet, name: msp-io-engine}\n    patch: |-\n      - op: add\n        path: /spec/template/spec/containers/0/env/-\n        value: {name: MAYASTOR_DELAY, value: \"1\"}\n",
        );
        let text = format!(
            "# Generated by the cluster test harness: {base} with this cluster's images.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {base}\nimages:\n{images}patches:\n{patches}",
            base = relative.display(),
        );
        write(&dir.join("kustomization.yaml"), &text)?;
        Ok(dir)
    }
}

/// The images this harness builds for `deploy/`'s workloads: role, workload
/// kind, and the name of both the workload and its image in the manifests.
const WORKLOADS: [(&str, &str, &str); 3] = [
    ("operator", "Deployment", "msp-operator"),
    ("storage-node", "DaemonSet", "msp-storage-node"),
    ("io-engine", "DaemonSet", "msp-io-engine"),
];

/// `to` as a path relative to the directory `from` (kustomize refuses
/// absolute resource paths). Both must be absolute and canonical.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}
