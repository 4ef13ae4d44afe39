//! Format versions of what the operator keeps in the API server and a later
//! (or earlier) version of it reads: each ledger entry and each status carry
//! `formatVersion`. A version reads every format up to its own, and the
//! tests keep a fixture of each (`tests/fixtures/formats/`) that every later
//! version must read. A format newer than it knows is never rewritten:
//! a rolled-back operator leaves such a pool alone, with a Warning Event,
//! rather than writing over what it does not understand.
//!
//! Absent means format 1: what the operator wrote before the field existed
//! is format 1, so an upgrade writes nothing just to add the number.
//!
//! A field added as optional (absent when unused), which a version without
//! it reads by ignoring it, stays in the same format: the ledger entry's
//! `poolUuid` and `diskIds`, the status's `diskIds`. Such a version drops
//! the field when it rewrites the entry; the next version takes it again
//! (the disk pins at the pool's next create or import,
//! [`crate::nodes::disk_identity`]). A field whose absence would be misread
//! bumps the format.

/// The format of the ledger entries this version writes (and the newest it reads).
pub const LEDGER_FORMAT: u32 = 1;
/// The format of the status this version writes (and the newest it reads).
pub const STATUS_FORMAT: u32 = 1;
/// The name of the field carrying the format, in a ledger entry and in status.
pub const FIELD: &str = "formatVersion";
/// The Event reason of a pool left alone because of a newer format.
pub const EVENT_REASON: &str = "UnknownFormat";

/// What was found in a format this version cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is in format {found}, newer than this operator reads (up to {known}): it is left \
     as it is, never rewritten; run the operator version that wrote it, or a later one"
)]
pub struct TooNew {
    /// What it is, for the admin ("the status", "the ledger entry of pool p").
    pub what: String,
    pub found: u64,
    pub known: u32,
}

/// Checks a `formatVersion` found in `what` (absent: 1) against the newest
/// `known` format.
pub fn check(what: impl Into<String>, found: Option<u64>, known: u32) -> Result<(), TooNew> {
    let found = found.unwrap_or(1);
    if found <= u64::from(known) {
        return Ok(());
    }
    Err(TooNew {
        what: what.into(),
        found,
        known,
    })
}

/// The `formatVersion` of a JSON object, when it has a numeric one. A
/// format that is not a number is taken for an unknown newer one (no
/// version of this operator writes one).
pub fn of_json(value: &serde_json::Value) -> Option<u64> {
    match value.get(FIELD)? {
        serde_json::Value::Number(n) => Some(n.as_u64().unwrap_or(u64::MAX)),
        serde_json::Value::Null => None,
        _ => Some(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_one_and_only_newer_formats_are_refused() {
        assert_eq!(check("x", None, 1), Ok(()));
        assert_eq!(check("x", Some(0), 1), Ok(()));
        assert_eq!(check("x", Some(1), 1), Ok(()));
        let err = check("the status", Some(2), 1).expect_err("newer");
        assert_eq!(err.found, 2);
        assert!(
            err.to_string()
                .contains("format 2, newer than this operator reads (up to 1)")
        );
        assert_eq!(check("x", Some(2), 2), Ok(()));
    }

    #[test]
    fn the_field_is_read_from_json() {
        assert_eq!(of_json(&serde_json::json!({"pool": "p"})), None);
        assert_eq!(of_json(&serde_json::json!({"formatVersion": 3})), Some(3));
        assert_eq!(of_json(&serde_json::json!({"formatVersion": null})), None);
        assert_eq!(
            of_json(&serde_json::json!({"formatVersion": "2"})),
            Some(u64::MAX)
        );
        assert_eq!(
            of_json(&serde_json::json!({"formatVersion": -1})),
            Some(u64::MAX)
        );
    }
}
