//! Prometheus metrics of the operator, in a small typed struct whose methods
//! the reconcile calls (after kube-rs controller-rs). Served as text on
//! `/metrics` by [`crate::lifecycle::http`].
//!
//! Names follow controller-runtime where it has one (`reconcile_total`,
//! `reconcile_errors_total`, `reconcile_time_seconds`), prefixed `msp_`.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use msp_policy_engine::ActivePolicy;
use msp_policy_engine::compare::Field;

use crate::state::crd::PoolState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabels {
    pub namespace: String,
    pub name: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub name: String,
    pub version: String,
    /// First 12 hex digits of the module's sha256.
    pub sha256: String,
    /// The module's whole digest, `sha256:<hex>` (as in each pool's
    /// `status.policyDigest` and the PolicyLoaded Event).
    pub digest: String,
    /// `unsigned` (no trust configured: any module loads), `verified` (a
    /// ConfigMap module whose signature verified), `bundled` (the default
    /// built into the binary, with trust configured).
    pub signature: &'static str,
    /// The contract version the module was built against: what an operator
    /// upgrade must keep running.
    pub contract: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_steps: Family<StepLabels, Histogram, fn() -> Histogram>,
    pool_capacity: Family<PoolLabels, Gauge>,
    pool_used: Family<PoolLabels, Gauge>,
    pool_state: Family<PoolStateLabels, Gauge>,
    policy_failures: Family<KindLabels, Counter>,
    policy_info: Family<PolicyLabels, Gauge>,
    rail_refusals: Family<OperationLabels, Counter>,
    node_operations: Family<OperationLabels, Counter>,
    status_writes: Counter,
    policy_reloads: Family<ErrorLabels, Counter>,
    registrations_refused: Family<KindLabels, Counter>,
    leader: Gauge,
    pools_held: Family<NodeLabels, Gauge>,
    /// Nodes with a `pools_held` series (set back to 0 when their last held
    /// pool goes with their last ledger entry).
    held_nodes: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Whether trust is configured (`--policy-trust-secret`): the
    /// `signature` label of the info gauges.
    signed: std::sync::atomic::AtomicBool,
    /// Shadow mode's metrics.
    pub shadow: ShadowMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("msp");
        let m = Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            // 1 ms … ~16 s
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 0.1 ms … ~3 s
            reconcile_steps: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            pool_capacity: Family::default(),
            pool_used: Family::default(),
            pool_state: Family::default(),
            policy_failures: Family::default(),
            policy_info: Family::default(),
            rail_refusals: Family::default(),
            node_operations: Family::default(),
            status_writes: Counter::default(),
            policy_reloads: Family::default(),
            registrations_refused: Family::default(),
            leader: Gauge::default(),
            pools_held: Family::default(),
            held_nodes: Default::default(),
            signed: Default::default(),
            shadow: ShadowMetrics::default(),
            registry: Registry::default(),
        };
        registry.register("reconcile", "Reconciles run", m.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by error kind",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_time_seconds",
            "Duration of a reconcile",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_step_seconds",
            "Time a reconcile spent in each step (decide: the policy; disks: asking the node what its disks hold before a call that may format them; ledger: the durable record before a create or import; node: the pool call; status: the status write; contents: listing a deleted resource's pool that is then kept; destroy: listing it and destroying it)",
            m.reconcile_steps.clone(),
        );
        registry.register(
            "pool_capacity_bytes",
            "Pool capacity as its node reports it",
            m.pool_capacity.clone(),
        );
        registry.register(
            "pool_used_bytes",
            "Pool bytes used as its node reports it",
            m.pool_used.clone(),
        );
        registry.register(
            "pool_state",
            "1 for the pool's current state, 0 for the others",
            m.pool_state.clone(),
        );
        registry.register(
            "policy_decision_failures",
            "Policy decisions that failed (trap, fuel, memory, nonsense); the last good status was kept",
            m.policy_failures.clone(),
        );
        registry.register(
            "policy_info",
            "The active policy (value 1)",
            m.policy_info.clone(),
        );
        registry.register(
            "safety_rail_refusals",
            "Policy actions the host refused, by action and rail",
            m.rail_refusals.clone(),
        );
        registry.register(
            "node_operations",
            "Pool operations on storage nodes, by action and result",
            m.node_operations.clone(),
        );
        registry.register(
            "status_writes",
            "Status subresource writes",
            m.status_writes.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy ConfigMap changes, by outcome (loaded, bundled) or the cause of a refusal (key-missing, key-under-data, unknown-version, ...)",
            m.policy_reloads.clone(),
        );
        registry.register(
            "registrations_refused",
            "Storage node registrations refused, by why (endpoint_not_on_node, unknown_node, peer_not_on_node, not_ready)",
            m.registrations_refused.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (only the leader acts), else 0",
            m.leader.clone(),
        );
        registry.register(
            "pools_held",
            "Pools of deleted resources kept because they hold data (or could not be checked), by node",
            m.pools_held.clone(),
        );
        m.shadow.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// The held pools of the ledger, counted by node (nodes with none are 0).
    pub fn set_pools_held(&self, entries: &[crate::state::ledger::LedgerEntry]) {
        let mut known = self.held_nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_node: std::collections::BTreeMap<String, i64> =
            known.iter().map(|n| (n.clone(), 0)).collect();
        for e in entries {
            *by_node.entry(e.node.clone()).or_default() += i64::from(e.held.is_some());
        }
        for (node, held) in by_node {
            known.insert(node.clone());
            self.pools_held
                .get_or_create(&NodeLabels { node })
                .set(held);
        }
    }

    /// Whether this replica leads now.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Observes the time one step of a reconcile took.
    pub fn reconcile_step(&self, step: &'static str, took: Duration) {
        self.reconcile_steps
            .get_or_create(&StepLabels { step })
            .observe(took.as_secs_f64());
    }

    /// Counts a reconcile and observes its duration when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }

    pub fn reconcile_failure(&self, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: error.to_string(),
            })
            .inc();
    }

    /// A failed policy decision, by the engine's error kind (trap, fuel-exhausted, …).
    pub fn policy_failure(&self, kind: &str) {
        self.policy_failures
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn set_policy(&self, active: &ActivePolicy) {
        set_info(&self.policy_info, Some(active), self.signed());
    }

    /// Trust is configured: modules are loaded only when signed (the info
    /// gauges' `signature` label says so).
    pub fn set_signed(&self, signed: bool) {
        use std::sync::atomic::Ordering;
        self.signed.store(signed, Ordering::Relaxed);
        self.shadow.signed.store(signed, Ordering::Relaxed);
    }

    fn signed(&self) -> bool {
        self.signed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn rail_refusal(&self, action: &str, rail: &str) {
        self.rail_refusals
            .get_or_create(&OperationLabels {
                action: action.to_string(),
                result: rail.to_string(),
            })
            .inc();
    }

    pub fn node_operation(&self, action: &str, ok: bool) {
        self.node_operations
            .get_or_create(&OperationLabels {
                action: action.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn policy_reload(&self, outcome: &str) {
        self.policy_reloads
            .get_or_create(&ErrorLabels {
                error: outcome.to_string(),
            })
            .inc();
    }

    pub fn registration_refused(&self, kind: &str) {
        self.registrations_refused
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn status_write(&self) {
        self.status_writes.inc();
    }

    /// Sets the per-pool gauges.
    pub fn set_pool(
        &self,
        namespace: &str,
        name: &str,
        state: PoolState,
        capacity: Option<u64>,
        used: Option<u64>,
    ) {
        let labels = PoolLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match capacity {
            Some(c) => {
                self.pool_capacity.get_or_create(&labels).set(clamp(c));
            }
            None => {
                self.pool_capacity.remove(&labels);
            }
        }
        match used {
            Some(u) => {
                self.pool_used.get_or_create(&labels).set(clamp(u));
            }
            None => {
                self.pool_used.remove(&labels);
            }
        }
        for s in PoolState::ALL {
            self.pool_state
                .get_or_create(&PoolStateLabels {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    state: s.as_str().to_string(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Drops the gauges of a pool whose resource is gone.
    pub fn forget_pool(&self, namespace: &str, name: &str) {
        let labels = PoolLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.pool_capacity.remove(&labels);
        self.pool_used.remove(&labels);
        for s in PoolState::ALL {
            self.pool_state.remove(&PoolStateLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                state: s.as_str().to_string(),
            });
        }
    }
}

/// Makes `policy` the one series of an info gauge (none: no series).
fn set_info(family: &Family<PolicyLabels, Gauge>, policy: Option<&ActivePolicy>, signed: bool) {
    let labels = policy.map(|active| PolicyLabels {
        name: active.name.clone(),
        version: active.version.clone(),
        sha256: active.sha256.chars().take(12).collect(),
        digest: format!("sha256:{}", active.sha256),
        signature: match (signed, active.source) {
            (false, _) => "unsigned",
            (true, msp_policy_engine::PolicySource::Bundled) => "bundled",
            (true, _) => "verified",
        },
        contract: active.contract.clone(),
    });
    if let Some(labels) = &labels
        && family.get(labels).is_some_and(|g| g.get() == 1)
    {
        return;
    }
    family.clear();
    if let Some(labels) = labels {
        family.get_or_create(&labels).set(1);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub field: &'static str,
}

/// Shadow mode: the candidate's decisions beside the live ones (see
/// [`crate::policy::shadow`]).
#[derive(Default)]
pub struct ShadowMetrics {
    decisions: Counter,
    disagreements: Family<FieldLabels, Counter>,
    dropped: Counter,
    reloads: Family<ErrorLabels, Counter>,
    info: Family<PolicyLabels, Gauge>,
    signed: std::sync::atomic::AtomicBool,
}

impl ShadowMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "policy_shadow_decisions",
            "Live decisions the shadow candidate also decided (0 with a candidate loaded: nothing compared yet, so no disagreement says nothing)",
            self.decisions.clone(),
        );
        registry.register(
            "policy_shadow_disagreements",
            "Shadow decisions that differ from the live one, by field (action, state, reason, requeue, event; error: one of the two failed)",
            self.disagreements.clone(),
        );
        registry.register(
            "policy_shadow_dropped",
            "Live decisions not offered to the candidate because its queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "policy_shadow_reloads",
            "Shadow ConfigMap changes, by outcome (loaded, bundled: no candidate) or the cause of a refusal, as msp_policy_reloads_total",
            self.reloads.clone(),
        );
        registry.register(
            "policy_shadow_info",
            "The shadow candidate (value 1); no series while shadow mode is off",
            self.info.clone(),
        );
        // Every field from the start, so a rate over a field that never
        // disagreed is 0 rather than absent.
        for field in Field::ALL {
            let _ = self.disagreements.get_or_create(&FieldLabels {
                field: field.as_str(),
            });
        }
    }

    /// One candidate decision and the fields it disagreed on.
    pub fn decision(&self, differs: &[Field]) {
        self.decisions.inc();
        for field in differs {
            self.disagreements
                .get_or_create(&FieldLabels {
                    field: field.as_str(),
                })
                .inc();
        }
    }

    pub fn dropped(&self) {
        self.dropped.inc();
    }

    /// A change of the shadow ConfigMap, as [`Metrics::policy_reload`].
    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&ErrorLabels {
                error: outcome.to_string(),
            })
            .inc();
    }

    /// The candidate now shadowing (none: shadow mode off).
    pub fn set_candidate(&self, candidate: Option<&ActivePolicy>) {
        set_info(
            &self.info,
            candidate,
            self.signed.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}

/// Observes a reconcile's duration on drop.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use msp_policy_engine::PolicySource;

    use super::*;

    fn policy(name: &str, contract: &str) -> ActivePolicy {
        ActivePolicy {
            name: name.into(),
            version: "0.1.0".into(),
            sha256: "0123456789abcdef".into(),
            source: PolicySource::ConfigMap,
            contract: contract.into(),
        }
    }

    #[test]
    fn exposes_reconcile_and_pool_metrics() {
        let m = Metrics::new();
        drop(m.reconcile_timer());
        m.reconcile_failure("kube");
        m.set_pool("mayastor", "p1", PoolState::Online, Some(100), Some(10));
        m.set_policy(&policy("msp-default", "0.2.0"));
        m.policy_failure("trap");
        let text = m.encode().expect("encode");
        assert!(text.contains("msp_reconcile_total 1"), "{text}");
        assert!(
            text.contains("msp_reconcile_errors_total{error=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("msp_reconcile_time_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("msp_pool_capacity_bytes{namespace=\"mayastor\",name=\"p1\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("msp_pool_state{namespace=\"mayastor\",name=\"p1\",state=\"online\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("msp_pool_state{namespace=\"mayastor\",name=\"p1\",state=\"offline\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "msp_policy_info{name=\"msp-default\",version=\"0.1.0\",sha256=\"0123456789ab\",digest=\"sha256:0123456789abcdef\",signature=\"unsigned\",contract=\"0.2.0\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("msp_policy_decision_failures_total{kind=\"trap\"} 1"),
            "{text}"
        );
        m.forget_pool("mayastor", "p1");
        let text = m.encode().expect("encode");
        assert!(!text.contains("name=\"p1\""), "{text}");
    }

    #[test]
    fn shadow_metrics_count_by_field_and_name_the_candidate() {
        let m = Metrics::new();
        let text = m.encode().expect("encode");
        assert!(
            text.contains("msp_policy_shadow_disagreements_total{field=\"action\"} 0"),
            "every field is there from the start: {text}"
        );
        assert!(!text.contains("msp_policy_shadow_info{"), "{text}");
        m.shadow.decision(&[]);
        m.shadow.decision(&[Field::Action, Field::Reason]);
        m.shadow.dropped();
        m.shadow.reload("key-under-data");
        m.set_signed(true);
        m.shadow.set_candidate(Some(&policy("msp-retain", "0.1.0")));
        let text = m.encode().expect("encode");
        for line in [
            "msp_policy_shadow_decisions_total 2",
            "msp_policy_shadow_disagreements_total{field=\"action\"} 1",
            "msp_policy_shadow_disagreements_total{field=\"reason\"} 1",
            "msp_policy_shadow_disagreements_total{field=\"state\"} 0",
            "msp_policy_shadow_dropped_total 1",
            "msp_policy_shadow_reloads_total{error=\"key-under-data\"} 1",
            "msp_policy_shadow_info{name=\"msp-retain\",version=\"0.1.0\",sha256=\"0123456789ab\",digest=\"sha256:0123456789abcdef\",signature=\"verified\",contract=\"0.1.0\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.shadow.set_candidate(None);
        let text = m.encode().expect("encode");
        assert!(!text.contains("msp_policy_shadow_info{"), "{text}");
    }
}
