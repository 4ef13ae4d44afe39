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

/// How an outcome is reported: the metric label (the outcome, or the cause
/// of a refusal), whether it warns, the Event reason (one per cause, so an
/// Event list folded by reason never shows an earlier cause's message; none
/// for a return to the bundled default) and the note.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    label: &'static str,
    warning: bool,
    reason: Option<String>,
    note: String,
}

fn describe(outcome: &ReloadOutcome) -> Report {
    match outcome {
        ReloadOutcome::Loaded(active) => Report {
            label: "loaded",
            warning: false,
            reason: Some("PolicyLoaded".into()),
            note: format!(
                "policy {}@{} ({}) loaded",
                active.name, active.version, active.sha256
            ),
        },
        ReloadOutcome::Refused { error, kept } => Report {
            label: error.kind(),
            warning: true,
            reason: Some(event_reason(error.kind())),
            note: format!(
                "policy module refused, {}@{} keeps deciding: {error}",
                kept.name, kept.version
            ),
        },
        ReloadOutcome::Unusable { cause, why, active } => Report {
            label: cause,
            warning: true,
            reason: Some(event_reason(cause)),
            note: format!(
                "{why}: bundled policy {}@{} decides",
                active.name, active.version
            ),
        },
        ReloadOutcome::Bundled { active, why } => Report {
            label: "bundled",
            warning: false,
            reason: None,
            note: format!(
                "{why}: bundled policy {}@{} decides",
                active.name, active.version
            ),
        },
    }
}

/// `Policy` + the cause in PascalCase: `unknown-version` → `PolicyUnknownVersion`.
fn event_reason(cause: &str) -> String {
    let mut reason = String::from("Policy");
    for word in cause.split('-') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            reason.extend(first.to_uppercase());
            reason.push_str(chars.as_str());
        }
    }
    reason
}

impl ReloadReporter for PolicyReloadReporter {
    fn report(&self, outcome: &ReloadOutcome) {
        let Report {
            label,
            warning,
            reason,
            note,
        } = describe(outcome);
        if warning {
            tracing::warn!(%note, "policy reload");
        } else {
            tracing::info!(%note, "policy reload");
        }
        self.metrics.policy_reload(label);
        if let ReloadOutcome::Loaded(active)
        | ReloadOutcome::Bundled { active, .. }
        | ReloadOutcome::Unusable { active, .. } = outcome
        {
            self.metrics
                .set_policy(&active.name, &active.version, &active.sha256);
        }
        // A closed receiver means the controller stopped: nothing to wake.
        let _ = self.changed.send(());
        // A return to the bundled default has nothing to tell about the ConfigMap.
        let Some(reason) = reason else {
            return;
        };
        let (recorder, configmap) = (self.recorder.clone(), self.configmap.clone());
        tokio::spawn(async move {
            events::publish(&recorder, &configmap, warning, &reason, &note, "LoadPolicy").await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_engine::{PolicyEngine, PolicyError};

    #[test]
    fn each_cause_has_its_own_reason_label_and_message() {
        let active = PolicyEngine::new(Default::default())
            .expect("engine")
            .active();
        let outcomes = [
            ReloadOutcome::Unusable {
                cause: "key-missing",
                why: "ConfigMap has no binaryData key policy.wasm (its keys: other)".into(),
                active: active.clone(),
            },
            ReloadOutcome::Unusable {
                cause: "key-under-data",
                why: "ConfigMap key policy.wasm is under data".into(),
                active: active.clone(),
            },
            ReloadOutcome::Refused {
                error: PolicyError::TooLarge { size: 9, limit: 1 },
                kept: active.clone(),
            },
            ReloadOutcome::Refused {
                error: PolicyError::NotAComponent,
                kept: active.clone(),
            },
            ReloadOutcome::Refused {
                error: PolicyError::UnknownVersion {
                    found: "0.9.0".into(),
                    expected: "0.1.0".into(),
                },
                kept: active.clone(),
            },
        ];
        let reports: Vec<Report> = outcomes.iter().map(describe).collect();
        let reasons: Vec<&str> = reports.iter().filter_map(|r| r.reason.as_deref()).collect();
        assert_eq!(
            reasons,
            [
                "PolicyKeyMissing",
                "PolicyKeyUnderData",
                "PolicyTooLarge",
                "PolicyNotAComponent",
                "PolicyUnknownVersion"
            ]
        );
        assert!(reports.iter().all(|r| r.warning && r.label != "refused"));
        assert!(
            reports[0].note.contains("its keys: other"),
            "{:?}",
            reports[0]
        );
        assert!(reports[4].note.contains("0.9.0"), "{:?}", reports[4]);
        let bundled = describe(&ReloadOutcome::Bundled {
            active,
            why: "ConfigMap deleted".into(),
        });
        assert_eq!((bundled.label, bundled.reason), ("bundled", None));
    }
}
