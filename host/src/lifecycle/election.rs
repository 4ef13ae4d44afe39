//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does it: the holder renews every retry period; another
//! replica takes the lease once it has seen no change of the record for a
//! lease duration (measured on its own monotonic clock, so clock skew
//! between nodes does not matter); every take and renew is a replace with the
//! resourceVersion read, so of two replicas racing one wins and the other gets
//! a conflict.
//!
//! Our own small module rather than the `kube-lease-manager` crate: the
//! [`Fence`] needs the instant each successful renew was *sent*, to close
//! "renew deadline" after it (before the lease can pass to another replica),
//! and release on shutdown must come after the fence closed; the crate keeps
//! both inside. It is also a hundred lines with no new dependency.
//!
//! The registration endpoint of the holder is kept in an annotation of the
//! Lease, so that a standby can forward storage nodes' registrations to it.
//!
//! A replica that restarts under the same identity (its container restarted
//! in the same pod) renews its own lease at once instead of waiting for it to
//! end: only one process per pod runs, so the old one is gone.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::lifecycle::fence::Fence;

/// Annotation of the Lease: where the holder serves Registration.
pub const ENDPOINT_ANNOTATION: &str = "msp.openebs.io/registration-endpoint";

/// Who this replica is and the election's timing.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub lease_name: String,
    pub namespace: String,
    /// Holder identity: the pod name.
    pub identity: String,
    /// Registration endpoint other replicas forward to while this one leads.
    pub endpoint: Option<String>,
    /// How long a lease is valid after its last renew, for the others.
    pub lease_duration: Duration,
    /// The leader stops acting when it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries.
    pub retry_period: Duration,
}

/// What this replica knows of the lease, for the probes and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// The identity holding the lease (None: nobody).
    pub identity: Option<String>,
    /// Its registration endpoint, when it wrote one.
    pub endpoint: Option<String>,
    /// True when that is this replica.
    pub me: bool,
}

/// Errors of the election's API calls (a conflict is not one: it is a lost race).
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("reading or writing Lease {0}: {1}")]
    Api(String, #[source] kube::Error),
    #[error("the lease is held by {0}")]
    HeldByOther(String),
}

/// The election of one replica.
pub struct Elector {
    api: Api<Lease>,
    settings: ElectionSettings,
    fence: Fence,
    holder: watch::Sender<Holder>,
    /// The record last seen (holder, renew time, transitions) and when it changed.
    observed: Option<(ObservedRecord, Instant)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ObservedRecord {
    holder: Option<String>,
    renew: Option<String>,
    duration: Option<i32>,
}

impl Elector {
    /// `client` must be unfenced: the election writes before it holds the lease.
    pub fn new(client: Client, settings: ElectionSettings, fence: Fence) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            fence,
            holder: watch::Sender::new(Holder::default()),
            observed: None,
        }
    }

    /// The lease holder as this replica knows it, as it changes.
    pub fn holder(&self) -> watch::Receiver<Holder> {
        self.holder.subscribe()
    }

    fn record_holder(&self, identity: Option<String>, endpoint: Option<String>) {
        let me = identity.as_deref() == Some(self.settings.identity.as_str());
        let new = Holder {
            identity,
            endpoint,
            me,
        };
        self.holder.send_if_modified(|old| {
            if *old == new {
                return false;
            }
            tracing::info!(holder = new.identity.as_deref().unwrap_or("<none>"),
                me = %self.settings.identity, leader = new.me, "lease holder changed");
            *old = new;
            true
        });
    }

    fn lease(&self, old: Option<&Lease>) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        let old_spec = old.and_then(|l| l.spec.clone()).unwrap_or_default();
        let mine = old_spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        let mut metadata = old
            .map(|l| l.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                name: Some(self.settings.lease_name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            });
        let annotations = metadata.annotations.get_or_insert_default();
        match &self.settings.endpoint {
            Some(endpoint) => annotations.insert(ENDPOINT_ANNOTATION.into(), endpoint.clone()),
            None => annotations.remove(ENDPOINT_ANNOTATION),
        };
        let transitions = old_spec.lease_transitions.unwrap_or(0);
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(self.settings.lease_duration)),
                acquire_time: if mine {
                    old_spec.acquire_time
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(if mine || old.is_none() {
                    transitions
                } else {
                    transitions + 1
                }),
                ..old_spec
            }),
        }
    }

    /// Notes the record read; returns when another holder's lease ends, by
    /// our clock (None: nobody holds it or we do).
    fn observe(&mut self, lease: &Lease) -> Option<Instant> {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let record = ObservedRecord {
            holder: holder.clone(),
            renew: spec.renew_time.map(|t| t.0.to_string()),
            duration: spec.lease_duration_seconds,
        };
        let seen = match &self.observed {
            Some((old, at)) if *old == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record, seen));
        let endpoint = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENDPOINT_ANNOTATION).cloned());
        self.record_holder(holder.clone(), endpoint);
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        match holder {
            Some(h) if h != self.settings.identity => Some(seen + duration),
            _ => None,
        }
    }

    /// One attempt to take or renew the lease; on success the fence is
    /// extended to when the attempt started + the renew deadline.
    pub async fn try_acquire_or_renew(&mut self) -> Result<(), ElectionError> {
        let started = Instant::now();
        let name = self.settings.lease_name.clone();
        let api_err = |e| ElectionError::Api(name.clone(), e);
        let current = self.api.get_opt(&name).await.map_err(api_err)?;
        let written = match &current {
            None => {
                self.api
                    .create(&PostParams::default(), &self.lease(None))
                    .await
            }
            Some(lease) => {
                if let Some(ends) = self.observe(lease)
                    && Instant::now() < ends
                {
                    let holder = self.holder.borrow().identity.clone().unwrap_or_default();
                    return Err(ElectionError::HeldByOther(holder));
                }
                // The resourceVersion read makes this a compare-and-swap.
                let new = self.lease(Some(lease));
                self.api.replace(&name, &PostParams::default(), &new).await
            }
        };
        match written {
            Ok(lease) => {
                self.fence.extend(started + self.settings.renew_deadline);
                self.observe(&lease);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Err(ElectionError::HeldByOther("(lost a race)".into()))
            }
            Err(e) => Err(api_err(e)),
        }
    }

    /// Waits until this replica holds the lease (true), or `stop` (false).
    /// Tries every retry period, at once when the Lease changes (a release),
    /// and right when the holder's lease ends.
    pub async fn acquire(&mut self, stop: impl std::future::Future<Output = ()>) -> bool {
        tokio::pin!(stop);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.settings.lease_name));
        // Backoff: a watch that keeps failing (RBAC, API down) must not spin.
        let changes = watcher::watcher(self.api.clone(), config).default_backoff();
        tokio::pin!(changes);
        loop {
            let wait = match self.try_acquire_or_renew().await {
                Ok(()) => return true,
                Err(ElectionError::HeldByOther(_)) => {
                    let ends = self.observed.as_ref().map(|(r, at)| {
                        *at + Duration::from_secs(r.duration.unwrap_or(0).max(0) as u64)
                    });
                    let until_end = ends.map(|e| e.saturating_duration_since(Instant::now()));
                    until_end.map_or(self.settings.retry_period, |u| {
                        u.min(self.settings.retry_period)
                    })
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election: trying again");
                    self.settings.retry_period
                }
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut stop => return false,
                    _ = &mut sleep => break,
                    event = changes.next() => match event {
                        // Only a change of the record is a reason to try early.
                        Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => break,
                        Some(_) => {}
                        // The watch ended: fall back to polling.
                        None => { sleep.as_mut().await; break; }
                    },
                }
            }
        }
    }

    /// Renews every retry period while leading; returns when the lease is
    /// lost (another holds it, or no renew succeeded within the renew
    /// deadline) or `stop` resolved. The fence is closed either way.
    pub async fn keep(&mut self, stop: impl std::future::Future<Output = ()>) -> Lost {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => { self.fence.revoke(); return Lost::Stopped }
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
            // Bounded by the fence: a renew that lands after it closed is no renew.
            let attempt =
                tokio::time::timeout(self.settings.renew_deadline, self.try_acquire_or_renew())
                    .await;
            match attempt {
                Ok(Ok(())) => {}
                Ok(Err(ElectionError::HeldByOther(holder))) => {
                    self.fence.revoke();
                    tracing::warn!(%holder, "lost the lease: it is held by another replica");
                    return Lost::Lost;
                }
                Ok(Err(err)) if self.fence.is_open() => {
                    tracing::warn!(error = %err, "renewing the lease failed; retrying");
                }
                Ok(Err(_)) | Err(_) => {}
            }
            if !self.fence.is_open() {
                self.fence.revoke();
                tracing::warn!(deadline = ?self.settings.renew_deadline,
                    "lost the lease: no renew within the renew deadline");
                return Lost::Lost;
            }
        }
    }

    /// Gives the lease up (after the fence closed): the holder cleared and a
    /// 1 s duration, so a standby takes it at once.
    pub async fn release(&mut self) {
        self.fence.revoke();
        let name = self.settings.lease_name.clone();
        let Ok(Some(mut lease)) = self.api.get_opt(&name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.record_holder(None, None);
                tracing::info!("lease released");
            }
            Err(err) => tracing::warn!(error = %err, "releasing the lease failed"),
        }
    }
}

/// The Lease's whole seconds for `duration`, rounded up: the others wait at
/// least as long as was checked against the renew deadline (rounded down,
/// a fractional duration would let another replica lead while this one's
/// fence is still open).
fn lease_seconds(duration: Duration) -> i32 {
    let secs = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
        .max(1);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Why [`Elector::keep`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The lease passed to another replica or could not be renewed in time.
    Lost,
    /// Shutdown: the lease is still ours, to release.
    Stopped,
}

/// The holder identity: `POD_NAME` (the downward API), else the host name
/// with the process id (two processes on one host must not share an identity).
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "msp-operator".into());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23 item 11: the Lease says the duration that was checked
    /// against the renew deadline; truncated to whole seconds, another
    /// replica could take it while this one's fence is still open.
    #[tokio::test]
    async fn the_lease_says_no_less_than_the_checked_duration() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let settings = ElectionSettings {
            lease_name: "l".into(),
            namespace: "mayastor".into(),
            identity: "me".into(),
            endpoint: None,
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_millis(2200),
            retry_period: Duration::from_millis(500),
        };
        let elector = Elector::new(client, settings.clone(), Fence::closed());
        let written = elector
            .lease(None)
            .spec
            .and_then(|s| s.lease_duration_seconds)
            .expect("a duration");
        let written = Duration::from_secs(u64::try_from(written).expect("positive"));
        assert!(
            written >= settings.lease_duration,
            "the Lease says {written:?} while {:?} was checked",
            settings.lease_duration
        );
    }
}
