//! What the operator does with each outcome of a policy ConfigMap change
//! ([`ReloadOutcome`]): a log line, a metric, the policy info metric on a
//! swap, an Event on the ConfigMap when a module was loaded or refused, and a
//! signal that makes the controller look at every pool under the new policy.
//! The shadow candidate's ConfigMap is reported the same way, under its own
//! metrics, and its outcome turns shadow mode on or off instead.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::Recorder;
use msp_policy_engine::shadow::Shadow;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;
use crate::policy::trust::{Trust, TrustWatch};
use crate::policy::watch::{ReloadOutcome, ReloadReporter};
use crate::state::events;
use msp_policy_engine::{ActivePolicy, PolicySource};

/// Reports policy reloads (see the module doc).
pub struct PolicyReloadReporter {
    metrics: Arc<Metrics>,
    recorder: Recorder,
    configmap: ObjectReference,
    role: Role,
    /// What a module is checked against (the PolicyLoaded Event says it).
    trust: TrustWatch,
}

/// Which policy a ConfigMap holds.
enum Role {
    /// The live one: `changed` gets a `()` after every outcome.
    Live { changed: UnboundedSender<()> },
    /// The shadow candidate: every outcome turns the shadow on or off.
    Shadow(Shadow),
}

/// A ConfigMap in the operator's namespace, as Events refer to it.
pub fn configmap_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
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
        trust: TrustWatch,
    ) -> PolicyReloadReporter {
        PolicyReloadReporter {
            metrics,
            recorder,
            configmap: configmap_ref(namespace, name),
            role: Role::Live { changed },
            trust,
        }
    }

    /// A reporter for the shadow candidate's ConfigMap `namespace/name`,
    /// whose watch loads into `shadow`'s candidate engine.
    pub fn shadow(
        metrics: Arc<Metrics>,
        recorder: Recorder,
        namespace: &str,
        name: &str,
        shadow: Shadow,
        trust: TrustWatch,
    ) -> PolicyReloadReporter {
        PolicyReloadReporter {
            metrics,
            recorder,
            configmap: configmap_ref(namespace, name),
            role: Role::Shadow(shadow),
            trust,
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

fn describe(outcome: &ReloadOutcome, shadow: bool, trust: &Trust) -> Report {
    // What decides now (for the candidate engine: what shadows).
    let who = |active: &ActivePolicy, refused: bool| match (shadow, active.source) {
        (false, PolicySource::Bundled) if !refused => {
            format!("bundled policy {}@{} decides", active.name, active.version)
        }
        (false, _) => format!("{}@{} keeps deciding", active.name, active.version),
        (true, PolicySource::Bundled) => "no candidate: shadow mode off".to_string(),
        (true, _) => format!(
            "candidate {}@{} keeps shadowing the live policy",
            active.name, active.version
        ),
    };
    match outcome {
        ReloadOutcome::Loaded(active) => Report {
            label: "loaded",
            warning: false,
            reason: Some("PolicyLoaded".into()),
            note: format!(
                "{} {}@{} (sha256:{}, contract {}) loaded{}; {}",
                if shadow { "candidate policy" } else { "policy" },
                active.name,
                active.version,
                active.sha256,
                active.contract,
                if shadow {
                    ": it decides beside the live policy and is never acted upon"
                } else {
                    ""
                },
                match trust {
                    Trust::Keys { secret, .. } => {
                        format!("its signature verified against trust Secret {secret}")
                    }
                    other => other.describe(),
                }
            ),
        },
        ReloadOutcome::Refused { error, kept } => Report {
            label: error.kind(),
            warning: true,
            reason: Some(event_reason(error.kind())),
            note: format!(
                "{} module refused, {}: {error}",
                if shadow { "candidate" } else { "policy" },
                who(kept, true)
            ),
        },
        ReloadOutcome::Unusable { cause, why, active } => Report {
            label: cause,
            warning: true,
            reason: Some(event_reason(cause)),
            note: format!("{why}: {}", who(active, false)),
        },
        ReloadOutcome::Bundled { active, why } => Report {
            label: "bundled",
            warning: false,
            reason: None,
            note: format!("{why}: {}", who(active, false)),
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
        } = describe(
            outcome,
            matches!(self.role, Role::Shadow(_)),
            &self.trust.borrow(),
        );
        let configmap = self.configmap.name.as_deref().unwrap_or_default();
        if warning {
            tracing::warn!(%note, %configmap, "policy reload");
        } else {
            tracing::info!(%note, %configmap, "policy reload");
        }
        match &self.role {
            Role::Live { changed } => {
                self.metrics.policy_reload(label);
                if let ReloadOutcome::Loaded(active)
                | ReloadOutcome::Bundled { active, .. }
                | ReloadOutcome::Unusable { active, .. } = outcome
                {
                    self.metrics.set_policy(active);
                }
                // A closed receiver means the controller stopped: nothing to wake.
                let _ = changed.send(());
            }
            // No pool is woken: the candidate sees each pool at its next
            // reconcile, and the live path does no extra work for it.
            Role::Shadow(shadow) => {
                self.metrics.shadow.reload(label);
                let candidate = shadow.candidate().active();
                self.metrics
                    .shadow
                    .set_candidate(shadow.sync().then_some(&candidate));
            }
        }
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
        let reports: Vec<Report> = outcomes
            .iter()
            .map(|o| describe(o, false, &Trust::Unsigned))
            .collect();
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
        let deleted = ReloadOutcome::Bundled {
            active,
            why: "ConfigMap deleted".into(),
        };
        let bundled = describe(&deleted, false, &Trust::Unsigned);
        assert!(
            bundled.note.contains("bundled policy msp-default@"),
            "{bundled:?}"
        );
        assert_eq!((bundled.label, bundled.reason), ("bundled", None));
        // The same outcomes of the shadow ConfigMap: the same labels and
        // reasons, and notes that speak of the candidate.
        let shadow: Vec<Report> = outcomes
            .iter()
            .map(|o| describe(o, true, &Trust::Unsigned))
            .collect();
        for (live, shadow) in reports.iter().zip(&shadow) {
            assert_eq!((live.label, &live.reason), (shadow.label, &shadow.reason));
            assert!(
                shadow.note.contains("no candidate: shadow mode off"),
                "{shadow:?}"
            );
        }
        let off = describe(&deleted, true, &Trust::Unsigned);
        assert!(
            off.note.ends_with("no candidate: shadow mode off"),
            "{off:?}"
        );
    }
}
