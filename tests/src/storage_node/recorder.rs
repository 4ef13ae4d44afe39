//! A registration server for tests: serves `mayastor.v1.Registration` and
//! records every Register and Deregister it receives, so a test can watch a
//! storage node's heartbeats without running the operator.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msp_proto::v1::{self, registration_server::RegistrationServer};
use tokio::sync::{Notify, watch};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One call received.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistrationEvent {
    Register(v1::RegisterRequest),
    Deregister(v1::DeregisterRequest),
}

#[derive(Debug, Default)]
struct Log {
    events: Mutex<Vec<(Instant, RegistrationEvent)>>,
    changed: Notify,
}

impl Log {
    fn push(&self, e: RegistrationEvent) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((Instant::now(), e));
        self.changed.notify_waiters();
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Log>);

#[tonic::async_trait]
impl v1::registration_server::Registration for Service {
    async fn register(&self, r: Request<v1::RegisterRequest>) -> Result<Response<()>, Status> {
        self.0.push(RegistrationEvent::Register(r.into_inner()));
        Ok(Response::new(()))
    }

    async fn deregister(&self, r: Request<v1::DeregisterRequest>) -> Result<Response<()>, Status> {
        self.0.push(RegistrationEvent::Deregister(r.into_inner()));
        Ok(Response::new(()))
    }
}

/// A running recording registration server; stops on drop.
#[derive(Debug)]
pub struct RegistrationRecorder {
    addr: SocketAddr,
    log: Arc<Log>,
    stop: watch::Sender<bool>,
}

impl RegistrationRecorder {
    /// Serves on `addr` (port 0 picks one). Must run inside a tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Log::default());
        let (stop, mut stopped) = watch::channel(false);
        let svc = RegistrationServer::new(Service(Arc::clone(&log)));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }),
        );
        Ok(Self { addr, log, stop })
    }

    /// `http://ip:port`, for `--registration-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far, with arrival times.
    pub fn events(&self) -> Vec<(Instant, RegistrationEvent)> {
        self.log
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Register requests received from node `id`.
    pub fn registers_of(&self, id: &str) -> Vec<(Instant, v1::RegisterRequest)> {
        self.events()
            .into_iter()
            .filter_map(|(t, e)| match e {
                RegistrationEvent::Register(r) if r.id == id => Some((t, r)),
                _ => None,
            })
            .collect()
    }

    /// Whether node `id` has deregistered.
    pub fn deregistered(&self, id: &str) -> bool {
        self.events()
            .iter()
            .any(|(_, e)| matches!(e, RegistrationEvent::Deregister(d) if d.id == id))
    }

    /// Waits until `done` holds for the events, or `timeout` passes; returns
    /// whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.log.changed.notified();
            if done(self) {
                return true;
            }
            // Also re-check now and then, in case a notification raced.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return done(self);
            }
        }
    }
}

impl Drop for RegistrationRecorder {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
