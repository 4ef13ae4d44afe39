//! `msp-policy test`: a policy's decisions against the expectations
//! in a cases file (YAML).
//!
//! ```yaml
//! defaults:                 # optional: merged into every case's observation first
//!   pool: {name: data}
//! cases:
//!   - name: a deleted pool in the ledger is destroyed
//!     start: online         # optional: new (default), pending, online, degraded, faulted, offline, empty
//!     observation:          # optional: what differs from the start (see `partial`)
//!       pool: {deleted: true}
//!     expect:               # any subset, at least one
//!       action: destroy
//!       state: online
//!       reasonContains: destroying   # or `reason:` for the exact text
//!       requeueAfterMs: 1000         # null: no requeue
//!       event: {reason: Destroying, warning: false, messageContains: node1}   # null: no event
//! ```

use std::fmt::Write as _;

use msp_policy_sdk::model::{Action, Decision, Observation, PoolState};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::partial::{self, DEFAULT_START};

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// Merged into every case's observation before the case's own fields.
    #[serde(default)]
    pub defaults: Option<Value>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub observation: Option<Value>,
    pub expect: Expect,
}

/// The decision fields a case checks; absent ones are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    pub action: Option<Action>,
    pub state: Option<PoolState>,
    pub reason: Option<String>,
    pub reason_contains: Option<String>,
    /// `Some(None)`: the decision must not requeue.
    #[serde(default, deserialize_with = "present")]
    pub requeue_after_ms: Option<Option<u64>>,
    /// `Some(None)`: the decision must not suggest an event.
    #[serde(default, deserialize_with = "present")]
    pub event: Option<Option<ExpectEvent>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectEvent {
    pub warning: Option<bool>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub message_contains: Option<String>,
}

/// Tells a field given as `null` from an absent one.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Why a cases file cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("not a cases file: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("the file has no cases")]
    Empty,
    #[error("case {index} ({name:?}): {error}")]
    Observation {
        index: usize,
        name: String,
        error: partial::PartialError,
    },
    #[error(
        "case {index} ({name:?}) expects nothing: give at least one of action, state, reason, reasonContains, requeueAfterMs, event"
    )]
    NoExpectation { index: usize, name: String },
    #[error("the defaults: {0}")]
    Defaults(partial::PartialError),
}

/// A case ready to run: its full observation.
pub struct Prepared {
    pub name: String,
    pub observation: Observation,
    pub expect: Expect,
}

/// Parses `text` and builds every case's observation.
pub fn prepare(text: &str) -> Result<Vec<Prepared>, CasesError> {
    let file: CasesFile = serde_saphyr::from_str(text)?;
    if file.cases.is_empty() {
        return Err(CasesError::Empty);
    }
    let defaults = file.defaults.unwrap_or(Value::Null);
    // Check the defaults once, against the default start, for a clear message.
    let check_start = partial::start(DEFAULT_START).map_err(CasesError::Defaults)?;
    partial::apply(&check_start, &defaults).map_err(CasesError::Defaults)?;
    file.cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            let index = i + 1;
            let at = |error| CasesError::Observation {
                index,
                name: case.name.clone(),
                error,
            };
            if case.expect.is_empty() {
                return Err(CasesError::NoExpectation {
                    index,
                    name: case.name.clone(),
                });
            }
            let start =
                partial::start(case.start.as_deref().unwrap_or(DEFAULT_START)).map_err(at)?;
            let with_defaults = partial::apply(&start, &defaults).map_err(at)?;
            let observation = partial::apply(
                &with_defaults,
                case.observation.as_ref().unwrap_or(&Value::Null),
            )
            .map_err(at)?;
            Ok(Prepared {
                name: case.name,
                observation,
                expect: case.expect,
            })
        })
        .collect()
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.action.is_none()
            && self.state.is_none()
            && self.reason.is_none()
            && self.reason_contains.is_none()
            && self.requeue_after_ms.is_none()
            && self.event.is_none()
    }

    /// One line per field that does not match: `field: expected X, got Y`.
    pub fn mismatches(&self, d: &Decision) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = self.action
            && a != d.action
        {
            out.push(format!(
                "action: expected {}, got {}",
                name(&a),
                name(&d.action)
            ));
        }
        if let Some(s) = self.state
            && s != d.state
        {
            out.push(format!(
                "state: expected {}, got {}",
                name(&s),
                name(&d.state)
            ));
        }
        if let Some(r) = &self.reason
            && *r != d.reason
        {
            out.push(format!("reason: expected {r:?}, got {:?}", d.reason));
        }
        if let Some(r) = &self.reason_contains
            && !d.reason.contains(r.as_str())
        {
            out.push(format!(
                "reason: expected to contain {r:?}, got {:?}",
                d.reason
            ));
        }
        if let Some(q) = self.requeue_after_ms
            && q != d.requeue_after_ms
        {
            out.push(format!(
                "requeueAfterMs: expected {}, got {}",
                requeue(q),
                requeue(d.requeue_after_ms)
            ));
        }
        match (&self.event, &d.event) {
            (None, _) => {}
            (Some(None), None) => {}
            (Some(None), Some(got)) => out.push(format!(
                "event: expected none, got {} {:?}",
                got.reason, got.message
            )),
            (Some(Some(_)), None) => out.push("event: expected one, got none".to_string()),
            (Some(Some(want)), Some(got)) => {
                if let Some(w) = want.warning
                    && w != got.warning
                {
                    out.push(format!("event.warning: expected {w}, got {}", got.warning));
                }
                if let Some(r) = &want.reason
                    && *r != got.reason
                {
                    out.push(format!("event.reason: expected {r}, got {}", got.reason));
                }
                if let Some(m) = &want.message
                    && *m != got.message
                {
                    out.push(format!(
                        "event.message: expected {m:?}, got {:?}",
                        got.message
                    ));
                }
                if let Some(m) = &want.message_contains
                    && !got.message.contains(m.as_str())
                {
                    out.push(format!(
                        "event.message: expected to contain {m:?}, got {:?}",
                        got.message
                    ));
                }
            }
        }
        out
    }
}

/// A contract enum as written in JSON and YAML (`destroy`, `failed-precondition`).
pub fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

fn requeue(ms: Option<u64>) -> String {
    ms.map_or_else(|| "none".to_string(), |ms| format!("{ms} ms"))
}

/// The outcome of one case.
pub enum Outcome {
    Pass,
    Mismatch(Vec<String>),
    /// The decision itself failed (trap, fuel, nonsense …).
    Failed(String),
}

/// Formats a run's report: one line per case (failures with the expected and
/// received fields indented below), then the summary. Returns the report and
/// the number of failed cases.
pub fn report(results: &[(&str, Outcome)]) -> (String, usize) {
    let mut out = String::new();
    let mut failed = 0;
    for (name, outcome) in results {
        match outcome {
            Outcome::Pass => {
                let _ = writeln!(out, "  ok    {name}");
            }
            Outcome::Mismatch(lines) => {
                failed += 1;
                let _ = writeln!(out, "  FAIL  {name}");
                for l in lines {
                    let _ = writeln!(out, "          {l}");
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                let _ = writeln!(out, "  FAIL  {name}");
                let _ = writeln!(out, "          expected a decision, got an error: {e}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    (out, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
cases:
  - name: deleted
    start: online
    observation: {pool: {deleted: true}}
    expect: {action: destroy, requeueAfterMs: 1000, event: {reason: Destroying}}
  - name: quiet
    expect: {requeueAfterMs: null, event: null}
"#;

    #[test]
    fn null_expects_absence_and_a_missing_field_expects_nothing() -> Result<(), CasesError> {
        let cases = prepare(FILE)?;
        assert!(cases[0].observation.pool.deleted && cases[0].observation.in_ledger);
        assert_eq!(cases[1].expect.requeue_after_ms, Some(None));
        assert!(matches!(cases[1].expect.event, Some(None)));
        assert!(cases[0].expect.state.is_none());
        Ok(())
    }

    #[test]
    fn a_case_must_expect_something_and_spell_its_fields() {
        let none = "cases: [{name: x, expect: {}}]";
        assert!(matches!(
            prepare(none),
            Err(CasesError::NoExpectation { index: 1, .. })
        ));
        let typo = "cases: [{name: x, expect: {actoin: create}}]";
        assert!(matches!(prepare(typo), Err(CasesError::Yaml(_))));
        let obs = "cases: [{name: x, observation: {inLedgr: true}, expect: {action: none}}]";
        let err = prepare(obs)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("inLedgr"), "{err}");
        let impossible =
            "cases: [{name: x, observation: {pool: {deleted: true}}, expect: {action: none}}]";
        let err = prepare(impossible)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("never makes this observation") && err.contains("ledger"),
            "{err}"
        );
    }
}
