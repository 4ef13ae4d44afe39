//! What the controller last did to each pool, in memory: the policy reads it
//! (its backoff counts consecutive failures); apply and the sweep write it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use msp_policy_sdk::model::{Action, LastOperation, OperationError};

/// Milliseconds since the Unix epoch (the policy's clock arrives here).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The last operation on each pool, keyed by resource uid, in memory: after a
/// restart the policy starts from a clean slate, which create-or-import makes safe.
#[derive(Default)]
pub struct Operations {
    ops: Mutex<HashMap<String, LastOperation>>,
}

impl Operations {
    pub fn get(&self, uid: &str) -> Option<LastOperation> {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    /// Records the outcome of `action`; consecutive failures of the same
    /// action are counted for the policy's backoff.
    pub fn record(&self, uid: &str, action: Action, error: Option<OperationError>) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let failures = match (&error, ops.get(uid)) {
            (None, _) => 0,
            (Some(_), Some(prev)) if prev.action == action && prev.error.is_some() => {
                prev.failures.saturating_add(1)
            }
            (Some(_), _) => 1,
        };
        ops.insert(
            uid.to_string(),
            LastOperation {
                action,
                error,
                failures,
                at_ms: now_ms(),
            },
        );
    }

    pub fn forget(&self, uid: &str) {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Keeps only the operations of uids `keep` accepts (the sweeper drops
    /// those of resources that are gone and have nothing left in the ledger).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| keep(uid));
    }
}

#[cfg(test)]
mod tests {
    use msp_policy_sdk::model::ErrorKind;

    use super::*;

    #[test]
    fn operations_count_consecutive_failures() {
        let ops = Operations::default();
        let err = || {
            Some(OperationError {
                kind: ErrorKind::Internal,
                message: "x".into(),
            })
        };
        ops.record("u", Action::Create, err());
        ops.record("u", Action::Create, err());
        assert_eq!(ops.get("u").map(|o| o.failures), Some(2));
        ops.record("u", Action::Create, None);
        assert_eq!(ops.get("u").map(|o| o.failures), Some(0));
        ops.forget("u");
        assert!(ops.get("u").is_none());
        ops.record("a", Action::Create, None);
        ops.record("b", Action::Create, None);
        ops.retain(|uid| uid == "a");
        assert!(ops.get("a").is_some() && ops.get("b").is_none());
    }
}
