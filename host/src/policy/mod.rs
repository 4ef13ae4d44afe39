//! The policy in the running operator: the ConfigMap watch that validates a
//! custom module and swaps it in ([`watch`]), what each reload outcome
//! becomes (log, metric, Event: [`reload`]), and shadow mode, a candidate
//! that decides beside the live policy and is never acted upon ([`shadow`]),
//! and which modules may decide at all: signed ones, when trust is
//! configured ([`trust`]).
//! The sandbox itself is the `msp-policy-engine` crate (`host/engine`).

pub mod reload;
pub mod shadow;
pub mod trust;
pub mod watch;
