//! Shadow mode in the operator: a candidate policy from a ConfigMap of its
//! own (`--policy-shadow-configmap`, default `msp-policy-shadow`) decides
//! beside the live policy on the same observations and is never acted upon.
//!
//! The candidate's ConfigMap is watched, validated and reported exactly like
//! the live one ([`watch::watch`] with
//! [`PolicyReloadReporter::shadow`]) into an engine of its own. Every live
//! decision is offered to it after it was made ([`ShadowedPolicy`]: a copy
//! into a bounded queue, see [`msp_policy_engine::shadow`]). What the
//! candidate decides differently is counted by field
//! (`msp_policy_shadow_disagreements_total`), logged with the pool and both
//! decisions (at most once per [`LOG_EVERY`]) and told on the candidate
//! ConfigMap's Events ([`Tally`]): a Warning at its first disagreement, then
//! a summary with the counts every `--policy-shadow-summary` in which it
//! decided anything. Never an Event per decision.

use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::Recorder;
use msp_policy_engine::compare::Field;
use msp_policy_engine::shadow::{self, Offer, Shadow, Verdict};
use msp_policy_engine::{ActivePolicy, PolicyEngine, PolicySource};
use msp_policy_sdk::model::{Decision, Observation};

use crate::controller::decide::{DecideError, Decider};
use crate::lifecycle::shutdown::Shutdown;
use crate::metrics::Metrics;
use crate::policy::reload::{PolicyReloadReporter, configmap_ref};
use crate::policy::trust::TrustWatch;
use crate::policy::watch;
use crate::state::events;

/// At most one disagreement log line this often (the others are counted in
/// the next line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Event reason of a candidate's first disagreement.
pub const FIRST_REASON: &str = "PolicyShadowDisagreement";
/// Event reason of the periodic summary.
pub const SUMMARY_REASON: &str = "PolicyShadowSummary";

/// The live engine, each of whose decisions is also offered to the shadow.
pub struct ShadowedPolicy {
    live: PolicyEngine,
    shadow: Shadow,
    metrics: Arc<Metrics>,
}

impl Decider for ShadowedPolicy {
    fn decide<'a>(&'a self, obs: &'a Observation) -> BoxFuture<'a, Result<Decision, DecideError>> {
        Box::pin(async move {
            let result = Decider::decide(&self.live, obs).await;
            // After the live decision, and only a copy into a queue.
            if self.shadow.offer(obs, result.as_ref().map_err(|e| e.kind)) == Offer::Dropped {
                self.metrics.shadow.dropped();
            }
            result
        })
    }

    fn active(&self) -> String {
        Decider::active(&self.live)
    }

    fn digest(&self) -> Option<String> {
        Decider::digest(&self.live)
    }
}

/// One outcome for a log line or an Event: the decision as JSON, or the
/// failure (a trap's wasm backtrace cut to its first and last lines).
fn outcome<E: std::fmt::Display>(result: &Result<Decision, E>) -> String {
    match result {
        Ok(decision) => serde_json::to_string(decision).unwrap_or_else(|e| format!("{e}")),
        Err(e) => {
            let e = e.to_string();
            let mut lines = e.lines().map(str::trim);
            match (lines.next(), lines.next_back()) {
                (Some(first), Some(last)) => format!("failed ({first} … {last})"),
                _ => format!("failed ({e})"),
            }
        }
    }
}

fn fields(differs: &[Field]) -> String {
    differs
        .iter()
        .map(Field::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A disagreement in one sentence: the pool, both policies and decisions.
pub fn describe(verdict: &Verdict, live: &str) -> String {
    format!(
        "pool {}/{}: {} differs; live {live} decided {}, candidate {} decided {}",
        verdict.obs.pool.namespace,
        verdict.obs.pool.name,
        fields(&verdict.differs),
        outcome(&verdict.live),
        verdict.policy.identity(),
        outcome(&verdict.candidate),
    )
}

/// What the current candidate decided since it was loaded, for the Events.
#[derive(Debug, Default)]
pub struct Tally {
    /// sha256 of the candidate counted (another one starts a new tally).
    sha256: String,
    candidate: String,
    decisions: u64,
    disagreed: u64,
    by_field: BTreeMap<Field, u64>,
    /// The last disagreement, described.
    last: Option<String>,
    /// `decisions` at the last summary.
    summarised: u64,
    told_first: bool,
    /// sha256 of the last candidate told to have decided nothing yet.
    told_idle: String,
}

impl Tally {
    /// Counts `verdict` (`live`: the live policy's identity); returns the
    /// note of the candidate's first disagreement, to be told at once.
    pub fn record(&mut self, verdict: &Verdict, live: &str) -> Option<String> {
        if verdict.policy.sha256 != self.sha256 {
            *self = Tally {
                sha256: verdict.policy.sha256.clone(),
                candidate: verdict.policy.identity(),
                told_idle: std::mem::take(&mut self.told_idle),
                ..Tally::default()
            };
        }
        self.decisions += 1;
        if verdict.differs.is_empty() {
            return None;
        }
        self.disagreed += 1;
        for field in &verdict.differs {
            *self.by_field.entry(*field).or_default() += 1;
        }
        let described = describe(verdict, live);
        self.last = Some(described.clone());
        if std::mem::replace(&mut self.told_first, true) {
            return None;
        }
        Some(format!(
            "candidate {} disagrees with the live policy for the first time, at decision {} compared: {described}",
            self.candidate, self.decisions
        ))
    }

    /// Once per candidate `active` that has not decided anything yet: the
    /// note saying so, so that no disagreement is not read as agreement.
    pub fn idle(&mut self, active: &ActivePolicy) -> Option<String> {
        if active.source == PolicySource::Bundled
            || active.sha256 == self.sha256
            || active.sha256 == self.told_idle
        {
            return None;
        }
        self.told_idle = active.sha256.clone();
        Some(format!(
            "candidate {}: 0 decisions compared since it was loaded, so 0 disagreements say \
             nothing yet. A pool is decided when it, its Node or its storage node changes, and \
             at least every --resync; a deleted resource's pool when the sweep finds it: create, \
             label or delete a pool to see the candidate decide",
            active.identity()
        ))
    }

    /// The summary to publish when the candidate decided anything since the
    /// last one: (warning: it ever disagreed, note).
    pub fn summary(&mut self) -> Option<(bool, String)> {
        if self.decisions == self.summarised {
            return None;
        }
        let new = self.decisions - std::mem::replace(&mut self.summarised, self.decisions);
        let by_field = self
            .by_field
            .iter()
            .map(|(field, n)| format!("{} {n}", field.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let note = match &self.last {
            None => format!(
                "candidate {} agreed with the live policy on all {} decisions since it was loaded ({new} since the last summary)",
                self.candidate, self.decisions
            ),
            Some(last) => format!(
                "candidate {}: {} decisions since it was loaded ({new} since the last summary), {} disagreed with the live policy ({by_field}); last: {last}",
                self.candidate, self.decisions, self.disagreed
            ),
        };
        Some((self.disagreed > 0, note))
    }
}

/// Lets a line through at most once per `every`; says how many it held back.
#[derive(Debug)]
struct LogLimit {
    every: Duration,
    next: Option<Instant>,
    held: u64,
}

impl LogLimit {
    /// `force`: let it through all the same (a new candidate's first).
    fn allow(&mut self, now: Instant, force: bool) -> Option<u64> {
        if !force && self.next.is_some_and(|next| now < next) {
            self.held += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.held))
    }
}

/// Publishes an Event about the candidate ConfigMap with a recorder of its
/// own: a shared recorder folds events of one reason into a series that
/// keeps the first note, and each summary must show its own counts.
fn tell(
    client: &Client,
    configmap: &ObjectReference,
    warning: bool,
    reason: &'static str,
    note: String,
) {
    let (recorder, configmap) = (events::recorder(client.clone()), configmap.clone());
    tokio::spawn(async move {
        events::publish(
            &recorder,
            &configmap,
            warning,
            reason,
            &note,
            "ShadowPolicy",
        )
        .await;
    });
}

/// What is done with each verdict, on the shadow's task: metrics, the
/// rate-limited log, the tally and the first disagreement's Event.
fn sink(
    metrics: Arc<Metrics>,
    tally: Arc<Mutex<Tally>>,
    live: PolicyEngine,
    client: Client,
    configmap: ObjectReference,
) -> impl FnMut(Verdict) + Send + 'static {
    let mut limit = LogLimit {
        every: LOG_EVERY,
        next: None,
        held: 0,
    };
    move |verdict| {
        metrics.shadow.decision(&verdict.differs);
        if verdict.differs.is_empty() {
            lock(&tally).record(&verdict, "");
            return;
        }
        let live = live.active().identity();
        let first = lock(&tally).record(&verdict, &live);
        if let Some(held) = limit.allow(Instant::now(), first.is_some()) {
            tracing::info!(
                pool = %verdict.obs.pool.name, namespace = %verdict.obs.pool.namespace,
                differs = %fields(&verdict.differs), %live, live_decided = %outcome(&verdict.live),
                candidate = %verdict.policy.identity(), candidate_decided = %outcome(&verdict.candidate),
                held_back = held, "shadow policy disagrees with the live policy"
            );
        }
        if let Some(note) = first {
            tell(&client, &configmap, true, FIRST_REASON, note);
        }
    }
}

/// Publishes the tally's summary every `period`, until dropped.
async fn summarise(
    tally: Arc<Mutex<Tally>>,
    candidate: PolicyEngine,
    client: Client,
    configmap: ObjectReference,
    period: Duration,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        let idle = lock(&tally).idle(&candidate.active());
        if let Some(note) = idle {
            tracing::info!(%note, "shadow policy summary");
            tell(&client, &configmap, false, SUMMARY_REASON, note);
        }
        let summary = lock(&tally).summary();
        if let Some((warning, note)) = summary {
            tracing::info!(%note, "shadow policy summary");
            tell(&client, &configmap, warning, SUMMARY_REASON, note);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the shadow candidate comes from and how often it is summarised
/// (`run`'s `--policy-shadow-*` flags, see `RunArgs::shadow_settings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowSettings {
    /// The operator's namespace, where the candidate's ConfigMap lives.
    pub namespace: String,
    /// The candidate's ConfigMap; empty turns shadow mode off.
    pub configmap: String,
    /// The ConfigMap key holding the module.
    pub key: String,
    /// How often the candidate's decisions are summarised in an Event.
    pub summary: Duration,
}

/// Shadow mode as `settings` set it up: the candidate ConfigMap's watch, the
/// shadow's task and the summaries spawned on `tasks` until `shutdown`, and
/// the decider the controller uses (`live` itself when no ConfigMap is named).
/// The candidate is checked against `trust` as the live policy is.
#[allow(clippy::too_many_arguments)]
pub fn start(
    settings: ShadowSettings,
    client: &Client,
    recorder: &Recorder,
    metrics: &Arc<Metrics>,
    live: PolicyEngine,
    trust: TrustWatch,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<Arc<dyn Decider>> {
    let ShadowSettings {
        namespace,
        configmap: name,
        key,
        summary,
    } = settings;
    if name.is_empty() {
        return Ok(Arc::new(live));
    }
    anyhow::ensure!(
        !summary.is_zero(),
        "--policy-shadow-summary must be longer than 0 (it is how often the candidate's decisions are summarised)"
    );
    let (namespace, name) = (namespace.as_str(), name.as_str());
    let candidate = PolicyEngine::new(live.limits()).context("starting the shadow engine")?;
    let configmap = configmap_ref(namespace, name);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (shadow, decide) = Shadow::new(
        candidate.clone(),
        shadow::QUEUE,
        sink(
            metrics.clone(),
            tally.clone(),
            live.clone(),
            client.clone(),
            configmap.clone(),
        ),
    );
    let summaries = summarise(tally, candidate.clone(), client.clone(), configmap, summary);
    let reporter = PolicyReloadReporter::shadow(
        metrics.clone(),
        recorder.clone(),
        namespace,
        name,
        shadow.clone(),
        trust.clone(),
    );
    let watch = watch::watch(
        client.clone(),
        namespace.to_string(),
        name.to_string(),
        key,
        candidate,
        trust,
        reporter,
    );
    let stop = shutdown.wait();
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = watch => {} }
    });
    let stop = shutdown.wait();
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = decide => {} }
    });
    let stop = shutdown.wait();
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = summaries => {} }
    });
    Ok(Arc::new(ShadowedPolicy {
        live,
        shadow,
        metrics: metrics.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_engine::PolicyError;
    use msp_policy_sdk::model::{Action, PoolState};

    fn policy(sha256: &str) -> ActivePolicy {
        ActivePolicy {
            name: "msp-retain".into(),
            version: "0.1.0".into(),
            sha256: sha256.into(),
            source: PolicySource::ConfigMap,
            contract: "0.2.0".into(),
        }
    }

    fn verdict(sha256: &str, candidate: Result<Action, PolicyError>) -> Verdict {
        let decision = |action| Decision {
            action,
            state: PoolState::Online,
            reason: "r".into(),
            requeue_after_ms: None,
            event: None,
        };
        let live = decision(Action::Destroy);
        let candidate = candidate.map(decision);
        let differs = msp_policy_engine::compare::outcomes(
            Ok(&live),
            candidate.as_ref().map_err(PolicyError::kind),
        );
        let mut obs = Observation::default();
        obs.pool.namespace = "mayastor".into();
        obs.pool.name = "p1".into();
        Verdict {
            obs,
            live: Ok(live),
            candidate,
            policy: policy(sha256),
            differs,
        }
    }

    #[test]
    fn first_disagreement_is_told_once_then_summarised_with_counts() {
        let mut tally = Tally::default();
        assert_eq!(tally.summary(), None, "nothing decided, nothing to say");
        assert_eq!(
            tally.record(&verdict("aa", Ok(Action::Destroy)), "live"),
            None
        );
        let (warning, note) = tally.summary().expect("one decision");
        assert!(
            !warning && note.contains("agreed") && note.contains("all 1"),
            "{note}"
        );
        assert_eq!(tally.summary(), None, "nothing new since");

        let first = tally.record(&verdict("aa", Ok(Action::Retain)), "live");
        let first = first.expect("the first disagreement is told");
        assert!(
            first.contains("pool mayastor/p1")
                && first.contains("action differs")
                && first.contains("\"action\":\"destroy\"")
                && first.contains("\"action\":\"retain\""),
            "{first}"
        );
        assert_eq!(
            tally.record(&verdict("aa", Ok(Action::Retain)), "live"),
            None
        );
        let trap = PolicyError::Trap("unreachable".into());
        assert_eq!(tally.record(&verdict("aa", Err(trap)), "live"), None);
        let (warning, note) = tally.summary().expect("new decisions");
        assert!(warning, "{note}");
        assert!(
            note.contains(
                "4 decisions since it was loaded (3 since the last summary), 3 disagreed"
            ) && note.contains("action 2, error 1")
                && note.contains("failed (the policy trapped: unreachable)"),
            "{note}"
        );

        // Another candidate starts afresh and is told about again.
        assert!(
            tally
                .record(&verdict("bb", Ok(Action::Retain)), "live")
                .is_some()
        );
        let (_, note) = tally.summary().expect("new candidate");
        assert!(note.contains("1 decisions since it was loaded"), "{note}");
    }

    #[test]
    fn a_candidate_that_decided_nothing_says_so_once() {
        let mut tally = Tally::default();
        let mut bundled = policy("00");
        bundled.source = PolicySource::Bundled;
        assert_eq!(tally.idle(&bundled), None, "no candidate, nothing to say");
        let note = tally.idle(&policy("aa")).expect("told once");
        assert!(note.contains("0 decisions compared"), "{note}");
        assert_eq!(tally.idle(&policy("aa")), None, "once per candidate");
        tally.record(&verdict("bb", Ok(Action::Retain)), "live");
        assert_eq!(tally.idle(&policy("bb")), None, "it decided");
        let first = tally.record(&verdict("bb", Ok(Action::Retain)), "live");
        assert_eq!(first, None, "told at the first verdict already");
        let mut fresh = Tally::default();
        fresh.record(&verdict("cc", Ok(Action::Destroy)), "live");
        let first = fresh.record(&verdict("cc", Ok(Action::Retain)), "live");
        assert!(
            first.is_some_and(|n| n.contains("at decision 2 compared")),
            "the first disagreement says how many were compared"
        );
    }

    #[test]
    fn a_trap_backtrace_is_cut_to_its_first_and_last_lines() {
        let trap: Result<Decision, PolicyError> = Err(PolicyError::Trap(
            "error while executing at wasm backtrace:\n    0: 0x5e53 - abort\n    1: 0x44de - panic\nwasm trap: wasm `unreachable` instruction executed".into(),
        ));
        assert_eq!(
            outcome(&trap),
            "failed (the policy trapped: error while executing at wasm backtrace: … wasm trap: wasm `unreachable` instruction executed)"
        );
    }

    #[test]
    fn log_lines_are_rate_limited_and_say_what_they_held_back() {
        let start = Instant::now();
        let mut limit = LogLimit {
            every: Duration::from_secs(10),
            next: None,
            held: 0,
        };
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(limit.allow(at(0), false), Some(0));
        assert_eq!(limit.allow(at(1), false), None);
        assert_eq!(limit.allow(at(9), false), None);
        assert_eq!(limit.allow(at(10), false), Some(2));
        assert_eq!(limit.allow(at(11), false), None);
        // A new candidate's first disagreement is always logged.
        assert_eq!(limit.allow(at(12), true), Some(1));
        assert_eq!(limit.allow(at(13), false), None);
    }
}
