//! One running storage node: its gRPC server (v0 and v1 pool APIs on one
//! port) and its registration heartbeat, started together and stopped
//! together. The binary runs one of these, or many in virtual-node mode;
//! tests and benchmarks may run them in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use msp_proto::v0::mayastor_server::MayastorServer;
use msp_proto::v1::{
    host_rpc_server::HostRpcServer, pool_rpc_server::PoolRpcServer,
    replica_rpc_server::ReplicaRpcServer,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use uuid::Uuid;

use super::grpc::PoolService;
use super::pools::Pools;
use super::registration::Registrar;

/// How to run one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    /// Address to listen on; port 0 picks one.
    pub listen: SocketAddr,
    /// Where to register, e.g. `http://127.0.0.1:50051`; `None`: no registration.
    pub registration_endpoint: Option<String>,
    /// IP to register instead of the listen IP (for a 0.0.0.0 listener).
    pub advertise_address: Option<std::net::IpAddr>,
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    /// Prefixes block-device paths must start with; empty: in-memory disks only.
    pub allowed_prefixes: Vec<PathBuf>,
    /// Also ask libblkid (`wipefs`) before writing to a blank-looking disk,
    /// refusing it unless the probe finds nothing.
    pub use_blkid: bool,
    /// Fault injection: how long after making a pool CreatePool answers.
    pub create_reply_delay: Duration,
    /// A file to append the method of every call received to, one a line.
    pub call_log: Option<PathBuf>,
}

impl NodeConfig {
    /// The node most tests start: on loopback (a free port), registering
    /// nowhere, a heartbeat a second, disks under /dev without the blkid
    /// probe, no faults, no call log. Change fields with struct update.
    pub fn on_loopback(node_name: &str) -> Self {
        Self {
            node_name: node_name.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registration_endpoint: None,
            advertise_address: None,
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(1),
            allowed_prefixes: vec!["/dev".into()],
            use_blkid: false,
            create_reply_delay: Duration::ZERO,
            call_log: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("node task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("opening the call log {path}: {source}")]
    CallLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The call log: one line per call received, appended as it arrives (a
/// call that never answers is in it too).
#[derive(Debug)]
struct CallLog(std::sync::Mutex<std::fs::File>);

impl CallLog {
    fn open(path: &std::path::Path) -> std::io::Result<CallLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(CallLog(std::sync::Mutex::new(file)))
    }

    fn record(&self, method: &str) {
        use std::io::Write;
        let mut file = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = writeln!(file, "{method}") {
            tracing::warn!(error = %e, "call log not written");
        }
    }
}

/// A started node; stop it with [`RunningNode::stop`].
#[derive(Debug)]
pub struct RunningNode {
    name: String,
    endpoint: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    registrar: Option<JoinHandle<()>>,
}

impl RunningNode {
    /// Binds the listener, starts serving and registering.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.listen,
                source,
            })?;
        let endpoint = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let service = PoolService::new(Arc::new(Pools::new(
            config.allowed_prefixes.clone(),
            config.use_blkid,
        )))
        .with_create_reply_delay(config.create_reply_delay);
        let mut server_stop = stopped.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(path) = &config.call_log {
            let log = CallLog::open(path).map_err(|source| NodeError::CallLog {
                path: path.clone(),
                source,
            })?;
            // Called with each request's head, before the service sees it.
            builder = builder.trace_fn(move |req| {
                log.record(req.uri().path());
                tracing::Span::none()
            });
        }
        let server = tokio::spawn(
            builder
                .add_service(MayastorServer::new(service.clone()))
                .add_service(PoolRpcServer::new(service.clone()))
                .add_service(ReplicaRpcServer::new(service.clone()))
                .add_service(HostRpcServer::new(service))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                }),
        );
        let advertised = SocketAddr::new(
            config.advertise_address.unwrap_or(endpoint.ip()),
            endpoint.port(),
        );
        if advertised.ip().is_unspecified() && config.registration_endpoint.is_some() {
            tracing::warn!(%advertised, "registering an unspecified address; set an advertise address");
        }
        let registrar = config.registration_endpoint.map(|reg| {
            let r = Registrar {
                registration_endpoint: reg,
                node_name: config.node_name.clone(),
                grpc_endpoint: advertised.to_string(),
                instance_uuid: Uuid::new_v4(),
                interval: config.heartbeat,
                timeout: config.heartbeat_timeout,
            };
            tokio::spawn(r.run(stopped))
        });
        tracing::info!(node = %config.node_name, %endpoint, "storage node serving");
        Ok(Self {
            name: config.node_name,
            endpoint,
            stop,
            server,
            registrar,
        })
    }

    /// The address the pool API listens on.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deregisters and stops serving.
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        if let Some(r) = self.registrar {
            r.await?;
        }
        self.server.await??;
        Ok(())
    }

    /// Waits until the server ends by itself (an error), without stopping it.
    pub async fn serve_until_stopped(&mut self) -> Result<(), NodeError> {
        (&mut self.server).await??;
        Ok(())
    }
}
