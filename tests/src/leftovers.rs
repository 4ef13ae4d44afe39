//! Leftovers of test processes that were killed outright (SIGKILL, a CI
//! timeout): no `Drop` ran, so their temp dirs, and the loop devices attached
//! to files inside them, stay behind. Each owner names its temp dirs
//! `{prefix}{pid}-…`; the next run of any test finds the dirs whose pid is gone
//! and lets the owner clean them up.

use std::path::PathBuf;

/// Temp dirs named `{prefix}{pid}-…` whose process no longer exists.
///
/// Assumes the tests share one PID namespace (true for `cargo test` and CI).
pub fn dead_run_dirs(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<libc::pid_t>().ok());
            pid.is_some_and(|pid| !pid_alive(pid))
        })
        .map(|entry| entry.path())
        .collect()
}

/// The prefix-and-pid start of a temp dir name owned by this process.
pub fn run_dir_prefix(prefix: &str) -> String {
    format!("{prefix}{}-", std::process::id())
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
