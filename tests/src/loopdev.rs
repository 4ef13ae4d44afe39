//! Loop devices for tests: a real block device backed by a sparse file.
//!
//! [`LoopDevice`] is an RAII guard. It creates a sparse backing file in its own
//! temporary directory, attaches it with `losetup --find --show`, and on drop
//! detaches the device and removes the file, also when the test panicked, so a
//! test run leaves no loop device behind. Needs root and util-linux
//! (`losetup`, `blockdev`); gate the test with [`require_loop_devices`] first.
//!
//! Also the byte-level helpers tests use to show data on a disk survives
//! (a deterministic [`pattern`], [`write_at`], [`read_at`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One mebibyte: the unit tests size their loop devices in.
pub const MIB: u64 = 1024 * 1024;

/// The gate of a test that needs loop devices: [`crate::require`] with
/// [`LoopDevice::available`]. True when the test can run; false (the caller
/// returns early) only outside CI.
pub fn require_loop_devices() -> bool {
    crate::require("root and loop devices (losetup)", LoopDevice::available())
}

/// `len` deterministic bytes, unlike zeroes and unlike a label; a different
/// `seed` gives different bytes (to tell two disks' data apart).
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Writes `data` at byte `offset` of the device (or file) at `path` and
/// syncs it, so that what another process reads next is these bytes.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all_at(data, offset)?;
    file.sync_all()
}

/// The `len` bytes at byte `offset` of the device (or file) at `path`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Why a loop device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("creating the backing file: {0}")]
    Backing(#[source] std::io::Error),
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

const TEMP_PREFIX: &str = "msp-loop-";

/// Detaches the loop devices of test processes that were killed outright
/// (no Drop ran) and removes their backing files.
fn sweep_dead_runs() {
    for dir in crate::leftovers::dead_run_dirs(TEMP_PREFIX) {
        let backing = dir.join("disk.img");
        // `losetup -j FILE` lists the devices attached to FILE, one
        // "/dev/loopN: [dev]:inode (FILE)" line each.
        if let Ok(out) = run("losetup", &["-j", &backing.to_string_lossy()]) {
            for device in out.lines().filter_map(|l| l.split(':').next()) {
                let _ = run("blockdev", &["--setrw", device]);
                let _ = run("losetup", &["-d", device]);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A loop device attached to a sparse file; detached and removed on drop.
#[derive(Debug)]
pub struct LoopDevice {
    // Kept for its Drop: removes the backing file after the detach.
    _dir: tempfile::TempDir,
    backing: PathBuf,
    path: PathBuf,
    attached: bool,
}

impl LoopDevice {
    /// True when this process can create loop devices (root, `losetup`,
    /// `/dev/loop-control`).
    pub fn available() -> bool {
        crate::is_root()
            && Path::new("/dev/loop-control").exists()
            && run("losetup", &["--version"]).is_ok()
            && run("blockdev", &["--version"]).is_ok()
    }

    /// A new loop device of `size_bytes` bytes (rounded up to 512), all zeroes.
    pub fn create(size_bytes: u64) -> Result<Self, LoopError> {
        Self::attach(size_bytes, false)
    }

    /// As [`LoopDevice::create`], with partition scanning on: partitions
    /// written to it appear as `/dev/loopNpM` (as on a real disk).
    pub fn create_partitionable(size_bytes: u64) -> Result<Self, LoopError> {
        Self::attach(size_bytes, true)
    }

    fn attach(size_bytes: u64, partscan: bool) -> Result<Self, LoopError> {
        sweep_dead_runs();
        let dir = tempfile::Builder::new()
            .prefix(&crate::leftovers::run_dir_prefix(TEMP_PREFIX))
            .tempdir()
            .map_err(LoopError::Backing)?;
        let backing = dir.path().join("disk.img");
        let file = std::fs::File::create(&backing).map_err(LoopError::Backing)?;
        file.set_len(size_bytes.div_ceil(512) * 512)
            .map_err(LoopError::Backing)?;
        drop(file);
        let backing_str = backing.to_string_lossy().into_owned();
        // Parallel tests may race for the same free loop number; losetup
        // then fails with EBUSY, and the next attempt gets another one.
        let mut attempt = 0;
        let out = loop {
            let mut args = vec!["--find", "--show"];
            if partscan {
                args.push("--partscan");
            }
            args.push(&backing_str);
            match run("losetup", &args) {
                Ok(out) => break out,
                Err(e) if attempt < 4 => {
                    attempt += 1;
                    eprintln!("losetup attempt {attempt} failed ({e}); retrying");
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                }
                Err(e) => return Err(e),
            }
        };
        let path = PathBuf::from(out.trim());
        Ok(Self {
            _dir: dir,
            backing,
            path,
            attached: true,
        })
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device node as a string (for gRPC requests).
    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The sparse file behind the device; it outlives [`LoopDevice::detach`].
    pub fn backing_file(&self) -> &Path {
        &self.backing
    }

    /// Whether the device is still attached (not yet detached by this guard).
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Detaches the device now (a disk that disappears). The backing file is
    /// kept until drop so its bytes can still be inspected.
    pub fn detach(&mut self) -> Result<(), LoopError> {
        if self.attached {
            // A read-only flag would survive into the next user of this loop
            // number; clear it first (best effort: the detach matters more).
            let _ = run("blockdev", &["--setrw", &self.path_str()]);
            run("losetup", &["-d", &self.path_str()])?;
            self.attached = false;
        }
        Ok(())
    }

    /// Attaches the backing file again, at `device` (an unused loop device
    /// node, e.g. another guard's number after its detach): the same disk
    /// under another kernel name, as after a reboot that renumbered disks.
    pub fn attach_at(&mut self, device: &Path) -> Result<(), LoopError> {
        if self.attached {
            return Err(LoopError::Failed {
                cmd: "attach_at".into(),
                stderr: format!("{} is still attached", self.path.display()),
            });
        }
        let args = [&*device.to_string_lossy(), &*self.backing.to_string_lossy()];
        // A detach is deferred while someone (udev's probe after the change
        // event) still has the device open: busy for a moment.
        let mut attempt = 0;
        while let Err(e) = run("losetup", &args) {
            attempt += 1;
            if attempt > 20 {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.path = device.to_path_buf();
        self.attached = true;
        Ok(())
    }

    /// Swaps the kernel names of two disks: both detached, each backing file
    /// attached at the other's device node. The disks (backing files) and
    /// their bytes stay as they were; only `/dev/loopN` now names the other.
    pub fn swap_names(a: &mut LoopDevice, b: &mut LoopDevice) -> Result<(), LoopError> {
        let (pa, pb) = (a.path.clone(), b.path.clone());
        a.detach()?;
        b.detach()?;
        a.attach_at(&pb)?;
        b.attach_at(&pa)
    }

    /// SHA-256 of every byte of the device, as hex: to show a disk was not
    /// written to. Uses `sha256sum` (coreutils): the `sha2` crate is slow
    /// in unoptimised test builds.
    pub fn sha256_hex(&self) -> Result<String, LoopError> {
        sha256_hex(&self.path)
    }

    /// SHA-256 of the backing file, as hex: the disk's bytes whether or not,
    /// and wherever, it is attached.
    pub fn backing_sha256_hex(&self) -> Result<String, LoopError> {
        sha256_hex(&self.backing)
    }

    /// Makes the device read-only (`blockdev --setro`) or writable again.
    pub fn set_readonly(&self, readonly: bool) -> Result<(), LoopError> {
        let flag = if readonly { "--setro" } else { "--setrw" };
        run("blockdev", &[flag, &self.path_str()]).map(|_| ())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("warning: could not detach {}: {e}", self.path.display());
        }
    }
}

/// SHA-256 of the file or device at `path`, as hex (`sha256sum`).
fn sha256_hex(path: &Path) -> Result<String, LoopError> {
    let out = run("sha256sum", &[&path.to_string_lossy()])?;
    match out.split_whitespace().next() {
        Some(hex) if hex.len() == 64 => Ok(hex.to_owned()),
        _ => Err(LoopError::Failed {
            cmd: "sha256sum".into(),
            stderr: format!("unexpected output {out:?}"),
        }),
    }
}

/// Runs a command and returns its stdout, or an error carrying its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, LoopError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LoopError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LoopError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
