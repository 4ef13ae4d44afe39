//! The cluster's container images: built by `tests/cluster/images.sh` (buildah,
//! from the host-built binaries) into a cache, imported into the cluster's
//! containerd with `ctr images import`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::HarnessError;
use super::netns::run_quiet;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/images.sh");

/// One image: what it is for, its reference, its docker-archive tarball.
#[derive(Clone, Debug)]
pub struct Image {
    pub role: String,
    pub reference: String,
    pub archive: PathBuf,
}

/// The operator, storage node, pause and CoreDNS images of one build, and
/// the io-engine's when the cluster runs it.
#[derive(Clone, Debug)]
pub struct Images {
    images: Vec<Image>,
}

impl Images {
    /// Builds the images (or finds them cached) from these binaries.
    pub async fn build(
        binaries: &super::Binaries,
        cluster_bin: &Path,
    ) -> Result<Images, HarnessError> {
        let mut args = vec![
            binaries.operator.as_path(),
            binaries.storage_node.as_path(),
            cluster_bin,
        ];
        args.extend(binaries.io_engine.as_deref());
        let dir = crate::control_plane::assets::run_build_script(SCRIPT, &args).await?;
        let list = dir.join("images");
        let text = std::fs::read_to_string(&list)
            .map_err(|e| HarnessError::io(format!("reading {}", list.display()), e))?;
        let images = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some(Image {
                    role: fields.next()?.to_string(),
                    reference: fields.next()?.to_string(),
                    archive: PathBuf::from(fields.next()?),
                })
            })
            .collect();
        Ok(Images { images })
    }

    /// The image for `role` (operator, storage-node, pause, coredns, io-engine).
    pub fn get(&self, role: &str) -> Result<&Image, HarnessError> {
        self.images
            .iter()
            .find(|i| i.role == role)
            .ok_or_else(|| HarnessError::Setup(format!("no {role} image was built")))
    }

    /// Imports every image into containerd's `k8s.io` namespace (the CRI's).
    pub fn import(&self, containerd_socket: &Path) -> Result<(), HarnessError> {
        for image in &self.images {
            let mut ctr = Command::new("ctr");
            ctr.arg("--address")
                .arg(containerd_socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&image.archive);
            run_quiet(ctr, &format!("ctr images import {}", image.reference))?;
        }
        Ok(())
    }
}
