//! The `MayastorPool` custom resource (`openebs.io/v1alpha1`, short name `msp`).
//!
//! Field names and meanings follow the seed document exactly. The doc comments
//! become the OpenAPI descriptions that `kubectl explain` prints, so they are
//! written for the storage admin.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Desired state of a storage pool: which node it lives on and which disks it is made of.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "openebs.io",
    version = "v1alpha1",
    kind = "MayastorPool",
    plural = "mayastorpools",
    singular = "mayastorpool",
    shortname = "msp",
    namespaced,
    status = "MayastorPoolStatus",
    doc = "A storage pool on a Mayastor storage node. The storage admin creates and deletes it with kubectl; the operator creates the pool on the node and reports its state in status.",
    printcolumn = r#"{"name":"Node","type":"string","description":"Node the pool is on","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"State","type":"string","description":"State of the pool","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","format":"int64","description":"Usable bytes","jsonPath":".status.capacity"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","format":"int64","description":"Used bytes","jsonPath":".status.used"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct MayastorPoolSpec {
    /// Name of the Kubernetes node where the pool is created. Mayastor must be
    /// enabled on that node by the label openebs.io/engine=mayastor.
    #[schemars(schema_with = "node_schema")]
    pub node: String,

    /// Disks that make up the pool: absolute paths to device files under /dev.
    /// Prefer stable names such as /dev/disk/by-id/..., since /dev/sdX names can
    /// change across reboots. Each disk may be listed once.
    #[schemars(schema_with = "disks_schema")]
    pub disks: Vec<String>,
}

impl MayastorPool {
    /// The node the pool lives on: cached in status at the first create, else
    /// the spec's (later edits of spec.node never move a pool).
    pub fn effective_node(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.node.as_deref())
            .unwrap_or(&self.spec.node)
    }

    /// The disks of the pool: cached in status at the first create, else the spec's.
    pub fn effective_disks(&self) -> &[String] {
        self.status
            .as_ref()
            .and_then(|s| s.disks.as_deref())
            .unwrap_or(&self.spec.disks)
    }

    /// True once node and disks are cached in status: the operator's first
    /// create or import of this pool succeeded and was reported. (The
    /// policy's [`msp_policy_sdk::model::Observation::was_created`] asks whether
    /// the pool exists on its node; a pool is created a moment before its
    /// placement is cached, so the two are kept apart.)
    pub fn placement_cached(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.node.is_some())
    }
}

/// A disk path: absolute, under /dev, with no empty, `.` or `..` segment.
/// Written as RE2 (the API server's regex dialect has no look-ahead), hence the
/// spelled-out alternatives for a segment that is neither `.` nor `..`.
pub const DISK_PATH_PATTERN: &str = r"^/dev(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$";

/// A Kubernetes node name: a lower-case RFC 1123 subdomain. (`[.]`, not
/// `\.`: the rule is a CEL string literal, where `\.` is no escape.)
pub const NODE_NAME_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// What the API server answers for a node name no Kubernetes node can have.
pub const NODE_NAME_MESSAGE: &str = "must be a Kubernetes node name: lower-case letters, digits, \
     '-' and '.', starting and ending with a letter or digit, at most 253 characters";

/// What the API server answers for a disk path with a character no device
/// path has (NUL, other control characters, any kind of space).
pub const DISK_CHARACTERS_MESSAGE: &str =
    "must not contain whitespace or control characters (such as NUL, tab or newline)";

// CEL rules rather than bare patterns, for messages that say the rule. The
// API server ratchets both on update: a resource stored before a rule
// existed keeps working as long as the field is not changed.
fn node_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{NODE_NAME_PATTERN}')"),
            "message": NODE_NAME_MESSAGE,
        }],
    })
}

fn disks_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 64,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 4096,
            "pattern": DISK_PATH_PATTERN,
            "x-kubernetes-validations": [{
                // Unicode controls, format characters and separators.
                "rule": "!self.matches('[\\\\p{Cc}\\\\p{Cf}\\\\p{Z}]')",
                "message": DISK_CHARACTERS_MESSAGE,
            }],
        },
    })
}

/// State of the pool: pending (not usable yet: node unknown or not enabled for
/// Mayastor, storage node not registered, creation under way or failed, or an
/// import under way on a storage node that restarted; the reason says which),
/// online (healthy and usable), degraded (usable, with an issue), faulted (an
/// error makes it unusable, including an import its running storage node
/// cannot do) or offline (created, but its storage node is not running now).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    /// Not usable yet: the node is unknown or not enabled for Mayastor, the
    /// storage node is not registered, creation is under way or failed, or the
    /// pool is being imported again on a storage node that restarted. The
    /// reason says which.
    Pending,
    /// Created, healthy and usable.
    Online,
    /// Created and usable, but with an issue (for example a disk turned read-only).
    Degraded,
    /// An error makes the pool unusable (a disk missing or failed, or an
    /// import its running storage node cannot do); retried, the reason says why.
    Faulted,
    /// Created, but not available now because its storage node is not running
    /// (not registered, heartbeat lost, or not answering).
    Offline,
}

impl PoolState {
    pub const ALL: [PoolState; 5] = [
        PoolState::Pending,
        PoolState::Online,
        PoolState::Degraded,
        PoolState::Faulted,
        PoolState::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Pending => "pending",
            PoolState::Online => "online",
            PoolState::Degraded => "degraded",
            PoolState::Faulted => "faulted",
            PoolState::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<PoolState> {
        PoolState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl From<PoolState> for msp_policy_sdk::model::PoolState {
    fn from(state: PoolState) -> Self {
        use msp_policy_sdk::model::PoolState as Model;
        match state {
            PoolState::Pending => Model::Pending,
            PoolState::Online => Model::Online,
            PoolState::Degraded => Model::Degraded,
            PoolState::Faulted => Model::Faulted,
            PoolState::Offline => Model::Offline,
        }
    }
}

impl From<msp_policy_sdk::model::PoolState> for PoolState {
    fn from(state: msp_policy_sdk::model::PoolState) -> Self {
        use msp_policy_sdk::model::PoolState as Model;
        match state {
            Model::Pending => PoolState::Pending,
            Model::Online => PoolState::Online,
            Model::Degraded => PoolState::Degraded,
            Model::Faulted => PoolState::Faulted,
            Model::Offline => PoolState::Offline,
        }
    }
}

impl std::fmt::Display for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of the pool. Written only by the operator; read-only to the admin.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MayastorPoolStatus {
    /// State of the pool (see the type's description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PoolState>,

    /// Node the pool was created on, cached from spec at creation. Later edits
    /// of spec.node are ignored so that the pool is never moved by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Disks the pool was created on, cached from spec at creation. Later edits
    /// of spec.disks are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<String>>,

    /// Why the pool is in its state, and what to do about it when it needs action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Usable capacity of the pool in bytes, as the storage node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,

    /// Bytes of the pool in use, as the storage node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,

    /// The policy that made the last decision, as name@version (sha256 prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,

    /// Standard conditions. `Ready` is True when the pool is online or degraded;
    /// its observedGeneration tells which spec generation the operator has seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The CRD as YAML, exactly as committed in `deploy/crd/mayastorpool.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let header =
        "# Generated by `msp-operator crdgen` from host/src/crd.rs. Do not edit by hand.\n";
    // A long line stays one line (not folded at 80 columns); text with
    // line breaks is a literal block.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    Ok(format!(
        "{header}{}",
        serde_saphyr::to_string_with_options(&MayastorPool::crd(), options)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in PoolState::ALL {
            assert_eq!(PoolState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("serialize");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(PoolState::parse("Online"), None);
    }

    #[test]
    fn model_states_round_trip() {
        for s in PoolState::ALL {
            assert_eq!(
                PoolState::from(msp_policy_sdk::model::PoolState::from(s)),
                s
            );
        }
    }

    #[test]
    fn status_keeps_seed_field_names() {
        let status = MayastorPoolStatus {
            state: Some(PoolState::Online),
            node: Some("node1".into()),
            disks: Some(vec!["/dev/loop0".into()]),
            reason: Some("ok".into()),
            ..Default::default()
        };
        let value = serde_json::to_value(&status).expect("serialize");
        assert_eq!(
            value,
            serde_json::json!({"state": "online", "node": "node1", "disks": ["/dev/loop0"], "reason": "ok"})
        );
    }
}
