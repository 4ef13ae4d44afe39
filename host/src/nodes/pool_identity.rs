//! Pool identity: which pool of a name on a node is the operator's, by the
//! pool's uuid (v1; v0 has no pool uuid).
//!
//! The engine's CreatePool is create-or-import: a pool someone made by hand
//! on the disks, not loaded (its node restarted), would be imported and
//! taken for the operator's own, and destroyed when the resource is deleted.
//! So every CreatePool and ImportPool carries a uuid ([`choose`]): the one the
//! ledger recorded for the resource, or a new one for a pool never created.
//! The node then creates the pool with that uuid, or imports the pool on the
//! disks only when it has that uuid; a pool of another uuid is refused
//! (INVALID_ARGUMENT naming its uuid: [`found_uuid`]) and left as it is. The
//! resource stays pending with a reason naming the pool and its uuid
//! ([`foreign_note`]), and nothing about that pool enters the ledger.
//!
//! Adoption is the admin's explicit word: the annotation
//! [`ADOPT_ANNOTATION`] set to the found pool's uuid. The operator then only
//! imports (never creates, so a mistyped uuid formats nothing) the pool of
//! that uuid, records it, and from then on it is the resource's pool, as if
//! the operator had created it (destroyed when the resource is deleted,
//! behind the data safety rail).

use crate::nodes::client::NodeError;
use crate::state::ledger::LedgerEntry;

/// The annotation by which the admin adopts a pool found on the disks:
/// its value is the pool's uuid, as the pending reason names it.
pub const ADOPT_ANNOTATION: &str = "openebs.io/adopt-pool-uuid";

/// The uuid a CreatePool or ImportPool of a resource carries, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The ledger's record of this resource's pool (or of the pool a
    /// resource re-created with the same name, node and disks takes over).
    Recorded(String),
    /// The admin adopts the pool of this uuid: import only.
    Adopted(String),
    /// A pool never created: a new uuid.
    New(String),
    /// No uuid to send: a ledger entry written before uuids were kept (the
    /// pool is matched by name and disks, as then), or an import without a
    /// ledger entry.
    Unknown,
}

impl Identity {
    pub fn uuid(&self) -> Option<&str> {
        match self {
            Identity::Recorded(u) | Identity::Adopted(u) | Identity::New(u) => Some(u),
            Identity::Unknown => None,
        }
    }
}

/// The uuid for loading the pool of the resource `uid` on `disks`: what the
/// ledger entry of the pool's name (`prior`) recorded, when it is this
/// resource's or one on the same disks (a re-create that takes the pool
/// over); else the adoption the admin asked for; else a new uuid for a
/// create, and none for an import.
pub fn choose(
    uid: &str,
    disks: &[String],
    prior: Option<&LedgerEntry>,
    adopt: Option<&str>,
    create: bool,
) -> Identity {
    if let Some(entry) = prior
        && (entry.uid == uid || crate::nodes::pool_calls::overlap(&entry.disks, disks))
    {
        match (&entry.pool_uuid, adopt) {
            (Some(uuid), _) => return Identity::Recorded(uuid.clone()),
            // Written before uuids were kept: matched by name and disks, as then.
            (None, None) => return Identity::Unknown,
            (None, Some(_)) => {}
        }
    }
    match adopt {
        Some(uuid) => Identity::Adopted(uuid.to_string()),
        None if create => Identity::New(new_uuid()),
        None => Identity::Unknown,
    }
}

/// A uuid for a pool about to be created.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The adoption the admin asked for in `annotations`: the uuid, or why the
/// value is not one.
pub fn adoption(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<Result<String, String>> {
    let value = annotations.get(ADOPT_ANNOTATION)?;
    Some(
        uuid::Uuid::parse_str(value.trim())
            .map(|u| u.to_string())
            .map_err(|e| {
                format!(
                    "annotation {ADOPT_ANNOTATION} is {value:?}, not a pool uuid ({e}): nothing \
                     is adopted"
                )
            }),
    )
}

/// The uuid of the pool the node found on the disks instead of `want`, when
/// `err` is the node's refusal of a CreatePool or ImportPool for a uuid
/// mismatch (the engine: "existing pool has different uuid: U"; the
/// stand-in: "pool uuid mismatch: ... uuid U").
pub fn found_uuid(err: &NodeError, want: &str) -> Option<String> {
    if err.code() != tonic::Code::InvalidArgument {
        return None;
    }
    let message = err.message();
    if !message.contains("uuid") {
        return None;
    }
    message
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter_map(|token| uuid::Uuid::parse_str(token).ok())
        .map(|u| u.to_string())
        .rfind(|u| !u.eq_ignore_ascii_case(want))
}

/// The pending reason of a resource whose disks hold a pool it did not
/// create.
pub fn foreign_note(pool: &str, node: &str, disks: &[String], uuid: &str) -> String {
    format!(
        "pool {pool} with uuid {uuid} is on {} on node {node}, and this operator did not create \
         it: it is left as it is, and not recorded; to make it this resource's pool (destroyed \
         when the resource is deleted), annotate the resource {ADOPT_ANNOTATION}={uuid}",
        disks.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6f1c2c1e-5d7a-4b7e-9a51-0d2b8f3e4c10";
    const V: &str = "0b9e8a2c-1111-4c3d-8e2f-aa00bb11cc22";

    fn entry(uid: &str, disk: &str, uuid: Option<&str>) -> LedgerEntry {
        LedgerEntry {
            pool: "p".into(),
            uid: uid.into(),
            node: "n1".into(),
            disks: vec![disk.into()],
            pool_uuid: uuid.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_recorded_uuid_wins_then_adoption_then_a_new_one() {
        let disks = vec!["/dev/a".to_string()];
        let own = entry("u1", "/dev/a", Some(U));
        assert_eq!(
            choose("u1", &disks, Some(&own), Some(V), true),
            Identity::Recorded(U.into())
        );
        // Re-created on the same disks: takes the pool over.
        assert_eq!(
            choose("u2", &disks, Some(&own), None, true),
            Identity::Recorded(U.into())
        );
        // Re-created on other disks: the old pool is not this one's.
        let elsewhere = entry("u1", "/dev/b", Some(U));
        assert!(matches!(
            choose("u2", &disks, Some(&elsewhere), None, true),
            Identity::New(_)
        ));
        assert_eq!(
            choose("u2", &disks, None, Some(V), true),
            Identity::Adopted(V.into())
        );
        // An entry of this resource without a uuid (written before): as then.
        let legacy = entry("u1", "/dev/a", None);
        assert_eq!(
            choose("u1", &disks, Some(&legacy), None, true),
            Identity::Unknown
        );
        assert_eq!(
            choose("u2", &disks, Some(&legacy), None, true),
            Identity::Unknown
        );
        assert_eq!(choose("u1", &disks, None, None, false), Identity::Unknown);
        let Identity::New(new) = choose("u1", &disks, None, None, true) else {
            panic!("a create without a record gets a new uuid");
        };
        assert!(uuid::Uuid::parse_str(&new).is_ok());
    }

    #[test]
    fn the_found_uuid_is_read_from_both_nodes_refusals() {
        let engine = NodeError::Rpc(tonic::Status::invalid_argument(format!(
            "invalid argument, failed to import pool p: existing pool has different uuid: {V}"
        )));
        assert_eq!(found_uuid(&engine, U).as_deref(), Some(V));
        let stand_in = NodeError::Rpc(tonic::Status::invalid_argument(format!(
            "pool uuid mismatch: disk /dev/loop3 carries pool \"p\" with uuid {V}"
        )));
        assert_eq!(found_uuid(&stand_in, U).as_deref(), Some(V));
        // Other refusals are not a foreign pool.
        let busy = NodeError::Rpc(tonic::Status::invalid_argument("volume is busy"));
        assert_eq!(found_uuid(&busy, U), None);
        let name = NodeError::Rpc(tonic::Status::invalid_argument(
            "existing pool disk has different name: q",
        ));
        assert_eq!(found_uuid(&name, U), None);
        let other = NodeError::Rpc(tonic::Status::internal(format!("uuid {V}")));
        assert_eq!(found_uuid(&other, U), None);
    }

    #[test]
    fn adoption_takes_only_a_uuid() {
        let of = |v: &str| {
            std::collections::BTreeMap::from([(ADOPT_ANNOTATION.to_string(), v.to_string())])
        };
        assert_eq!(adoption(&Default::default()), None);
        assert_eq!(adoption(&of(V)), Some(Ok(V.to_string())));
        assert_eq!(adoption(&of(&V.to_uppercase())), Some(Ok(V.to_string())));
        let bad = adoption(&of("yes"))
            .expect("asked")
            .expect_err("not a uuid");
        assert!(bad.contains(ADOPT_ANNOTATION), "{bad}");
    }
}
