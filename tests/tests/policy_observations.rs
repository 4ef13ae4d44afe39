//! The operator's observations are ones the tools' model allows: every
//! observation the operator decides in a run through the pool's life
//! (created, labelled and annotated, also with kubectl's last-applied copy,
//! a disk conflict, a missing node, deleted while labelled, its storage node
//! gone) is captured from its trace log (`msp_operator::observation`) and
//! must pass `Observation::possible`, the one definition that `policy test`,
//! `policy diff`'s generator and the SDK's builders keep to. So the tools
//! cannot refuse what the operator sends, nor test what it never sends
//! without this test failing.

use std::sync::{Arc, Mutex};

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use msp_operator::controller::decide::OBSERVATION_LOG;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_policy_sdk::model::Observation;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{Scene, WAIT, create_pool, node_pools, wait_for, wait_pool};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");

/// Keeps the `observation` field of each event of [`OBSERVATION_LOG`].
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Capture {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Field<'a>(&'a mut Option<String>);

impl tracing::field::Visit for Field<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "observation" {
            *self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != OBSERVATION_LOG {
            return;
        }
        let mut json = None;
        event.record(&mut Field(&mut json));
        if let Some(json) = json {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(json);
        }
    }
}

async fn patch_metadata(
    api: &Api<MayastorPool>,
    name: &str,
    metadata: serde_json::Value,
) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "metadata": metadata });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_observation_the_operator_decides_is_one_the_tools_allow() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    // Before the operator starts: its own telemetry then keeps this one.
    let capture = Capture::default();
    let only_observations =
        tracing_subscriber::filter::filter_fn(|m| m.target() == OBSERVATION_LOG);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(capture.clone().with_filter(only_observations)),
    )?;

    let mut scene = Scene::start(BIN, "node1").await?;
    let admin = scene.admin.clone();
    let api: Api<MayastorPool> = Api::namespaced(admin.clone(), "mayastor");
    let disks = [LoopDevice::create(32 * MIB)?, LoopDevice::create(32 * MIB)?];

    // Created, then labelled and annotated, kubectl's last-applied copy too.
    create_pool(&admin, "live", "node1", &[disks[0].path_str()]).await?;
    wait_pool(&admin, "live", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    let last_applied = "kubectl.kubernetes.io/last-applied-configuration";
    patch_metadata(
        &api,
        "live",
        serde_json::json!({
            "labels": {"keep": "true", "team": "storage"},
            "annotations": {"example.com/retain": "yes", last_applied: "{\"kind\":\"MayastorPool\"}"},
        }),
    )
    .await?;
    // A disk another pool claims; a node that does not exist.
    create_pool(&admin, "conflict", "node1", &[disks[0].path_str()]).await?;
    create_pool(&admin, "nowhere", "node2", &[disks[1].path_str()]).await?;
    for name in ["conflict", "nowhere"] {
        wait_pool(&admin, name, WAIT, "pending with a reason", |s| {
            s.state == Some(PoolState::Pending) && s.reason.is_some()
        })
        .await?;
    }
    // Deleted while labelled: the sweep's observation, from the ledger.
    api.delete("nowhere", &DeleteParams::default()).await?;
    create_pool(&admin, "gone", "node1", &[disks[1].path_str()]).await?;
    wait_pool(&admin, "gone", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    patch_metadata(
        &api,
        "gone",
        serde_json::json!({"labels": {"keep": "true"}}),
    )
    .await?;
    wait_for("gone's label in its observations", WAIT, || async {
        capture
            .all()
            .iter()
            .any(|o| o.contains("\"name\":\"gone\"") && o.contains("\"keep\""))
    })
    .await?;
    api.delete("gone", &DeleteParams::default()).await?;
    let endpoint = scene.sn.endpoint();
    wait_for("gone destroyed on the node", WAIT, || async {
        node_pools(endpoint)
            .await
            .is_ok_and(|p| !p.iter().any(|n| n == "gone"))
    })
    .await?;
    // Its storage node gone: the created pool goes offline.
    scene.sn.kill();
    wait_pool(&admin, "live", WAIT, "offline", |s| {
        s.state == Some(PoolState::Offline)
    })
    .await?;

    let captured = capture.all();
    let mut refused = Vec::new();
    let mut seen: Vec<Observation> = Vec::new();
    for json in &captured {
        let obs: Observation = serde_json::from_str(json)
            .map_err(|e| anyhow::anyhow!("an observation the tools cannot read: {e}: {json}"))?;
        if let Err(why) = obs.possible() {
            refused.push(format!("{why:?}: {json}"));
        }
        seen.push(obs);
    }
    assert!(
        refused.is_empty(),
        "observations the operator made that the tools' model refuses:\n{}",
        refused.join("\n")
    );
    // The run covered what it set out to.
    let covered = [
        (
            "deleted, labelled",
            seen.iter()
                .any(|o| o.pool.deleted && o.pool.labels.contains_key("keep")),
        ),
        ("a conflict", seen.iter().any(|o| !o.conflicts.is_empty())),
        ("a missing node", seen.iter().any(|o| !o.node.exists)),
        (
            "annotated",
            seen.iter()
                .any(|o| o.pool.annotations.contains_key("example.com/retain")),
        ),
        (
            "its storage node gone",
            seen.iter().any(|o| {
                o.pool.name == "live" && (!o.storage_node.reachable || o.heartbeat_late())
            }),
        ),
    ];
    let missing: Vec<&str> = covered
        .iter()
        .filter(|(_, c)| !c)
        .map(|(w, _)| *w)
        .collect();
    assert!(
        missing.is_empty(),
        "no observation {missing:?} among the {} captured",
        seen.len()
    );
    eprintln!("{} observations captured, all possible", seen.len());
    Ok(())
}
