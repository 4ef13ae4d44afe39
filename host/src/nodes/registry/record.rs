//! The record of registrations: where each storage node registered (its
//! endpoint, API versions and instance), kept by the leader in the ConfigMap
//! `<lease name>-nodes` ([`Record`]; `msp-operator-nodes` by default) of the
//! operator's namespace, so that the next leader knows the nodes before they
//! register with it. Named after the lease: operators that share a namespace
//! elect on different leases, and keep different records.
//!
//! A storage node's heartbeats need not reach a new leader soon: a leader
//! that froze (SIGSTOP, a stalled node) keeps the node's established
//! connection through the Service, and the node's Register calls time out
//! against it until the frozen process resumes or is killed, a lease
//! duration and more after the standby took over. Meanwhile the new leader
//! probes the recorded endpoints ([`NodeRegistry::adopt`]) instead of
//! calling the node's pools offline for want of a registration.
//!
//! The record is written when a node is registered anew (first time,
//! restarted, moved: not on every heartbeat) or deregistered, by one writer
//! task per leader that applies the latest state (a JSON merge patch of the
//! keys that changed), through the fenced client: only the leader writes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use super::NodeRegistry;

/// The record's ConfigMap.
#[derive(Clone)]
pub struct Record {
    api: Api<ConfigMap>,
    name: String,
}

/// How long a failed write waits before the next try.
const RETRY: Duration = Duration::from_secs(2);

/// One node's registration as the registry accepted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// The endpoint it advertised ("ip:port").
    pub endpoint: String,
    /// The API versions it advertised, as numbers on the wire.
    pub api_versions: Vec<i32>,
    /// Its instance uuid, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading or writing ConfigMap {0}: {1}")]
    Kube(String, #[source] kube::Error),
    #[error("encoding the record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The registrations a ConfigMap records; malformed entries are skipped with
/// a warning (a node they named registers anew).
pub fn read(cm: &ConfigMap) -> BTreeMap<String, Recorded> {
    cm.data
        .iter()
        .flatten()
        .filter_map(|(node, json)| match serde_json::from_str(json) {
            Ok(recorded) => Some((node.clone(), recorded)),
            Err(err) => {
                tracing::warn!(%node, error = %err, "malformed registration record entry ignored");
                None
            }
        })
        .collect()
}

impl Record {
    /// The record of the replicas electing on lease `lease_name`, in the
    /// namespace of `api`.
    pub fn new(api: Api<ConfigMap>, lease_name: &str) -> Record {
        Record {
            api,
            name: format!("{lease_name}-nodes"),
        }
    }

    fn error(&self, err: kube::Error) -> RecordError {
        RecordError::Kube(self.name.clone(), err)
    }

    /// The record as the API server holds it (empty when there is none yet).
    pub async fn load(&self) -> Result<BTreeMap<String, Recorded>, RecordError> {
        Ok(self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
            .map(|cm| read(&cm))
            .unwrap_or_default())
    }

    /// One write: the patch, creating the ConfigMap first when there is none.
    async fn write(&self, patch: &serde_json::Value) -> Result<(), RecordError> {
        let params = PatchParams::default();
        match self
            .api
            .patch(&self.name, &params, &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let empty = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match self.api.create(&PostParams::default(), &empty).await {
                    Ok(_) => {}
                    // Created meanwhile: the patch goes to that one.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(err) => return Err(self.error(err)),
                }
                self.api
                    .patch(&self.name, &params, &Patch::Merge(patch))
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            }
            other => other.map(|_| ()).map_err(|e| self.error(e)),
        }
    }
}

/// The merge patch taking the record from `old` to `new`: changed or new
/// entries set, gone ones removed (None when nothing changed).
pub fn patch(
    old: &BTreeMap<String, Recorded>,
    new: &BTreeMap<String, Recorded>,
) -> Result<Option<serde_json::Value>, serde_json::Error> {
    let mut data = serde_json::Map::new();
    for (node, recorded) in new {
        if old.get(node) != Some(recorded) {
            data.insert(node.clone(), serde_json::to_string(recorded)?.into());
        }
    }
    for node in old.keys().filter(|n| !new.contains_key(*n)) {
        data.insert(node.clone(), serde_json::Value::Null);
    }
    Ok((!data.is_empty()).then(|| serde_json::json!({ "data": data })))
}

/// Keeps the record in step with `registry`'s registrations until
/// `shutdown` resolves; `written` is what the API server holds at start.
pub async fn keep(
    registry: NodeRegistry,
    record: Record,
    mut written: BTreeMap<String, Recorded>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut current = registry.recorded();
    tokio::pin!(shutdown);
    loop {
        let wanted = current.borrow_and_update().clone();
        let outcome = match patch(&written, &wanted) {
            Ok(None) => Ok(()),
            Ok(Some(patch)) => record.write(&patch).await,
            Err(err) => Err(err.into()),
        };
        let wait = match outcome {
            Ok(()) => {
                written = wanted;
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "writing the registration record failed; retrying");
                Some(RETRY)
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            changed = current.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(endpoint: &str, instance: &str) -> Recorded {
        Recorded {
            endpoint: endpoint.into(),
            api_versions: vec![0, 1],
            instance: Some(instance.into()),
        }
    }

    #[test]
    fn the_patch_sets_what_changed_and_removes_what_went() {
        let old = BTreeMap::from([
            ("a".to_string(), recorded("10.0.0.1:10124", "i1")),
            ("b".to_string(), recorded("10.0.0.2:10124", "i2")),
        ]);
        assert_eq!(patch(&old, &old).expect("patch"), None);
        let new = BTreeMap::from([
            ("a".to_string(), recorded("10.0.0.1:10124", "i3")),
            ("c".to_string(), recorded("10.0.0.3:10124", "i4")),
        ]);
        let p = patch(&old, &new).expect("patch").expect("a change");
        let data = p["data"].as_object().expect("data");
        assert_eq!(data.len(), 3);
        assert!(data["b"].is_null());
        let a: Recorded = serde_json::from_str(data["a"].as_str().expect("a")).expect("json");
        assert_eq!(a, new["a"]);
        // What a ConfigMap holding the result reads back as.
        let cm = ConfigMap {
            data: Some(
                new.iter()
                    .map(|(n, r)| (n.clone(), serde_json::to_string(r).expect("json")))
                    .chain([("broken".to_string(), "{".to_string())])
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(read(&cm), new);
    }
}
