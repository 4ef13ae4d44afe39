//! The real OpenEBS Mayastor io-engine as a child process of a test.
//!
//! [`IoEngine::start`] gives one engine what it needs ([`host`]: hugepages,
//! a hugetlbfs mount, a running udevd), starts the binary that
//! `tests/io-engine/build.sh` built on loopback (gRPC on a free port, NVMe-oF
//! listeners on 127.0.0.1, `MAYASTOR_DELAY=1` so that its reactor sleeps
//! instead of spinning a core), registering with the given endpoint, and
//! waits until its gRPC API answers. [`IoEngine::terminate`] is the clean
//! stop (SIGTERM: the engine deregisters), [`IoEngine::kill`] a crash,
//! [`IoEngine::restart`] starts it again on the same port.
//!
//! Engines are serialised machine-wide by a file lock held while one runs:
//! the NVMe-oF ports (8420, 4421) are fixed, and two engines would also need
//! twice the hugepages. If the test process dies without running drops, the
//! kernel kills the engine (`PR_SET_PDEATHSIG`) and releases the lock; the
//! next start sweeps what that run left: its engine if still alive, its
//! mount, its hugepages (loop devices are swept by [`crate::loopdev`]).

pub mod host;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::control_plane::{Guarded, HarnessError};
use host::{Hugepages, HugetlbMount, Udevd};

/// The pinned build `tests/io-engine/build.sh` makes, under the cache root.
pub const BUILD: &str = "io-engine/mayastor-86f3f5a3-spdk-50b064f5/bin/io-engine";
/// 2 MiB pages per engine: it takes about 916 MiB with the default pools.
pub const HUGEPAGES: u64 = 1024;
/// How long the engine gets to answer gRPC, and to exit after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const TEMP_PREFIX: &str = "msp-ioe-";
const LOCK: &str = "msp-io-engine.lock";
/// File in a run dir: the pid of its engine.
const PID_FILE: &str = "engine.pid";

/// The io-engine binary: `MSP_IO_ENGINE_BIN`, else the cached build.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MSP_IO_ENGINE_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("MSP_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/msp-operator"));
    cache.join(BUILD)
}

/// The gate of a test on the real engine: the binary built, root, hugepages,
/// loop devices and udev. With `CI=true` a missing piece fails the test.
pub fn require_io_engine() -> bool {
    let bin = binary();
    crate::require(
        &format!(
            "the io-engine at {} (tests/io-engine/build.sh), root, 2 MiB hugepages, udev and loop devices",
            bin.display()
        ),
        bin.is_file()
            && host::hugepages_supported()
            && Udevd::available()
            && crate::loopdev::LoopDevice::available(),
    )
}

/// What to start an engine with.
#[derive(Debug, Clone)]
pub struct IoEngineOptions {
    /// `-N`: the node name it registers as.
    pub node_name: String,
    /// `-R`: where it registers (`http://127.0.0.1:PORT`); none: it does not.
    pub registration_endpoint: Option<String>,
    /// `MAYASTOR_HB_INTERVAL_SEC`: seconds between heartbeats.
    pub heartbeat_secs: u64,
}

impl IoEngineOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        IoEngineOptions {
            node_name: node_name.into(),
            registration_endpoint: None,
            heartbeat_secs: 1,
        }
    }
}

/// A running io-engine and what it holds of the machine.
pub struct IoEngine {
    options: IoEngineOptions,
    endpoint: SocketAddr,
    // Drop order is field order: the engine stops before its mount, pages,
    // udevd and lock are given back.
    child: Option<Guarded>,
    huge: HugetlbMount,
    _pages: Hugepages,
    _udevd: Udevd,
    _lock: File,
    dir: tempfile::TempDir,
    /// How long the last start took until gRPC answered.
    started_in: Duration,
    /// Starts so far (each gets its own log).
    starts: u32,
}

impl IoEngine {
    /// Starts an engine for `options` and waits until its gRPC API answers.
    /// Blocks while another engine runs on this machine.
    pub fn start(options: IoEngineOptions) -> Result<IoEngine, HarnessError> {
        let lock = lock_machine()?;
        sweep_dead_runs();
        let dir = tempfile::Builder::new()
            .prefix(&crate::leftovers::run_dir_prefix(TEMP_PREFIX))
            .tempdir()
            .map_err(|e| HarnessError::io("creating the engine's run dir", e))?;
        let pages = Hugepages::reserve(HUGEPAGES, dir.path())?;
        let huge = HugetlbMount::mount(&dir.path().join("hugepages"))?;
        let udevd = Udevd::ensure(&dir.path().join("udevd.log"))?;
        let port = crate::control_plane::free_ports(1)?[0];
        let mut engine = IoEngine {
            options,
            endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            huge,
            _pages: pages,
            _udevd: udevd,
            _lock: lock,
            dir,
            started_in: Duration::ZERO,
            starts: 0,
        };
        engine.spawn()?;
        Ok(engine)
    }

    /// `127.0.0.1:PORT` of its gRPC API (what it registers as).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// `http://127.0.0.1:PORT`, for a tonic client.
    pub fn uri(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    /// The engine's pools, as its v1 ListPools answers.
    pub async fn pools(&self) -> anyhow::Result<Vec<msp_proto::v1::Pool>> {
        let mut c = msp_proto::v1::pool_rpc_client::PoolRpcClient::connect(self.uri()).await?;
        Ok(c.list_pools(msp_proto::v1::ListPoolOptions::default())
            .await?
            .into_inner()
            .pools)
    }

    pub fn node_name(&self) -> &str {
        &self.options.node_name
    }

    /// From spawn to the first answered gRPC call, for the last (re)start.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The engine's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.child
            .as_ref()
            .map(Guarded::log_tail)
            .unwrap_or_default()
    }

    /// Clean stop: SIGTERM (it deregisters), then waits for it to exit.
    /// `None` when it had to be killed.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.child.take()?.terminate(EXIT_TIMEOUT)
    }

    /// Crash: SIGKILL, no deregistration.
    pub fn kill(&mut self) {
        // Dropping the guard kills its process group.
        self.child.take();
    }

    /// Starts it again on the same port (killing it first if it runs). Its
    /// pools are not loaded until CreatePool or ImportPool.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.spawn()
    }

    /// Shares replica `uuid` over NVMe-oF on loopback and connects this
    /// test's NVMe/TCP host to it (the kernel here has no initiator).
    pub async fn replica_host(&self, uuid: &str) -> anyhow::Result<crate::nvme_tcp::NvmeTcp> {
        use msp_proto::v1;
        let mut rep = v1::replica_rpc_client::ReplicaRpcClient::connect(self.uri()).await?;
        let shared = rep
            .share_replica(v1::ShareReplicaRequest {
                uuid: uuid.into(),
                share: v1::ShareProtocol::Nvmf as i32,
                allowed_hosts: Vec::new(),
            })
            .await?
            .into_inner();
        let (addr, nqn) = crate::nvme_tcp::parse_nvmf_uri(&shared.uri)
            .ok_or_else(|| anyhow::anyhow!("ShareReplica answered {:?}", shared.uri))?;
        Ok(crate::nvme_tcp::NvmeTcp::connect(addr, &nqn).await?)
    }

    /// Reads `len` bytes at `offset` of replica `uuid` through the engine,
    /// and unshares it again.
    pub async fn read_replica(
        &self,
        uuid: &str,
        offset: u64,
        len: usize,
    ) -> anyhow::Result<Vec<u8>> {
        use msp_proto::v1;
        let mut host = self.replica_host(uuid).await?;
        let data = host.read(offset, len).await?;
        drop(host);
        let mut rep = v1::replica_rpc_client::ReplicaRpcClient::connect(self.uri()).await?;
        rep.unshare_replica(v1::UnshareReplicaRequest { uuid: uuid.into() })
            .await?;
        Ok(data)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.starts += 1;
        let dir = self.dir.path();
        let mut cmd = Command::new(binary());
        cmd.arg("-g")
            .arg(self.endpoint.to_string())
            .arg("-N")
            .arg(&self.options.node_name)
            .arg("-r")
            .arg(dir.join("io-engine.sock"))
            .arg("-T")
            .arg("ip:127.0.0.1")
            .arg("--ptpl-dir")
            .arg(dir.join("ptpl"))
            .arg("--huge-dir")
            .arg(self.huge.dir())
            .env("MAYASTOR_DELAY", "1")
            .env(
                "MAYASTOR_HB_INTERVAL_SEC",
                self.options.heartbeat_secs.to_string(),
            )
            .env_remove("RUST_LOG");
        if let Some(reg) = &self.options.registration_endpoint {
            cmd.arg("-R").arg(reg);
        }
        let log = dir.join(format!("io-engine-{}.log", self.starts));
        let spawned = Instant::now();
        let mut child = Guarded::spawn("io-engine", cmd, &log)?;
        std::fs::write(dir.join(PID_FILE), child.pid().to_string())
            .map_err(|e| HarnessError::io("recording the engine's pid", e))?;
        loop {
            child.check_running()?;
            if TcpStream::connect_timeout(&self.endpoint, Duration::from_millis(200)).is_ok()
                && grpc_answers(self.endpoint)
            {
                break;
            }
            if spawned.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::Unhealthy {
                    name: "io-engine".into(),
                    waited: spawned.elapsed(),
                    log_tail: child.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.started_in = spawned.elapsed();
        self.child = Some(child);
        Ok(())
    }
}

/// True when the engine answers a v1 ListPools (its gRPC server is up; the
/// port alone opens before the pool API is ready).
fn grpc_answers(endpoint: SocketAddr) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    // A thread of its own: the caller may be inside an async runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(async {
                let Ok(Ok(mut client)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    msp_proto::v1::pool_rpc_client::PoolRpcClient::connect(format!(
                        "http://{endpoint}"
                    )),
                )
                .await
                else {
                    return false;
                };
                let mut req = tonic::Request::new(msp_proto::v1::ListPoolOptions::default());
                req.set_timeout(Duration::from_secs(2));
                client.list_pools(req).await.is_ok()
            })
        })
        .join()
        .unwrap_or(false)
    })
}

/// Holds the machine-wide engine lock until the returned file is closed
/// (also by the kernel when the process dies).
fn lock_machine() -> Result<File, HarnessError> {
    let path = std::env::temp_dir().join(LOCK);
    let file = File::create(&path)
        .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
    // flock(2), blocking until the lock is ours.
    file.lock()
        .map_err(|e| HarnessError::io("locking the io-engine slot", e))?;
    Ok(file)
}

/// Gives back what runs killed outright left: their engine (should the death
/// signal have missed it), hugetlbfs mount and hugepages. Call with the
/// machine lock held.
fn sweep_dead_runs() {
    for dir in crate::leftovers::dead_run_dirs(TEMP_PREFIX) {
        if let Some(pid) = read_number(&dir.join(PID_FILE))
            && let Ok(pid) = libc::pid_t::try_from(pid)
            && crate::leftovers::pid_alive(pid)
            && is_engine(pid)
        {
            // SAFETY: kill has no memory preconditions; the pid is an engine.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let start = Instant::now();
            while crate::leftovers::pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        host::unmount(&dir.join("hugepages"));
        if let Some(pages) = read_number(&dir.join(host::HUGEPAGES_FILE)) {
            host::give_back(pages);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs the io-engine binary (a reused pid runs something else).
fn is_engine(pid: libc::pid_t) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "io-engine"))
}

/// The opening of an end-to-end test on the real engine, as
/// [`crate::operator::Scene`] is for the stand-in: a control plane, the
/// operator ready, Node `node` labelled, and an io-engine for it registered
/// with the operator (heartbeat every second against the tests' 2 s deadline).
///
/// Fields drop in declaration order: the engine stops (and deregisters)
/// before the operator, the operator before the control plane.
pub struct EngineScene {
    pub engine: IoEngine,
    pub op: crate::operator::Operator,
    pub admin: kube::Client,
    pub cp: crate::control_plane::ControlPlane,
}

impl EngineScene {
    /// Starts it all. Blocks the calling thread while another engine runs
    /// (call from the test's own thread, which the engine's death signal is
    /// tied to, in a multi-threaded runtime).
    pub async fn start(node: &str) -> anyhow::Result<EngineScene> {
        let (cp, operator_client) = crate::operator::start_cluster().await?;
        let admin = cp.client().await?;
        let mut op = crate::operator::Operator::start(operator_client, &[]).await?;
        op.wait_ready(crate::operator::WAIT).await?;
        crate::operator::create_node(&admin, node, true).await?;
        let mut options = IoEngineOptions::new(node);
        options.registration_endpoint = Some(op.registration_endpoint());
        let engine = tokio::task::block_in_place(|| IoEngine::start(options))?;
        Ok(EngineScene {
            engine,
            op,
            admin,
            cp,
        })
    }
}
