//! Two policies' outcomes on one observation, compared field by field: what
//! shadow mode counts, and what a policy diff groups by.

use msp_policy_sdk::model::Decision;

/// A part of a decision two policies can disagree on. `Error`: one of them
/// failed (trap, fuel, memory, nonsense) and the other did not, or both
/// failed for different reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Action,
    State,
    Reason,
    Requeue,
    Event,
    Error,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::Action,
        Field::State,
        Field::Reason,
        Field::Requeue,
        Field::Event,
        Field::Error,
    ];

    /// The metric label and the word in logs and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Field::Action => "action",
            Field::State => "state",
            Field::Reason => "reason",
            Field::Requeue => "requeue",
            Field::Event => "event",
            Field::Error => "error",
        }
    }
}

/// The fields in which `b` differs from `a`, in [`Field::ALL`] order.
pub fn decisions(a: &Decision, b: &Decision) -> Vec<Field> {
    let differs = [
        a.action != b.action,
        a.state != b.state,
        a.reason != b.reason,
        a.requeue_after_ms != b.requeue_after_ms,
        a.event != b.event,
    ];
    Field::ALL
        .into_iter()
        .zip(differs)
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
}

/// [`decisions`] for outcomes that may have failed (the error as its kind,
/// e.g. `PolicyError::kind`): one failure, or two of different kinds, is a
/// disagreement in [`Field::Error`]; two of one kind agree.
pub fn outcomes(a: Result<&Decision, &str>, b: Result<&Decision, &str>) -> Vec<Field> {
    match (a, b) {
        (Ok(a), Ok(b)) => decisions(a, b),
        (Err(a), Err(b)) if a == b => Vec::new(),
        _ => vec![Field::Error],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_sdk::model::{Action, Event, PoolState};

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            state: PoolState::Online,
            reason: "pool online".into(),
            requeue_after_ms: None,
            event: None,
        }
    }

    #[test]
    fn each_differing_field_is_named_once() {
        let live = decision(Action::Destroy);
        assert!(decisions(&live, &live).is_empty());
        let other = Decision {
            action: Action::Retain,
            reason: "kept".into(),
            requeue_after_ms: Some(1_000),
            event: Some(Event {
                warning: false,
                reason: "Kept".into(),
                message: "kept".into(),
            }),
            ..live.clone()
        };
        assert_eq!(
            decisions(&live, &other),
            [Field::Action, Field::Reason, Field::Requeue, Field::Event]
        );
        let state = Decision {
            state: PoolState::Offline,
            ..live.clone()
        };
        assert_eq!(decisions(&live, &state), [Field::State]);
    }

    #[test]
    fn a_failure_on_one_side_is_an_error_disagreement() {
        let d = decision(Action::None);
        assert_eq!(outcomes(Ok(&d), Err("trap")), [Field::Error]);
        assert_eq!(outcomes(Err("trap"), Ok(&d)), [Field::Error]);
        assert_eq!(outcomes(Err("trap"), Err("fuel-exhausted")), [Field::Error]);
        assert!(outcomes(Err("trap"), Err("trap")).is_empty());
        assert!(outcomes(Ok(&d), Ok(&d)).is_empty());
    }
}
