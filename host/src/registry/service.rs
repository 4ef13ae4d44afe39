//! The v1 `Registration` gRPC service storage nodes call (as the io-engine
//! calls the Mayastor control plane): each call goes to the [`NodeRegistry`].

use std::net::SocketAddr;

use msp_proto::v1::registration_server::{Registration, RegistrationServer};
use msp_proto::v1::{DeregisterRequest, RegisterRequest};

use super::NodeRegistry;

/// The v1 `Registration` service, backed by the registry.
pub struct RegistrationService {
    registry: NodeRegistry,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.registry.register(request.get_ref())?;
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

/// Serves `Registration` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: NodeRegistry,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(RegistrationService { registry }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
