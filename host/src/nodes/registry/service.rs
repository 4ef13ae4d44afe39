//! The v1 `Registration` gRPC service storage nodes call (as the io-engine
//! calls the Mayastor control plane): on the leader each call is checked by
//! the [`Admission`] gate, then goes to the [`NodeRegistry`]; a standby
//! forwards it to the leader's endpoint from the Lease ([`Leadership`]), so
//! a node reaches the leader whichever replica the Service picked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::Recorder;
use msp_proto::v1::registration_client::RegistrationClient;
use msp_proto::v1::registration_server::{Registration, RegistrationServer};
use msp_proto::v1::{DeregisterRequest, RegisterRequest};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::NodeRegistry;
use super::admission::Admission;
use crate::lifecycle::election::Holder;
use crate::lifecycle::fence::Fence;
use crate::metrics::Metrics;
use crate::state::events;

/// The registration check and where its refusals are reported.
#[derive(Clone)]
pub struct Gate {
    pub admission: Admission,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

/// Whether this replica leads, and who does: a standby forwards each call
/// to the leader's endpoint (from the Lease), so a storage node that reached
/// either replica through the Service reaches the leader.
#[derive(Clone)]
pub struct Leadership {
    pub fence: Fence,
    pub holder: watch::Receiver<Holder>,
}

/// The v1 `Registration` service, backed by the registry.
pub struct RegistrationService {
    registry: NodeRegistry,
    /// None: every registration is accepted (the registry's own tests).
    gate: Option<Gate>,
    /// None: always the leader (no election).
    leadership: Option<Leadership>,
    /// The client of the leader's endpoint last forwarded to.
    forward: Mutex<Option<(String, RegistrationClient<Channel>)>>,
}

/// Deadline of a call forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

impl RegistrationService {
    pub fn new(registry: NodeRegistry, gate: Option<Gate>) -> Self {
        RegistrationService {
            registry,
            gate,
            leadership: None,
            forward: Mutex::new(None),
        }
    }

    /// The service of a replica that may be a standby.
    pub fn with_leadership(self, leadership: Leadership) -> Self {
        RegistrationService {
            leadership: Some(leadership),
            ..self
        }
    }

    /// The leader's client when this replica does not lead (Ok(None) when it does).
    fn leader_client(&self) -> Result<Option<RegistrationClient<Channel>>, tonic::Status> {
        let Some(leadership) = &self.leadership else {
            return Ok(None);
        };
        if leadership.fence.is_open() {
            return Ok(None);
        }
        let holder = leadership.holder.borrow().clone();
        let (Some(leader), Some(endpoint), false) = (holder.identity, holder.endpoint, holder.me)
        else {
            return Err(tonic::Status::unavailable(
                "not the leader, and no other leader is known yet",
            ));
        };
        let mut cached = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, client)) = cached.as_ref()
            && *at == endpoint
        {
            return Ok(Some(client.clone()));
        }
        let uri = format!("http://{endpoint}");
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| {
                tonic::Status::unavailable(format!(
                    "not the leader; leader {leader} has a bad endpoint {endpoint:?}: {e}"
                ))
            })?
            .connect_timeout(FORWARD_TIMEOUT)
            .timeout(FORWARD_TIMEOUT)
            .connect_lazy();
        let client = RegistrationClient::new(channel);
        tracing::info!(%leader, %endpoint, "standby: forwarding registrations to the leader");
        *cached = Some((endpoint, client.clone()));
        Ok(Some(client))
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
        let checked = gate
            .admission
            .check(&req.id, &req.grpc_endpoint, peer.map(|p| p.ip()));
        self.refuse(gate, &req.id, &req.grpc_endpoint, peer, checked, "Register")
            .await
    }

    /// Admits a Deregister: at once when it comes from the node itself (the
    /// host of its registered endpoint or one of the Node's addresses);
    /// from elsewhere, refused when the peer is required to be the node
    /// (`--require-registration-peer`), else believed only once the node
    /// stops answering ([`NodeRegistry::confirm_deregister`]): behind a
    /// Service or a standby's forward the peer is never the node, and a
    /// stranger's Deregister of a node that still answers must change nothing.
    async fn admit_deregister(
        &self,
        req: &DeregisterRequest,
        peer: Option<SocketAddr>,
    ) -> Result<(), tonic::Status> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let registered = self.registry.view(&req.id).endpoint;
        let registered = (!registered.is_empty()).then_some(registered);
        let mut checked =
            gate.admission
                .check_deregister(&req.id, registered.as_deref(), peer.map(|p| p.ip()));
        if let Err(refusal) = &mut checked
            && !gate.admission.requires_peer()
        {
            if self.registry.confirm_deregister(&req.id).await {
                tracing::info!(node = %req.id, peer = ?peer,
                    "Deregister from another address believed: the node no longer answers");
                checked = Ok(());
            } else {
                refusal
                    .message
                    .push_str(", and the node still answers at its endpoint");
            }
        }
        let endpoint = registered.unwrap_or_default();
        self.refuse(gate, &req.id, &endpoint, peer, checked, "Deregister")
            .await
    }

    /// Reports a refused call: a log line, a metric and (rate-limited) a
    /// Warning Event on the Node it names.
    async fn refuse(
        &self,
        gate: &Gate,
        node: &str,
        endpoint: &str,
        peer: Option<SocketAddr>,
        checked: Result<(), super::admission::Refusal>,
        action: &str,
    ) -> Result<(), tonic::Status> {
        let Err(refusal) = checked else {
            return Ok(());
        };
        gate.metrics.registration_refused(refusal.kind);
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        // Not ready is the operator's own state, not the caller's doing.
        let event = (refusal.kind != "not_ready")
            .then(|| gate.admission.event_due(node))
            .flatten();
        match event {
            Some(object) => {
                tracing::warn!(%node, %endpoint, %peer, why = refusal.kind, %action,
                    "registration refused: {}", refusal.message);
                let note = format!("{action} refused (from {peer}): {}", refusal.message);
                events::publish(
                    &gate.recorder,
                    &object,
                    true,
                    "RegistrationRefused",
                    &note,
                    action,
                )
                .await;
            }
            _ => {
                tracing::debug!(%node, %endpoint, %peer, why = refusal.kind, %action,
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
        if let Some(mut leader) = self.leader_client()? {
            return leader.register(request.into_inner()).await;
        }
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
        if let Some(mut leader) = self.leader_client()? {
            return leader.deregister(request.into_inner()).await;
        }
        self.admit_deregister(request.get_ref(), request.remote_addr())
            .await?;
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
