//! The policy in the running operator: the ConfigMap watch that validates a
//! custom module and swaps it in ([`watch`]), what each reload outcome
//! becomes (log, metric, Event: [`reload`]), and shadow mode, a candidate
//! that decides beside the live policy and is never acted upon ([`shadow`]).
//! The sandbox itself is the `msp-policy-engine` crate (`host/engine`).

pub mod reload;
pub mod shadow;
pub mod watch;
