//! The `msp-operator run` binary itself, as a deployment runs it: JSON logs
//! with the pool's name on each reconcile's span, probes, a clean exit on
//! SIGTERM, and a start-up hint when the CRD is not installed.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use msp_operator::state::crd::PoolState;
use msp_tests::control_plane::ControlPlane;
use msp_tests::operator::{create_pool, http_get, start_cluster, wait_for, wait_pool};

const WAIT: Duration = Duration::from_secs(30);

fn can_run() -> Option<PathBuf> {
    msp_tests::replicas::require_operator_binary()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the child if the test fails before it exits.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Guard {
    fn child(&mut self) -> anyhow::Result<&mut Child> {
        self.0
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("operator process already reaped"))
    }

    /// Waits up to `timeout` for the exit; its status and stderr.
    async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child()?.try_wait()? {
                break status;
            }
            if start.elapsed() > timeout {
                anyhow::bail!("the operator process did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut logs = String::new();
        if let Some(mut stderr) = self.child()?.stderr.take() {
            stderr.read_to_string(&mut logs)?;
        }
        self.0 = None;
        Ok((status, logs))
    }
}

fn spawn(bin: &PathBuf, cp: &ControlPlane, metrics_port: u16) -> anyhow::Result<Child> {
    Ok(Command::new(bin)
        .args([
            "run",
            "--registration-addr=127.0.0.1:0",
            "--log-format=json",
            "--namespace=mayastor",
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_json_logs_and_stops_on_sigterm() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let (cp, admin) = start_cluster().await?;
    let port = free_port()?;
    let mut guard = Guard(Some(spawn(&bin, &cp, port)?));
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_for("/readyz of the operator process", WAIT, || async {
        matches!(http_get(metrics, "/readyz").await, Ok((200, _)))
    })
    .await?;
    assert_eq!(http_get(metrics, "/healthz").await?.0, 200);
    create_pool(
        &admin,
        "logged",
        "no-such-node",
        &["/dev/loop-none".to_string()],
    )
    .await?;
    wait_pool(&admin, "logged", WAIT, "pending", |s| {
        s.state == Some(PoolState::Pending)
    })
    .await?;

    // SIGTERM: a clean, prompt exit.
    let pid = libc::pid_t::try_from(guard.child()?.id())?;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (status, logs) = guard.wait_exit(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit {status:?}; logs:\n{logs}");

    // Every line is JSON; a reconcile line carries the pool's name in its span.
    let lines = msp_tests::operator::json_log_lines(&logs)?;
    let pool_span = msp_tests::operator::in_reconcile_span(&lines, "logged");
    assert!(
        pool_span,
        "no log line in the reconcile span of pool \"logged\":\n{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "msp-operator stopped"),
        "{logs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_how_to_install_a_missing_crd() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let cp = ControlPlane::start().await?;
    let mut guard = Guard(Some(spawn(&bin, &cp, free_port()?)?));
    let (status, logs) = guard.wait_exit(WAIT).await?;
    assert!(!status.success());
    assert!(logs.contains("Is the CRD installed?"), "{logs}");
    Ok(())
}

/// Runs `bin args` with output to pipes (not a terminal), killing it after
/// `timeout`: (exit success, stdout, stderr).
fn run_briefly(bin: &std::path::Path, args: &[&str], timeout: Duration) -> (bool, String, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status.is_some_and(|s| s.success()), out, err)
}

#[test]
fn every_binary_answers_help_and_version_and_exits_without_colours() {
    let Some(operator) = can_run() else { return };
    let binaries = [
        ("msp-operator", operator),
        (
            "storage-node",
            PathBuf::from(env!("CARGO_BIN_EXE_storage-node")),
        ),
        ("msp-demo", PathBuf::from(env!("CARGO_BIN_EXE_msp-demo"))),
        (
            "msp-cluster-demo",
            PathBuf::from(env!("CARGO_BIN_EXE_msp-cluster-demo")),
        ),
    ];
    for (name, bin) in &binaries {
        // Before its fix, msp-demo --help started the whole demo: the
        // timeout catches a binary that does anything but answer.
        let (ok, out, err) = run_briefly(bin, &["--help"], Duration::from_secs(10));
        assert!(ok, "{name} --help did not exit 0 at once: {out}{err}");
        assert!(out.contains("Usage:"), "{name} --help: {out}");
        assert!(
            !out.contains('\x1b'),
            "{name} --help coloured a pipe: {out:?}"
        );
        let (ok, out, err) = run_briefly(bin, &["--version"], Duration::from_secs(10));
        assert!(ok, "{name} --version: {out}{err}");
        assert_eq!(
            out.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{name} --version"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_colour_codes() -> anyhow::Result<()> {
    let Some(bin) = can_run() else { return Ok(()) };
    let cp = ControlPlane::start().await?;
    // No CRD: the operator logs its hint and exits; text format, to a pipe.
    let child = Command::new(&bin)
        .args([
            "run",
            "--registration-addr=127.0.0.1:0",
            "--log-format=text",
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut guard = Guard(Some(child));
    let (_, logs) = guard.wait_exit(WAIT).await?;
    assert!(logs.contains("Is the CRD installed?"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in a pipe: {logs:?}");
    Ok(())
}
