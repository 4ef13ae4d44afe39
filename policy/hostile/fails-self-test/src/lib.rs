//! Hostile policy for the tests: a well-formed component of the right
//! contract whose every decision carries a reason longer than the host
//! accepts, so the self-test refuses it before it decides anything live.

use msp_policy_sdk::model::{Action, Decision, Observation, PolicyInfo, PoolState};

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: "msp-hostile-fails-self-test".into(),
        version: "0.0.1".into(),
    }
}

pub fn decide(_: &Observation) -> Decision {
    Decision {
        action: Action::None,
        state: PoolState::Pending,
        reason: "too long ".repeat(1_000),
        requeue_after_ms: None,
        event: None,
    }
}

#[cfg(target_arch = "wasm32")]
msp_policy_sdk::export_policy!(crate::info, crate::decide);
