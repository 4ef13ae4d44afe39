//! Example custom policy `keep-labelled`: the default policy, except that the
//! pool of a resource labelled `keep=true` is kept on its node (action
//! retain) when the resource is deleted; other deleted resources' pools are
//! destroyed as by the default. The host keeps a resource's labels and
//! annotations as last seen in its ledger entry, so the label is there in
//! the observation of the deleted resource, also when it was deleted while
//! the operator was down.

use msp_policy_sdk::model::{Action, Decision, Observation, PolicyInfo};

pub const NAME: &str = "msp-keep-labelled";
/// The label, and its value, that keeps a pool.
pub const KEEP_LABEL: &str = "keep";
pub const KEEP_VALUE: &str = "true";

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

pub fn decide(obs: &Observation) -> Decision {
    let d = msp_policy::decide(obs);
    let keep = obs.pool.labels.get(KEEP_LABEL).map(String::as_str) == Some(KEEP_VALUE);
    if obs.pool.deleted && obs.in_ledger && keep {
        return Decision {
            action: Action::Retain,
            reason: format!(
                "resource deleted; pool kept on \"{}\": the resource was labelled {KEEP_LABEL}={KEEP_VALUE}",
                msp_policy::decide::effective_node(obs)
            ),
            requeue_after_ms: None,
            event: None,
            ..d
        };
    }
    d
}

#[cfg(target_arch = "wasm32")]
msp_policy_sdk::export_policy!(crate::info, crate::decide);

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_sdk::model::PoolState;
    use msp_policy_sdk::testing::ObservationBuilder;

    #[test]
    fn a_labelled_pool_is_kept_and_the_others_destroyed() {
        let kept = ObservationBuilder::created(PoolState::Online)
            .label(KEEP_LABEL, KEEP_VALUE)
            .deleted()
            .build();
        assert_eq!(kept.possible(), Ok(()));
        assert_eq!(decide(&kept).action, Action::Retain);
        let other = ObservationBuilder::created(PoolState::Online)
            .label(KEEP_LABEL, "no")
            .deleted()
            .build();
        assert_eq!(decide(&other).action, Action::Destroy);
        let live = ObservationBuilder::created(PoolState::Online)
            .label(KEEP_LABEL, KEEP_VALUE)
            .build();
        assert_eq!(decide(&live), msp_policy::decide(&live));
    }
}
