//! What the operator does with each outcome of a policy ConfigMap change
//! ([`ReloadOutcome`]): a log line, a metric, the policy info metric on a
//! swap, an Event on the ConfigMap when a module was loaded or refused, and a
//! signal that makes the controller look at every pool under the new policy.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::Recorder;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

use crate::events;
use crate::metrics::Metrics;
use crate::policy_watch::{ReloadOutcome, ReloadReporter};

/// Reports policy reloads (see the module doc).
pub struct PolicyReloadReporter {
    metrics: Arc<Metrics>,
    recorder: Recorder,
    configmap: ObjectReference,
    changed: UnboundedSender<()>,
}

impl PolicyReloadReporter {
    /// A reporter for the policy ConfigMap `namespace/name`; `changed` gets a
    /// `()` after every outcome.
    pub fn new(
        metrics: Arc<Metrics>,
        recorder: Recorder,
        namespace: &str,
        name: &str,
        changed: UnboundedSender<()>,
    ) -> PolicyReloadReporter {
        PolicyReloadReporter {
            metrics,
            recorder,
            configmap: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            changed,
        }
    }
}

/// The metric label, whether it warns, and the note of an outcome.
fn describe(outcome: &ReloadOutcome) -> (&'static str, bool, String) {
    match outcome {
        ReloadOutcome::Loaded(active) => (
            "loaded",
            false,
            format!(
                "policy {}@{} ({}) loaded",
                active.name, active.version, active.sha256
            ),
        ),
        ReloadOutcome::Refused { error, kept } => (
            "refused",
            true,
            format!(
                "policy module refused, {}@{} keeps deciding: {error}",
                kept.name, kept.version
            ),
        ),
        ReloadOutcome::Bundled { active, why } => (
            "bundled",
            false,
            format!(
                "{why}: bundled policy {}@{} decides",
                active.name, active.version
            ),
        ),
    }
}

impl ReloadReporter for PolicyReloadReporter {
    fn report(&self, outcome: &ReloadOutcome) {
        let (label, warning, note) = describe(outcome);
        if warning {
            tracing::warn!(%note, "policy reload");
        } else {
            tracing::info!(%note, "policy reload");
        }
        self.metrics.policy_reload(label);
        if let ReloadOutcome::Loaded(active) | ReloadOutcome::Bundled { active, .. } = outcome {
            self.metrics
                .set_policy(&active.name, &active.version, &active.sha256);
        }
        // A closed receiver means the controller stopped: nothing to wake.
        let _ = self.changed.send(());
        if let ReloadOutcome::Bundled { .. } = outcome {
            // No module (or none any more): nothing about the ConfigMap to tell.
            return;
        }
        let (recorder, configmap) = (self.recorder.clone(), self.configmap.clone());
        let reason = if warning {
            "PolicyRefused"
        } else {
            "PolicyLoaded"
        };
        tokio::spawn(async move {
            events::publish(&recorder, &configmap, warning, reason, &note, "LoadPolicy").await;
        });
    }
}
