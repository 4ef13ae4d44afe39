//! The ledger: a durable record of the pools this operator created, so that
//! a pool whose resource was deleted while the operator was down is still
//! destroyed when it comes back, and no pool it did not create is ever
//! touched. (Finalizers would do this, but they are metadata, which the seed
//! makes read-only to the operator.)
//!
//! One ConfigMap per storage node, `msp-ledger-<node>`, in the operator's
//! namespace; one data key per pool (its name), holding the resource's uid,
//! namespace, node and disks, the pool's uuid, and its labels and annotations as last seen
//! (bounded: the policy decides about a deleted resource with them), as JSON. An entry is written *before* CreatePool
//! and removed after the pool is destroyed or retained. Writes are server-side
//! applies under the operator's field manager, so removing a key is applying
//! the map without it. The operator is the only writer: the in-memory copy
//! loaded at start is authoritative between writes.
//!
//! An entry says "CreatePool may have been sent for this resource, with this
//! pool uuid": it is written before the disk check, which comes last before
//! CreatePool (so that its answer is at most one round trip old), and
//! removed again when the check refuses a create. The reconcile that records
//! the first new pool of a node records, in the same write, the node's other
//! new pools (known in the watch cache, not listed by the node, no conflict,
//! no entry yet: see `controller::apply`), so a node's new pools cost one
//! write; each one's own reconcile then finds its entry durable and writes
//! nothing. Such an entry is no claim that the pool exists: a deleted
//! resource's pool is destroyed only as far as the node holds one of that
//! name (and uuid) on those disks (`pool_calls::destroy_pool`), and nothing
//! else. One resource's entry is never overwritten by another's, but by the
//! same resource re-created on the same disks (see `controller::apply`).
//!
//! Writes are group commits per node: changes for one node that arrive while
//! a write of its ConfigMap is in flight go into the next write together, and
//! each caller is answered once the write holding its change is durable.
//! Nodes never wait on each other (each has its own writer). A ConfigMap
//! holds at most 1 MiB: an entry that would take a node's ledger past that is
//! refused with [`LedgerError::Full`] (its pool is then not created), never
//! dropped.
//!
//! Each entry carries its format (`formatVersion`, [`crate::state::format`]).
//! An entry in a format newer than this version reads is *unread*: kept
//! verbatim in every write of its node, never changed or removed, and its
//! pool is left alone (the reconcile refuses it with an Event).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::state::format::{self, LEDGER_FORMAT, TooNew};

/// Field manager of every write of the operator.
pub const FIELD_MANAGER: &str = "msp-operator";
/// Label on every ledger ConfigMap (how the ledger is found at start).
pub const LEDGER_LABEL: &str = "msp.openebs.io/ledger";
/// Annotation with the node a ledger ConfigMap is for.
pub const NODE_ANNOTATION: &str = "msp.openebs.io/node";
/// The most a ConfigMap's values may hold together (the API server's limit,
/// the same as a Secret's; keys do not count).
pub const CONFIGMAP_DATA_LIMIT: usize = 1024 * 1024;
/// How long the first change of an idle node waits for changes its caller
/// said are coming (pools of the same node created together), so that they
/// share one write.
pub const DEFAULT_GROUP_WINDOW: Duration = Duration::from_millis(20);

/// One pool the operator created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Pool name on the node (the resource's name).
    pub pool: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// uid of the resource the pool was created for.
    pub uid: String,
    pub node: String,
    pub disks: Vec<String>,
    /// The uuid of the pool on the node (v1): which pool of this name on
    /// these disks is the operator's. The CreatePool carries it, so a pool of
    /// another uuid found on the disks is refused rather than imported, and
    /// a destroy touches only a pool of this uuid
    /// ([`crate::nodes::pool_identity`]). Absent on v0 (no pool uuid) and in
    /// entries written before it was kept: those are matched by name and
    /// disks alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_uuid: Option<String>,
    /// What identifies each disk across reboots, as the node reported it
    /// when the pool was created ([`crate::nodes::disk_identity`]): a kernel
    /// name (/dev/sdb) may name another disk after a reboot, so nothing is
    /// created or imported on a path that now resolves to another disk.
    /// Absent in entries written before it was kept (format 1 all the same:
    /// a version without the field reads the entry and ignores it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_ids: Vec<DiskId>,
    /// Set while the pool's resource is gone but the pool is kept because it
    /// holds data (or could not be checked): see [`crate::nodes::data_safety`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// The admin's purge, seen on the resource before it was deleted: the
    /// pool is destroyed with what it holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
    /// The resource's labels as last seen, for the policy's decision once it
    /// is deleted; with `annotations`, at most
    /// [`msp_policy_sdk::model::LAST_SEEN_LIMIT`] bytes
    /// ([`msp_policy_sdk::model::last_seen`]). Absent in entries written
    /// before they were kept, and when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The resource's annotations as last seen (without kubectl's
    /// last-applied copy).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What identifies one disk of a pool across reboots: its persistent links
/// as the node reported them when it was pinned, and its size.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DiskId {
    /// The disk as the resource names it (an entry of `disks`).
    pub disk: String,
    /// The kernel name the device had when pinned (/dev/loop3), for messages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub devname: String,
    /// Its persistent links (by-id, by-path, by-partuuid, by-loop-ref,
    /// by-loop-inode; never by-diskseq, nor a link named for what is
    /// written on it), sorted. Empty when the
    /// node reported none: then nothing identifies the disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Bytes, as the node reported them; 0 when it reported none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Other names the resource gave this disk before (a path edit to
    /// another name of the same disk): the node lists a pool loaded
    /// before the edit under the old name until it is imported again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LedgerEntry {
    /// Every name the pool's disks go by for this operator: `disks` and the
    /// names they had before a path edit (see [`DiskId::aliases`]).
    pub fn disk_names(&self) -> Vec<String> {
        let mut names = self.disks.clone();
        for alias in self.disk_ids.iter().flat_map(|id| &id.aliases) {
            if !names.contains(alias) {
                names.push(alias.clone());
            }
        }
        names
    }
}

/// Why a deleted resource's pool is kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub replicas: usize,
    pub snapshots: usize,
    pub clones: usize,
    /// uuids of the first few of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
    /// Set when the pool's contents could not be listed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

/// Errors are shared by every caller of one group write, hence the `Arc`s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger ConfigMap {name}: {source}")]
    Kube {
        name: String,
        source: Arc<kube::Error>,
    },
    #[error("serialising a ledger entry: {0}")]
    Json(Arc<serde_json::Error>),
    #[error(
        "the ledger of node {node} is full: recording pool {pool} would make its ConfigMap \
         {bytes} bytes, over the API server's limit of {limit} bytes; delete pools on this \
         node (or pools whose resources are gone) before creating more"
    )]
    Full {
        node: String,
        pool: String,
        bytes: usize,
        limit: usize,
    },
    #[error("the ledger writer of node {0} stopped before answering")]
    WriterGone(String),
    #[error(transparent)]
    TooNew(#[from] TooNew),
}

impl From<serde_json::Error> for LedgerError {
    fn from(err: serde_json::Error) -> Self {
        LedgerError::Json(Arc::new(err))
    }
}

type Entries = HashMap<String, BTreeMap<String, LedgerEntry>>;

/// An entry in a format newer than this version reads, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unread {
    /// Its key (the pool's name, as far as this version can tell).
    pub key: String,
    /// The node whose ConfigMap holds it.
    pub node: String,
    /// Its value, written back verbatim.
    pub value: String,
    pub too_new: TooNew,
}

/// Per node, by key: the entries this version cannot read.
type Unreads = HashMap<String, BTreeMap<String, Unread>>;

/// An entry as stored: the entry's fields and its format.
#[derive(Serialize)]
struct Stored<'a> {
    #[serde(rename = "formatVersion")]
    format_version: u32,
    #[serde(flatten)]
    entry: &'a LedgerEntry,
}

/// The stored form of `entry` (format [`LEDGER_FORMAT`]).
pub fn entry_json(entry: &LedgerEntry) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Stored {
        format_version: LEDGER_FORMAT,
        entry,
    })
}

/// One change to a node's ledger.
enum Change {
    Record(Box<LedgerEntry>),
    /// Recorded ahead for another pool's reconcile: only when the pool has
    /// no entry by the time of the write (its own reconcile's record, with
    /// the pool uuid it creates with, is never overwritten).
    RecordAhead(Box<LedgerEntry>),
    Remove(String),
}

/// A change waiting for its node's next write, and who to answer.
struct Waiting {
    change: Change,
    /// How many more changes the caller expects for this node soon.
    coming: usize,
    done: oneshot::Sender<Result<(), LedgerError>>,
}

/// Changes of one node waiting for a write; present while its writer runs.
#[derive(Default)]
struct Queue(Vec<Waiting>);

/// The ledger, loaded from and written through to the API server.
/// Cloning shares it.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

struct Shared {
    api: Api<ConfigMap>,
    /// What the API server holds (updated after each write succeeds).
    entries: RwLock<Entries>,
    /// Entries of a newer format, as loaded: never changed by this version.
    unread: Unreads,
    /// Per node with a writer running: its changes not yet written.
    queues: Mutex<HashMap<String, Queue>>,
    /// Wakes a writer lingering for changes its first caller said were coming.
    arrived: tokio::sync::Notify,
    group_window: Duration,
}

/// Name of the ledger ConfigMap of `node` (a hash when the name would be too long).
pub fn configmap_name(node: &str) -> String {
    let name = format!("msp-ledger-{node}");
    if name.len() <= 253 {
        name
    } else {
        let digest = Sha256::digest(node.as_bytes());
        format!("msp-ledger-{}", hex::encode(&digest[..16]))
    }
}

/// What a ledger ConfigMap holds, as this version reads it.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    /// The entries of a format this version reads.
    pub entries: Vec<LedgerEntry>,
    /// The entries of a newer format.
    pub unread: Vec<Unread>,
}

/// Entries in a ledger ConfigMap; malformed entries are skipped with a warning
/// (they cannot name a pool the operator may destroy), and so are entries of
/// a newer format (see [`read_configmap`]).
pub fn entries_of(cm: &ConfigMap) -> Vec<LedgerEntry> {
    read_configmap(cm).entries
}

/// The entries of a ledger ConfigMap, and apart those of a newer format
/// (their node is the one the ConfigMap is for).
pub fn read_configmap(cm: &ConfigMap) -> Read {
    let name = cm.metadata.name.as_deref().unwrap_or("");
    let node = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_ANNOTATION))
        .cloned();
    let mut read = Read::default();
    for (key, value) in cm.data.iter().flatten() {
        let json: serde_json::Value = match serde_json::from_str(value) {
            Ok(json) => json,
            Err(err) => {
                tracing::warn!(configmap = name, %key, error = %err, "malformed ledger entry: ignored");
                continue;
            }
        };
        let what = format!("the ledger entry of pool {key} in ConfigMap {name}");
        if let Err(too_new) = format::check(what, format::of_json(&json), LEDGER_FORMAT) {
            tracing::warn!(configmap = name, %key, error = %too_new, "ledger entry of a newer format: kept as it is");
            let node = node.clone().or_else(|| {
                json.get("node")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            });
            read.unread.push(Unread {
                key: key.clone(),
                node: node.unwrap_or_default(),
                value: value.clone(),
                too_new,
            });
            continue;
        }
        match serde_json::from_value::<LedgerEntry>(json) {
            Ok(entry) if entry.pool == *key => read.entries.push(entry),
            Ok(_) => {
                tracing::warn!(configmap = name, %key, "ledger entry names another pool than its key: ignored");
            }
            Err(err) => {
                tracing::warn!(configmap = name, %key, error = %err, "malformed ledger entry: ignored");
            }
        }
    }
    read
}

/// The ConfigMap data of `entries`: pool name → entry as JSON.
fn data_of(
    entries: &BTreeMap<String, LedgerEntry>,
) -> Result<BTreeMap<String, String>, serde_json::Error> {
    entries
        .iter()
        .map(|(pool, entry)| Ok((pool.clone(), entry_json(entry)?)))
        .collect()
}

/// What the API server counts against [`CONFIGMAP_DATA_LIMIT`]: the values
/// (keys are not counted).
fn data_bytes(data: &BTreeMap<String, String>) -> usize {
    data.values().map(String::len).sum()
}

/// The ConfigMap holding `entries` for `node`.
pub fn configmap_of(
    node: &str,
    entries: &BTreeMap<String, LedgerEntry>,
) -> Result<ConfigMap, serde_json::Error> {
    Ok(configmap_with(node, data_of(entries)?))
}

fn configmap_with(node: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(node)),
            labels: Some(BTreeMap::from([
                (LEDGER_LABEL.to_string(), "true".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                NODE_ANNOTATION.to_string(),
                node.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// A node's ledger with a batch of changes applied.
struct Applied {
    entries: BTreeMap<String, LedgerEntry>,
    /// The ConfigMap data of `entries`.
    data: Result<BTreeMap<String, String>, LedgerError>,
    /// Each change's own answer (an entry that does not fit is refused alone).
    answers: Vec<Result<(), LedgerError>>,
}

/// `current` with `batch` applied in order; `unread` (the node's entries of a
/// newer format) is written back as it is, and a change of one of them is
/// refused.
fn apply_batch(
    node: &str,
    current: &BTreeMap<String, LedgerEntry>,
    unread: &BTreeMap<String, Unread>,
    batch: &[Change],
) -> Applied {
    let mut entries = current.clone();
    let known = data_of(current).map(|mut data| {
        data.extend(unread.iter().map(|(k, u)| (k.clone(), u.value.clone())));
        data
    });
    let mut data = match known {
        Ok(data) => data,
        Err(err) => {
            let err = LedgerError::from(err);
            let answers = batch.iter().map(|_| Err(err.clone())).collect();
            return Applied {
                entries,
                data: Err(err),
                answers,
            };
        }
    };
    let mut bytes = data_bytes(&data);
    let mut answers = Vec::with_capacity(batch.len());
    for change in batch {
        let key = match change {
            Change::Record(entry) | Change::RecordAhead(entry) => &entry.pool,
            Change::Remove(pool) => pool,
        };
        if let Some(u) = unread.get(key) {
            answers.push(Err(u.too_new.clone().into()));
            continue;
        }
        match change {
            Change::RecordAhead(entry) if entries.contains_key(&entry.pool) => {
                answers.push(Ok(()));
            }
            Change::Record(entry) | Change::RecordAhead(entry) => {
                let value = match entry_json(entry) {
                    Ok(value) => value,
                    Err(err) => {
                        answers.push(Err(err.into()));
                        continue;
                    }
                };
                let key = &entry.pool;
                let before = data.get(key).map_or(0, String::len);
                let after = bytes - before + value.len();
                if after > CONFIGMAP_DATA_LIMIT {
                    answers.push(Err(LedgerError::Full {
                        node: node.to_string(),
                        pool: key.clone(),
                        bytes: after,
                        limit: CONFIGMAP_DATA_LIMIT,
                    }));
                    continue;
                }
                bytes = after;
                data.insert(key.clone(), value);
                entries.insert(key.clone(), (**entry).clone());
                answers.push(Ok(()));
            }
            Change::Remove(pool) => {
                if let Some(v) = data.remove(pool) {
                    bytes -= v.len();
                }
                entries.remove(pool);
                answers.push(Ok(()));
            }
        }
    }
    Applied {
        entries,
        data: Ok(data),
        answers,
    }
}

impl Ledger {
    /// Loads the ledger from `namespace`.
    pub async fn load(client: Client, namespace: &str) -> Result<Ledger, LedgerError> {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let list = api
            .list(&ListParams::default().labels(&format!("{LEDGER_LABEL}=true")))
            .await
            .map_err(|source| LedgerError::Kube {
                name: format!("{namespace}/*"),
                source: Arc::new(source),
            })?;
        let mut entries: Entries = HashMap::new();
        let mut unread: Unreads = HashMap::new();
        for cm in &list.items {
            let read = read_configmap(cm);
            for entry in read.entries {
                entries
                    .entry(entry.node.clone())
                    .or_default()
                    .insert(entry.pool.clone(), entry);
            }
            for u in read.unread {
                unread
                    .entry(u.node.clone())
                    .or_default()
                    .insert(u.key.clone(), u);
            }
        }
        let count: usize = entries.values().map(BTreeMap::len).sum();
        let newer: usize = unread.values().map(BTreeMap::len).sum();
        tracing::info!(%namespace, pools = count, newer_format = newer, "ledger loaded");
        Ok(Ledger::with_entries(api, entries, unread))
    }

    /// An empty ledger in `namespace` that was never loaded (unit tests, and
    /// tests of the ledger itself).
    pub fn empty(client: Client, namespace: &str) -> Ledger {
        Ledger::with_entries(
            Api::namespaced(client, namespace),
            HashMap::new(),
            HashMap::new(),
        )
    }

    fn with_entries(api: Api<ConfigMap>, entries: Entries, unread: Unreads) -> Ledger {
        Ledger {
            shared: Arc::new(Shared {
                api,
                entries: RwLock::new(entries),
                unread,
                queues: Mutex::new(HashMap::new()),
                arrived: tokio::sync::Notify::new(),
                group_window: DEFAULT_GROUP_WINDOW,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // Updated only by whole-map replacement of one node: never half-written.
        self.shared
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of pool `pool` on `node` (durable ones only).
    pub fn get(&self, node: &str, pool: &str) -> Option<LedgerEntry> {
        self.read().get(node).and_then(|m| m.get(pool)).cloned()
    }

    /// The entries of `node` (what one pool's observation needs: a copy of
    /// every entry per reconcile made 5,000 pools quadratic).
    pub fn on_node(&self, node: &str) -> Vec<LedgerEntry> {
        self.read()
            .get(node)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The entry of resource `uid`, on whatever node (a scan: asked only
    /// for resources with no placement in status yet).
    pub fn of_uid(&self, uid: &str) -> Option<LedgerEntry> {
        self.read()
            .values()
            .flat_map(|m| m.values())
            .find(|e| e.uid == uid)
            .cloned()
    }

    /// Why the entry of pool `pool` on `node` is of a format this version
    /// cannot read, when it is.
    pub fn unread(&self, node: &str, pool: &str) -> Option<TooNew> {
        let u = self.shared.unread.get(node)?.get(pool)?;
        Some(u.too_new.clone())
    }

    /// Every entry of a newer format (as loaded: this version never changes one).
    pub fn all_unread(&self) -> Vec<Unread> {
        self.shared
            .unread
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Every entry.
    pub fn all(&self) -> Vec<LedgerEntry> {
        self.read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Records `entry`, durably: it returns once the API server holds it (the
    /// caller creates the pool only then). `coming` is how many more entries
    /// of the same node the caller knows are about to be recorded: an idle
    /// node's write waits a moment for them, so that they share it.
    pub async fn record(&self, entry: LedgerEntry, coming: usize) -> Result<(), LedgerError> {
        self.record_with(entry, Vec::new(), coming).await
    }

    /// Records `entry` as [`Ledger::record`] does, and `ahead` (entries of
    /// other pools of the same node, which their own reconciles are about to
    /// record) in the same write, so that a node's new pools cost it one
    /// write rather than one each. Only `entry`'s answer is awaited: an entry
    /// of `ahead` that does not fit (or is of another node) is left out, and
    /// its own reconcile meets the refusal. An entry of `ahead` is written
    /// only for a pool with no entry at the time of the write (its own
    /// reconcile may have recorded it meanwhile, with the uuid it creates
    /// with).
    pub async fn record_with(
        &self,
        entry: LedgerEntry,
        ahead: Vec<LedgerEntry>,
        coming: usize,
    ) -> Result<(), LedgerError> {
        if self.get(&entry.node, &entry.pool).as_ref() == Some(&entry) {
            return Ok(());
        }
        let node = entry.node.clone();
        let ahead: Vec<Change> = ahead
            .into_iter()
            .filter(|e| e.node == node && self.get(&e.node, &e.pool).as_ref() != Some(e))
            .map(|e| Change::RecordAhead(Box::new(e)))
            .collect();
        self.submit(node, Change::Record(Box::new(entry)), ahead, coming)
            .await
    }

    /// Forgets pool `pool` on `node` (after it was destroyed or retained).
    pub async fn remove(&self, node: &str, pool: &str) -> Result<(), LedgerError> {
        if let Some(too_new) = self.unread(node, pool) {
            return Err(too_new.into());
        }
        if self.get(node, pool).is_none() && !self.queued(node) {
            return Ok(());
        }
        self.submit(
            node.to_string(),
            Change::Remove(pool.to_string()),
            Vec::new(),
            0,
        )
        .await
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.shared.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, node: &str) -> bool {
        self.queues().contains_key(node)
    }

    /// Queues `change` and then `ahead` for `node`'s next write, starting its
    /// writer when none runs, and waits for `change`'s answer. The writer is
    /// a task of its own, so a caller that gives up waiting never strands the
    /// others of its group.
    async fn submit(
        &self,
        node: String,
        change: Change,
        ahead: Vec<Change>,
        coming: usize,
    ) -> Result<(), LedgerError> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut queues = self.queues();
            let start = !queues.contains_key(&node);
            let queue = &mut queues.entry(node.clone()).or_default().0;
            // Ahead entries count as arrived: the linger waits only for what
            // is still missing.
            let expected = coming + ahead.len();
            queue.push(Waiting {
                change,
                coming: expected,
                done,
            });
            for change in ahead {
                // Nobody waits for these answers (a dropped receiver is fine).
                let (done, _) = oneshot::channel();
                queue.push(Waiting {
                    change,
                    coming: 0,
                    done,
                });
            }
            start
        };
        if start {
            tokio::spawn(self.clone().write_loop(node.clone()));
        } else {
            self.shared.arrived.notify_waiters();
        }
        answer.await.map_err(|_| LedgerError::WriterGone(node))?
    }

    /// `node`'s writer: writes what is queued, answers, and goes on while more
    /// arrived meanwhile; ends (removing the queue) when there is none.
    async fn write_loop(self, node: String) {
        self.linger(&node).await;
        loop {
            let batch = {
                let mut queues = self.queues();
                let Some(queue) = queues.get_mut(&node) else {
                    return;
                };
                if queue.0.is_empty() {
                    queues.remove(&node);
                    return;
                }
                std::mem::take(&mut queue.0)
            };
            let (changes, answers): (Vec<Change>, Vec<_>) =
                batch.into_iter().map(|w| (w.change, w.done)).unzip();
            let results = self.write(&node, &changes).await;
            for (done, result) in answers.into_iter().zip(results) {
                let _ = done.send(result);
            }
        }
    }

    /// Waits up to the group window while the first caller expects more
    /// changes for `node` than are queued.
    async fn linger(&self, node: &str) {
        let deadline = tokio::time::Instant::now() + self.shared.group_window;
        loop {
            let arrived = self.shared.arrived.notified();
            let missing = {
                let queues = self.queues();
                queues.get(node).is_some_and(|q| {
                    let expected = q.0.first().map_or(0, |w| w.coming) + 1;
                    q.0.len() < expected
                })
            };
            if !missing || tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return;
            }
        }
    }

    /// One write of `node`'s ConfigMap with `changes` applied; each change's
    /// answer. Nothing is written when nothing changes.
    async fn write(&self, node: &str, changes: &[Change]) -> Vec<Result<(), LedgerError>> {
        let current = self.read().get(node).cloned().unwrap_or_default();
        let none = BTreeMap::new();
        let unread = self.shared.unread.get(node).unwrap_or(&none);
        let Applied {
            entries,
            data,
            answers,
        } = apply_batch(node, &current, unread, changes);
        if entries == current {
            return answers;
        }
        let data = match data {
            Ok(data) => data,
            Err(err) => return answers.into_iter().map(|_| Err(err.clone())).collect(),
        };
        let name = configmap_name(node);
        let written = self
            .shared
            .api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&configmap_with(node, data)),
            )
            .await;
        if let Err(source) = written {
            let err = LedgerError::Kube {
                name,
                source: Arc::new(source),
            };
            return answers.into_iter().map(|_| Err(err.clone())).collect();
        }
        let mut all = self
            .shared
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            all.remove(node);
        } else {
            all.insert(node.to_string(), entries);
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pool: &str) -> LedgerEntry {
        LedgerEntry {
            pool: pool.into(),
            namespace: "mayastor".into(),
            uid: format!("uid-{pool}"),
            node: "node1".into(),
            disks: vec!["/dev/loop0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn configmap_round_trips_entries() {
        let map = BTreeMap::from([("a".to_string(), entry("a")), ("b".to_string(), entry("b"))]);
        let cm = configmap_of("node1", &map).expect("configmap");
        assert_eq!(cm.metadata.name.as_deref(), Some("msp-ledger-node1"));
        let mut back = entries_of(&cm);
        back.sort_by(|x, y| x.pool.cmp(&y.pool));
        assert_eq!(back, vec![entry("a"), entry("b")]);
    }

    #[test]
    fn malformed_and_mismatched_entries_are_skipped() {
        let mut cm =
            configmap_of("node1", &BTreeMap::from([("a".to_string(), entry("a"))])).expect("cm");
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        data.insert("junk".into(), "{not json".into());
        data.insert(
            "c".into(),
            serde_json::to_string(&entry("d")).expect("json"),
        );
        assert_eq!(entries_of(&cm), vec![entry("a")]);
    }

    #[test]
    fn a_batch_applies_in_order_and_refuses_only_what_does_not_fit() {
        let current = BTreeMap::from([("a".to_string(), entry("a"))]);
        let mut big = entry("big");
        big.disks = vec![format!("/dev/{}", "x".repeat(CONFIGMAP_DATA_LIMIT))];
        let batch = [
            Change::Record(Box::new(entry("b"))),
            Change::Record(Box::new(big)),
            Change::Remove("a".into()),
            Change::Record(Box::new(entry("c"))),
            Change::Remove("c".into()),
        ];
        let Applied {
            entries,
            data,
            answers,
        } = apply_batch("node1", &current, &BTreeMap::new(), &batch);
        assert_eq!(entries.keys().collect::<Vec<_>>(), vec!["b"]);
        let data = data.expect("data");
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok());
        match &answers[1] {
            Err(LedgerError::Full {
                pool, bytes, limit, ..
            }) => {
                assert_eq!(pool, "big");
                assert!(*bytes > *limit && *limit == CONFIGMAP_DATA_LIMIT);
            }
            other => panic!("expected Full, got {other:?}"),
        }
    }

    /// An entry recorded ahead never replaces the pool's own (issue 23
    /// item 5: its pool uuid is the one the pool is created with).
    #[test]
    fn an_entry_recorded_ahead_never_replaces_one_there() {
        let own = LedgerEntry {
            pool_uuid: Some("own".into()),
            ..entry("a")
        };
        let ahead = LedgerEntry {
            pool_uuid: Some("ahead".into()),
            ..entry("a")
        };
        let current = BTreeMap::from([("a".to_string(), own.clone())]);
        let applied = apply_batch(
            "node1",
            &current,
            &BTreeMap::new(),
            &[Change::RecordAhead(Box::new(ahead.clone()))],
        );
        assert_eq!(applied.entries.get("a"), Some(&own));
        let applied = apply_batch(
            "node1",
            &BTreeMap::new(),
            &BTreeMap::new(),
            &[Change::RecordAhead(Box::new(ahead.clone()))],
        );
        assert_eq!(applied.entries.get("a"), Some(&ahead));
    }

    #[test]
    fn the_size_counted_is_what_the_api_server_counts() {
        let map = BTreeMap::from([("a".to_string(), entry("a")), ("b".to_string(), entry("b"))]);
        let data = data_of(&map).expect("data");
        let expected: usize = data.values().map(String::len).sum();
        assert_eq!(data_bytes(&data), expected);
        // One entry of exactly the room left fits; one byte more does not.
        let fill = CONFIGMAP_DATA_LIMIT - expected;
        let mut last = entry("z");
        let base = entry_json(&last).expect("json").len();
        last.uid = "u".repeat(fill - base + last.uid.len());
        let answers = apply_batch(
            "node1",
            &map,
            &BTreeMap::new(),
            &[Change::Record(Box::new(last.clone()))],
        )
        .answers;
        assert!(answers[0].is_ok(), "{:?}", answers[0]);
        last.uid.push('u');
        let answers = apply_batch(
            "node1",
            &map,
            &BTreeMap::new(),
            &[Change::Record(Box::new(last))],
        )
        .answers;
        assert!(matches!(answers[0], Err(LedgerError::Full { .. })));
    }

    #[test]
    fn entries_carry_their_format_and_older_ones_read_as_format_one() {
        let stored = entry_json(&entry("a")).expect("json");
        assert!(
            stored.starts_with(r#"{"formatVersion":1,"pool":"a","#),
            "{stored}"
        );
        let mut cm = configmap_of("node1", &BTreeMap::new()).expect("cm");
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        data.insert("a".into(), stored);
        // Written before the format was kept: no formatVersion.
        data.insert(
            "b".into(),
            serde_json::to_string(&entry("b")).expect("json"),
        );
        let read = read_configmap(&cm);
        assert_eq!(read.entries, vec![entry("a"), entry("b")]);
        assert!(read.unread.is_empty());
    }

    #[test]
    fn entries_of_a_newer_format_are_kept_verbatim_and_never_changed() {
        let newer = r#"{"formatVersion":2,"pool":"n","node":"node1","placement":{"x":1}}"#;
        let mut cm =
            configmap_of("node1", &BTreeMap::from([("a".to_string(), entry("a"))])).expect("cm");
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert("n".into(), newer.into());
        let read = read_configmap(&cm);
        assert_eq!(read.entries, vec![entry("a")]);
        assert_eq!(read.unread.len(), 1);
        let u = &read.unread[0];
        assert_eq!(
            (u.key.as_str(), u.node.as_str(), u.value.as_str()),
            ("n", "node1", newer)
        );
        assert_eq!(u.too_new.found, 2);

        let unread = BTreeMap::from([("n".to_string(), u.clone())]);
        let current = BTreeMap::from([("a".to_string(), entry("a"))]);
        let batch = [
            Change::Record(Box::new(entry("b"))),
            Change::Record(Box::new(entry("n"))),
            Change::Remove("n".into()),
        ];
        let Applied {
            entries,
            data,
            answers,
        } = apply_batch("node1", &current, &unread, &batch);
        assert_eq!(entries.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        let data = data.expect("data");
        assert_eq!(data.get("n").map(String::as_str), Some(newer));
        assert!(answers[0].is_ok());
        for answer in &answers[1..] {
            assert!(matches!(answer, Err(LedgerError::TooNew(_))), "{answer:?}");
        }
    }

    /// The disk pins are an optional field of format 1: written only when
    /// there are some, and what a version without the field reads of an
    /// entry that has them is the entry without them (unknown fields are
    /// ignored), so a roll-back keeps working on the pool.
    #[test]
    fn disk_pins_are_optional_and_ignored_by_a_version_without_them() {
        let plain = entry_json(&entry("a")).expect("json");
        assert!(!plain.contains("diskIds"), "{plain}");
        let pinned = LedgerEntry {
            disk_ids: vec![DiskId {
                disk: "/dev/loop0".into(),
                devname: "/dev/loop0".into(),
                links: vec!["/dev/disk/by-id/msp-loop-x".into()],
                size: 64 << 20,
                aliases: Vec::new(),
            }],
            ..entry("a")
        };
        let stored = entry_json(&pinned).expect("json");
        assert!(
            stored.contains(
                r#""diskIds":[{"disk":"/dev/loop0","devname":"/dev/loop0","links":["/dev/disk/by-id/msp-loop-x"],"size":67108864}]"#
            ),
            "{stored}"
        );
        let cm = configmap_of(
            "node1",
            &BTreeMap::from([("a".to_string(), pinned.clone())]),
        )
        .expect("cm");
        assert_eq!(entries_of(&cm), vec![pinned]);
        // A field this version does not know (a later optional one) is
        // ignored the same way.
        let mut later: serde_json::Value = serde_json::from_str(&stored).expect("json");
        later["diskHealth"] = serde_json::json!({"x": 1});
        let mut cm = configmap_of("node1", &BTreeMap::new()).expect("cm");
        cm.data
            .get_or_insert_with(BTreeMap::new)
            .insert("a".into(), later.to_string());
        assert_eq!(entries_of(&cm).len(), 1);
        assert_eq!(
            LedgerEntry {
                disk_ids: vec![DiskId {
                    aliases: vec!["/dev/loop0".into()],
                    disk: "/dev/disk/by-id/x".into(),
                    ..Default::default()
                }],
                ..entry("a")
            }
            .disk_names(),
            vec!["/dev/loop0".to_string()],
            "an alias already among the disks is named once"
        );
    }

    #[test]
    fn long_node_names_are_hashed() {
        let node = "n".repeat(250);
        let name = configmap_name(&node);
        assert!(name.len() <= 253 && name.starts_with("msp-ledger-"));
        assert_ne!(name, configmap_name(&"m".repeat(250)));
    }
}
