//! Observe: gathers everything the policy may base a decision on into one
//! [`Observation`]: the resource (with its labels and annotations), its
//! Kubernetes Node, the storage node's registration and pool list, the
//! ledger, the last operation, conflicts, and the host's own settings (the
//! heartbeat deadline).
//!
//! Pure reads of in-memory state (the watch caches, the registry, the ledger
//! copy), so it is cheap and never fails.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use msp_policy_sdk::model::{
    ENGINE_LABEL_KEY, ENGINE_LABEL_VALUE, HostSettings, K8sNode, LAST_APPLIED_ANNOTATION,
    Observation, PoolResource, Remembered, ReportedPool, ReportedState, StorageNode,
};

use super::operations::{Operations, now_ms};
use crate::nodes::client::{NodePool, PoolHealth};
use crate::nodes::registry::NodeRegistry;
use crate::state::cache::PoolCache;
use crate::state::crd::MayastorPool;
use crate::state::ledger::{Ledger, LedgerEntry};

/// What observe reads from.
pub struct Sources<'a> {
    pub pools: &'a PoolCache,
    pub nodes: &'a Store<Node>,
    pub registry: &'a NodeRegistry,
    pub ledger: &'a Ledger,
    pub operations: &'a Operations,
}

/// The Kubernetes Node as the policy sees it.
pub fn k8s_node(nodes: &Store<Node>, name: &str) -> K8sNode {
    match nodes.get(&ObjectRef::new(name)) {
        None => K8sNode::default(),
        Some(node) => K8sNode {
            exists: true,
            mayastor_enabled: node.labels().get(ENGINE_LABEL_KEY).map(String::as_str)
                == Some(ENGINE_LABEL_VALUE),
        },
    }
}

/// The storage node as the policy sees it, and its pool list when known.
pub fn storage_node(
    registry: &NodeRegistry,
    node: &str,
) -> (StorageNode, Option<Vec<ReportedPool>>) {
    let view = registry.view(node);
    let sn = StorageNode {
        registered: view.registered,
        heartbeat_age_ms: view
            .heartbeat_age
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        reachable: view.reachable,
        endpoint: view.endpoint,
    };
    let pools = view.pools.map(|list| list.iter().map(reported).collect());
    (sn, pools)
}

/// A pool the node lists, as the policy sees it.
pub fn reported(pool: &NodePool) -> ReportedPool {
    ReportedPool {
        name: pool.name.clone(),
        disks: pool.disks.clone(),
        state: match pool.state {
            PoolHealth::Unknown => ReportedState::Unknown,
            PoolHealth::Online => ReportedState::Online,
            PoolHealth::Degraded => ReportedState::Degraded,
            PoolHealth::Faulted => ReportedState::Faulted,
        },
        capacity: pool.capacity,
        used: pool.used,
        replicas: pool.replicas,
    }
}

/// How the host runs, as the policy sees it: the registry's heartbeat
/// deadline (`--node-deadline`).
pub fn host_settings(registry: &NodeRegistry) -> HostSettings {
    HostSettings {
        heartbeat_deadline_ms: u64::try_from(registry.settings().deadline.as_millis())
            .unwrap_or(u64::MAX),
    }
}

/// The resource's annotations as the policy sees them (without kubectl's
/// last-applied copy).
pub fn policy_annotations(pool: &MayastorPool) -> std::collections::BTreeMap<String, String> {
    pool.annotations()
        .iter()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().any(|d| b.contains(d))
}

/// Sort key deciding which of two not-yet-created pools claiming one disk
/// goes first: the older resource, then the name.
fn precedence(pool: &MayastorPool) -> (Option<jiff::Timestamp>, String) {
    (
        pool.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pool.name_any(),
    )
}

/// Other pools that claim one of `pool`'s disks on its node, and win it:
/// pools already created (resources with a cached node, pools the node
/// lists, ledger entries), and older resources not created yet. Two new
/// resources on one disk thus never block each other.
pub fn conflicts(
    pool: &MayastorPool,
    all: &[std::sync::Arc<MayastorPool>],
    reported: Option<&[ReportedPool]>,
    ledger: &[LedgerEntry],
) -> Vec<String> {
    let name = pool.name_any();
    let uid = pool.uid().unwrap_or_default();
    let node = pool.effective_node();
    let disks = pool.effective_disks();
    let created = pool.placement_cached();
    let mine = precedence(pool);
    let mut out = BTreeSet::new();
    for other in all {
        // Borrowed compares: this runs over every pool for every reconcile.
        if other.effective_node() != node || other.metadata.uid.as_deref() == Some(uid.as_str()) {
            continue;
        }
        if !overlaps(disks, other.effective_disks()) {
            continue;
        }
        let wins = if other.placement_cached() {
            true
        } else {
            !created && precedence(other) < mine
        };
        if wins {
            out.insert(other.name_any());
        }
    }
    for p in reported.into_iter().flatten() {
        if p.name != name && overlaps(disks, &p.disks) {
            out.insert(p.name.clone());
        }
    }
    for entry in ledger {
        if entry.node == node && entry.pool != name && overlaps(disks, &entry.disk_names()) {
            out.insert(entry.pool.clone());
        }
    }
    out.into_iter().collect()
}

/// The resource as created: when its status has no placement cached yet
/// (the operator stopped between CreatePool and the status write) and the
/// ledger records its pool on another node or disks than the spec now names
/// (the spec was edited meanwhile), a copy whose spec names what the ledger
/// recorded. What may have been created wins over the spec: acting on the
/// edited spec would report the new disks while the pool sits on the old
/// ones, and leak it. `None` when there is nothing to correct.
pub fn as_created(pool: &MayastorPool, ledger: &Ledger) -> Option<MayastorPool> {
    if pool.placement_cached() {
        return None;
    }
    let uid = pool.uid()?;
    let entry = ledger.of_uid(&uid)?;
    if entry.node == pool.spec.node && entry.disks == pool.spec.disks {
        return None;
    }
    tracing::info!(node = %entry.node, disks = ?entry.disks, spec_node = %pool.spec.node,
        spec_disks = ?pool.spec.disks, "the ledger records the pool elsewhere than the spec: what was created wins");
    let mut view = pool.clone();
    view.spec.node = entry.node;
    view.spec.disks = entry.disks;
    Some(view)
}

/// True when live resource `pool` takes over the pool of `entry`, made for
/// another resource: it is that resource re-created (same namespace and
/// name, so the old one is gone) on the same node and disks.
pub fn takes_over(pool: &MayastorPool, entry: &LedgerEntry) -> bool {
    pool.uid().as_deref() != Some(entry.uid.as_str())
        && pool.namespace().unwrap_or_default() == entry.namespace
        && pool.name_any() == entry.pool
        && pool.effective_node() == entry.node
        && crate::nodes::pool_calls::overlap(pool.effective_disks(), &entry.disks)
}

/// True when the ledger `entry` of live resource `pool`'s name is its own:
/// made for it, or taken over by it ([`takes_over`]).
pub fn owns(pool: &MayastorPool, entry: &LedgerEntry) -> bool {
    pool.uid().as_deref() == Some(entry.uid.as_str()) || takes_over(pool, entry)
}

/// The observation of one live resource.
pub fn observe(pool: &MayastorPool, src: &Sources<'_>) -> Observation {
    let name = pool.name_any();
    let uid = pool.uid().unwrap_or_default();
    let node = pool.effective_node().to_string();
    let status = pool.status.clone().unwrap_or_default();
    let (storage, pools) = storage_node(src.registry, &node);
    // Only the pool of this name on this resource's disks is its pool: one
    // of the name elsewhere (a deleted resource's, not destroyed yet) is not.
    // The names its disks had before a path edit count too: a pool loaded
    // before the edit is listed under the old name until imported again.
    let entry = src.ledger.get(&node, &name);
    let mut disks = pool.effective_disks().to_vec();
    if let Some(e) = entry.as_ref().filter(|e| owns(pool, e)) {
        disks.extend(e.disk_names());
    }
    let reported = pools.as_ref().and_then(|list| {
        list.iter()
            .find(|p| p.name == name && crate::nodes::pool_calls::overlap(&p.disks, &disks))
            .cloned()
    });
    let on_node = src.pools.on_node(&node);
    Observation {
        now_ms: now_ms(),
        pool: PoolResource {
            name: name.clone(),
            namespace: pool.namespace().unwrap_or_default(),
            uid: uid.clone(),
            generation: pool.metadata.generation.unwrap_or(0),
            spec_node: pool.spec.node.clone(),
            spec_disks: pool.spec.disks.clone(),
            status_state: status.state,
            status_node: status.node,
            status_disks: status.disks,
            status_reason: status.reason,
            deleted: false,
            labels: pool.labels().clone(),
            annotations: policy_annotations(pool),
        },
        node: k8s_node(src.nodes, &node),
        storage_node: storage,
        pools_known: pools.is_some(),
        // A take-over is recorded before any node call (`apply::remember`).
        in_ledger: entry.is_some_and(|e| owns(pool, &e)),
        last_operation: src.operations.get(&uid),
        conflicts: conflicts(pool, &on_node, pools.as_deref(), &src.ledger.on_node(&node)),
        reported,
        settings: host_settings(src.registry),
    }
}

/// The observation of a ledger pool whose resource is gone.
pub fn observe_deleted(entry: &LedgerEntry, src: &Sources<'_>) -> Observation {
    let (sn, pools) = storage_node(src.registry, &entry.node);
    let reported = pools
        .as_ref()
        .and_then(|list| list.iter().find(|p| p.name == entry.pool).cloned());
    Observation {
        now_ms: now_ms(),
        pool: PoolResource::deleted(Remembered {
            name: &entry.pool,
            namespace: &entry.namespace,
            uid: &entry.uid,
            node: &entry.node,
            disks: &entry.disks,
            labels: &entry.labels,
            annotations: &entry.annotations,
        }),
        node: k8s_node(src.nodes, &entry.node),
        storage_node: sn,
        pools_known: pools.is_some(),
        reported,
        in_ledger: true,
        last_operation: src.operations.get(&entry.uid),
        conflicts: Vec::new(),
        settings: host_settings(src.registry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::crd::{MayastorPoolSpec, MayastorPoolStatus};

    fn pool(
        name: &str,
        uid: &str,
        disks: &[&str],
        created: bool,
        age_s: i64,
    ) -> std::sync::Arc<MayastorPool> {
        let mut p = MayastorPool::new(
            name,
            MayastorPoolSpec {
                node: "n1".into(),
                disks: disks.iter().map(|d| d.to_string()).collect(),
            },
        );
        p.metadata.uid = Some(uid.into());
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_700_000_000 + age_s).expect("timestamp"),
        ));
        if created {
            p.status = Some(MayastorPoolStatus {
                node: Some("n1".into()),
                disks: Some(p.spec.disks.clone()),
                ..Default::default()
            });
        }
        std::sync::Arc::new(p)
    }

    #[test]
    fn the_policy_gets_the_hosts_deadline_and_the_admins_annotations() {
        let registry = NodeRegistry::new(crate::nodes::registry::RegistrySettings {
            deadline: std::time::Duration::from_secs(30),
            ..Default::default()
        });
        assert_eq!(host_settings(&registry).heartbeat_deadline_ms, 30_000);
        let mut p = (*pool("a", "ua", &["/dev/loop0"], false, 0)).clone();
        p.metadata.annotations = Some(
            [
                ("example.com/retain", "true"),
                (LAST_APPLIED_ANNOTATION, "{\"apiVersion\": \"...\"}"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        assert_eq!(
            policy_annotations(&p).into_iter().collect::<Vec<_>>(),
            vec![("example.com/retain".to_string(), "true".to_string())]
        );
    }

    #[tokio::test]
    async fn what_the_operator_observes_is_what_the_tools_accept() {
        let fixture = crate::controller::fixtures::Fixture::new();
        let src = fixture.ctx.sources();
        let mut p = (*pool("a", "ua", &["/dev/loop0"], true, 0)).clone();
        p.metadata.labels = Some([("keep".to_string(), "true".to_string())].into());
        p.metadata.annotations = Some(
            [
                ("example.com/note", "x"),
                (LAST_APPLIED_ANNOTATION, "{}"),
                (
                    "example.com/huge",
                    &"h".repeat(msp_policy_sdk::model::LAST_SEEN_LIMIT),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let live = observe(&p, &src);
        assert_eq!(live.possible(), Ok(()));
        let entry = crate::controller::apply::ledger_entry(&p, "n1", &p.spec.disks);
        let gone = observe_deleted(&entry, &src);
        assert_eq!(gone.possible(), Ok(()));
        assert!(gone.pool.deleted && gone.in_ledger);
        assert_eq!(
            gone.pool.labels.get("keep").map(String::as_str),
            Some("true")
        );
        // Within the bound: the huge annotation and kubectl's copy are not kept.
        assert_eq!(
            gone.pool.annotations.keys().collect::<Vec<_>>(),
            vec!["example.com/note"]
        );
        // The same observation as the tools make of the live one deleted.
        let mut as_tools = live.as_deleted();
        as_tools.now_ms = gone.now_ms;
        assert_eq!(as_tools, gone);
    }

    #[test]
    fn conflicts_go_to_the_pool_that_claimed_first() {
        let a = pool("a", "ua", &["/dev/loop0"], false, 0);
        let b = pool("b", "ub", &["/dev/loop0"], false, 10);
        let c = pool("c", "uc", &["/dev/loop1"], false, 0);
        let all = vec![a.clone(), b.clone(), c.clone()];
        // Neither created: the older one goes first, the younger waits.
        assert!(conflicts(&a, &all, None, &[]).is_empty());
        assert_eq!(conflicts(&b, &all, None, &[]), vec!["a".to_string()]);
        assert!(conflicts(&c, &all, None, &[]).is_empty());
        // A created pool wins even over an older resource.
        let d = pool("d", "ud", &["/dev/loop0"], true, 20);
        let all = vec![a.clone(), d.clone()];
        assert_eq!(conflicts(&a, &all, None, &[]), vec!["d".to_string()]);
        assert!(conflicts(&d, &all, None, &[]).is_empty());
        // A pool the node lists, or a ledger entry, on the disk is a conflict.
        let listed = ReportedPool {
            name: "foreign".into(),
            disks: vec!["/dev/loop1".into()],
            state: msp_policy_sdk::model::ReportedState::Online,
            capacity: 0,
            used: 0,
            replicas: None,
        };
        assert_eq!(
            conflicts(&c, std::slice::from_ref(&c), Some(&[listed]), &[]),
            vec!["foreign".to_string()]
        );
        let entry = LedgerEntry {
            pool: "gone".into(),
            namespace: "mayastor".into(),
            uid: "ug".into(),
            node: "n1".into(),
            disks: vec!["/dev/loop1".into()],
            ..Default::default()
        };
        assert_eq!(
            conflicts(&c, std::slice::from_ref(&c), None, &[entry]),
            vec!["gone".to_string()]
        );
    }
}
