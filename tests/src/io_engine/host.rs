//! What an io-engine needs of the machine, each taken for one engine and
//! given back on drop: 2 MiB hugepages (the global `vm.nr_hugepages` is
//! raised by what the engine needs, and lowered by as much afterwards, so
//! other users of hugepages keep theirs), a hugetlbfs mount, and a running
//! `systemd-udevd` (the engine reads filesystems through udev; started only
//! when none runs, and then stopped again).
//!
//! Each grant is written into the engine's run dir, so that the sweep of a
//! dead run ([`super::sweep_dead_runs`]) can give it back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::control_plane::{Guarded, HarnessError};

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const FREE_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
/// File in a run dir: how many pages that run added to `vm.nr_hugepages`.
pub const HUGEPAGES_FILE: &str = "hugepages.granted";

fn read_u64(path: &str) -> Result<u64, HarnessError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HarnessError::io(format!("reading {path}"), e))?;
    text.trim()
        .parse()
        .map_err(|e| HarnessError::io(format!("parsing {path}"), std::io::Error::other(e)))
}

fn write_nr(n: u64) -> Result<(), HarnessError> {
    std::fs::write(NR_HUGEPAGES, n.to_string())
        .map_err(|e| HarnessError::io(format!("writing {NR_HUGEPAGES}"), e))
}

/// True when this machine has 2 MiB hugepages we may set (root, the sysfs files).
pub fn hugepages_supported() -> bool {
    crate::is_root() && Path::new(FREE_HUGEPAGES).exists() && Path::new(NR_HUGEPAGES).exists()
}

/// Lowers `vm.nr_hugepages` by `pages` (not below zero).
pub fn give_back(pages: u64) {
    if let Ok(now) = read_u64(NR_HUGEPAGES) {
        let _ = write_nr(now.saturating_sub(pages));
    }
}

/// `pages` more 2 MiB hugepages for one engine; given back on drop.
#[derive(Debug)]
pub struct Hugepages {
    added: u64,
}

impl Hugepages {
    /// Raises `vm.nr_hugepages` by `pages` and records it in `run_dir`
    /// first. Fails (giving them back) when the kernel could not find
    /// that many free pages.
    pub fn reserve(pages: u64, run_dir: &Path) -> Result<Hugepages, HarnessError> {
        let before = read_u64(NR_HUGEPAGES)?;
        let free_before = read_u64(FREE_HUGEPAGES)?;
        std::fs::write(run_dir.join(HUGEPAGES_FILE), pages.to_string())
            .map_err(|e| HarnessError::io("recording the hugepages grant", e))?;
        write_nr(before + pages)?;
        let mut got = read_u64(NR_HUGEPAGES)?.saturating_sub(before);
        for _ in 0..3 {
            if got >= pages {
                break;
            }
            // The page cache fills memory and fragments it: drop clean
            // cached pages (only costs re-reads), compact, ask again.
            let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
            let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
            write_nr(before + pages)?;
            got = read_u64(NR_HUGEPAGES)?.saturating_sub(before);
        }
        let grant = Hugepages { added: got };
        let _ = std::fs::write(run_dir.join(HUGEPAGES_FILE), got.to_string());
        if got < pages {
            return Err(HarnessError::io(
                "reserving hugepages",
                std::io::Error::other(format!(
                    "asked the kernel for {pages} more 2 MiB pages, got {got} (memory too fragmented or short)"
                )),
            ));
        }
        let free = read_u64(FREE_HUGEPAGES)?;
        if free < free_before + pages {
            tracing::warn!(free, free_before, pages, "fewer free hugepages than added");
        }
        Ok(grant)
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        give_back(self.added);
    }
}

/// A hugetlbfs mounted at a directory for one engine; unmounted on drop.
#[derive(Debug)]
pub struct HugetlbMount {
    dir: PathBuf,
}

impl HugetlbMount {
    pub fn mount(dir: &Path) -> Result<HugetlbMount, HarnessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        run(
            "mount",
            &["-t", "hugetlbfs", "nodev", &dir.to_string_lossy()],
        )?;
        Ok(HugetlbMount {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for HugetlbMount {
    fn drop(&mut self) {
        unmount(&self.dir);
    }
}

/// Unmounts `dir` when something is mounted there (lazily, so a file still
/// open by a dying engine does not keep it).
pub fn unmount(dir: &Path) {
    if is_mountpoint(dir) {
        let _ = run("umount", &["-l", &dir.to_string_lossy()]);
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(dir) else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split(' ').nth(4) == Some(&*canon.to_string_lossy()))
    })
}

/// A running udevd: the one the machine runs, or one started for the tests
/// (stopped on drop).
pub struct Udevd {
    started: Option<Guarded>,
}

/// Where Debian's `udev` package puts the daemon.
const UDEVD: &[&str] = &[
    "/usr/lib/systemd/systemd-udevd",
    "/lib/systemd/systemd-udevd",
];

impl Udevd {
    /// True when udevd runs or can be started.
    pub fn available() -> bool {
        udevd_running() || UDEVD.iter().any(|p| Path::new(p).exists())
    }

    /// Makes sure a udevd runs; `log` receives its output when started here.
    pub fn ensure(log: &Path) -> Result<Udevd, HarnessError> {
        if udevd_running() {
            return Ok(Udevd { started: None });
        }
        let binary = UDEVD
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                HarnessError::io(
                    "starting udevd",
                    std::io::Error::other("systemd-udevd not installed (Debian package udev)"),
                )
            })?;
        let guarded = Guarded::spawn("systemd-udevd", Command::new(binary), log)?;
        let mut udevd = Udevd {
            started: Some(guarded),
        };
        let start = Instant::now();
        while !udevd_running() {
            if let Some(g) = udevd.started.as_mut() {
                g.check_running()?;
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(HarnessError::Unhealthy {
                    name: "systemd-udevd".into(),
                    waited: start.elapsed(),
                    log_tail: udevd
                        .started
                        .as_ref()
                        .map(Guarded::log_tail)
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Devices that appeared before it ran have no udev record yet.
        let _ = run(
            "udevadm",
            &["trigger", "--subsystem-match=block", "--action=add"],
        );
        settle();
        Ok(udevd)
    }

    /// Whether this guard started the daemon.
    pub fn started_here(&self) -> bool {
        self.started.is_some()
    }
}

impl Drop for Udevd {
    fn drop(&mut self) {
        if let Some(g) = self.started.take() {
            let _ = g.terminate(Duration::from_secs(5));
        }
    }
}

fn udevd_running() -> bool {
    Command::new("udevadm")
        .args(["control", "--ping", "--timeout=1"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Asks udev to look at `device` again (after its signatures changed) and
/// waits until the event queue is empty.
pub fn retrigger(device: &Path) {
    let _ = run(
        "udevadm",
        &["trigger", "--action=change", &device.to_string_lossy()],
    );
    settle();
}

/// Waits until udev has handled every queued event.
pub fn settle() {
    let _ = run("udevadm", &["settle", "--timeout=10"]);
}

pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, HarnessError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| HarnessError::io(format!("running {program}"), e))?;
    if !out.status.success() {
        return Err(HarnessError::io(
            format!("{program} {}", args.join(" ")),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
