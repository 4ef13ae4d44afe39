//! The v1 `Registration` gRPC service storage nodes call (as the io-engine
//! calls the Mayastor control plane): each call is checked by the
//! [`Admission`] gate, then goes to the [`NodeRegistry`].

use std::net::SocketAddr;
use std::sync::Arc;

use kube::runtime::events::Recorder;
use msp_proto::v1::registration_server::{Registration, RegistrationServer};
use msp_proto::v1::{DeregisterRequest, RegisterRequest};

use super::NodeRegistry;
use super::admission::Admission;
use crate::events;
use crate::metrics::Metrics;

/// The registration check and where its refusals are reported.
#[derive(Clone)]
pub struct Gate {
    pub admission: Admission,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

/// The v1 `Registration` service, backed by the registry.
pub struct RegistrationService {
    registry: NodeRegistry,
    /// None: every registration is accepted (the registry's own tests).
    gate: Option<Gate>,
}

impl RegistrationService {
    pub fn new(registry: NodeRegistry, gate: Option<Gate>) -> Self {
        RegistrationService { registry, gate }
    }

    /// Refuses a registration that fails the check, with a log line, a
    /// metric and (rate-limited) a Warning Event on the Node it names.
    async fn admit(
        &self,
        req: &RegisterRequest,
        peer: Option<SocketAddr>,
    ) -> Result<(), tonic::Status> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let Err(refusal) = gate
            .admission
            .check(&req.id, &req.grpc_endpoint, peer.map(|p| p.ip()))
        else {
            return Ok(());
        };
        gate.metrics.registration_refused(refusal.kind);
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        // Not ready is the operator's own state, not the caller's doing.
        let event = (refusal.kind != "not_ready")
            .then(|| gate.admission.event_due(&req.id))
            .flatten();
        match event {
            Some(node) => {
                tracing::warn!(node = %req.id, endpoint = %req.grpc_endpoint, %peer, why = refusal.kind,
                    "registration refused: {}", refusal.message);
                let note = format!("registration refused (from {peer}): {}", refusal.message);
                events::publish(
                    &gate.recorder,
                    &node,
                    true,
                    "RegistrationRefused",
                    &note,
                    "Register",
                )
                .await;
            }
            _ => {
                tracing::debug!(node = %req.id, endpoint = %req.grpc_endpoint, %peer, why = refusal.kind,
                "registration refused: {}", refusal.message)
            }
        }
        Err(refusal.status())
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        let peer = request.remote_addr();
        let req = request.get_ref();
        self.admit(req, peer).await?;
        if self.registry.register(req)? {
            tracing::info!(node = %req.id, peer = ?peer, "registration accepted");
        }
        Ok(tonic::Response::new(()))
    }

    async fn deregister(
        &self,
        request: tonic::Request<DeregisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.registry.deregister(&request.get_ref().id);
        Ok(tonic::Response::new(()))
    }
}

/// Binds the registration listener (so the caller learns the real port when
/// it asked for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `service` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: RegistrationService,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
