//! Child processes of the harness (etcd, kube-apiserver, the cluster's
//! components, the io-engine, storage nodes, operator replicas) that cannot
//! outlive it: the one supervisor of the tests.
//!
//! Each child runs in its own process group, so that stopping it also stops
//! anything it started, and gets `PR_SET_PDEATHSIG`, so that the kernel kills it
//! when the test process dies without running destructors (SIGKILL, abort).
//! The death signal is tied to the *thread* that spawned the child: spawn from
//! a thread that lives as long as the control plane (a test thread, a runtime
//! worker), never from `spawn_blocking`, whose idle threads exit.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use super::HarnessError;

/// A running child process, killed with its process group on drop.
#[derive(Debug)]
pub struct Guarded {
    name: String,
    child: Child,
    /// Where its output goes; `None` when it shares the test's.
    log: Option<PathBuf>,
    /// Reaped (by [`Guarded::try_wait`] or [`Guarded::terminate`]): its pid
    /// may belong to another process by now, so nothing may signal it.
    reaped: bool,
}

impl Guarded {
    /// Starts `command` with stdout and stderr written to `log`.
    pub fn spawn(
        name: impl Into<String>,
        mut command: Command,
        log: &Path,
    ) -> Result<Guarded, HarnessError> {
        let name = name.into();
        let out = File::create(log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating a log handle", e))?;
        command.stdout(out).stderr(err);
        let context = format!("starting {name}");
        Guarded::start(name, command, Some(log.to_path_buf()))
            .map_err(|e| HarnessError::io(context, e))
    }

    /// Starts `command` with the test's own stdout and stderr.
    pub fn spawn_inheriting(name: impl Into<String>, command: Command) -> std::io::Result<Guarded> {
        Guarded::start(name.into(), command, None)
    }

    fn start(name: String, mut command: Command, log: Option<PathBuf>) -> std::io::Result<Guarded> {
        // SAFETY: getpid is async-signal-safe; read here, before the fork.
        let parent = unsafe { libc::getpid() };
        command.stdin(Stdio::null()).process_group(0);
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Guarded {
            name,
            child,
            log,
            reaped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the child itself (SIGTERM, SIGSTOP, SIGCONT).
    pub fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        if self.reaped {
            return Err(std::io::Error::other(format!("{} has exited", self.name)));
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; our unreaped child's pid.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The exit status once the child has exited (reaped then, and what it
    /// started in its group killed); `None` while it runs.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() && !self.reaped {
            let pgid = self.child.id() as libc::pid_t;
            // SAFETY: kill has no memory preconditions; the group outlives
            // its reaped leader while members remain.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            self.reaped = true;
        }
        Ok(status)
    }

    /// Graceful stop: SIGTERM to the child, then up to `timeout` for it to
    /// exit; SIGKILL to its group after that. The exit status, when it
    /// exited by itself within `timeout`.
    pub fn terminate(mut self, timeout: std::time::Duration) -> Option<ExitStatus> {
        let _ = self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `Err` with the log's tail when the process has exited.
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        match self.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: self.log_tail(),
            }),
            Err(e) => Err(HarnessError::io(format!("waiting for {}", self.name), e)),
        }
    }

    /// The last lines of the process's output, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Some(Ok(mut file)) = self.log.as_ref().map(File::open) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The child leads its own group (process_group(0)): its pid is the pgid.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; a negative pid names the group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// `n` distinct loopback ports that were free a moment ago. Another process
/// may take one before our child binds it; the caller retries the start then.
/// Ports handed out earlier in this process are skipped, so that control
/// planes started in parallel by one test binary do not pick the same ones.
pub fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Hold every listener until all are chosen, so the kernel gives n different ports.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| HarnessError::io("finding a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("finding a free port", e))?
            .port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        listeners.push(listener);
    }
    Ok(ports)
}
