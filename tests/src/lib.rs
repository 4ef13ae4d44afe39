//! Shared pieces for tests and the local demo: the real control plane harness,
//! the real io-engine harness and the stand-in storage node.

pub mod cluster;
pub mod control_plane;
pub mod docs;
pub mod go_tools;
pub mod io_engine;
pub mod leftovers;
pub mod loopdev;
pub mod nvme_tcp;
pub mod operator;
pub mod replicas;
pub mod storage_node;
pub mod udev_links;
pub mod walkthrough;

/// Gate for a test that needs something this machine may lack (root, loop
/// devices, a built binary). Returns true when the test can run.
///
/// Under CI (`CI=true`) a missing resource is a failure, never a skip: the
/// test panics with `what` so the log says what the machine lacked. Elsewhere
/// it prints a loud notice and the caller returns early.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("required for this test but missing on this machine: {what}");
    }
    eprintln!("SKIPPED (not under CI): this test needs {what}");
    false
}

/// Runs `script` with `sh -c`: its standard output, or an error naming the
/// script with its standard error when it exits non-zero.
pub fn sh(script: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when running as root (loop devices, blockdev and losetup need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises the soft open-files limit to the hard limit, for processes that
/// hold a connection per (virtual) storage node. Returns false when it could
/// not (the limit stays as it was).
pub fn raise_fd_limit() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            return libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0;
        }
    }
    true
}

/// How the demos name the disk they put the seed's example on: the seed says
/// `/dev/loop0`, the demo uses whichever loop device it got.
pub fn example_disk(disk: &str) -> String {
    if disk == "/dev/loop0" {
        disk.to_string()
    } else {
        format!("{disk} (instead of the seed's /dev/loop0)")
    }
}

/// Logging of the project's binaries (demos, stand-in storage node): to
/// stderr, `RUST_LOG` or `default_filter`, coloured only for a person at a
/// terminal, never in a log file.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
