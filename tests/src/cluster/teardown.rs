//! Leaving nothing behind: what a cluster changes outside its own directory,
//! recorded before it starts (in `host-state.json` in that directory), and the
//! teardown that undoes it, run on drop and, for a test process that was
//! killed outright, by the next start (the directory's pid is dead).
//!
//! Outside the directory a cluster leaves: containerd shims and pod processes
//! (shims daemonize, so the death signal does not reach them), mounts
//! (overlay rootfs, pod volumes, namespace files), the network namespace, the
//! `kubepods` cgroups in every hierarchy, the kernel sysctls kubelet sets, and
//! `/run/containerd`, `/var/lib/kubelet`, `/var/lib/cni` (paths kubelet,
//! containerd and libcni use whatever their configuration says).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::netns;

const STATE_FILE: &str = "host-state.json";

/// Global sysctls kubelet sets at start (`setupKernelTunables`).
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Directories outside the cluster's own that its components create.
const OUTSIDE_DIRS: [&str; 4] = [
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/usr/libexec/kubernetes",
];

/// Cgroups kubelet (`kubepods`) and containerd (`k8s.io`) create at the top of
/// each hierarchy.
const CGROUPS: [&str; 2] = ["kubepods", "k8s.io"];

/// What the host looked like before the cluster started.
#[derive(Debug, Serialize, Deserialize)]
pub struct HostState {
    netns: String,
    sysctls: BTreeMap<String, String>,
    /// Of [`OUTSIDE_DIRS`] and the cgroups, those that did not exist (removed at
    /// teardown; those that existed belong to someone else and stay).
    absent: Vec<PathBuf>,
}

impl HostState {
    /// Records the host's state and writes it into `dir` before anything changes.
    pub fn record(dir: &Path, netns: &str) -> std::io::Result<HostState> {
        let mut sysctls = BTreeMap::new();
        for key in KUBELET_SYSCTLS {
            if let Ok(value) = std::fs::read_to_string(sysctl_path(key)) {
                sysctls.insert(key.to_string(), value.trim().to_string());
            }
        }
        let absent = OUTSIDE_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(cgroup_dirs())
            .filter(|p| !p.exists())
            .collect();
        let state = HostState {
            netns: netns.to_string(),
            sysctls,
            absent,
        };
        std::fs::write(
            dir.join(STATE_FILE),
            serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
        )?;
        Ok(state)
    }

    fn load(dir: &Path) -> Option<HostState> {
        serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).ok()?).ok()
    }
}

/// Undoes everything a cluster in `dir` changed and removes `dir`. Each step
/// goes on after a failure; what could not be undone is returned, one line each.
pub fn teardown(dir: &Path, state: &HostState) -> Vec<String> {
    let mut problems = Vec::new();
    kill_cluster_processes(dir, &state.netns, &mut problems);
    unmount_under(dir, state, &mut problems);
    netns::delete(&state.netns);
    if netns::path_of(&state.netns).exists() {
        problems.push(format!("network namespace {} still there", state.netns));
    }
    for cgroup in state
        .absent
        .iter()
        .filter(|p| p.starts_with("/sys/fs/cgroup"))
    {
        remove_cgroup_tree(cgroup, &mut problems);
    }
    for (key, value) in &state.sysctls {
        let path = sysctl_path(key);
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.trim() != value && std::fs::write(&path, value).is_err() {
            problems.push(format!("could not restore sysctl {key}={value}"));
        }
    }
    for outside in state.absent.iter().filter(|p| !p.starts_with("/sys")) {
        if outside.exists() && std::fs::remove_dir_all(outside).is_err() {
            problems.push(format!("could not remove {}", outside.display()));
        }
    }
    if std::fs::remove_dir_all(dir).is_err() && dir.exists() {
        problems.push(format!("could not remove {}", dir.display()));
    }
    problems
}

/// Tears down the clusters of test processes that died without their drop
/// (directories named `{prefix}{pid}-…` of dead pids).
pub fn sweep_dead_runs(prefix: &str) {
    for dir in crate::leftovers::dead_run_dirs(prefix) {
        // The hugepages it reserved for an io-engine (its guard never ran),
        // given back once its pods are gone.
        let pages: Option<u64> =
            std::fs::read_to_string(dir.join(crate::io_engine::host::HUGEPAGES_FILE))
                .ok()
                .and_then(|t| t.trim().parse().ok());
        match HostState::load(&dir) {
            Some(state) => {
                let problems = teardown(&dir, &state);
                eprintln!(
                    "swept the cluster a killed test process left in {}{}",
                    dir.display(),
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", problems.join("; "))
                    }
                );
            }
            None => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        if let Some(pages) = pages {
            crate::io_engine::host::give_back(pages);
        }
    }
}

/// Kills, until none is left, every process in the cluster's network
/// namespace (components, shims, hostNetwork pods), in the kubelet's and
/// containerd's cgroups (pods in namespaces of their own), or whose command
/// line names the cluster's directory.
fn kill_cluster_processes(dir: &Path, netns: &str, problems: &mut Vec<String>) {
    let netns_inode = std::fs::metadata(netns::path_of(netns))
        .ok()
        .map(|m| m.ino());
    let dir_text = dir.display().to_string();
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids: Vec<u32> = cgroup_dirs().flat_map(|c| cgroup_pids(&c)).collect();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let in_netns = netns_inode.is_some()
                && std::fs::metadata(entry.path().join("ns/net"))
                    .map(|m| m.ino())
                    .ok()
                    == netns_inode;
            let names_dir = std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&dir_text))
                .unwrap_or(false);
            if in_netns || names_dir {
                pids.push(pid);
            }
        }
        pids.retain(|p| *p != me);
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            problems.push(format!("processes still running: {pids:?}"));
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unmounts, deepest first, every mount under the cluster's directory and
/// under the outside directories it created.
fn unmount_under(dir: &Path, state: &HostState, problems: &mut Vec<String>) {
    let roots: Vec<&Path> = std::iter::once(dir)
        .chain(
            state
                .absent
                .iter()
                .filter(|p| !p.starts_with("/sys"))
                .map(|p| p.as_path()),
        )
        .collect();
    for _ in 0..3 {
        let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mount_path(p)))
            .filter(|p| roots.iter().any(|r| p.starts_with(r)))
            .collect();
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mount in mounts {
            let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 only reads the path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    problems.push("mounts left under the cluster's directories".to_string());
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(path: &str) -> String {
    path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// `kubepods` and `k8s.io` at the top of every cgroup hierarchy.
fn cgroup_dirs() -> impl Iterator<Item = PathBuf> {
    let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    hierarchies
        .into_iter()
        .flat_map(|h| CGROUPS.iter().map(move |c| h.join(c)))
}

/// Pids in a cgroup and all its descendants.
fn cgroup_pids(cgroup: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for child in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if child.path().is_dir() {
            pids.extend(cgroup_pids(&child.path()));
        }
    }
    pids
}

/// Removes a cgroup and its descendants, deepest first (cgroupfs allows rmdir
/// of empty cgroups only).
fn remove_cgroup_tree(cgroup: &Path, problems: &mut Vec<String>) {
    if !cgroup.exists() {
        return;
    }
    for child in std::fs::read_dir(cgroup).into_iter().flatten().flatten() {
        if child.path().is_dir() {
            remove_cgroup_tree(&child.path(), problems);
        }
    }
    if std::fs::remove_dir(cgroup).is_err() {
        problems.push(format!("could not remove cgroup {}", cgroup.display()));
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}
