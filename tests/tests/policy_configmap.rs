//! Custom policy hot reload against a real API server: a module put in the
//! policy ConfigMap decides within moments, a bad module keeps the running
//! policy, deleting the ConfigMap returns to the bundled default.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use msp_operator::policy::trust;
use msp_operator::policy::watch::{self, ReloadOutcome};
use msp_policy_engine::{Limits, PolicyEngine, PolicyError, PolicySource, bundled, validate};
use msp_policy_sdk::model::{Action, Observation};
use msp_tests::control_plane::ControlPlane;
use tokio::sync::mpsc;

fn config_map(name: &str, module: Vec<u8>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            watch::DEFAULT_KEY.to_string(),
            ByteString(module),
        )])),
        ..ConfigMap::default()
    }
}

/// A deleted pool in the ledger: the default destroys it, `retain` keeps it.
fn deleted_pool() -> anyhow::Result<Observation> {
    let mut obs =
        validate::conformance_case("deleted").ok_or_else(|| anyhow::anyhow!("no deleted case"))?;
    obs.in_ledger = true;
    Ok(obs)
}

/// Polls `engine` until its decision for `obs` is `want`; returns how long it took.
async fn until_decides(
    engine: &PolicyEngine,
    obs: &Observation,
    want: Action,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // A liveness bound, not the speed target (the elapsed time is printed).
    while started.elapsed() < Duration::from_secs(30) {
        if engine.decide(obs).await?.action == want {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!(
        "decision never became {want:?}; active policy {:?}",
        engine.active()
    )
}

async fn next_outcome(
    rx: &mut mpsc::UnboundedReceiver<ReloadOutcome>,
) -> anyhow::Result<ReloadOutcome> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("reporter channel closed"))
}

/// Aborts the watch task when the test ends, also on panic.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_swaps_refuses_and_returns_to_bundled() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let namespace = "msp-policy-reload";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);

    let engine = PolicyEngine::new(Limits::default())?;
    let bundled = engine.active();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watch = AbortOnDrop(tokio::spawn(watch::watch(
        client.clone(),
        namespace,
        watch::DEFAULT_NAME,
        watch::DEFAULT_KEY,
        engine.clone(),
        trust::unsigned(),
        tx,
    )));
    let obs = deleted_pool()?;
    assert_eq!(engine.decide(&obs).await?.action, Action::Destroy);

    // While the bundled default runs, a ConfigMap it cannot use is reported
    // all the same, each cause as itself: the module under data, then under
    // another key. (It used to be ignored without a word.)
    let mut misplaced = config_map(watch::DEFAULT_NAME, Vec::new());
    misplaced.binary_data = None;
    misplaced.data = Some(
        [(watch::DEFAULT_KEY.to_string(), "AGFzbQ==".to_string())]
            .into_iter()
            .collect(),
    );
    cms.create(&PostParams::default(), &misplaced).await?;
    let outcome = next_outcome(&mut rx).await?;
    assert!(
        matches!(&outcome, ReloadOutcome::Unusable { cause: "key-under-data", active, .. } if *active == bundled),
        "{outcome:?}"
    );
    let other_key = serde_json::json!({
        "data": null,
        "binaryData": { "module.wasm": ByteString(bundled::read_built("retain")?) },
    });
    cms.patch(
        watch::DEFAULT_NAME,
        &PatchParams::default(),
        &Patch::Merge(other_key),
    )
    .await?;
    let outcome = next_outcome(&mut rx).await?;
    assert!(
        matches!(&outcome, ReloadOutcome::Unusable { cause: "key-missing", why, .. } if why.contains("module.wasm")),
        "{outcome:?}"
    );
    assert_eq!(engine.active(), bundled);
    cms.delete(watch::DEFAULT_NAME, &DeleteParams::default())
        .await?;

    // A new module: in effect within moments.
    cms.create(
        &PostParams::default(),
        &config_map(watch::DEFAULT_NAME, bundled::read_built("retain")?),
    )
    .await?;
    let took = until_decides(&engine, &obs, Action::Retain).await?;
    eprintln!("ConfigMap created -> new policy deciding after {took:?}");
    let loaded = next_outcome(&mut rx).await?;
    assert!(
        matches!(&loaded, ReloadOutcome::Loaded(p) if p.name == "msp-retain" && p.source == PolicySource::ConfigMap),
        "{loaded:?}"
    );
    let retain = engine.active();

    // A bad module is refused and reported; the running policy stays.
    let patch = |module: Vec<u8>| serde_json::json!({ "binaryData": { watch::DEFAULT_KEY: ByteString(module) } });
    cms.patch(
        watch::DEFAULT_NAME,
        &PatchParams::default(),
        &Patch::Merge(patch(bundled::read_built("hostile-wrong-version")?)),
    )
    .await?;
    let refused = next_outcome(&mut rx).await?;
    assert!(
        matches!(&refused, ReloadOutcome::Refused { error: PolicyError::UnknownVersion { .. }, kept } if *kept == retain),
        "{refused:?}"
    );
    assert_eq!(engine.active(), retain);
    assert_eq!(engine.decide(&obs).await?.action, Action::Retain);
    let garbage = b"not a wasm module".to_vec();
    cms.patch(
        watch::DEFAULT_NAME,
        &PatchParams::default(),
        &Patch::Merge(patch(garbage)),
    )
    .await?;
    let refused = next_outcome(&mut rx).await?;
    assert!(
        matches!(
            &refused,
            ReloadOutcome::Refused {
                error: PolicyError::Garbage(_),
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(engine.active(), retain);

    // Updating to another good module swaps again.
    let started = Instant::now();
    cms.patch(
        watch::DEFAULT_NAME,
        &PatchParams::default(),
        &Patch::Merge(patch(bundled::DEFAULT_COMPONENT.to_vec())),
    )
    .await?;
    let took = until_decides(&engine, &obs, Action::Destroy).await?;
    eprintln!(
        "ConfigMap updated -> new policy deciding after {took:?} ({:?} since the patch was sent)",
        started.elapsed()
    );
    let outcome = next_outcome(&mut rx).await?;
    assert!(
        matches!(&outcome, ReloadOutcome::Loaded(p) if p.sha256 == bundled.sha256 && p.source == PolicySource::ConfigMap),
        "{outcome:?}"
    );
    cms.patch(
        watch::DEFAULT_NAME,
        &PatchParams::default(),
        &Patch::Merge(patch(bundled::read_built("retain")?)),
    )
    .await?;
    until_decides(&engine, &obs, Action::Retain).await?;
    assert!(matches!(
        next_outcome(&mut rx).await?,
        ReloadOutcome::Loaded(_)
    ));

    // Deleting the ConfigMap returns to the bundled default.
    cms.delete(watch::DEFAULT_NAME, &DeleteParams::default())
        .await?;
    let took = until_decides(&engine, &obs, Action::Destroy).await?;
    eprintln!("ConfigMap deleted -> bundled policy deciding after {took:?}");
    let outcome = next_outcome(&mut rx).await?;
    assert!(
        matches!(&outcome, ReloadOutcome::Bundled { active, .. } if *active == bundled),
        "{outcome:?}"
    );
    assert_eq!(engine.active(), bundled);
    let counters = engine.counters();
    assert_eq!(
        counters.load_failures.values().sum::<u64>(),
        2,
        "{counters:?}"
    );

    // An operator starting while the ConfigMap exists picks it up from the
    // initial list.
    cms.create(
        &PostParams::default(),
        &config_map(watch::DEFAULT_NAME, bundled::read_built("retain")?),
    )
    .await?;
    let late = PolicyEngine::new(Limits::default())?;
    let _late_watch = AbortOnDrop(tokio::spawn(watch::watch(
        client.clone(),
        namespace,
        watch::DEFAULT_NAME,
        watch::DEFAULT_KEY,
        late.clone(),
        trust::unsigned(),
        (),
    )));
    until_decides(&late, &obs, Action::Retain).await?;
    assert_eq!(late.active().name, "msp-retain");
    Ok(())
}
