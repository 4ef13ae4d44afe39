//! Item 4 of issue 27, formats that outlive a version: the ledger's entries
//! and the status carry `formatVersion`; the fixture of format 1
//! (`tests/fixtures/formats/1/`, what the operator wrote before and since
//! the field existed) is read by this version as it was meant, directly and
//! through a real API server; an unknown newer format is refused with an
//! Event and never rewritten, while the operator goes on with the other
//! pools of the same node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use msp_operator::state::crd::{MayastorPool, MayastorPoolStatus, PoolState};
use msp_operator::state::format::{EVENT_REASON, LEDGER_FORMAT, STATUS_FORMAT};
use msp_operator::state::ledger::{
    Held, Ledger, LedgerEntry, configmap_name, entry_json, read_configmap,
};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Scene, WAIT, create_pool, node_pools, pool_events, start_cluster, wait_event, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

fn fixture(name: &str) -> anyhow::Result<serde_json::Value> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "formats", "1", name]
        .iter()
        .collect();
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the fixture's ledger says, entry by entry, sorted by pool.
fn fixture_entries() -> Vec<LedgerEntry> {
    let entry = |pool: &str, uid: &str, disks: &[&str]| LedgerEntry {
        pool: pool.into(),
        namespace: "mayastor".into(),
        uid: uid.into(),
        node: "node-fixture".into(),
        disks: disks.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    vec![
        entry(
            "pool-a",
            "6f1c9a52-0d7e-4c1b-9a0e-1f2d3c4b5a60",
            &["/dev/disk/by-id/nvme-fixture-a"],
        ),
        LedgerEntry {
            held: Some(Held {
                replicas: 2,
                snapshots: 1,
                clones: 0,
                first: (1..=3)
                    .map(|i| format!("9d1f0c2e-1111-4a4a-8b8b-00000000000{i}"))
                    .collect(),
                unchecked: None,
            }),
            labels: map(&[("team", "storage")]),
            annotations: map(&[("note", "kept")]),
            ..entry(
                "pool-held",
                "0b6e2f3a-7c8d-4e5f-a1b2-c3d4e5f60718",
                &[
                    "/dev/disk/by-id/nvme-fixture-b",
                    "/dev/disk/by-id/nvme-fixture-c",
                ],
            )
        },
        LedgerEntry {
            held: Some(Held {
                unchecked: Some(
                    "the node answers only v0: the pool cannot be imported to be checked".into(),
                ),
                ..Default::default()
            }),
            purge: true,
            ..entry(
                "pool-unchecked",
                "3c2b1a09-8f7e-4d6c-b5a4-932817263545",
                &["/dev/sdz"],
            )
        },
        LedgerEntry {
            purge: true,
            labels: map(&[("tier", "fast")]),
            ..entry(
                "pool-v1",
                "a9b8c7d6-e5f4-4321-8765-0fedcba98765",
                &["/dev/disk/by-id/nvme-fixture-d"],
            )
        },
    ]
}

fn ready(status: &str, reason: &str, message: &str, generation: i64, at: &str) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: Time(at.parse().expect("timestamp")),
    }
}

/// What the fixture's statuses say, by pool.
fn fixture_statuses() -> BTreeMap<String, MayastorPoolStatus> {
    let policy = Some("msp-default@0.2.0 (4a1b2c3d4e5f)".to_string());
    let unlabelled = "node \"node-other\" is not labelled openebs.io/engine=mayastor";
    let lost = "storage node node-fixture: no heartbeat for 12s";
    BTreeMap::from([
        (
            "pool-a".to_string(),
            MayastorPoolStatus {
                state: Some(PoolState::Online),
                node: Some("node-fixture".into()),
                disks: Some(vec!["/dev/disk/by-id/nvme-fixture-a".into()]),
                disk_ids: None,
                reason: None,
                capacity: Some(10_670_309_376),
                used: Some(4_194_304),
                policy: policy.clone(),
                policy_digest: None,
                replicas: None,
                format_version: None,
                conditions: vec![ready("True", "Online", "", 1, "2026-12-01T10:00:00Z")],
            },
        ),
        (
            "pool-pending".to_string(),
            MayastorPoolStatus {
                state: Some(PoolState::Pending),
                reason: Some(unlabelled.into()),
                policy: policy.clone(),
                conditions: vec![ready(
                    "False",
                    "Pending",
                    unlabelled,
                    2,
                    "2026-12-01T10:00:01Z",
                )],
                ..Default::default()
            },
        ),
        (
            "pool-v1".to_string(),
            MayastorPoolStatus {
                state: Some(PoolState::Offline),
                node: Some("node-fixture".into()),
                disks: Some(vec!["/dev/disk/by-id/nvme-fixture-d".into()]),
                disk_ids: None,
                reason: Some(lost.into()),
                capacity: Some(1_073_741_824),
                used: Some(0),
                policy,
                policy_digest: Some(
                    "sha256:4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
                        .into(),
                ),
                replicas: None,
                format_version: Some(1),
                conditions: vec![ready("False", "Offline", lost, 1, "2026-12-01T10:00:02Z")],
            },
        ),
    ])
}

fn fixture_pools() -> anyhow::Result<Vec<MayastorPool>> {
    let list = fixture("mayastorpools.json")?;
    let items = list["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("mayastorpools.json: no items"))?;
    Ok(items
        .iter()
        .map(|i| serde_json::from_value(i.clone()))
        .collect::<Result<_, _>>()?)
}

fn sorted(mut entries: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
    entries.sort_by(|a, b| a.pool.cmp(&b.pool));
    entries
}

#[test]
fn format_1_is_read_as_it_was_written() -> anyhow::Result<()> {
    // This version still writes format 1: the day it writes 2, a fixture of
    // 2 joins this one and both are read.
    assert_eq!((LEDGER_FORMAT, STATUS_FORMAT), (1, 1));

    let cm: ConfigMap = serde_json::from_value(fixture("ledger.json")?)?;
    let read = read_configmap(&cm);
    assert!(read.unread.is_empty(), "{:?}", read.unread);
    let entries = sorted(read.entries);
    assert_eq!(entries, fixture_entries());
    // What this version writes of them reads back the same, and says its format.
    for entry in &entries {
        let written = entry_json(entry)?;
        let value: serde_json::Value = serde_json::from_str(&written)?;
        assert_eq!(value["formatVersion"], LEDGER_FORMAT, "{written}");
        assert_eq!(&serde_json::from_value::<LedgerEntry>(value)?, entry);
    }

    let statuses: BTreeMap<String, MayastorPoolStatus> = fixture_pools()?
        .into_iter()
        .map(|p| (p.name_any(), p.status.unwrap_or_default()))
        .collect();
    assert_eq!(statuses, fixture_statuses());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_survives_the_api_server_and_is_loaded_as_it_was_written() -> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let cm: ConfigMap = serde_json::from_value(fixture("ledger.json")?)?;
    cms.create(&PostParams::default(), &cm).await?;
    let pools: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    for pool in fixture_pools()? {
        let status = pool.status.clone();
        let mut bare = pool.clone();
        bare.status = None;
        pools.create(&PostParams::default(), &bare).await?;
        let patch = serde_json::json!({"status": status});
        pools
            .patch_status(
                &pool.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }

    // The ledger as the operator loads it at start.
    let ledger = Ledger::load(admin.clone(), "mayastor").await?;
    assert_eq!(sorted(ledger.all()), fixture_entries());
    assert!(ledger.all_unread().is_empty());
    // The statuses as the API server keeps them under this version's CRD
    // (a field its schema lacked would have been pruned).
    let stored: BTreeMap<String, MayastorPoolStatus> = pools
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.status.unwrap_or_default()))
        .collect();
    assert_eq!(stored, fixture_statuses());
    Ok(())
}

/// A ledger entry as a later operator might write it: format 2, with a
/// field this version has never heard of.
const NEWER_ENTRY: &str = r#"{"formatVersion":2,"pool":"newer-entry","namespace":"mayastor","uid":"later","node":"node1","placement":{"disks":["/dev/loop999"]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_with_an_event_and_never_rewritten() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let (cp, operator_client) = start_cluster().await?;
    let admin = cp.client().await?;
    let disks: Vec<LoopDevice> = (0..3)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;

    // Before the (older) operator starts: node1's ledger holds an entry of
    // format 2, and a resource has a status of format 2.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let mut cm = msp_operator::state::ledger::configmap_of("node1", &BTreeMap::new())?;
    cm.data = Some(BTreeMap::from([(
        "newer-entry".to_string(),
        NEWER_ENTRY.to_string(),
    )]));
    cms.create(&PostParams::default(), &cm).await?;
    create_pool(&admin, "newer-entry", "node1", &[disks[0].path_str()]).await?;
    create_pool(&admin, "newer-status", "node1", &[disks[1].path_str()]).await?;
    let pools: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let newer_status = serde_json::json!({"status": {
        "state": "online",
        "node": "node1",
        "disks": [disks[1].path_str()],
        "reason": "written by a later operator",
        "formatVersion": 2,
    }});
    let written = pools
        .patch_status(
            "newer-status",
            &PatchParams::default(),
            &Patch::Merge(&newer_status),
        )
        .await?;
    assert_eq!(
        written.status.as_ref().and_then(|s| s.format_version),
        Some(2)
    );

    let scene = Scene::start_on(cp, operator_client, BIN, "node1").await?;
    // The other pools of the node go on: one created on node1, so its
    // ledger ConfigMap is written with the newer entry in it.
    create_pool(&admin, "fresh", "node1", &[disks[2].path_str()]).await?;
    wait_pool(&admin, "fresh", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    for name in ["newer-entry", "newer-status"] {
        wait_event(&admin, name, EVENT_REASON).await?;
        let notes = pool_events(&admin, name).await?;
        assert!(
            notes.iter().all(|(reason, _)| reason == EVENT_REASON),
            "{name}: {notes:?}"
        );
        let note = &notes[0].1;
        assert!(
            note.contains("in format 2, newer than this operator reads (up to 1)"),
            "{note}"
        );
    }
    wait_event(&admin, &configmap_name("node1"), EVENT_REASON).await?;

    // Nothing written over them, nothing made on the node for them.
    let now = pools.get("newer-status").await?;
    assert_eq!(now.resource_version(), written.resource_version());
    assert_eq!(pools.get("newer-entry").await?.status, None);
    let data = cms
        .get(&configmap_name("node1"))
        .await?
        .data
        .unwrap_or_default();
    assert_eq!(
        data.get("newer-entry").map(String::as_str),
        Some(NEWER_ENTRY)
    );
    assert!(data.contains_key("fresh"), "{data:?}");
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["fresh".to_string()]
    );

    // Its resource deleted: the sweep leaves the entry it cannot read.
    pools
        .delete("newer-entry", &DeleteParams::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let data = cms
        .get(&configmap_name("node1"))
        .await?
        .data
        .unwrap_or_default();
    assert_eq!(
        data.get("newer-entry").map(String::as_str),
        Some(NEWER_ENTRY)
    );
    Ok(())
}
