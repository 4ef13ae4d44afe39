//! Data safety: no pool holding data is destroyed without the admin's word,
//! whatever the policy decides.
//!
//! The real io-engine's DestroyPool destroys every replica, snapshot and
//! clone on the pool with it. So before every DestroyPool the operator lists
//! what the pool holds ([`contents`]), on a pool the node has loaded (the
//! engine lists nothing, and no error, for a pool it has not loaded, and
//! drops the errors of its own listing: an empty answer only counts on a
//! loaded pool). It destroys only on a successful, empty listing; anything
//! else keeps the pool ([`Contents::holds_back`]) until the admin purges it:
//! the annotation [`PURGE_ANNOTATION`] set to [`PURGE_VALUE`] on the resource
//! when it is deleted.

use std::time::Duration;

use crate::nodes::client::{ContentKind, NodeClient, PoolContent};
use crate::state::ledger::Held;

/// The annotation by which the admin lets a deleted resource's pool go with
/// its data.
pub const PURGE_ANNOTATION: &str = "openebs.io/purge";
/// The one value of [`PURGE_ANNOTATION`] that purges: typed, not a boolean,
/// so that no `true` set in passing destroys data.
pub const PURGE_VALUE: &str = "yes-really-destroy-data";
/// How many uuids a held pool's ledger entry and Event name.
pub const FIRST_FEW: usize = 5;

/// What a pool holds, as far as the node could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Loaded and listed empty.
    Empty,
    /// Loaded, listed with these.
    Holds(Vec<PoolContent>),
    /// The node does not have the pool loaded: nothing can be listed.
    NotLoaded,
    /// The node could not say (why).
    Unknown(String),
}

impl Contents {
    /// True unless the pool is known to hold nothing.
    pub fn holds_back(&self) -> bool {
        !matches!(self, Contents::Empty)
    }

    /// The ledger's record of why the pool is kept (`None` when empty).
    pub fn held(&self) -> Option<Held> {
        match self {
            Contents::Empty => None,
            Contents::Holds(list) => {
                let count = |k| list.iter().filter(|c| c.kind == k).count();
                Some(Held {
                    replicas: count(ContentKind::Replica),
                    snapshots: count(ContentKind::Snapshot),
                    clones: count(ContentKind::Clone),
                    first: list
                        .iter()
                        .take(FIRST_FEW)
                        .map(|c| c.uuid.clone())
                        .collect(),
                    unchecked: None,
                })
            }
            Contents::NotLoaded => Some(Held {
                unchecked: Some("the node does not have the pool loaded".into()),
                ..Held::default()
            }),
            Contents::Unknown(why) => Some(Held {
                unchecked: Some(format!(
                    "the node could not list the pool's contents: {why}"
                )),
                ..Held::default()
            }),
        }
    }
}

/// Lists what pool `name` holds on the node of `client`: first whether the
/// node has it loaded, then its replicas, snapshots and clones.
pub async fn contents(client: &NodeClient, name: &str, timeout: Duration) -> Contents {
    match client.list_pools(timeout).await {
        Err(err) => return Contents::Unknown(err.to_string()),
        Ok(pools) if !pools.iter().any(|p| p.name == name) => return Contents::NotLoaded,
        Ok(_) => {}
    }
    match client.list_replicas(name, timeout).await {
        Err(err) => Contents::Unknown(err.to_string()),
        Ok(list) if list.is_empty() => Contents::Empty,
        Ok(list) => Contents::Holds(list),
    }
}

/// What holds a pool, for the admin: "2 replicas (u1, u2)".
pub fn what_holds(held: &Held) -> String {
    if let Some(why) = &held.unchecked {
        return format!("its contents could not be checked ({why})");
    }
    let mut parts = Vec::new();
    for (n, one) in [
        (held.replicas, "replica"),
        (held.snapshots, "snapshot"),
        (held.clones, "clone"),
    ] {
        match n {
            0 => {}
            1 => parts.push(format!("1 {one}")),
            n => parts.push(format!("{n} {one}s")),
        }
    }
    let mut text = parts.join(", ");
    if !held.first.is_empty() {
        let more = held.replicas + held.snapshots + held.clones > held.first.len();
        text.push_str(&format!(
            " ({}{})",
            held.first.join(", "),
            if more { ", ..." } else { "" }
        ));
    }
    text
}

/// The note of the PoolKept Event: what holds the pool, and how to purge it.
pub fn kept_note(node: &str, pool: &str, held: &Held) -> String {
    let why = match held.unchecked {
        Some(_) => what_holds(held),
        None => format!("it holds {}", what_holds(held)),
    };
    format!(
        "the resource is gone but pool {pool} on node {node} is kept: {why}. It is \
         destroyed once empty. To destroy it with its data: re-create the MayastorPool (same \
         name, node and disks), annotate it {PURGE_ANNOTATION}={PURGE_VALUE}, and delete it"
    )
}

/// The held pools of `entries` as a table for the admin (`msp-operator
/// pools held`): namespace, name and uid of the deleted resource, node, and
/// what holds the pool; sorted by namespace, name. Only the header when none
/// is held.
pub fn held_table(entries: &[crate::state::ledger::LedgerEntry]) -> String {
    let mut rows: Vec<[String; 5]> = entries
        .iter()
        .filter_map(|e| {
            let held = e.held.as_ref()?;
            Some([
                e.namespace.clone(),
                e.pool.clone(),
                e.node.clone(),
                e.uid.clone(),
                what_holds(held),
            ])
        })
        .collect();
    rows.sort();
    let header = ["NAMESPACE", "NAME", "NODE", "UID", "HOLDS"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter().zip(row) {
            out.push_str(&format!("{cell:<w$}   "));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out
}

/// What the resource's purge annotation says: `None` when absent, else
/// whether it is the confirmation.
pub fn purge_asked(annotations: &std::collections::BTreeMap<String, String>) -> Option<bool> {
    annotations
        .get(PURGE_ANNOTATION)
        .map(|value| value == PURGE_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(uuid: &str, kind: ContentKind) -> PoolContent {
        PoolContent {
            pool: "p".into(),
            uuid: uuid.into(),
            kind,
            size: 1,
        }
    }

    #[test]
    fn only_an_empty_listing_lets_a_pool_go() {
        assert!(!Contents::Empty.holds_back());
        assert!(Contents::NotLoaded.holds_back());
        assert!(Contents::Unknown("unavailable".into()).holds_back());
        assert!(Contents::Holds(vec![content("a", ContentKind::Replica)]).holds_back());
        assert_eq!(Contents::Empty.held(), None);
    }

    #[test]
    fn a_held_pool_says_what_holds_it() {
        let list: Vec<PoolContent> = (0..7)
            .map(|i| content(&format!("r{i}"), ContentKind::Replica))
            .chain([content("s", ContentKind::Snapshot)])
            .collect();
        let held = Contents::Holds(list).held().expect("held");
        assert_eq!((held.replicas, held.snapshots, held.clones), (7, 1, 0));
        assert_eq!(held.first.len(), FIRST_FEW);
        assert_eq!(
            what_holds(&held),
            "7 replicas, 1 snapshot (r0, r1, r2, r3, r4, ...)"
        );
        let note = kept_note("n1", "p", &held);
        assert!(note.contains(PURGE_VALUE), "{note}");
        let unchecked = Contents::NotLoaded.held().expect("held");
        assert!(what_holds(&unchecked).contains("not have the pool loaded"));
        let note = kept_note("n1", "p", &unchecked);
        assert!(
            note.contains("is kept: its contents could not be checked"),
            "{note}"
        );
    }

    #[test]
    fn held_pools_are_listed_with_what_holds_them() {
        use crate::state::ledger::LedgerEntry;
        let entry = |pool: &str, held: Option<Held>| LedgerEntry {
            pool: pool.into(),
            namespace: "ns".into(),
            uid: format!("uid-{pool}"),
            node: "n1".into(),
            disks: vec!["/dev/sdb".into()],
            held,
            ..Default::default()
        };
        let kept = Contents::Holds(vec![content("r1", ContentKind::Replica)]).held();
        let table = held_table(&[
            entry("zeta", Contents::NotLoaded.held()),
            entry("live", None),
            entry("data", kept),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("NAMESPACE   NAME   NODE   UID "),
            "{table}"
        );
        assert!(
            lines[1].starts_with("ns          data   n1     uid-data   ")
                && lines[1].ends_with("1 replica (r1)"),
            "{table}"
        );
        assert!(lines[2].contains("zeta") && lines[2].contains("not have the pool loaded"));
        assert_eq!(held_table(&[entry("live", None)]).lines().count(), 1);
    }

    #[test]
    fn only_the_typed_confirmation_purges() {
        let mut a = std::collections::BTreeMap::new();
        assert_eq!(purge_asked(&a), None);
        a.insert(PURGE_ANNOTATION.to_string(), "true".to_string());
        assert_eq!(purge_asked(&a), Some(false));
        a.insert(PURGE_ANNOTATION.to_string(), PURGE_VALUE.to_string());
        assert_eq!(purge_asked(&a), Some(true));
    }
}
