//! The error that ends a reconcile, and the backoff before it is retried.

use std::time::Duration;

use crate::state::ledger::LedgerError;

/// Errors that end a reconcile; it is retried with a per-resource backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl Error {
    /// The `error` label of `msp_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Status(_) => "status",
            Error::Ledger(_) => "ledger",
        }
    }
}

/// `min * 2^(n-1)`, at most `max`.
pub fn backoff(n: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_and_is_bounded() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(2, min, max), Duration::from_secs(1));
        assert_eq!(backoff(50, min, max), max);
    }
}
