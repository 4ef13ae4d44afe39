//! The storage node as a child process, for end-to-end tests and the demo.
//!
//! [`StorageNodeProcess`] spawns the real `storage-node` binary (integration
//! tests pass `env!("CARGO_BIN_EXE_storage-node")`), waits until its gRPC port
//! accepts connections, and can stop it gracefully (SIGTERM: it deregisters),
//! kill it (SIGKILL: a crash), or restart it on the same endpoint. The child
//! is the harness's [`Guarded`] process: killed with its process group on
//! drop and, through `PR_SET_PDEATHSIG`, when the test process dies, so no
//! storage node outlives its test.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits:
//! start and restart the node from a thread that lives as long as the test
//! (the test thread or a runtime worker), not from `spawn_blocking`, whose
//! threads are retired after a while of idleness and would take the node
//! with them.
//!
//! The waiting methods block the calling thread: from an async test that also
//! serves the registration API, use a multi-threaded runtime
//! (`#[tokio::test(flavor = "multi_thread")]`) so the node's Deregister can be
//! answered while `terminate` waits.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::control_plane::Guarded;

/// How long a node gets to open its port, and to exit after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why starting or stopping the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("spawning {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the call log's dir: {0}")]
    CallLog(#[source] std::io::Error),
    #[error("picking a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("storage node exited before it was ready: {0}")]
    ExitedEarly(ExitStatus),
    #[error("storage node did not listen on {0} within {READY_TIMEOUT:?}")]
    NotReady(SocketAddr),
    #[error("storage node did not exit within {EXIT_TIMEOUT:?} after SIGTERM")]
    NoExit,
    #[error("waiting for the storage node: {0}")]
    Wait(#[source] std::io::Error),
}

/// What to start the node with.
#[derive(Debug, Clone)]
pub struct StorageNodeOptions {
    /// `--node-name`.
    pub node_name: String,
    /// `--grpc-endpoint`; `None` picks a free port on 127.0.0.1 once, then
    /// keeps it across restarts.
    pub grpc_endpoint: Option<SocketAddr>,
    /// `--registration-endpoint`, e.g. `http://127.0.0.1:50051`.
    pub registration_endpoint: Option<String>,
    /// `--heartbeat-secs`.
    pub heartbeat_secs: u64,
    /// `--allow-path-prefix` (each one), for disks outside /dev.
    pub allow_path_prefixes: Vec<PathBuf>,
    /// Further arguments, passed as they are.
    pub extra_args: Vec<String>,
}

impl StorageNodeOptions {
    /// Defaults for a node called `node_name`: free port, no registration,
    /// 5 s heartbeat.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            grpc_endpoint: None,
            registration_endpoint: None,
            heartbeat_secs: 5,
            allow_path_prefixes: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// A running `storage-node` child process.
#[derive(Debug)]
pub struct StorageNodeProcess {
    binary: PathBuf,
    options: StorageNodeOptions,
    endpoint: SocketAddr,
    child: Option<Guarded>,
    /// Holds `calls.log`, the node's `--call-log` across its restarts.
    calls: tempfile::TempDir,
}

impl StorageNodeProcess {
    /// Spawns the binary at `binary` and waits until its gRPC port accepts
    /// connections.
    pub fn start(
        binary: impl Into<PathBuf>,
        options: StorageNodeOptions,
    ) -> Result<Self, ProcessError> {
        let endpoint = match options.grpc_endpoint {
            Some(addr) => addr,
            None => free_port()?,
        };
        let binary = binary.into();
        if let Some(name) = binary.file_name().and_then(|n| n.to_str()) {
            crate::leftovers::kill_orphans(name);
        }
        let calls = tempfile::Builder::new()
            .prefix("msp-sn-calls-")
            .tempdir()
            .map_err(ProcessError::CallLog)?;
        let mut node = Self {
            binary,
            options,
            endpoint,
            child: None,
            calls,
        };
        node.spawn()?;
        Ok(node)
    }

    /// `ip:port` of the node's gRPC server (what it registers as).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// `http://ip:port`, for a tonic client.
    pub fn uri(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    /// The node name it was started with.
    pub fn node_name(&self) -> &str {
        &self.options.node_name
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guarded::pid)
    }

    /// The method of every gRPC call the node received, in order, across
    /// its restarts (`/mayastor.v1.PoolRpc/ImportPool`, ...).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.calls.path().join("calls.log"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The calls among [`StorageNodeProcess::calls`] that may write (all
    /// but the listings and reads: `List…`, `Get…`, `Stat…`).
    pub fn writing_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| {
                let method = c.rsplit('/').next().unwrap_or("");
                !["List", "Get", "Stat"]
                    .iter()
                    .any(|read| method.starts_with(read))
            })
            .collect()
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Graceful stop: SIGTERM (the node deregisters), then waits for exit.
    pub fn terminate(&mut self) -> Result<ExitStatus, ProcessError> {
        let Some(child) = self.child.take() else {
            return Err(ProcessError::Wait(std::io::Error::other("not running")));
        };
        child.terminate(EXIT_TIMEOUT).ok_or(ProcessError::NoExit)
    }

    /// Crash: SIGKILL (to its process group), no deregistration. Does
    /// nothing if not running.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Starts the node again on the same endpoint (killing it first if it
    /// still runs). Its pools are not loaded until CreatePool/ImportPool.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), ProcessError> {
        let o = &self.options;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--node-name")
            .arg(&o.node_name)
            .arg("--grpc-endpoint")
            .arg(self.endpoint.to_string())
            .arg("--heartbeat-secs")
            .arg(o.heartbeat_secs.to_string());
        if let Some(reg) = &o.registration_endpoint {
            cmd.arg("--registration-endpoint").arg(reg);
        }
        cmd.arg("--call-log")
            .arg(self.calls.path().join("calls.log"));
        for prefix in &o.allow_path_prefixes {
            cmd.arg("--allow-path-prefix").arg(prefix);
        }
        cmd.args(&o.extra_args)
            .env_remove("MAYASTOR_HB_INTERVAL_SEC");
        // Quiet children unless the test run asks for logs.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = Guarded::spawn_inheriting(format!("storage node {}", o.node_name), cmd)
            .map_err(|source| ProcessError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(ProcessError::Wait)? {
                return Err(ProcessError::ExitedEarly(status));
            }
            if TcpStream::connect_timeout(&self.endpoint, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                // Dropping it kills it.
                return Err(ProcessError::NotReady(self.endpoint));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for StorageNodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the OS picks it).
fn free_port() -> Result<SocketAddr, ProcessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ProcessError::Port)?;
    listener.local_addr().map_err(ProcessError::Port)
}
