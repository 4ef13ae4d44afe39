//! The operations endpoint (axum): `/metrics` in Prometheus text format,
//! `/healthz` (the process serves), `/readyz` (this replica can serve
//! storage nodes: the leader once its watch caches are synced, or a standby
//! that knows the leader it forwards registrations to).
//!
//! A standby counts as ready on purpose: with readiness = "is the leader", a
//! rolling update (maxUnavailable 0) would wait forever for the new pod, and
//! a PodDisruptionBudget would count the standby as down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What `/readyz` answers from.
#[derive(Default)]
pub struct Readiness {
    /// The leader's watch caches are synced.
    synced: AtomicBool,
    /// None: no election (always the leader); else the holder as last seen.
    role: Mutex<Option<Role>>,
    /// How policy modules are admitted, once the leader knows.
    trust: Mutex<Option<crate::policy::trust::TrustWatch>>,
}

/// This replica's part in the election, for the probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Standby { leader: Option<String> },
}

impl Readiness {
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = Some(role);
    }

    pub fn set_policy_trust(&self, trust: crate::policy::trust::TrustWatch) {
        *self.trust.lock().unwrap_or_else(|e| e.into_inner()) = Some(trust);
    }

    /// (ready, what it means; and how policies are admitted, once known).
    pub fn answer(&self) -> (bool, String) {
        let (ready, said) = self.role_answer();
        let trust = self.trust.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match trust {
            Some(trust) => (ready, format!("{said}; {}", trust.borrow().describe())),
            None => (ready, said),
        }
    }

    fn role_answer(&self) -> (bool, String) {
        let role = self.role.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let synced = self.synced.load(Ordering::Acquire);
        match role {
            None | Some(Role::Leader) if synced => (true, "ready: leader".into()),
            None | Some(Role::Leader) => (false, "leader: caches not synced".into()),
            Some(Role::Standby {
                leader: Some(leader),
            }) => (
                true,
                format!("ready: standby: leader is {leader} (registrations are forwarded to it)"),
            ),
            Some(Role::Standby { leader: None }) => (
                false,
                "standby: no leader yet (the lease is free or expiring)".into(),
            ),
        }
    }
}

#[derive(Clone)]
struct Probes {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

async fn metrics(State(p): State<Probes>) -> impl IntoResponse {
    match p.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<Probes>) -> impl IntoResponse {
    match p.ready.answer() {
        (true, body) => (StatusCode::OK, body),
        (false, body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

/// The router, for serving and for tests.
pub fn router(metrics: Arc<Metrics>, ready: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Probes { metrics, ready })
}

/// Binds the endpoint (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(Readiness::default());
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = crate::lifecycle::shutdown::Shutdown::new();
        let server = tokio::spawn(serve(listener, metrics.clone(), ready.clone(), stop.wait()));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 503"));
        ready.set_synced(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 200"));
        ready.set_role(Role::Standby { leader: None });
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.0 503"));
        ready.set_role(Role::Standby {
            leader: Some("op-0".into()),
        });
        let standby = get(addr, "/readyz").await;
        assert!(standby.starts_with("HTTP/1.0 200"), "{standby}");
        assert!(standby.contains("standby: leader is op-0"), "{standby}");
        drop(metrics.reconcile_timer());
        assert!(
            get(addr, "/metrics")
                .await
                .contains("msp_reconcile_total 1")
        );
        stop.trigger();
        server.await.expect("join").expect("serve");
    }
}
