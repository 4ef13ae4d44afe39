//! Operator replicas as separate processes (the `msp-operator` binary, as a
//! Deployment of two runs it) electing a leader on the test control plane's
//! Lease, and [`ServiceProxy`], a loopback stand-in for their Service.
//!
//! Processes, not the in-process [`crate::operator::Operator`]: the failover
//! tests kill -9, SIGSTOP and SIGCONT the leader, which only a process allows.
//! Each replica keeps its ports and identity across restarts (as a container
//! restarting in its pod does) and logs JSON to a file per start, with every
//! API write it sends or fences logged (`msp_operator::lifecycle::fence` at trace level).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::control_plane::process::{Guarded, free_ports};
use crate::operator::{FAST_FLAGS, http_get};

/// A short lease so that a test's failovers take seconds (the defaults are
/// 15 s / 10 s / 2 s): a killed leader's lease ends 5 s after its last
/// renew; a renew may take 4 s on a loaded machine before the leader gives up.
pub const ELECTION_FLAGS: &[&str] = &[
    "--lease-duration=5s",
    "--renew-deadline=4s",
    "--retry-period=500ms",
];

/// The operator binary next to the test's own (`target/debug/msp-operator`),
/// built by `cargo build -p msp-operator` or `cargo test --workspace`.
pub fn operator_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("msp-operator");
    path.exists().then_some(path)
}

/// [`operator_binary`], gated by [`crate::require`]: under CI a missing
/// binary fails the test.
pub fn require_operator_binary() -> Option<PathBuf> {
    let bin = operator_binary();
    crate::require(
        "the msp-operator binary (cargo build -p msp-operator)",
        bin.is_some(),
    )
    .then_some(bin)?
}

/// `defaults`, less those `flags` name again, then `flags` (later ones win).
fn with_overrides(defaults: &[&str], flags: &[&str]) -> Vec<String> {
    let name = |f: &str| f.split('=').next().unwrap_or(f).to_string();
    defaults
        .iter()
        .filter(|d| flags.iter().all(|f| name(f) != name(d)))
        .chain(flags)
        .map(|f| f.to_string())
        .collect()
}

/// One operator process, restartable under the same identity and ports; the
/// harness's [`Guarded`] child, so it dies with the test even when the test
/// is killed outright.
pub struct Replica {
    name: String,
    binary: PathBuf,
    kubeconfig: PathBuf,
    flags: Vec<String>,
    log_dir: PathBuf,
    registration: SocketAddr,
    metrics: SocketAddr,
    starts: u32,
    child: Option<Guarded>,
    /// `RUST_LOG` of the process.
    log_filter: String,
}

impl Replica {
    /// Starts replica `name` (its Lease identity) with [`FAST_FLAGS`], then
    /// `flags` (e.g. [`ELECTION_FLAGS`]); logs go to `log_dir/NAME-N.log`.
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        name: &str,
        flags: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Replica> {
        Replica::start_logging(
            binary,
            kubeconfig,
            name,
            flags,
            log_dir,
            "info,msp_operator::lifecycle::fence=trace",
        )
    }

    /// [`Replica::start`] logging by `filter` (a `RUST_LOG` value): a
    /// benchmark's thousands of pools need less than every write at trace.
    pub fn start_logging(
        binary: &Path,
        kubeconfig: &Path,
        name: &str,
        flags: &[&str],
        log_dir: &Path,
        filter: &str,
    ) -> anyhow::Result<Replica> {
        let ports = free_ports(2)?;
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut replica = Replica {
            name: name.to_string(),
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            flags: with_overrides(FAST_FLAGS, flags),
            log_dir: log_dir.to_path_buf(),
            registration: loopback(ports[0]),
            metrics: loopback(ports[1]),
            starts: 0,
            child: None,
            log_filter: filter.to_string(),
        };
        replica.spawn()?;
        Ok(replica)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "run",
                "--namespace=mayastor",
                "--operator-namespace=mayastor",
                "--log-format=json",
            ])
            .arg(format!("--identity={}", self.name))
            .arg(format!("--registration-addr={}", self.registration))
            .arg(format!("--metrics-addr={}", self.metrics))
            .args(&self.flags)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", &self.log_filter)
            .env_remove("POD_NAME");
        self.child = Some(Guarded::spawn(
            format!("operator replica {}", self.name),
            command,
            &self.log_path(),
        )?);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }

    /// (registration, metrics) addresses, the same across restarts.
    pub fn addrs(&self) -> (SocketAddr, SocketAddr) {
        (self.registration, self.metrics)
    }

    /// The log of the current (or last) start.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir
            .join(format!("{}-{}.log", self.name, self.starts))
    }

    /// The log of the current (or last) start, as it is now.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("replica {} is not running", self.name))?;
        child
            .signal(signal)
            .map_err(|e| anyhow::anyhow!("signal {signal} to replica {}: {e}", self.name))
    }

    /// kill -9 (to its process group), and reaps it.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// SIGSTOP: frozen, its sockets open.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// SIGTERM (does not wait: see [`Replica::wait_exit`]).
    pub fn terminate(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("replica {} is not running", self.name))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "replica {} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again (same identity and ports), killing it first if it runs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether it says it holds the lease (`msp_leader 1`); false when it
    /// does not answer within 300 ms (frozen, dead, starting).
    pub async fn is_leader(&self) -> bool {
        let get = tokio::time::timeout(
            Duration::from_millis(300),
            http_get(self.metrics, "/metrics"),
        );
        matches!(get.await, Ok(Ok((200, body))) if body.lines().any(|l| l == "msp_leader 1"))
    }

    /// Waits until it says it leads; how long that took.
    pub async fn wait_leading(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while !self.is_leader().await {
            if start.elapsed() > timeout {
                anyhow::bail!("{} did not lead within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(start.elapsed())
    }

    /// Waits until its `/readyz` answers 200 (a leader with synced caches,
    /// or a standby that knows the leader).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        crate::operator::wait_for(&format!("/readyz of {}", self.name), timeout, || async {
            matches!(http_get(self.metrics, "/readyz").await, Ok((200, _)))
        })
        .await
    }

    /// A counter or gauge without labels from its `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.metrics, "/metrics").await.ok()?;
        crate::operator::metric_value(&body, name)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A frozen child must be woken to die promptly under SIGKILL's reap.
        let _ = self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// "write sent" lines (API writes that passed the fence) in a replica's log.
pub fn writes_sent(log: &str) -> usize {
    log.lines().filter(|l| l.contains("\"write sent\"")).count()
}

/// Which replica leads: waits up to `timeout` until exactly one of
/// `replicas` says it does, and returns its index.
pub async fn wait_leader(replicas: &[&Replica], timeout: Duration) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.is_leader().await {
                leaders.push(i);
            }
        }
        if let [one] = leaders.as_slice() {
            return Ok(*one);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("no single leader within {timeout:?} (leaders: {leaders:?})");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback stand-in for the operator's Service: each new connection goes
/// to the next backend (round robin) whose `/readyz` answers 200, checked
/// every 200 ms with a 300 ms deadline; connections to a backend that stops
/// answering are closed (as HTTP/2 keepalive would find a frozen peer), so
/// storage nodes reconnect to a live replica.
pub struct ServiceProxy {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ServiceProxy {
    /// Proxies to `backends`: (registration address, metrics address) each.
    pub async fn start(backends: Vec<(SocketAddr, SocketAddr)>) -> anyhow::Result<ServiceProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready) = watch::channel(vec![false; backends.len()]);
        let probes: Vec<SocketAddr> = backends.iter().map(|(_, m)| *m).collect();
        let health = tokio::spawn(async move {
            loop {
                let mut now = Vec::with_capacity(probes.len());
                for probe in &probes {
                    let get = tokio::time::timeout(
                        Duration::from_millis(300),
                        http_get(*probe, "/readyz"),
                    );
                    now.push(matches!(get.await, Ok(Ok((200, _)))));
                }
                ready_tx.send_if_modified(|old| std::mem::replace(old, now.clone()) != now);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let next = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let up: Vec<usize> = ready
                    .borrow()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, up)| up.then_some(i))
                    .collect();
                if up.is_empty() {
                    // Nobody ready: refused, as a Service without endpoints.
                    continue;
                }
                let i = up[next.fetch_add(1, Ordering::Relaxed) % up.len()];
                let (backend, mut ready) = (backends[i].0, ready.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = ready.wait_for(|r| !r[i]) => {}
                    }
                });
            }
        });
        Ok(ServiceProxy {
            addr,
            tasks: vec![health, accept],
        })
    }

    /// Where storage nodes register: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
