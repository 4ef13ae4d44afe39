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
    printcolumn = r#"{"name":"Replicas","type":"integer","description":"Replicas, snapshots and clones on the pool (volumes' data)","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct MayastorPoolSpec {
    /// Name of the Kubernetes node where the pool is created. Mayastor must be
    /// enabled on that node by the label openebs.io/engine=mayastor.
    #[schemars(schema_with = "node_schema")]
    pub node: String,

    /// Disks that make up the pool: absolute paths to device files under /dev,
    /// each listed once. Name them by a persistent link such as
    /// /dev/disk/by-id/...: a kernel name (/dev/sdX, /dev/nvmeXnY, /dev/loopN,
    /// /dev/vdX) can name another disk after a reboot. The operator pins each
    /// disk's identity at creation and never creates or imports on a path that
    /// now names another disk (the pool stays pending, the reason saying where
    /// its disk is). After creation, an edit to another name of the same disk
    /// (its /dev/disk/by-id link) is accepted without touching the pool; an
    /// edit to another disk is ignored.
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

/// The five states: the policy contract's type, so that the status and the
/// decisions share one word for each (`PoolState::as_str`).
pub use msp_policy_sdk::model::PoolState;

/// The schema of `status.state` (its description is the field's): the
/// contract's type carries no schema (the SDK is compiled into every policy
/// and stays free of schemars), so the CRD's words are listed here.
fn pool_state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let words: Vec<&str> = PoolState::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({
        "type": ["string", "null"],
        "enum": words,
    })
}

/// Observed state of the pool. Written only by the operator; read-only to the admin.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MayastorPoolStatus {
    /// State of the pool: pending (not usable yet: node unknown or not enabled for
    /// Mayastor, storage node not registered, creation under way or failed, or an
    /// import under way on a storage node that restarted; the reason says which),
    /// online (healthy and usable), degraded (usable, with an issue), faulted (an
    /// error makes it unusable, including an import its running storage node
    /// cannot do) or offline (created, but its storage node is not running now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pool_state_schema")]
    pub state: Option<PoolState>,

    /// Node the pool was created on, cached from spec at creation. Later edits
    /// of spec.node are ignored so that the pool is never moved by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Disks the pool was created on, cached from spec at creation. Later edits
    /// of spec.disks are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<String>>,

    /// Persistent names of the pool's disks (/dev/disk/by-id/... first), as
    /// the storage node reported them when the pool was created: how the
    /// operator recognises its disks when kernel names move. Absent when the
    /// node reports no persistent link for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_ids: Option<Vec<String>>,

    /// Why the pool is in its state, and what to do about it when it needs action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Usable capacity of the pool in bytes, as the storage node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,

    /// Bytes of the pool in use, as the storage node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,

    /// How many replicas, snapshots and clones the storage node lists on the
    /// pool: volumes' data. Absent when it lists none (or has not been asked
    /// yet). A pool holding any is never destroyed when this resource is
    /// deleted, unless it carries the annotation
    /// openebs.io/purge=yes-really-destroy-data: it is kept until empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,

    /// The policy that made the last decision, as name@version (sha256 prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,

    /// The digest of the policy module that made the last decision,
    /// sha256:<hex> of its exact bytes (as in the PolicyLoaded Event and
    /// msp_policy_info): which build of the policy decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,

    /// Version of the format of this status, so that an operator older than
    /// the one that wrote it leaves the pool alone instead of rewriting what
    /// it cannot read. Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<u32>,

    /// Standard conditions. `Ready` is True when the pool is online or degraded;
    /// its observedGeneration tells which spec generation the operator has seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The CRD as YAML, exactly as committed in `deploy/crd/mayastorpool.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let header =
        "# Generated by `msp-operator crdgen` from host/src/state/crd.rs. Do not edit by hand.\n";
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
