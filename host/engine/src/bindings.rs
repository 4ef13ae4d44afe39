//! Host-side bindings of every contract version the host runs, and the
//! conversions between them and the plain Rust `msp_policy_sdk::model` types
//! the rest of the operator uses (which mirror the current contract).
//!
//! One wasmtime bindgen per WIT file: [`v0_3`] for `wit/policy.wit` (current),
//! [`v0_2`] and [`v0_1`] for the frozen `wit/v0.2.0/` and `wit/v0.1.0/`.
//! [`Contract`] names them and is read from a component's export name. An
//! older component gets the model's observation without what later versions
//! added; the decision has one shape in all.

/// The current contract (0.3.0).
pub mod v0_3 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../../wit/policy.wit",
    });
}

/// The second contract (0.2.0), frozen.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../../wit/v0.2.0/policy.wit",
    });
}

/// The first contract (0.1.0), frozen.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../../wit/v0.1.0/policy.wit",
    });
}

/// The current contract's interface types (what `model` mirrors).
pub use v0_3::exports::openebs::msp_policy::decider as wit;

/// The current contract's export; carries the contract version.
pub const DECIDER_EXPORT: &str = "openebs:msp-policy/decider@0.3.0";
/// The same without the version, to recognise any version of it.
pub const DECIDER_UNVERSIONED: &str = "openebs:msp-policy/decider";

/// A contract version the host runs (by major.minor: in 0.x a minor bump is
/// breaking, a patch is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contract {
    V0_1,
    V0_2,
    V0_3,
}

impl Contract {
    /// Every version the host runs, oldest first.
    pub const ALL: [Contract; 3] = [Contract::V0_1, Contract::V0_2, Contract::V0_3];
    /// What the SDK and the bundled default build against.
    pub const CURRENT: Contract = Contract::V0_3;

    /// The WIT package version the host's bindings were generated from.
    pub fn as_str(&self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
            Contract::V0_3 => "0.3.0",
        }
    }

    /// The versions the host accepts, for error messages: "0.1.x, 0.2.x".
    pub fn accepted() -> String {
        Contract::ALL
            .iter()
            .map(|c| {
                let s = c.as_str();
                format!("{}.x", &s[..s.rfind('.').unwrap_or(s.len())])
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The contract of an export name `openebs:msp-policy/decider@X.Y.Z`:
    /// `Some(Ok(_))` for a version the host runs, `Some(Err(version))` for
    /// one it does not, `None` when the name is not the decider's at all.
    pub fn of_export(name: &str) -> Option<Result<Contract, String>> {
        let version = name.strip_prefix(DECIDER_UNVERSIONED)?.strip_prefix('@')?;
        let mut parts = version.splitn(3, '.');
        let known = match (parts.next(), parts.next()) {
            (Some("0"), Some("1")) => Some(Contract::V0_1),
            (Some("0"), Some("2")) => Some(Contract::V0_2),
            (Some("0"), Some("3")) => Some(Contract::V0_3),
            _ => None,
        };
        // The patch must be a number (wasmtime matches 0.2.x exports by
        // semver; pre-releases and junk are not a version we know).
        let patch_ok = parts
            .next()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        Some(match known {
            Some(c) if patch_ok => Ok(c),
            _ => Err(version.to_string()),
        })
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The conversions, generated into each version's module so that each speaks
/// its own bindgen types: the records all versions share, and the
/// observation with the fields a version adds given as `pool { .. }` (on the
/// pool resource) and `observation { .. }`, expressions over `$o`, and
/// `reported { .. }` (on the node's pool), expressions over `$p`.
macro_rules! conversions {
    (
        [$($wit:tt)+],
        |$o:ident| pool { $($pf:ident: $pv:expr),* $(,)? } observation { $($f:ident: $v:expr),* $(,)? }
        |$p:ident| reported { $($rf:ident: $rv:expr),* $(,)? }
    ) => {
        use msp_policy_sdk::model;
        use $($wit)+ as wit;

        /// The model's observation in this version's shape.
        pub fn observation_to_wit($o: &model::Observation) -> wit::Observation {
            wit::Observation {
                now_ms: $o.now_ms,
                pool: wit::PoolResource {
                    name: $o.pool.name.clone(),
                    namespace: $o.pool.namespace.clone(),
                    uid: $o.pool.uid.clone(),
                    generation: $o.pool.generation,
                    spec_node: $o.pool.spec_node.clone(),
                    spec_disks: $o.pool.spec_disks.clone(),
                    status_state: $o.pool.status_state.map(state_to_wit),
                    status_node: $o.pool.status_node.clone(),
                    status_disks: $o.pool.status_disks.clone(),
                    status_reason: $o.pool.status_reason.clone(),
                    deleted: $o.pool.deleted,
                    $($pf: $pv,)*
                },
                node: k8s_node(&$o.node),
                storage_node: storage_node(&$o.storage_node),
                pools_known: $o.pools_known,
                reported: $o.reported.as_ref().map(reported),
                in_ledger: $o.in_ledger,
                last_operation: $o.last_operation.as_ref().map(last_operation),
                conflicts: $o.conflicts.clone(),
                $($f: $v,)*
            }
        }

        fn k8s_node(n: &model::K8sNode) -> wit::K8sNode {
            wit::K8sNode {
                exists: n.exists,
                mayastor_enabled: n.mayastor_enabled,
            }
        }

        fn storage_node(s: &model::StorageNode) -> wit::StorageNode {
            wit::StorageNode {
                registered: s.registered,
                heartbeat_age_ms: s.heartbeat_age_ms,
                reachable: s.reachable,
                endpoint: s.endpoint.clone(),
            }
        }

        fn reported($p: &model::ReportedPool) -> wit::ReportedPool {
            wit::ReportedPool {
                name: $p.name.clone(),
                disks: $p.disks.clone(),
                state: match $p.state {
                    model::ReportedState::Unknown => wit::ReportedState::Unknown,
                    model::ReportedState::Online => wit::ReportedState::Online,
                    model::ReportedState::Degraded => wit::ReportedState::Degraded,
                    model::ReportedState::Faulted => wit::ReportedState::Faulted,
                },
                capacity: $p.capacity,
                used: $p.used,
                $($rf: $rv,)*
            }
        }

        fn last_operation(l: &model::LastOperation) -> wit::LastOperation {
            wit::LastOperation {
                action: action_to_wit(l.action),
                error: l.error.as_ref().map(|e| wit::OperationError {
                    kind: match e.kind {
                        model::ErrorKind::InvalidArgument => wit::ErrorKind::InvalidArgument,
                        model::ErrorKind::FailedPrecondition => {
                            wit::ErrorKind::FailedPrecondition
                        }
                        model::ErrorKind::AlreadyExists => wit::ErrorKind::AlreadyExists,
                        model::ErrorKind::NotFound => wit::ErrorKind::NotFound,
                        model::ErrorKind::Unavailable => wit::ErrorKind::Unavailable,
                        model::ErrorKind::DeadlineExceeded => wit::ErrorKind::DeadlineExceeded,
                        model::ErrorKind::ResourceExhausted => wit::ErrorKind::ResourceExhausted,
                        model::ErrorKind::Internal => wit::ErrorKind::Internal,
                        model::ErrorKind::Other => wit::ErrorKind::Other,
                    },
                    message: e.message.clone(),
                }),
                failures: l.failures,
                at_ms: l.at_ms,
            }
        }

        pub fn decision_from_wit(d: wit::Decision) -> model::Decision {
            model::Decision {
                action: match d.action {
                    wit::Action::None => model::Action::None,
                    wit::Action::Create => model::Action::Create,
                    wit::Action::Import => model::Action::Import,
                    wit::Action::Destroy => model::Action::Destroy,
                    wit::Action::Retain => model::Action::Retain,
                },
                state: match d.state {
                    wit::PoolState::Pending => model::PoolState::Pending,
                    wit::PoolState::Online => model::PoolState::Online,
                    wit::PoolState::Degraded => model::PoolState::Degraded,
                    wit::PoolState::Faulted => model::PoolState::Faulted,
                    wit::PoolState::Offline => model::PoolState::Offline,
                },
                reason: d.reason,
                requeue_after_ms: d.requeue_after_ms,
                event: d.event.map(|e| model::Event {
                    warning: e.warning,
                    reason: e.reason,
                    message: e.message,
                }),
            }
        }

        pub fn info_from_wit(i: wit::PolicyInfo) -> model::PolicyInfo {
            model::PolicyInfo {
                name: i.name,
                version: i.version,
            }
        }

        fn state_to_wit(s: model::PoolState) -> wit::PoolState {
            match s {
                model::PoolState::Pending => wit::PoolState::Pending,
                model::PoolState::Online => wit::PoolState::Online,
                model::PoolState::Degraded => wit::PoolState::Degraded,
                model::PoolState::Faulted => wit::PoolState::Faulted,
                model::PoolState::Offline => wit::PoolState::Offline,
            }
        }

        fn action_to_wit(a: model::Action) -> wit::Action {
            match a {
                model::Action::None => wit::Action::None,
                model::Action::Create => wit::Action::Create,
                model::Action::Import => wit::Action::Import,
                model::Action::Destroy => wit::Action::Destroy,
                model::Action::Retain => wit::Action::Retain,
            }
        }
    };
}

/// The current contract: the model as it is.
pub mod current {
    conversions!(
        [super::v0_3::exports::openebs::msp_policy::decider],
        |o| pool {
            labels: pairs(&o.pool.labels),
            annotations: pairs(&o.pool.annotations),
        } observation {
            settings: wit::HostSettings {
                heartbeat_deadline_ms: o.settings.heartbeat_deadline_ms,
            },
        }
        |p| reported { replicas: p.replicas }
    );

    pub(super) fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Contract 0.2: the model without what 0.3 added (the replica count); a
/// 0.2 policy decides on what it knew.
pub mod adapt_v0_2 {
    use super::current::pairs;

    conversions!(
        [super::v0_2::exports::openebs::msp_policy::decider],
        |o| pool {
            labels: pairs(&o.pool.labels),
            annotations: pairs(&o.pool.annotations),
        } observation {
            settings: wit::HostSettings {
                heartbeat_deadline_ms: o.settings.heartbeat_deadline_ms,
            },
        }
        |p| reported {}
    );
}

/// Contract 0.1: the model without what 0.2 and 0.3 added (host settings,
/// labels, annotations, the replica count); a 0.1 policy decides on what it
/// knew.
pub mod adapt_v0_1 {
    conversions!(
        [super::v0_1::exports::openebs::msp_policy::decider],
        |o| pool {} observation {}
        |p| reported {}
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions_are_read_from_the_export_name() {
        let of = |v: &str| Contract::of_export(&format!("{DECIDER_UNVERSIONED}@{v}"));
        assert_eq!(of("0.1.0"), Some(Ok(Contract::V0_1)));
        assert_eq!(of("0.1.3"), Some(Ok(Contract::V0_1)));
        assert_eq!(of("0.2.0"), Some(Ok(Contract::V0_2)));
        assert_eq!(of("0.2.11"), Some(Ok(Contract::V0_2)));
        assert_eq!(of("0.3.0"), Some(Ok(Contract::V0_3)));
        // A minor above the newest known is breaking in 0.x: refused.
        assert_eq!(of("0.4.0"), Some(Err("0.4.0".into())));
        assert_eq!(of("1.0.0"), Some(Err("1.0.0".into())));
        assert_eq!(of("1.2.0"), Some(Err("1.2.0".into())));
        assert_eq!(of("0.0.1"), Some(Err("0.0.1".into())));
        assert_eq!(of("0.2.0-rc1"), Some(Err("0.2.0-rc1".into())));
        assert_eq!(Contract::of_export("openebs:msp-policy/other@0.2.0"), None);
        assert_eq!(Contract::of_export(DECIDER_UNVERSIONED), None);
        assert_eq!(
            Contract::of_export(DECIDER_EXPORT),
            Some(Ok(Contract::CURRENT))
        );
        assert_eq!(Contract::accepted(), "0.1.x, 0.2.x, 0.3.x");
    }

    #[test]
    fn the_replica_count_goes_to_0_3_components_only() {
        use msp_policy_sdk::model;
        let obs = model::Observation {
            reported: Some(model::ReportedPool {
                name: "p".into(),
                disks: vec!["/dev/sdb".into()],
                state: model::ReportedState::Online,
                capacity: 10,
                used: 1,
                replicas: Some(3),
            }),
            ..Default::default()
        };
        let now = current::observation_to_wit(&obs).reported.expect("listed");
        assert_eq!((now.capacity, now.replicas), (10, Some(3)));
        // 0.2 and 0.1 have no such field; the rest of the pool goes as it is.
        let two = adapt_v0_2::observation_to_wit(&obs)
            .reported
            .expect("listed");
        let one = adapt_v0_1::observation_to_wit(&obs)
            .reported
            .expect("listed");
        assert_eq!((two.capacity, two.used, one.capacity), (10, 1, 10));
    }
}
