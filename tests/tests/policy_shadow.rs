//! Shadow mode end to end, the operator against a real API server and a
//! storage node on loop devices: a candidate policy in ConfigMap
//! `msp-policy-shadow` decides beside the live one and is never acted upon.
//! A problem with that ConfigMap gets its Warning Event and metric like the
//! live one's; a candidate that traps counts as a disagreement in `error`
//! while the pools come online under the live policy; `retain` as the
//! candidate disagrees in `action` on a deleted pool, which the live default
//! destroys all the same; the first disagreement and summaries appear as
//! Events on the candidate's ConfigMap; and the documented promotion (the
//! candidate's bytes into the live ConfigMap, with kubectl) makes it live.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_policy_engine::bundled;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Operator, Scene, WAIT, create_node, create_pool, ledger_pools, node_pools, pool_events,
    start_cluster, start_storage_node, wait_event, wait_for, wait_pool,
};

const BIN: &str = env!("CARGO_BIN_EXE_storage-node");
const SHADOW: &str = "msp-policy-shadow";
const KEY: &str = "policy.wasm";

/// Waits until series `series` on the operator's `/metrics` satisfies `ok`.
async fn wait_metric(
    op: &Operator,
    series: &str,
    ok: impl Fn(Option<f64>) -> bool,
) -> anyhow::Result<()> {
    let waited = wait_for(series, WAIT, || async { ok(op.metric(series).await) }).await;
    if let Err(e) = waited {
        let now = op.metric(series).await;
        return Err(e.context(format!("{series} is {now:?}")));
    }
    Ok(())
}

/// Waits until `/metrics` contains `text` (or, `present` false, no longer does).
async fn wait_metrics_text(op: &Operator, text: &str, present: bool) -> anyhow::Result<()> {
    wait_for(
        &format!("{text:?} in /metrics: {present}"),
        WAIT,
        || async {
            op.http_get("/metrics")
                .await
                .is_ok_and(|(_, m)| m.contains(text) == present)
        },
    )
    .await
}

/// Waits for an Event with `reason` about ConfigMap `name` whose note holds
/// every one of `words`; returns the note.
async fn wait_note(
    client: &Client,
    name: &str,
    reason: &str,
    words: &[&str],
) -> anyhow::Result<String> {
    let matching = || async {
        pool_events(client, name)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|(r, note)| r == reason && words.iter().all(|w| note.contains(w)))
            .map(|(_, note)| note)
    };
    let waited = wait_for(
        &format!("a {reason} event with {words:?}"),
        WAIT,
        || async { matching().await.is_some() },
    )
    .await;
    if let Err(e) = waited {
        let seen = pool_events(client, name).await.unwrap_or_default();
        return Err(e.context(format!("events about {name}: {seen:#?}")));
    }
    matching()
        .await
        .ok_or_else(|| anyhow::anyhow!("the {reason} event went away"))
}

fn binary_patch(module: Vec<u8>) -> Patch<serde_json::Value> {
    Patch::Merge(serde_json::json!({ "data": null, "binaryData": { KEY: ByteString(module) } }))
}

/// `bash -c script` in `dir` with kubectl pointed at the test's API server.
fn shell(scene: &Scene, dir: &std::path::Path, script: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .envs(scene.cp.shell_env())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_candidate_is_compared_never_acted_upon_and_promoted() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    // The scene, with summaries every second instead of every five minutes.
    let (cp, operator_client) = start_cluster().await?;
    let admin = cp.client().await?;
    let mut op = Operator::start(operator_client, &["--policy-shadow-summary=1s"]).await?;
    op.wait_ready(WAIT).await?;
    create_node(&admin, "node1", true).await?;
    let sn = start_storage_node(BIN, "node1", &op.registration_endpoint())?;
    let scene = Scene { sn, op, admin, cp };
    let admin = scene.admin.clone();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "mayastor");
    let work = tempfile::tempdir()?;

    // The live policy from its ConfigMap, as the README creates it: the
    // bundled default's own bytes (loaded too: the ConfigMap decides).
    std::fs::write(work.path().join("default.wasm"), bundled::DEFAULT_COMPONENT)?;
    shell(
        &scene,
        work.path(),
        "kubectl -n mayastor create configmap msp-policy --from-file=policy.wasm=default.wasm",
    )?;
    wait_metric(
        &scene.op,
        "msp_policy_reloads_total{error=\"loaded\"}",
        |v| v == Some(1.0),
    )
    .await?;

    // A shadow ConfigMap with the module under data: its own Warning Event
    // and the shadow's reload metric, not the live one's.
    let misplaced = ConfigMap {
        metadata: ObjectMeta {
            name: Some(SHADOW.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), "AGFzbQ==".to_string())])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &misplaced).await?;
    wait_event(&admin, SHADOW, "PolicyKeyUnderData").await?;
    wait_metric(
        &scene.op,
        "msp_policy_shadow_reloads_total{error=\"key-under-data\"}",
        |v| v == Some(1.0),
    )
    .await?;
    assert_eq!(
        scene
            .op
            .metric("msp_policy_reloads_total{error=\"key-under-data\"}")
            .await,
        None
    );
    wait_metrics_text(&scene.op, "msp_policy_shadow_info{", false).await?;

    // A candidate that traps on pools named hostile-*: each of its failures
    // is a disagreement in `error`, and the live policy brings the pools online.
    cms.patch(
        SHADOW,
        &PatchParams::default(),
        &binary_patch(bundled::read_built("hostile-misbehave")?),
    )
    .await?;
    wait_metrics_text(
        &scene.op,
        "msp_policy_shadow_info{name=\"msp-hostile-misbehave\"",
        true,
    )
    .await?;
    wait_event(&admin, SHADOW, "PolicyLoaded").await?;
    let disks = [LoopDevice::create(32 * MIB)?, LoopDevice::create(32 * MIB)?];
    for (name, disk) in ["hostile-panic", "plain"].iter().zip(&disks) {
        create_pool(&admin, name, "node1", &[disk.path_str()]).await?;
    }
    for name in ["hostile-panic", "plain"] {
        let s = wait_pool(&admin, name, WAIT, "online under the live policy", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
        assert!(
            s.reason.is_none()
                && s.policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("msp-default@")),
            "{s:?}"
        );
    }
    let error = "msp_policy_shadow_disagreements_total{field=\"error\"}";
    wait_metric(&scene.op, error, |v| v.is_some_and(|v| v >= 1.0)).await?;
    let first = wait_note(
        &admin,
        SHADOW,
        "PolicyShadowDisagreement",
        &[
            "msp-hostile-misbehave",
            "pool mayastor/hostile-panic",
            "error differs",
        ],
    )
    .await?;
    eprintln!("first disagreement: {first}");
    wait_note(
        &admin,
        SHADOW,
        "PolicyShadowSummary",
        &["msp-hostile-misbehave", "disagreed", "error "],
    )
    .await?;
    // Elsewhere it is the default: no other field disagreed; and none of its
    // traps reached the live path.
    for field in ["action", "state", "reason", "requeue", "event"] {
        let series = format!("msp_policy_shadow_disagreements_total{{field=\"{field}\"}}");
        assert_eq!(scene.op.metric(&series).await, Some(0.0), "{series}");
    }
    assert_eq!(
        scene
            .op
            .metric("msp_policy_decision_failures_total{kind=\"trap\"}")
            .await,
        None
    );

    // `retain` as the candidate: it would keep a deleted pool; the live
    // default destroys it, and the shadow counts the disagreement.
    cms.patch(
        SHADOW,
        &PatchParams::default(),
        &binary_patch(bundled::read_built("retain")?),
    )
    .await?;
    wait_metrics_text(
        &scene.op,
        "msp_policy_shadow_info{name=\"msp-retain\"",
        true,
    )
    .await?;
    let action = "msp_policy_shadow_disagreements_total{field=\"action\"}";
    assert_eq!(scene.op.metric(action).await, Some(0.0));
    Api::<MayastorPool>::namespaced(admin.clone(), "mayastor")
        .delete("plain", &DeleteParams::default())
        .await?;
    wait_for("plain destroyed on its node", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| p == ["hostile-panic"])
    })
    .await?;
    // The ledger entry goes after DestroyPool returns, in a write of its own.
    wait_for("plain gone from the ledger", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l == ["hostile-panic"])
    })
    .await?;
    wait_metric(&scene.op, action, |v| v.is_some_and(|v| v >= 1.0)).await?;
    let decisions = scene.op.metric("msp_policy_shadow_decisions_total").await;
    assert!(decisions.is_some_and(|d| d >= 2.0), "{decisions:?}");
    let first = wait_note(
        &admin,
        SHADOW,
        "PolicyShadowDisagreement",
        &[
            "msp-retain",
            "pool mayastor/plain",
            "\"action\":\"destroy\"",
            "\"action\":\"retain\"",
        ],
    )
    .await?;
    eprintln!("first disagreement: {first}");
    let summary = wait_note(
        &admin,
        SHADOW,
        "PolicyShadowSummary",
        &["msp-retain", "disagreed with the live policy (action "],
    )
    .await?;
    eprintln!("summary: {summary}");

    // Promotion as policy/README.md gives it: the candidate's bytes become
    // the live ConfigMap, the shadow ConfigMap goes.
    shell(
        &scene,
        work.path(),
        r"kubectl -n mayastor get configmap msp-policy-shadow -o jsonpath='{.binaryData.policy\.wasm}' | base64 -d > candidate.wasm
kubectl -n mayastor create configmap msp-policy --from-file=policy.wasm=candidate.wasm \
  --dry-run=client -o yaml | kubectl apply --server-side --force-conflicts -f -
kubectl -n mayastor delete configmap msp-policy-shadow",
    )?;
    let live = cms.get("msp-policy").await?;
    assert!(
        live.binary_data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .is_some_and(|b| b.0 == bundled::read_built("retain").unwrap_or_default()),
        "the live ConfigMap holds the candidate's bytes"
    );
    wait_metrics_text(&scene.op, "msp_policy_info{name=\"msp-retain\"", true).await?;
    wait_pool(
        &admin,
        "hostile-panic",
        WAIT,
        "decided by the promoted policy",
        |s| {
            s.state == Some(PoolState::Online)
                && s.policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("msp-retain@"))
        },
    )
    .await?;
    wait_metrics_text(&scene.op, "msp_policy_shadow_info{", false).await?;
    wait_metric(
        &scene.op,
        "msp_policy_shadow_reloads_total{error=\"bundled\"}",
        |v| v == Some(1.0),
    )
    .await?;
    scene.op.stop().await?;
    Ok(())
}
