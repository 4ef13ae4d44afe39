//! Shadow mode: a candidate policy decides beside the live one on the same
//! observations and is never acted upon.
//!
//! The candidate lives in a [`PolicyEngine`] of its own (its own instances,
//! the same limits), bundled until a candidate is loaded into it; while it
//! holds only the bundled default the shadow is off. The live path pays for
//! a shadow only in [`Shadow::offer`]: a copy of the observation and of its
//! decision into a bounded queue, never a wait. One task takes them off the
//! queue, runs the candidate, compares ([`crate::compare`]) and hands each
//! [`Verdict`] to a sink. So a slow, trapping or spinning candidate costs the
//! reconcile nothing, and when the task falls behind the queue fills and
//! offers are dropped (counted) instead of piling up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use msp_policy_sdk::model::{Decision, Observation};
use tokio::sync::mpsc;

use crate::compare::{self, Field};
use crate::{ActivePolicy, PolicyEngine, PolicyError, PolicySource};

/// Offers waiting for the candidate at most: a burst of reconciles (every
/// pool woken at once) fits; a candidate that cannot keep up loses offers.
pub const QUEUE: usize = 1024;

/// One live decision and the candidate's on the same observation.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub obs: Observation,
    /// The live decision, or the kind of its failure.
    pub live: Result<Decision, &'static str>,
    pub candidate: Result<Decision, PolicyError>,
    /// The candidate that decided.
    pub policy: ActivePolicy,
    /// Where the candidate differs; empty when it agrees.
    pub differs: Vec<Field>,
}

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No candidate loaded, or the task stopped.
    Off,
    Queued,
    /// The queue was full.
    Dropped,
}

struct Job {
    obs: Observation,
    live: Result<Decision, &'static str>,
}

struct Inner {
    candidate: PolicyEngine,
    armed: AtomicBool,
    queue: mpsc::Sender<Job>,
    dropped: AtomicU64,
}

/// The candidate's engine and the queue in front of it. Clones share both;
/// the task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Shadow {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("candidate", &self.inner.candidate.active())
            .field("armed", &self.armed())
            .finish()
    }
}

impl Shadow {
    /// A shadow around `candidate` (usually a fresh engine with the limits of
    /// the live one) and the task that decides its offers, for the caller to
    /// spawn; `sink` gets every verdict, on that task. The task ends when
    /// the last clone of the shadow is dropped.
    pub fn new(
        candidate: PolicyEngine,
        capacity: usize,
        sink: impl FnMut(Verdict) + Send + 'static,
    ) -> (Shadow, impl Future<Output = ()> + Send + 'static) {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        let shadow = Shadow {
            inner: Arc::new(Inner {
                candidate: candidate.clone(),
                armed: AtomicBool::new(false),
                queue,
                dropped: AtomicU64::new(0),
            }),
        };
        shadow.sync();
        // The task holds the engine, not `Inner`, so that dropping the last
        // `Shadow` closes the queue and ends it.
        (shadow, run(candidate, jobs, sink))
    }

    /// The candidate's engine (load a candidate into it, or reset it to the
    /// bundled default to turn the shadow off), then call [`Shadow::sync`].
    pub fn candidate(&self) -> &PolicyEngine {
        &self.inner.candidate
    }

    /// Turns the shadow on when the candidate engine holds a loaded module,
    /// off when it holds the bundled default; returns whether it is on.
    pub fn sync(&self) -> bool {
        let on = self.inner.candidate.active().source != PolicySource::Bundled;
        self.inner.armed.store(on, Ordering::Relaxed);
        on
    }

    /// Whether offers are taken.
    pub fn armed(&self) -> bool {
        self.inner.armed.load(Ordering::Relaxed)
    }

    /// Hands a live decision (or the kind of its failure) on `obs` to the
    /// candidate. Never waits.
    pub fn offer(&self, obs: &Observation, live: Result<&Decision, &'static str>) -> Offer {
        if !self.armed() {
            return Offer::Off;
        }
        let job = Job {
            obs: obs.clone(),
            live: live.cloned(),
        };
        match self.inner.queue.try_send(job) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                Offer::Dropped
            }
            // The task was stopped (shutdown): nobody to ask.
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Off,
        }
    }

    /// Offers dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

async fn run(
    candidate: PolicyEngine,
    mut jobs: mpsc::Receiver<Job>,
    mut sink: impl FnMut(Verdict) + Send + 'static,
) {
    while let Some(Job { obs, live }) = jobs.recv().await {
        let policy = candidate.active();
        // Turned off after this was offered: no candidate to ask.
        if policy.source == PolicySource::Bundled {
            continue;
        }
        let result = candidate.decide(&obs).await;
        let differs = compare::outcomes(
            live.as_ref().map_err(|kind| *kind),
            result.as_ref().map_err(PolicyError::kind),
        );
        sink(Verdict {
            obs,
            live,
            candidate: result,
            policy,
            differs,
        });
    }
}
