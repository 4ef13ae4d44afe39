//! Hot reload of a custom policy from a ConfigMap, watched through the API.
//!
//! The module lives in the ConfigMap's `binaryData` under a key (default
//! `msp-policy` / `policy.wasm`). Watching through the API, not a mounted
//! volume, makes a change take effect within a second (a mounted ConfigMap
//! updates late; a `subPath` mount never does). Each new module is validated
//! (see `PolicyEngine::load`) off the async threads and swapped in atomically;
//! a bad module leaves the running policy; deleting the ConfigMap (or its key)
//! returns to the bundled default. Every outcome goes to a [`ReloadReporter`],
//! which the operator turns into a log line, a metric and a Warning Event.
//!
//! With trust configured ([`crate::policy::trust`]), a module loads only when
//! its detached signature (binaryData `<key>.sig`) verifies; a change of the
//! trust re-checks the ConfigMap's module: one that verifies now loads, and
//! one that no longer does (the running one included) is reported, the
//! running policy kept.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use msp_policy_engine::{ActivePolicy, PolicyEngine, PolicyError, PolicySource};

use crate::policy::trust::{Trust, TrustWatch};

/// Default ConfigMap name.
pub const DEFAULT_NAME: &str = "msp-policy";
/// Default `binaryData` key.
pub const DEFAULT_KEY: &str = "policy.wasm";

/// Causes of a ConfigMap that holds no module the operator can use.
const KEY_MISSING: &str = "key-missing";
const KEY_UNDER_DATA: &str = "key-under-data";

/// The ConfigMap key of the detached signature of the module under `key`.
pub fn signature_key(key: &str) -> String {
    format!("{key}.sig")
}

/// What a change of the ConfigMap led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new module passed validation and decides from now on.
    Loaded(ActivePolicy),
    /// The module was refused; `kept` still decides.
    Refused {
        error: PolicyError,
        kept: ActivePolicy,
    },
    /// The ConfigMap is gone: back to the bundled default.
    Bundled { active: ActivePolicy, why: String },
    /// The ConfigMap exists but holds no module the operator can use under
    /// its key (`cause`: `key-missing`, `key-under-data`); the bundled
    /// default decides. Reported whichever policy ran before: the admin
    /// meant something by that ConfigMap.
    Unusable {
        cause: &'static str,
        why: String,
        active: ActivePolicy,
    },
}

/// Receives reload outcomes (the operator records events from them).
pub trait ReloadReporter: Send + Sync + 'static {
    fn report(&self, outcome: &ReloadOutcome);
}

/// Reports nowhere but the log.
impl ReloadReporter for () {
    fn report(&self, _outcome: &ReloadOutcome) {}
}

/// Sends each outcome down a channel.
impl ReloadReporter for tokio::sync::mpsc::UnboundedSender<ReloadOutcome> {
    fn report(&self, outcome: &ReloadOutcome) {
        // A closed receiver means nobody listens any more: nothing to do.
        let _ = self.send(outcome.clone());
    }
}

impl<F: Fn(&ReloadOutcome) + Send + Sync + 'static> ReloadReporter for F {
    fn report(&self, outcome: &ReloadOutcome) {
        self(outcome)
    }
}

/// Watches ConfigMap `name` in `namespace` and keeps `engine`'s policy in line
/// with its `key`, each module checked against `trust`. Runs until the
/// future is dropped; API errors are retried with the watcher's default
/// backoff.
pub async fn watch(
    client: Client,
    namespace: impl Into<String>,
    name: impl Into<String>,
    key: impl Into<String>,
    engine: PolicyEngine,
    trust: TrustWatch,
    reporter: impl ReloadReporter,
) {
    watch_settled(client, namespace, name, key, engine, trust, reporter, None).await
}

/// [`watch`], answering `settled` once the first list of the ConfigMap is
/// applied: its module loaded (or refused), or the bundled default kept
/// when there is none.
#[allow(clippy::too_many_arguments)]
pub async fn watch_settled(
    client: Client,
    namespace: impl Into<String>,
    name: impl Into<String>,
    key: impl Into<String>,
    engine: PolicyEngine,
    mut trust: TrustWatch,
    reporter: impl ReloadReporter,
    mut settled: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let (namespace, name, key) = (namespace.into(), name.into(), key.into());
    let reporter: Arc<dyn ReloadReporter> = Arc::new(reporter);
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // Whether the ConfigMap showed up during the current (re)list.
    let mut seen = false;
    // The last problem reported (a refused module's sha256, or the cause of
    // an unusable ConfigMap), so a resync does not report it again.
    let mut last_problem: Option<String> = None;
    // The trust as it is now is the one the first list is checked against.
    trust.borrow_and_update();
    // The ConfigMap as last seen, checked again when the trust changes.
    let mut current: Option<ConfigMap> = None;
    // A fixed trust (unsigned) never changes: its sender is gone.
    let mut trust_open = true;
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => break,
            },
            changed = trust.changed(), if trust_open => {
                if changed.is_err() {
                    trust_open = false;
                    continue;
                }
                // A refused module is checked afresh; a ConfigMap that
                // holds no module has nothing new to tell.
                if !matches!(last_problem.as_deref(), Some(KEY_MISSING | KEY_UNDER_DATA)) {
                    last_problem = None;
                }
                let now = trust.borrow_and_update().clone();
                if let Some(cm) = &current {
                    apply(&engine, cm, &key, &now, &mut last_problem, reporter.as_ref()).await;
                }
                continue;
            }
        };
        let now = trust.borrow_and_update().clone();
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                seen = true;
                apply(
                    &engine,
                    &cm,
                    &key,
                    &now,
                    &mut last_problem,
                    reporter.as_ref(),
                )
                .await;
                current = Some(cm);
            }
            Ok(watcher::Event::Delete(_)) => {
                last_problem = None;
                current = None;
                to_bundled(
                    &engine,
                    format!("ConfigMap {namespace}/{name} deleted"),
                    reporter.as_ref(),
                );
            }
            Ok(watcher::Event::InitDone) => {
                if !seen {
                    current = None;
                    to_bundled(
                        &engine,
                        format!("no ConfigMap {namespace}/{name}"),
                        reporter.as_ref(),
                    );
                }
                if let Some(settled) = settled.take() {
                    let _ = settled.send(());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, configmap = %name, "policy ConfigMap watch failed; retrying")
            }
        }
    }
}

async fn apply(
    engine: &PolicyEngine,
    cm: &ConfigMap,
    key: &str,
    trust: &Arc<Trust>,
    last_problem: &mut Option<String>,
    reporter: &dyn ReloadReporter,
) {
    let Some(bytes) = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
    else {
        let (cause, why) = if cm.data.as_ref().is_some_and(|d| d.contains_key(key)) {
            (
                KEY_UNDER_DATA,
                format!(
                    "ConfigMap key {key} is under data, not binaryData (a wasm module is binary: \
                     kubectl create configmap --from-file puts it under binaryData)"
                ),
            )
        } else {
            let keys: Vec<&str> = cm
                .binary_data
                .iter()
                .flat_map(|d| d.keys())
                .chain(cm.data.iter().flat_map(|d| d.keys()))
                .map(String::as_str)
                .collect();
            (
                KEY_MISSING,
                format!(
                    "ConfigMap has no binaryData key {key} (its keys: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ),
            )
        };
        if last_problem.as_deref() == Some(cause) {
            return;
        }
        *last_problem = Some(cause.to_string());
        let active = if engine.active().source == PolicySource::Bundled {
            engine.active()
        } else {
            engine.reset_to_bundled()
        };
        tracing::info!(%why, "policy ConfigMap unusable; the bundled default decides");
        reporter.report(&ReloadOutcome::Unusable { cause, why, active });
        return;
    };
    // A resync or an edit of another key: nothing to do for the same module
    // (with trust configured, once it is verified again).
    // The bundled default's bytes from the ConfigMap are loaded all the same:
    // the ConfigMap, not the binary, decides then (and a shadow candidate
    // may well be the bundled default).
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let active = engine.active();
    let running = sha256 == active.sha256 && active.source != PolicySource::Bundled;
    let signature = signature_of(cm, key);
    // A problem is the module's and its signature's: a signature added or
    // replaced beside a refused module is checked.
    let problem = match &signature {
        Some(sig) => format!("{sha256} signed {}", hex::encode(Sha256::digest(sig))),
        None => sha256,
    };
    if (running && trust.is_unsigned()) || last_problem.as_deref() == Some(problem.as_str()) {
        return;
    }
    let (loader, trust) = (engine.clone(), trust.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let signers = trust.check(&bytes, signature.as_deref())?;
        let took = started.elapsed();
        if !trust.is_unsigned() {
            tracing::info!(
                signers = %signers.join(", "), bytes = bytes.len(),
                verify_us = took.as_micros() as u64, "policy module signature verified"
            );
        }
        if running {
            return Ok(None);
        }
        loader.load(&bytes, PolicySource::ConfigMap).map(Some)
    })
    .await
    .unwrap_or_else(|e| Err(PolicyError::Engine(format!("policy load task: {e}"))));
    let outcome = match loaded {
        // The running module, verified again: nothing to tell.
        Ok(None) => {
            *last_problem = None;
            return;
        }
        Ok(Some(active)) => {
            *last_problem = None;
            ReloadOutcome::Loaded(active)
        }
        Err(error) => {
            *last_problem = Some(problem);
            ReloadOutcome::Refused {
                error,
                kept: engine.active(),
            }
        }
    };
    reporter.report(&outcome);
}

/// The detached signature beside the module: binaryData `<key>.sig` (or
/// under data, where a text-safe signature may land).
fn signature_of(cm: &ConfigMap, key: &str) -> Option<Vec<u8>> {
    let sig = signature_key(key);
    cm.binary_data
        .as_ref()
        .and_then(|d| d.get(&sig))
        .map(|b| b.0.clone())
        .or_else(|| {
            cm.data
                .as_ref()
                .and_then(|d| d.get(&sig))
                .map(|s| s.as_bytes().to_vec())
        })
}

fn to_bundled(engine: &PolicyEngine, why: String, reporter: &dyn ReloadReporter) {
    if engine.active().source == PolicySource::Bundled {
        return;
    }
    let active = engine.reset_to_bundled();
    tracing::info!(%why, "policy back to the bundled default");
    reporter.report(&ReloadOutcome::Bundled { active, why });
}
