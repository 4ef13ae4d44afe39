//! Heartbeat registration with the control plane, as the io-engine does it:
//! `Register` right away and then every interval (each call with a timeout),
//! forever, whether or not the endpoint answers; one `Deregister` when the
//! node stops. The instance uuid is new for every start of the node, so the
//! control plane can tell a restart from a steady heartbeat.

use std::time::Duration;

use msp_proto::v1::{self, registration_client::RegistrationClient};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

/// Who registers where, and how often.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// Registration server, e.g. `http://127.0.0.1:50051`.
    pub registration_endpoint: String,
    /// Node name (`RegisterRequest.id`).
    pub node_name: String,
    /// Our pool API address, "ip:port".
    pub grpc_endpoint: String,
    pub instance_uuid: Uuid,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Registrar {
    /// The request sent at every heartbeat.
    pub fn request(&self) -> v1::RegisterRequest {
        v1::RegisterRequest {
            id: self.node_name.clone(),
            grpc_endpoint: self.grpc_endpoint.clone(),
            instance_uuid: Some(self.instance_uuid.to_string()),
            api_version: vec![v1::ApiVersion::V0 as i32, v1::ApiVersion::V1 as i32],
            hostnqn: None,
            features: None,
            bugfixes: None,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        // Accept "ip:port" as well as a URI.
        let uri = if self.registration_endpoint.contains("://") {
            self.registration_endpoint.clone()
        } else {
            format!("http://{}", self.registration_endpoint)
        };
        Ok(Endpoint::from_shared(uri)?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy())
    }

    /// Heartbeats until `shutdown` turns true, then deregisters once.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let channel = match self.channel() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(endpoint = %self.registration_endpoint, error = %e,
                    "bad registration endpoint; not registering");
                let _ = shutdown.wait_for(|stop| *stop).await;
                return;
            }
        };
        let mut client = RegistrationClient::new(channel);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            // The channel's own timeout bounds each call.
            match client.register(self.request()).await {
                Ok(_) if failing => {
                    tracing::info!(node = %self.node_name, "registered again");
                    failing = false;
                }
                Ok(_) => tracing::debug!(node = %self.node_name, "registered"),
                Err(e) if !failing => {
                    // Logged once per outage, then quietly retried every tick.
                    tracing::warn!(node = %self.node_name, endpoint = %self.registration_endpoint,
                        error = %e, "registration failed; retrying every heartbeat");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        let req = v1::DeregisterRequest {
            id: self.node_name.clone(),
        };
        match client.deregister(req).await {
            Ok(_) => tracing::info!(node = %self.node_name, "deregistered"),
            Err(e) => tracing::warn!(node = %self.node_name, error = %e, "deregister failed"),
        }
    }
}
