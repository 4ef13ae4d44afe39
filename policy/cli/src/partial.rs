//! Partial observations: a test case, or a diff's example, says only what
//! differs from a named starting observation, as camelCase JSON (YAML in a
//! cases file).
//!
//! A patch is merged into the start field by field: objects recursively,
//! anything else (numbers, strings, lists, `null`) replaces the value. A key
//! the observation does not have is an error, so a typo cannot pass a case
//! silently. An object patched into an absent optional part starts from a
//! template (see [`TEMPLATES`]), so `reported: {state: degraded}` is enough.
//! Both directions work on the serialized form, so fields a later contract
//! adds keep their defaults without a change here.

use msp_policy_sdk::model::{
    Action, ErrorKind, Impossible, LastOperation, Observation, PoolState, ReportedState,
};
use msp_policy_sdk::testing;
use serde_json::{Map, Value};

/// The starting observations a case may name, with what each is.
pub const STARTS: &[(&str, &str)] = &[
    (
        "new",
        "a pool just created as a resource, not on its node yet: labelled node, registered \
         storage node with a fresh heartbeat, pools listed, nothing in the ledger (the default)",
    ),
    ("pending", "as new, with status.state pending"),
    (
        "online",
        "a pool created earlier: status online with its node and disks cached, listed online by \
         the storage node, in the ledger",
    ),
    ("degraded", "as online, with status.state degraded"),
    ("faulted", "as online, with status.state faulted"),
    ("offline", "as online, with status.state offline"),
    (
        "empty",
        "every field at its zero value (no node, no storage node, pools not known)",
    ),
];

/// The start used when a case names none.
pub const DEFAULT_START: &str = "new";

/// Optional parts that start from a template when a patch gives an object.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "reported",
        "the pool listed online under the pool's name, 1 GiB, on the start's disk",
    ),
    (
        "lastOperation",
        "a create that succeeded at nowMs; `agoMs: N` sets atMs to nowMs - N",
    ),
    (
        "lastOperation.error",
        "kind other, message \"boom\" (set failures too: a failure count of 0 reads as 1)",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    #[error("unknown start {name:?} (one of: {})", start_names())]
    UnknownStart { name: String },
    #[error("the observation has no field `{0}`")]
    UnknownField(String),
    #[error("`{path}` must be an object to set fields in it, the start has {got}")]
    NotAnObject { path: String, got: &'static str },
    #[error("not an observation: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("the operator never makes this observation: {0}")]
    Impossible(Impossible),
}

fn start_names() -> String {
    STARTS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The starting observation called `name`.
pub fn start(name: &str) -> Result<Observation, PartialError> {
    let state = match name {
        "new" => None,
        "pending" => Some(PoolState::Pending),
        "online" => Some(PoolState::Online),
        "degraded" => Some(PoolState::Degraded),
        "faulted" => Some(PoolState::Faulted),
        "offline" => Some(PoolState::Offline),
        "empty" => return Ok(Observation::default()),
        other => {
            return Err(PartialError::UnknownStart {
                name: other.to_string(),
            });
        }
    };
    Ok(testing::observation(state))
}

/// `base` with `patch` merged in. A patch that deletes the resource
/// (`pool: {deleted: true}`) on a live `base` gives what the operator makes
/// of it then ([`Observation::as_deleted`]: what its ledger entry kept, so
/// the labels and annotations as last seen, no status.state): the patch's
/// other fields are merged in before (what the resource was) and again
/// after (what they say of the deleted resource). A patch whose result the
/// operator never makes ([`Observation::possible`]) is an error that says why.
pub fn apply(base: &Observation, patch: &Value) -> Result<Observation, PartialError> {
    let deletes = patch
        .pointer("/pool/deleted")
        .is_some_and(|d| d.as_bool() == Some(true));
    if !deletes || base.pool.deleted {
        let obs = merge_patch(base, patch)?;
        obs.possible().map_err(PartialError::Impossible)?;
        return Ok(obs);
    }
    let mut rest = patch.clone();
    if let Some(pool) = rest.get_mut("pool").and_then(Value::as_object_mut) {
        pool.remove("deleted");
    }
    let live = merge_patch(base, &rest)?;
    if !live.in_ledger {
        return Err(PartialError::Impossible(Impossible(
            "a deleted resource is observed only while the ledger holds its pool: the operator \
             decides nothing about the deletion of a resource whose pool it never created; start \
             from a created pool (start: online) or set inLedger: true"
                .to_string(),
        )));
    }
    let obs = merge_patch(&live.as_deleted(), &rest)?;
    obs.possible().map_err(PartialError::Impossible)?;
    Ok(obs)
}

/// `base` with `patch` merged in, as it is.
fn merge_patch(base: &Observation, patch: &Value) -> Result<Observation, PartialError> {
    let mut value = serde_json::to_value(base)?;
    let mut patch = patch.clone();
    let ago_ms = take_ago_ms(&mut patch)?;
    // Templates read the patched observation (the reported pool takes the
    // pool's new name): merge the parts that have none first.
    let (later, first): (Map<String, Value>, Map<String, Value>) = match patch {
        Value::Object(fields) => fields
            .into_iter()
            .partition(|(k, _)| TEMPLATES.iter().any(|(t, _)| t == k)),
        Value::Null => Default::default(),
        other => {
            return Err(PartialError::NotAnObject {
                path: "the observation".into(),
                got: kind(&other),
            });
        }
    };
    merge(&mut value, &Value::Object(first), "", &Value::Null)?;
    let whole = value.clone();
    merge(&mut value, &Value::Object(later), "", &whole)?;
    if let Some(ago) = ago_ms {
        let now = value.get("nowMs").and_then(Value::as_u64).unwrap_or(0);
        if let Some(op) = value
            .get_mut("lastOperation")
            .and_then(Value::as_object_mut)
        {
            op.insert("atMs".into(), now.saturating_sub(ago).into());
        }
    }
    Ok(serde_json::from_value(value)?)
}

/// The smallest patch that turns `base` into `obs`: `apply(base, &changes(base, obs))`
/// gives `obs` back. A part absent from `base` is compared with its template.
pub fn changes(base: &Observation, obs: &Observation) -> Result<Value, PartialError> {
    let base = serde_json::to_value(base)?;
    let obs = serde_json::to_value(obs)?;
    let reference = reference(&base, &obs);
    let mut patch = diff_value(&reference, &obs).unwrap_or_else(|| Value::Object(Map::new()));
    // A part equal to its template still has to be named to exist.
    for path in templated(&base, &obs) {
        let mut at = &mut patch;
        for key in path.split('.') {
            let Value::Object(fields) = at else { break };
            at = fields
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(patch)
}

/// How far `obs` is from `base`: the number of fields that differ (a part
/// absent from `base` counts one, plus its differences from the template).
pub fn distance(base: &Value, obs: &Value) -> usize {
    let mut leaves = Vec::new();
    collect_leaves(&reference(base, obs), obs, "", &mut leaves);
    leaves.len() + templated(base, obs).len()
}

/// One way to bring a field of an observation closer to the start.
#[derive(Debug)]
pub struct Step {
    /// Dot-separated path of the field.
    pub path: String,
    /// Values to try in order: the part removed, or the start's (template's)
    /// value, then lists with one item less.
    pub tries: Vec<Value>,
    /// For a number: (the start's value, the current one), to search between
    /// when the start's value itself does not do.
    pub between: Option<(i64, i64)>,
}

/// The ways to bring `obs` closer to `base`, optional parts first.
pub fn steps(base: &Value, obs: &Value) -> Vec<Step> {
    let mut out: Vec<Step> = templated(base, obs)
        .into_iter()
        .map(|path| Step {
            path,
            tries: vec![Value::Null],
            between: None,
        })
        .collect();
    let reference = reference(base, obs);
    let mut leaves = Vec::new();
    collect_leaves(&reference, obs, "", &mut leaves);
    for path in leaves {
        let (Some(from), Some(to)) = (pointer(&reference, &path), pointer(obs, &path)) else {
            continue;
        };
        let mut tries = vec![from.clone()];
        if let Value::Array(items) = to {
            for i in 0..items.len() {
                let mut fewer = items.clone();
                fewer.remove(i);
                tries.push(Value::Array(fewer));
            }
        }
        let between = from.as_i64().zip(to.as_i64());
        out.push(Step {
            path,
            tries,
            between,
        });
    }
    out
}

/// `value` with the field at `path` set to `to`; None when it has no such field.
pub fn with(value: &Value, path: &str, to: Value) -> Option<Value> {
    let mut v = value.clone();
    *pointer_mut(&mut v, path)? = to;
    Some(v)
}

/// `base` with each part it lacks and `obs` has replaced by its template.
fn reference(base: &Value, obs: &Value) -> Value {
    let mut reference = base.clone();
    for path in templated(base, obs) {
        if let (Some(t), Some(slot)) = (template(&path, obs), pointer_mut(&mut reference, &path)) {
            *slot = t;
        }
    }
    reference
}

/// The template paths absent (null) from `base` and present in `obs`,
/// outer ones first.
fn templated(base: &Value, obs: &Value) -> Vec<String> {
    TEMPLATES
        .iter()
        .map(|(path, _)| path.to_string())
        .filter(|path| {
            let outer_absent = path
                .rsplit_once('.')
                .is_some_and(|(outer, _)| pointer(base, outer).is_none_or(Value::is_null));
            let absent = outer_absent || pointer(base, path).is_none_or(Value::is_null);
            absent && pointer(obs, path).is_some_and(Value::is_object)
        })
        .collect()
}

fn pointer<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(&format!("/{}", path.replace('.', "/")))
}

fn pointer_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    v.pointer_mut(&format!("/{}", path.replace('.', "/")))
}

fn take_ago_ms(patch: &mut Value) -> Result<Option<u64>, PartialError> {
    let Some(op) = patch
        .get_mut("lastOperation")
        .and_then(Value::as_object_mut)
    else {
        return Ok(None);
    };
    match op.remove("agoMs") {
        None => Ok(None),
        Some(v) => Ok(Some(serde_json::from_value(v)?)),
    }
}

/// The template for an absent optional part at `path`, filled from the
/// observation being patched.
fn template(path: &str, whole: &Value) -> Option<Value> {
    let value = match path {
        "reported" => {
            let mut r = serde_json::to_value(testing::reported(ReportedState::Online)).ok()?;
            if let Some(name) = whole.pointer("/pool/name") {
                r["name"] = name.clone();
            }
            r
        }
        "lastOperation" => {
            let mut op = LastOperation {
                error: None,
                failures: 0,
                ..testing::failed(Action::Create, ErrorKind::Other, 1, 0)
            };
            op.at_ms = whole.get("nowMs").and_then(Value::as_u64).unwrap_or(0);
            serde_json::to_value(op).ok()?
        }
        "lastOperation.error" => {
            serde_json::to_value(testing::failed(Action::Create, ErrorKind::Other, 1, 0).error)
                .ok()?
        }
        _ => return None,
    };
    Some(value)
}

fn merge(target: &mut Value, patch: &Value, path: &str, whole: &Value) -> Result<(), PartialError> {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if target.is_null()
        && let Some(t) = template(path, whole)
    {
        *target = t;
    }
    let Value::Object(existing) = target else {
        if target.is_null() {
            // An optional part without a template: the patch is all of it.
            *target = patch.clone();
            return Ok(());
        }
        return Err(PartialError::NotAnObject {
            path: path.to_string(),
            got: kind(target),
        });
    };
    // A map (labels, annotations …) takes any key; a struct only its fields.
    let map = is_map(path);
    for (key, value) in fields {
        let sub = join(path, key);
        let slot = match existing.get_mut(key) {
            Some(slot) => slot,
            None if map => existing.entry(key.clone()).or_insert(Value::Null),
            None => return Err(PartialError::UnknownField(sub)),
        };
        merge(slot, value, &sub, whole)?;
    }
    Ok(())
}

/// True for a map field: an object that is empty in the zero observation
/// (a struct always has its fields there; a part absent there is no map).
fn is_map(path: &str) -> bool {
    let zero = serde_json::to_value(Observation::default()).unwrap_or(Value::Null);
    let at = if path.is_empty() {
        Some(&zero)
    } else {
        pointer(&zero, path)
    };
    at.and_then(Value::as_object).is_some_and(Map::is_empty)
}

fn diff_value(base: &Value, obs: &Value) -> Option<Value> {
    match (base, obs) {
        (Value::Object(b), Value::Object(o)) => {
            let fields: Map<String, Value> = o
                .iter()
                .filter_map(|(k, v)| {
                    let d = match b.get(k) {
                        Some(bv) => diff_value(bv, v)?,
                        None => v.clone(),
                    };
                    Some((k.clone(), d))
                })
                .collect();
            (!fields.is_empty()).then_some(Value::Object(fields))
        }
        _ => (base != obs).then(|| obs.clone()),
    }
}

fn collect_leaves(base: &Value, obs: &Value, path: &str, out: &mut Vec<String>) {
    match (base, obs) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get(k) {
                    Some(bv) => collect_leaves(bv, v, &join(path, k), out),
                    None => out.push(join(path, k)),
                }
            }
        }
        _ if base != obs => out.push(path.to_string()),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_changes_only_what_it_names() -> Result<(), PartialError> {
        let base = start("online")?;
        let obs = apply(&base, &json!({"storageNode": {"reachable": false}}))?;
        assert!(!obs.storage_node.reachable);
        assert_eq!(obs.pool, base.pool);
        assert_eq!(obs.reported, base.reported);
        Ok(())
    }

    #[test]
    fn a_deleted_resource_is_what_the_operator_makes_of_it() -> Result<(), PartialError> {
        let base = start("online")?;
        let obs = apply(
            &base,
            &json!({"pool": {"labels": {"keep": "true"}, "deleted": true}}),
        )?;
        assert!(obs.pool.deleted && obs.in_ledger && obs.pool.status_state.is_none());
        assert_eq!(
            obs.pool.labels.get("keep").map(String::as_str),
            Some("true")
        );
        assert_eq!(obs.reported, base.reported);
        // What the operator never sends is refused, and says why.
        for impossible in [
            json!({"pool": {"deleted": true}, "inLedger": false}),
            json!({"pool": {"deleted": true, "statusState": "online"}}),
            json!({"pool": {"deleted": true}, "conflicts": ["other"]}),
        ] {
            let err = apply(&base, &impossible);
            assert!(
                matches!(&err, Err(PartialError::Impossible(_))),
                "{impossible}: {err:?}"
            );
        }
        let never_created = apply(&start("new")?, &json!({"pool": {"deleted": true}}));
        let why = never_created
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(why.contains("start: online"), "{why}");
        Ok(())
    }

    #[test]
    fn a_typo_is_an_error_not_a_silent_pass() -> Result<(), PartialError> {
        let err = apply(&start("new")?, &json!({"pool": {"deletd": true}}));
        assert!(
            matches!(&err, Err(PartialError::UnknownField(f)) if f == "pool.deletd"),
            "{err:?}"
        );
        assert!(matches!(
            start("onlin"),
            Err(PartialError::UnknownStart { .. })
        ));
        Ok(())
    }

    #[test]
    fn optional_parts_start_from_templates() -> Result<(), PartialError> {
        let obs = apply(
            &start("new")?,
            &json!({
                "pool": {"name": "p7"},
                "reported": {"state": "degraded"},
                "lastOperation": {"error": {"kind": "internal"}, "failures": 2, "agoMs": 500},
            }),
        )?;
        let reported = obs.reported.as_ref().map(|r| (r.name.as_str(), r.state));
        assert_eq!(reported, Some(("p7", ReportedState::Degraded)));
        let op = obs.last_operation.as_ref();
        assert_eq!(op.map(|o| o.at_ms), Some(obs.now_ms - 500));
        assert_eq!(
            op.and_then(|o| o.error.as_ref()).map(|e| e.kind),
            Some(ErrorKind::Internal)
        );
        Ok(())
    }

    #[test]
    fn only_an_object_empty_in_the_zero_observation_is_a_map() {
        assert!(!is_map(""));
        assert!(!is_map("pool"));
        assert!(!is_map("storageNode"));
        assert!(!is_map("reported"));
        assert!(!is_map("pool.name"));
    }

    #[test]
    fn steps_lead_toward_the_start() -> Result<(), PartialError> {
        let base = serde_json::to_value(start("new")?)?;
        let obs = serde_json::to_value(apply(
            &start("new")?,
            &json!({"pool": {"specDisks": ["/dev/a", "/dev/b"]}, "reported": {"used": 7}}),
        )?)?;
        assert_eq!(distance(&base, &obs), 3);
        let steps = steps(&base, &obs);
        let tried =
            |path: &str, v: Value| steps.iter().any(|s| s.path == path && s.tries.contains(&v));
        assert!(tried("reported", Value::Null));
        assert!(tried("reported.used", json!(0)));
        assert!(tried("pool.specDisks", json!(["/dev/b"])));
        let used = steps.iter().find(|s| s.path == "reported.used");
        assert_eq!(used.and_then(|s| s.between), Some((0, 7)));
        let fewer = with(&obs, "reported", Value::Null).map(|v| distance(&base, &v));
        assert_eq!(fewer, Some(1));
        Ok(())
    }

    #[test]
    fn changes_round_trip_through_apply() -> Result<(), PartialError> {
        let base = start("new")?;
        let mut rng = msp_policy_engine::sample::Rng::new(7);
        for _ in 0..200 {
            let obs = msp_policy_engine::sample::observation(&mut rng);
            assert_eq!(apply(&base, &changes(&base, &obs)?)?, obs);
        }
        Ok(())
    }
}
