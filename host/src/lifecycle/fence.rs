//! The fence: until when this replica may act as the leader. Every write to
//! the API server (status, ledger, Events) and every storage-node call checks
//! it at the moment it is sent, so a replica that was frozen (SIGSTOP, a long
//! GC-like stall, a partition) makes no write after its lease may have passed
//! to another, even before it has run a line of its election code again.
//!
//! [`crate::lifecycle::election`] extends the fence after each successful renew to
//! "when that renew was sent + the renew deadline", a monotonic instant
//! (`CLOCK_MONOTONIC` keeps counting while the process is stopped). The
//! renew deadline is shorter than the lease duration, so the fence closes
//! before any other replica can take the lease. A request sent while the
//! fence is open gets a deadline at the instant it closes
//! ([`Fence::bounded`]): one still pending then is abandoned.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Method, Request};
use kube::Client;
use kube::client::Body;

/// A write or node call refused because this replica is not (or no longer
/// surely) the leader.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not the leader (the lease is not held, or its renewal is overdue): nothing is written")]
pub struct Fenced;

/// Shared "valid until" of the leadership; cheap to clone.
#[derive(Clone, Debug)]
pub struct Fence {
    until: Arc<Mutex<Until>>,
}

#[derive(Clone, Copy, Debug)]
enum Until {
    /// No leader election (unit tests, the registry's own tests): always open.
    Always,
    Instant(Option<Instant>),
}

impl Fence {
    /// A fence that is always open (no election).
    pub fn open() -> Fence {
        Fence {
            until: Arc::new(Mutex::new(Until::Always)),
        }
    }

    /// A fence that is closed until [`Fence::extend`] opens it.
    pub fn closed() -> Fence {
        Fence {
            until: Arc::new(Mutex::new(Until::Instant(None))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Until> {
        // A plain value behind the lock: a poisoned one is still consistent.
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open until `until` (never moved back by a late reply of an older renew).
    pub fn extend(&self, until: Instant) {
        let mut current = self.lock();
        if let Until::Instant(old) = *current {
            *current = Until::Instant(Some(old.map_or(until, |o| o.max(until))));
        }
    }

    /// Closed from now on, until the next [`Fence::extend`].
    pub fn revoke(&self) {
        let mut current = self.lock();
        if let Until::Instant(_) = *current {
            *current = Until::Instant(None);
        }
    }

    /// Ok while this replica may act.
    pub fn check(&self) -> Result<(), Fenced> {
        match *self.lock() {
            Until::Always => Ok(()),
            Until::Instant(Some(until)) if Instant::now() < until => Ok(()),
            Until::Instant(_) => Err(Fenced),
        }
    }

    pub fn is_open(&self) -> bool {
        self.check().is_ok()
    }

    /// Runs `request` when the fence is open, with a deadline at the instant
    /// it closes: a request that cannot complete while this replica surely
    /// leads (a slow connect, a server or proxy holding it) is abandoned
    /// rather than left to land after another replica may lead.
    pub async fn bounded<F: std::future::Future>(&self, request: F) -> Result<F::Output, Fenced> {
        let until = match *self.lock() {
            Until::Always => None,
            Until::Instant(Some(until)) if Instant::now() < until => Some(until),
            Until::Instant(_) => return Err(Fenced),
        };
        match until {
            None => Ok(request.await),
            Some(until) => tokio::time::timeout_at(until.into(), request)
                .await
                .map_err(|_| Fenced),
        }
    }
}

/// Requests that change nothing pass the fence (a standby may read).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `client`, with every write checked against `fence` right before it is
/// sent (reads pass). Writes refused are logged under this module's target
/// at debug level, writes sent at trace level (the failover test counts them).
pub fn client(client: Client, fence: Fence) -> Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (client, fence) = (client.clone(), fence.clone());
        async move {
            if !is_write(request.method()) {
                return client
                    .send(request)
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            }
            let (method, uri) = (request.method().clone(), request.uri().clone());
            let sent = fence
                .bounded(async {
                    tracing::trace!(%method, %uri, "write sent");
                    client.send(request).await
                })
                .await;
            match sent {
                Ok(reply) => {
                    reply.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(fenced) => {
                    // Refused, or cut off when the fence closed.
                    tracing::debug!(%method, %uri, "write fenced");
                    Err(Box::new(fenced) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        }
    });
    Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_fence_opens_until_the_instant_and_closes_on_revoke() {
        let fence = Fence::closed();
        assert!(fence.check().is_err());
        fence.extend(Instant::now() + Duration::from_secs(60));
        assert!(fence.is_open());
        // An older renew's reply does not shorten it.
        fence.extend(Instant::now());
        assert!(fence.is_open());
        fence.revoke();
        assert!(!fence.is_open());
        fence.extend(Instant::now() - Duration::from_millis(1));
        assert!(!fence.is_open(), "an instant in the past is closed");
        assert!(Fence::open().is_open());
        Fence::open().revoke();
    }

    /// Issue 23 item 11: a write sent while the fence is open is cut off
    /// when it closes, not left to land after another replica may lead.
    #[tokio::test]
    async fn a_write_that_outlasts_the_fence_is_cut_off() {
        // An API server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_millis(300));
        let fenced = client(Client::try_from(config).expect("client"), fence);
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(fenced, "mayastor");
        let write = tokio::time::timeout(
            Duration::from_secs(10),
            api.delete("x", &Default::default()),
        )
        .await;
        holder.abort();
        let err = write
            .expect("the write outlived the fence")
            .expect_err("no answer");
        assert!(err.to_string().contains("not the leader"), "{err}");
    }

    #[tokio::test]
    async fn a_fenced_client_refuses_writes_and_lets_reads_through() {
        // Port 1 on loopback refuses: a request that passes the fence fails
        // with a connection error, one that does not never leaves.
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let raw = Client::try_from(config).expect("client");
        let fenced = client(raw, Fence::closed());
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(fenced, "mayastor");
        let write = api
            .delete("x", &Default::default())
            .await
            .expect_err("fenced");
        assert!(write.to_string().contains("not the leader"), "{write}");
        let read = api.get("x").await.expect_err("no server");
        assert!(!read.to_string().contains("not the leader"), "{read}");
    }
}
