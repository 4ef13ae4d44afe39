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

/// Kills the processes whose command line names `dir`: children of a dead
/// run that outlived it (their death signal did not fire, e.g. the spawning
/// thread was not the one that died), which would otherwise hold ports and
/// files after the dir is gone.
pub fn kill_processes_naming(dir: &std::path::Path) {
    let needle = dir.to_string_lossy().into_owned();
    for (pid, cmdline) in processes() {
        if cmdline.contains(&needle) {
            kill(pid);
        }
    }
}

/// Kills the processes of executable `file_name` that were orphaned (their
/// parent is gone and init adopted them): a stand-in storage node outlives
/// only a test process that died outright.
pub fn kill_orphans(file_name: &str) {
    for (pid, _) in processes() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let named = exe
            .as_deref()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == file_name);
        if named && parent(pid) == Some(1) {
            kill(pid);
        }
    }
}

/// (pid, command line with spaces for NULs) of every process.
fn processes() -> Vec<(libc::pid_t, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&raw).replace('\0', " ")))
        })
        .collect()
}

/// The parent pid, from /proc/PID/stat (after the command name's closing
/// parenthesis: state, then ppid).
fn parent(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn kill(pid: libc::pid_t) {
    tracing::warn!(pid, "killing a process left by a dead test run");
    // SAFETY: sending a signal has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn gone_within(pid: libc::pid_t, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            // A zombie child still answers signal 0: ask /proc for its state.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            if !pid_alive(pid) || zombie {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_process_naming_a_dead_run_dir_is_killed() {
        let dir = tempfile::Builder::new()
            .prefix("msp-leftover-test-")
            .tempdir()
            .expect("temp dir");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30"])
            .arg(dir.path())
            .spawn()
            .expect("sh");
        let other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        kill_processes_naming(dir.path());
        let status = child.wait().expect("wait");
        assert!(!status.success(), "{status:?}");
        let mut other = other;
        assert!(
            other.try_wait().expect("try_wait").is_none(),
            "an unrelated process was killed"
        );
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn an_orphan_of_the_named_executable_is_killed_and_a_child_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = format!("msp-orphan-test-{}", std::process::id());
        let exe = dir.path().join(&name);
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
        // A child of ours, which must survive. Another test's fork can hold
        // the copy's write descriptor until its exec ("text file busy"):
        // retry briefly, after which no one holds it.
        let mut tries = 0;
        let mut child = loop {
            match std::process::Command::new(&exe).arg("30").spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => break spawned.expect("child"),
            }
        };
        // An orphan: its shell exits at once and init adopts it.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} 30 >/dev/null 2>&1 & echo $!", exe.display()))
            .output()
            .expect("sh");
        let orphan: libc::pid_t = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid");
        let start = Instant::now();
        while parent(orphan) != Some(1) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            parent(orphan),
            Some(1),
            "the orphan was not adopted by init"
        );
        kill_orphans(&name);
        assert!(
            gone_within(orphan, Duration::from_secs(5)),
            "orphan {orphan} still runs"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "our own child was killed"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
