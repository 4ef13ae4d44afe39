//! The ledger: a durable record of the pools this operator created, so that
//! a pool whose resource was deleted while the operator was down is still
//! destroyed when it comes back, and no pool it did not create is ever
//! touched. (Finalizers would do this, but they are metadata, which the seed
//! makes read-only to the operator.)
//!
//! One ConfigMap per storage node, `msp-ledger-<node>`, in the operator's
//! namespace; one data key per pool (its name), holding the resource's uid,
//! namespace, node and disks as JSON. An entry is written *before* CreatePool
//! and removed after the pool is destroyed or retained. Writes are server-side
//! applies under the operator's field manager, so removing a key is applying
//! the map without it. The operator is the only writer: the in-memory copy
//! loaded at start is authoritative between writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Field manager of every write of the operator.
pub const FIELD_MANAGER: &str = "msp-operator";
/// Label on every ledger ConfigMap (how the ledger is found at start).
pub const LEDGER_LABEL: &str = "msp.openebs.io/ledger";
/// Annotation with the node a ledger ConfigMap is for.
pub const NODE_ANNOTATION: &str = "msp.openebs.io/node";

/// One pool the operator created.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
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
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger ConfigMap {name}: {source}")]
    Kube { name: String, source: kube::Error },
    #[error("serialising a ledger entry: {0}")]
    Json(#[from] serde_json::Error),
}

type Entries = HashMap<String, BTreeMap<String, LedgerEntry>>;

/// The ledger, loaded from and written through to the API server.
pub struct Ledger {
    api: Api<ConfigMap>,
    entries: RwLock<Entries>,
    /// Serialises writes, so two pools on one node never race on its ConfigMap.
    write: tokio::sync::Mutex<()>,
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

/// Entries in a ledger ConfigMap; malformed entries are skipped with a warning
/// (they cannot name a pool the operator may destroy).
pub fn entries_of(cm: &ConfigMap) -> Vec<LedgerEntry> {
    let name = cm.metadata.name.as_deref().unwrap_or("");
    cm.data
        .iter()
        .flatten()
        .filter_map(|(key, value)| match serde_json::from_str::<LedgerEntry>(value) {
            Ok(entry) if entry.pool == *key => Some(entry),
            Ok(_) => {
                tracing::warn!(configmap = name, %key, "ledger entry names another pool than its key: ignored");
                None
            }
            Err(err) => {
                tracing::warn!(configmap = name, %key, error = %err, "malformed ledger entry: ignored");
                None
            }
        })
        .collect()
}

/// The ConfigMap holding `entries` for `node`.
pub fn configmap_of(
    node: &str,
    entries: &BTreeMap<String, LedgerEntry>,
) -> Result<ConfigMap, serde_json::Error> {
    let mut data = BTreeMap::new();
    for (pool, entry) in entries {
        data.insert(pool.clone(), serde_json::to_string(entry)?);
    }
    Ok(ConfigMap {
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
    })
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
                source,
            })?;
        let mut entries: Entries = HashMap::new();
        for cm in &list.items {
            for entry in entries_of(cm) {
                entries
                    .entry(entry.node.clone())
                    .or_default()
                    .insert(entry.pool.clone(), entry);
            }
        }
        let count: usize = entries.values().map(BTreeMap::len).sum();
        tracing::info!(%namespace, pools = count, "ledger loaded");
        Ok(Ledger {
            api,
            entries: RwLock::new(entries),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// An empty ledger in `namespace` that was never loaded (unit tests).
    #[cfg(test)]
    pub(crate) fn empty(client: Client, namespace: &str) -> Ledger {
        Ledger {
            api: Api::namespaced(client, namespace),
            entries: RwLock::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // Updated only by whole-map replacement of one node: never half-written.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of pool `pool` on `node`.
    pub fn get(&self, node: &str, pool: &str) -> Option<LedgerEntry> {
        self.read().get(node).and_then(|m| m.get(pool)).cloned()
    }

    /// Every entry.
    pub fn all(&self) -> Vec<LedgerEntry> {
        self.read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Records `entry` (durably, before the caller creates the pool).
    pub async fn record(&self, entry: LedgerEntry) -> Result<(), LedgerError> {
        let _guard = self.write.lock().await;
        if self.get(&entry.node, &entry.pool).as_ref() == Some(&entry) {
            return Ok(());
        }
        let node = entry.node.clone();
        let mut map = self.read().get(&node).cloned().unwrap_or_default();
        map.insert(entry.pool.clone(), entry);
        self.apply(&node, map).await
    }

    /// Forgets pool `pool` on `node` (after it was destroyed or retained).
    pub async fn remove(&self, node: &str, pool: &str) -> Result<(), LedgerError> {
        let _guard = self.write.lock().await;
        let mut map = self.read().get(node).cloned().unwrap_or_default();
        if map.remove(pool).is_none() {
            return Ok(());
        }
        self.apply(node, map).await
    }

    async fn apply(
        &self,
        node: &str,
        map: BTreeMap<String, LedgerEntry>,
    ) -> Result<(), LedgerError> {
        let cm = configmap_of(node, &map)?;
        let name = configmap_name(node);
        self.api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|source| LedgerError::Kube {
                name: name.clone(),
                source,
            })?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            entries.remove(node);
        } else {
            entries.insert(node.to_string(), map);
        }
        Ok(())
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
    fn long_node_names_are_hashed() {
        let node = "n".repeat(250);
        let name = configmap_name(&node);
        assert!(name.len() <= 253 && name.starts_with("msp-ledger-"));
        assert_ne!(name, configmap_name(&"m".repeat(250)));
    }
}
