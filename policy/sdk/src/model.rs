//! Plain Rust mirror of the current WIT contract (`wit/policy.wit`, 0.3.0).
//!
//! The default policy is written against these types so that it is tested
//! natively; the wasm glue and the host's engine convert to and from the
//! generated bindings. The types are serde-serializable (camelCase, enums in
//! kebab-case as in the WIT) for `msp-policy eval --observation`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The contract version these types mirror (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.3.0";

/// The host's heartbeat deadline when an observation does not say (the
/// host's `--node-deadline` default; also what 0.1 policies hard-coded).
pub const DEFAULT_HEARTBEAT_DEADLINE_MS: u64 = 10_000;

/// The five states of the seed document.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum PoolState {
    Pending,
    Online,
    Degraded,
    Faulted,
    Offline,
}

impl PoolState {
    /// The five, in the seed's order.
    pub const ALL: [PoolState; 5] = [
        PoolState::Pending,
        PoolState::Online,
        PoolState::Degraded,
        PoolState::Faulted,
        PoolState::Offline,
    ];

    /// The word in `status.state` and in the WIT contract.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Pending => "pending",
            PoolState::Online => "online",
            PoolState::Degraded => "degraded",
            PoolState::Faulted => "faulted",
            PoolState::Offline => "offline",
        }
    }

    /// The word capitalised, as a Kubernetes condition's reason is written.
    pub fn title(self) -> &'static str {
        match self {
            PoolState::Pending => "Pending",
            PoolState::Online => "Online",
            PoolState::Degraded => "Degraded",
            PoolState::Faulted => "Faulted",
            PoolState::Offline => "Offline",
        }
    }

    /// The state named by `as_str`'s word, exactly.
    pub fn parse(s: &str) -> Option<PoolState> {
        PoolState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl core::fmt::Display for PoolState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node label that says a node runs a Mayastor storage node
/// (`openebs.io/engine=mayastor`), as Mayastor's own charts select on it.
pub const ENGINE_LABEL_KEY: &str = "openebs.io/engine";
/// The value of [`ENGINE_LABEL_KEY`].
pub const ENGINE_LABEL_VALUE: &str = "mayastor";

/// A pool's state as the storage node reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ReportedState {
    Unknown,
    Online,
    Degraded,
    Faulted,
}

/// What the host can do to a pool on a storage node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    None,
    Create,
    Import,
    Destroy,
    Retain,
}

/// Kinds of error a storage node operation can end with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    InvalidArgument,
    FailedPrecondition,
    AlreadyExists,
    NotFound,
    Unavailable,
    DeadlineExceeded,
    ResourceExhausted,
    Internal,
    Other,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolResource {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub spec_node: String,
    pub spec_disks: Vec<String>,
    #[serde(default)]
    pub status_state: Option<PoolState>,
    #[serde(default)]
    pub status_node: Option<String>,
    #[serde(default)]
    pub status_disks: Option<Vec<String>>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    /// metadata.labels (0.2.0); for a deleted resource, as last seen (see
    /// [`last_seen`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// metadata.annotations (0.2.0) without kubectl's last-applied copy
    /// ([`LAST_APPLIED_ANNOTATION`]); for a deleted resource, as last seen.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// kubectl's copy of the whole applied object: never among the policy's
/// annotations (often kilobytes, copied into every decision, and nothing a
/// policy needs that the spec does not say).
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The most bytes (keys and values together) of labels and annotations the
/// host keeps of a resource for when it is deleted (in its ledger entry,
/// which shares a 1 MiB ConfigMap with the node's other pools).
pub const LAST_SEEN_LIMIT: usize = 4096;

/// What the host keeps of a resource's labels and annotations for its
/// observation once it is deleted: the labels first, then the annotations
/// (without [`LAST_APPLIED_ANNOTATION`]), each in key order, every one that
/// still fits in [`LAST_SEEN_LIMIT`] bytes; one that does not is left out.
pub fn last_seen<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut room = LAST_SEEN_LIMIT;
    let mut keep = |items: Vec<(&String, &String)>| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in items {
            let size = k.len() + v.len();
            if size <= room {
                room -= size;
                out.insert(k.clone(), v.clone());
            }
        }
        out
    };
    let mut labels: Vec<_> = labels.into_iter().collect();
    labels.sort();
    let mut annotations: Vec<_> = annotations
        .into_iter()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
        .collect();
    annotations.sort();
    let labels = keep(labels);
    let annotations = keep(annotations);
    (labels, annotations)
}

/// What the host knows of a resource once it is gone: what its ledger entry
/// kept. The one definition of a deleted resource's `pool`, for the host
/// and for every tool that makes observations.
pub struct Remembered<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    /// The node and disks the pool was created on.
    pub node: &'a str,
    pub disks: &'a [String],
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

impl PoolResource {
    /// A deleted resource as the host observes it: no generation, state or
    /// reason (there is no resource to read them from), its placement as
    /// spec and status, its labels and annotations as last seen (bounded
    /// again by [`last_seen`]).
    pub fn deleted(r: Remembered<'_>) -> PoolResource {
        let (labels, annotations) = last_seen(r.labels, r.annotations);
        PoolResource {
            name: r.name.to_string(),
            namespace: r.namespace.to_string(),
            uid: r.uid.to_string(),
            generation: 0,
            spec_node: r.node.to_string(),
            spec_disks: r.disks.to_vec(),
            status_state: None,
            status_node: Some(r.node.to_string()),
            status_disks: Some(r.disks.to_vec()),
            status_reason: None,
            deleted: true,
            labels,
            annotations,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct K8sNode {
    pub exists: bool,
    pub mayastor_enabled: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageNode {
    pub registered: bool,
    #[serde(default)]
    pub heartbeat_age_ms: Option<u64>,
    pub reachable: bool,
    #[serde(default)]
    pub endpoint: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedPool {
    pub name: String,
    pub disks: Vec<String>,
    /// The node's state for the pool, made worse (never better) by the
    /// host where its check of the node's block devices finds a disk of the
    /// pool gone: the io-engine lists every pool online.
    pub state: ReportedState,
    pub capacity: u64,
    pub used: u64,
    /// Replicas, snapshots and clones the node lists on the pool (0.3.0);
    /// `None` when not listed yet.
    #[serde(default)]
    pub replicas: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OperationError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    pub action: Action,
    #[serde(default)]
    pub error: Option<OperationError>,
    pub failures: u32,
    pub at_ms: u64,
}

/// How the host runs (0.2.0): the same for every pool.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostSettings {
    /// The host's heartbeat deadline (`--node-deadline`).
    #[serde(default = "default_heartbeat_deadline_ms")]
    pub heartbeat_deadline_ms: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            heartbeat_deadline_ms: DEFAULT_HEARTBEAT_DEADLINE_MS,
        }
    }
}

fn default_heartbeat_deadline_ms() -> u64 {
    DEFAULT_HEARTBEAT_DEADLINE_MS
}

/// Everything the policy may base its decision on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub now_ms: u64,
    pub pool: PoolResource,
    pub node: K8sNode,
    pub storage_node: StorageNode,
    pub pools_known: bool,
    #[serde(default)]
    pub reported: Option<ReportedPool>,
    #[serde(default)]
    pub in_ledger: bool,
    #[serde(default)]
    pub last_operation: Option<LastOperation>,
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// How the host runs (0.2.0); the defaults when absent.
    #[serde(default)]
    pub settings: HostSettings,
}

/// Why an observation is one the host never makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impossible(pub String);

impl core::fmt::Display for Impossible {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Impossible {}

impl Observation {
    /// This observation as the host makes it once the resource is deleted:
    /// the pool's ledger entry is all that is left of it (see
    /// [`PoolResource::deleted`]), with the pool's node and disks as cached
    /// in status (else spec); no conflicts are computed for it.
    pub fn as_deleted(&self) -> Observation {
        let p = &self.pool;
        let node = p.status_node.as_deref().unwrap_or(&p.spec_node);
        let disks = p.status_disks.as_deref().unwrap_or(&p.spec_disks);
        Observation {
            pool: PoolResource::deleted(Remembered {
                name: &p.name,
                namespace: &p.namespace,
                uid: &p.uid,
                node,
                disks,
                labels: &p.labels,
                annotations: &p.annotations,
            }),
            in_ledger: true,
            conflicts: Vec::new(),
            ..self.clone()
        }
    }

    /// Ok when the host can make this observation; else why not. The one
    /// definition of what an observation can be: the host's own
    /// observations pass it (tested), and the tools refuse what fails it.
    pub fn possible(&self) -> Result<(), Impossible> {
        let p = &self.pool;
        let no = |why: &str| Err(Impossible(why.to_string()));
        if p.annotations.contains_key(LAST_APPLIED_ANNOTATION) {
            return no(
                "pool.annotations never holds kubectl.kubernetes.io/last-applied-configuration \
                 (the host leaves it out)",
            );
        }
        if let Some(r) = &self.reported
            && r.name != p.name
        {
            return no("reported is the node's pool of the resource's name: its name is pool.name");
        }
        if p.deleted {
            if p.status_state.is_some() || p.status_reason.is_some() || p.generation != 0 {
                return no(
                    "a deleted resource has no status.state, status.reason or generation: the \
                     host knows it only from its ledger entry (null, null and 0)",
                );
            }
            if p.status_node.as_deref() != Some(p.spec_node.as_str())
                || p.status_disks.as_deref() != Some(p.spec_disks.as_slice())
            {
                return no(
                    "a deleted resource's node and disks are those its pool was created on, in \
                     spec and status alike (statusNode = specNode, statusDisks = specDisks)",
                );
            }
            if !self.in_ledger {
                return no(
                    "a deleted resource is observed only while the ledger holds its pool \
                     (inLedger: true): the host decides nothing about the deletion of a \
                     resource whose pool it did not create",
                );
            }
            if !self.conflicts.is_empty() {
                return no("a deleted resource has no conflicts (they are not computed for it)");
            }
            if last_seen(&p.labels, &p.annotations) != (p.labels.clone(), p.annotations.clone()) {
                return no(&format!(
                    "a deleted resource's labels and annotations are what the host kept of them: \
                     at most {LAST_SEEN_LIMIT} bytes, labels first"
                ));
            }
        }
        Ok(())
    }

    /// True when the pool exists or existed on its node: its placement is
    /// cached in status (written with the first report after a create), a
    /// state after pending was reported, or a create/import just succeeded.
    /// The ledger alone does not say so: it is written *before* CreatePool.
    /// The one definition of "created" for the default policy, custom
    /// policies and the host. (A created pool being imported again is
    /// pending, so the state alone is not enough.)
    pub fn was_created(&self) -> bool {
        self.pool.status_node.is_some()
            || matches!(
                self.pool.status_state,
                Some(
                    PoolState::Online
                        | PoolState::Degraded
                        | PoolState::Faulted
                        | PoolState::Offline
                )
            )
            || matches!(
                &self.last_operation,
                Some(LastOperation {
                    action: Action::Create | Action::Import,
                    error: None,
                    ..
                })
            )
    }

    /// True when the storage node's last heartbeat is older than the host's
    /// deadline (false when it never sent one: that is `registered`).
    pub fn heartbeat_late(&self) -> bool {
        self.storage_node
            .heartbeat_age_ms
            .is_some_and(|age| age > self.settings.heartbeat_deadline_ms)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What to do and what to report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub action: Action,
    pub state: PoolState,
    pub reason: String,
    #[serde(default)]
    pub requeue_after_ms: Option<u64>,
    #[serde(default)]
    pub event: Option<Event>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_observation_gets_the_defaults_of_what_0_2_added() {
        let o: Observation = serde_json::from_str(
            r#"{"nowMs": 1, "pool": {"name": "p", "namespace": "n", "uid": "u",
                "generation": 1, "specNode": "a", "specDisks": ["/dev/x"]},
                "node": {"exists": true, "mayastorEnabled": true},
                "storageNode": {"registered": true, "reachable": true},
                "poolsKnown": false}"#,
        )
        .expect("a 0.1-shaped observation parses");
        assert_eq!(
            o.settings.heartbeat_deadline_ms,
            DEFAULT_HEARTBEAT_DEADLINE_MS
        );
        assert!(o.pool.labels.is_empty() && o.pool.annotations.is_empty());
        let o: Observation = serde_json::from_str(
            r#"{"nowMs": 1, "pool": {"name": "p", "namespace": "n", "uid": "u",
                "generation": 1, "specNode": "a", "specDisks": [],
                "annotations": {"example.com/retain": "true"}},
                "node": {"exists": true, "mayastorEnabled": true},
                "storageNode": {"registered": true, "reachable": true, "heartbeatAgeMs": 15000},
                "poolsKnown": false, "settings": {"heartbeatDeadlineMs": 30000}}"#,
        )
        .expect("a 0.2 observation parses");
        assert_eq!(
            o.pool
                .annotations
                .get("example.com/retain")
                .map(String::as_str),
            Some("true")
        );
        assert!(!o.heartbeat_late());
        let mut o = o;
        o.settings = HostSettings::default();
        assert!(o.heartbeat_late());
    }
}
