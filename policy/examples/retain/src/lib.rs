//! Example custom policy `retain`: the default policy, except that a pool whose
//! MayastorPool resource is deleted is kept on its node (action retain) rather
//! than destroyed. Everything else is `msp_policy::decide`.

use msp_policy_sdk::model::{Action, Decision, Observation, PolicyInfo};

pub const NAME: &str = "msp-retain";

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

pub fn decide(obs: &Observation) -> Decision {
    let d = msp_policy::decide(obs);
    if obs.pool.deleted && obs.in_ledger {
        return Decision {
            action: Action::Retain,
            reason: format!(
                "resource deleted; pool kept on \"{}\" by the retain policy",
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

    #[test]
    fn deleted_ledger_pool_is_retained_not_destroyed() {
        let mut o = Observation {
            pools_known: true,
            in_ledger: true,
            ..Default::default()
        };
        o.pool.deleted = true;
        o.storage_node.registered = true;
        o.storage_node.reachable = true;
        assert_eq!(msp_policy::decide(&o).action, Action::Destroy);
        assert_eq!(decide(&o).action, Action::Retain);
        o.pool.deleted = false;
        assert_eq!(decide(&o), msp_policy::decide(&o));
    }
}
