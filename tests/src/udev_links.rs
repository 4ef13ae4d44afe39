//! A persistent `/dev/disk/by-id/…` link for a test loop device, as a real
//! disk has one.
//!
//! For a loop device udev here makes only `/dev/disk/by-diskseq/N`, which
//! changes at every attach (no identity), and this udev (252) makes no
//! by-loop-ref/by-loop-inode links. A real disk's WWN link follows the disk
//! wherever the kernel names it; [`ByIdLink`] gives a loop device the same: a
//! runtime udev rule (under `/run/udev/rules.d`) matching the device's
//! `loop/backing_file` attribute adds `/dev/disk/by-id/<name>`, the name
//! derived from the backing file. Attach that file at another `/dev/loopN`
//! and the link follows it; detach it and the link goes.
//!
//! [`UdevLinks`] keeps a udevd running for as long as the test holds it
//! (declare it first, so that it drops last: the storage nodes and the
//! links need it until the end), and holds a machine-wide lock meanwhile:
//! tests that started udevds side by side got two daemons on one control
//! socket, and links that never came or never went. Rule files are named
//! with the test process's pid; those of runs killed outright are swept at
//! the next install.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::control_plane::HarnessError;
use crate::io_engine::host::{self, Udevd};
use crate::loopdev::LoopDevice;

/// Where udev reads runtime rules (gone at reboot, as a test's rules should).
const RULES_DIR: &str = "/run/udev/rules.d";
/// Rule file names: `61-msp-link-<pid>-<name>.rules` (after the distribution's
/// 60-persistent-storage, so that its links exist and ours add to them).
const RULE_PREFIX: &str = "61-msp-link-";
/// The machine-wide lock file, in the temporary dir.
const LOCK: &str = "msp-udev-links.lock";
/// How long a link gets to appear or go after udev was told.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// The gate of a test that needs persistent links for loop devices: root,
/// loop devices and a udevd that runs or can be started. With `CI=true` a
/// missing piece fails the test.
pub fn require_udev_links() -> bool {
    crate::require(
        "root, loop devices (losetup) and udevd (Debian package udev) for by-id links",
        LoopDevice::available() && Udevd::available(),
    )
}

/// A running udevd for the links of one test (started when none runs,
/// stopped on drop then), one test at a time on the machine.
pub struct UdevLinks {
    // Field order is drop order: udevd stops before its log's dir goes, and
    // before the next test may start its own.
    _udevd: Udevd,
    _dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl UdevLinks {
    /// Makes sure a udevd runs (its log in a temporary dir when started
    /// here). Blocks while another test holds the links.
    pub fn start() -> Result<UdevLinks, HarnessError> {
        let path = std::env::temp_dir().join(LOCK);
        let lock = std::fs::File::create(&path)
            .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
        // flock(2): also between two guards of one process, and released by
        // the kernel when the process dies.
        lock.lock()
            .map_err(|e| HarnessError::io("locking the udev links", e))?;
        let dir = tempfile::Builder::new()
            .prefix("msp-udev-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating the udevd log dir", e))?;
        let udevd = Udevd::ensure(&dir.path().join("udevd.log"))?;
        Ok(UdevLinks {
            _udevd: udevd,
            _dir: dir,
            _lock: lock,
        })
    }

    /// Installs the rule giving `disk`'s backing file its by-id link, and
    /// waits until the link names `disk`'s device.
    pub fn link(&self, disk: &LoopDevice) -> Result<ByIdLink, HarnessError> {
        ByIdLink::install(disk)
    }
}

/// A runtime udev rule and the `/dev/disk/by-id/…` link it makes for one
/// backing file; the rule is removed (and the link with it) on drop.
#[derive(Debug)]
pub struct ByIdLink {
    rule: PathBuf,
    link: PathBuf,
    removed: bool,
}

impl ByIdLink {
    fn install(disk: &LoopDevice) -> Result<ByIdLink, HarnessError> {
        sweep_dead_runs();
        let backing = disk.backing_file().to_string_lossy().into_owned();
        // A udev match value is a glob in double quotes: refuse what would
        // be read as something else than this one path.
        if backing.contains(['"', '*', '?', '[', ']', '|', '\\']) {
            return Err(HarnessError::Setup(format!(
                "backing file {backing} cannot be matched literally by a udev rule"
            )));
        }
        let name = link_name(disk.backing_file());
        let rule =
            Path::new(RULES_DIR).join(format!("{RULE_PREFIX}{}-{name}.rules", std::process::id()));
        let text = format!(
            "# msp-tests: a persistent link for the loop device backed by {backing}\n\
             ACTION!=\"remove\", SUBSYSTEM==\"block\", KERNEL==\"loop[0-9]*\", \
             ENV{{DEVTYPE}}==\"disk\", ATTR{{loop/backing_file}}==\"{backing}\", \
             SYMLINK+=\"disk/by-id/{name}\"\n"
        );
        std::fs::create_dir_all(RULES_DIR)
            .map_err(|e| HarnessError::io(format!("creating {RULES_DIR}"), e))?;
        std::fs::write(&rule, text)
            .map_err(|e| HarnessError::io(format!("writing {}", rule.display()), e))?;
        let installed = ByIdLink {
            rule,
            link: Path::new("/dev/disk/by-id").join(name),
            removed: false,
        };
        host::run("udevadm", &["control", "--reload"])?;
        if disk.is_attached() {
            host::retrigger(disk.path());
            installed.wait_target(Some(disk.path()))?;
        }
        Ok(installed)
    }

    /// The link, e.g. `/dev/disk/by-id/msp-loop-1234-AbCdEf`.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The link as a string (for a resource's `spec.disks`).
    pub fn path_str(&self) -> String {
        self.link.to_string_lossy().into_owned()
    }

    /// The device the link names now, if it exists.
    pub fn target(&self) -> Option<PathBuf> {
        std::fs::canonicalize(&self.link).ok()
    }

    /// Waits until the link names `device` (`None`: until it is gone).
    pub fn wait_target(&self, device: Option<&Path>) -> Result<(), HarnessError> {
        let start = Instant::now();
        loop {
            let now = self.target();
            if now.as_deref() == device {
                return Ok(());
            }
            if start.elapsed() > LINK_TIMEOUT {
                return Err(HarnessError::Setup(format!(
                    "{} names {now:?} after {LINK_TIMEOUT:?}, not {device:?}",
                    self.link.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes the rule and waits until the link is gone (a disk whose
    /// persistent link udev has not made: an old udev, a link not yet
    /// created after a reboot).
    pub fn remove(&mut self) -> Result<(), HarnessError> {
        if self.removed {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.rule);
        self.removed = true;
        host::run("udevadm", &["control", "--reload"])?;
        if let Some(device) = self.target() {
            host::retrigger(&device);
        }
        self.wait_target(None)
    }
}

impl Drop for ByIdLink {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: removing {}: {e}", self.rule.display());
        }
    }
}

/// The link's name, from the backing file: the name of its run dir (unique
/// per disk, e.g. `msp-loop-1234-AbCdEf`), or of the file itself.
fn link_name(backing: &Path) -> String {
    let from = backing
        .parent()
        .and_then(Path::file_name)
        .filter(|n| n.to_string_lossy().starts_with("msp-"))
        .or_else(|| backing.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    from.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Removes the rule files of test processes that were killed outright.
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(RULES_DIR) else {
        return;
    };
    let mut swept = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(RULE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if !crate::leftovers::pid_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
            swept = true;
        }
    }
    if swept {
        let _ = host::run("udevadm", &["control", "--reload"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_come_from_the_run_dir() {
        assert_eq!(
            link_name(Path::new("/tmp/msp-loop-12-AbC9/disk.img")),
            "msp-loop-12-AbC9"
        );
        assert_eq!(link_name(Path::new("/srv/x y.img")), "x-y-img");
    }
}
