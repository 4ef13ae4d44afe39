//! The process's life: the flags of `msp-operator run`, logging, the wiring
//! that starts every task ([`run`]), leader election on a Lease
//! ([`election`]) and the fence every write checks ([`fence`]), the leader's
//! work once elected ([`leading`]), the HTTP endpoint for probes and metrics
//! ([`http`]) and graceful shutdown ([`shutdown`]).

pub mod election;
pub mod fence;
pub mod flags;
pub mod http;
pub mod leading;
pub mod run;
pub mod shutdown;
pub mod telemetry;
