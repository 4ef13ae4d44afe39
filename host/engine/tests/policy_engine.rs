//! The policy engine with well-behaved policies: the bundled default imports
//! nothing, decides exactly like the native build on 10,000 generated
//! observations, and custom policies load, swap and reset atomically.

use msp_policy_engine::sample::{self, Rng};
use msp_policy_engine::{Limits, PolicyEngine, PolicySource, bundled, sandbox};
use msp_policy_sdk::model::{Action, Observation};
use wasmtime::component::Component;

fn example(name: &str) -> Vec<u8> {
    bundled::read_built(name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn bundled_component_imports_nothing_and_exports_the_versioned_decider() -> anyhow::Result<()> {
    let engine = sandbox::wasmtime_engine()?;
    let component = Component::new(&engine, bundled::DEFAULT_COMPONENT)?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    assert!(imports.is_empty(), "bundled policy imports {imports:?}");
    let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        exports,
        vec![msp_policy_engine::bindings::DECIDER_EXPORT.to_string()]
    );
    Ok(())
}

#[test]
fn bundled_policy_is_active_with_its_identity() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let active = engine.active();
    assert_eq!(active.name, msp_policy::decide::NAME);
    assert_eq!(active.version, msp_policy::decide::VERSION);
    assert_eq!(active.source, PolicySource::Bundled);
    assert_eq!(active.sha256.len(), 64);
    assert_eq!(active.contract, "0.3.0");
    Ok(())
}

#[test]
fn wasm_and_native_decide_identically_on_10000_generated_observations() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let mut rng = Rng::new(0x5eed_0001);
    let mut actions = std::collections::HashMap::<Action, u32>::new();
    for i in 0..10_000 {
        let obs = sample::observation(&mut rng);
        let native = msp_policy::decide(&obs);
        let wasm = engine
            .decide_blocking(&obs)
            .map_err(|e| anyhow::anyhow!("observation {i}: {e}\n{obs:#?}"))?;
        assert_eq!(wasm, native, "observation {i} differs:\n{obs:#?}");
        *actions.entry(native.action).or_default() += 1;
    }
    // The generator must exercise every action the default policy takes.
    for a in [
        Action::None,
        Action::Create,
        Action::Import,
        Action::Destroy,
    ] {
        assert!(
            actions.get(&a).copied().unwrap_or(0) > 50,
            "action {a:?} too rare: {actions:?}"
        );
    }
    assert_eq!(engine.counters().decisions_total, 10_000);
    Ok(())
}

#[test]
fn sdk_only_example_loads_and_decides_like_its_native_build() -> anyhow::Result<()> {
    // `first` depends on the SDK alone: what a new author's crate looks like.
    let engine = PolicyEngine::new(Limits::default())?;
    let active = engine.load(&example("first"), PolicySource::ConfigMap)?;
    assert_eq!(active.name, msp_policy_first::NAME);
    let mut rng = Rng::new(0x5eed_0002);
    for i in 0..2_000 {
        let obs = sample::observation(&mut rng);
        let wasm = engine
            .decide_blocking(&obs)
            .map_err(|e| anyhow::anyhow!("observation {i}: {e}\n{obs:#?}"))?;
        assert_eq!(wasm, msp_policy_first::decide(&obs), "observation {i}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_decide_runs_and_concurrent_calls_agree() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let mut rng = Rng::new(7);
    let observations: Vec<Observation> = (0..64).map(|_| sample::observation(&mut rng)).collect();
    let mut tasks = Vec::new();
    for obs in observations.clone() {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move { engine.decide(&obs).await }));
    }
    for (obs, task) in observations.iter().zip(tasks) {
        assert_eq!(task.await??, msp_policy::decide(obs));
    }
    Ok(())
}

#[test]
fn retain_example_swaps_in_and_reset_returns_to_bundled() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let bundled = engine.active();
    let mut deleted = msp_policy_engine::validate::conformance_case("deleted")
        .ok_or_else(|| anyhow::anyhow!("no deleted case"))?;
    deleted.in_ledger = true;
    assert_eq!(engine.decide_blocking(&deleted)?.action, Action::Destroy);

    let active = engine.load(&example("retain"), PolicySource::ConfigMap)?;
    assert_eq!(active.name, "msp-retain");
    assert_eq!(active.source, PolicySource::ConfigMap);
    assert_ne!(active.sha256, bundled.sha256);
    assert_eq!(engine.active(), active);
    assert_eq!(engine.decide_blocking(&deleted)?.action, Action::Retain);

    assert_eq!(engine.reset_to_bundled(), bundled);
    assert_eq!(engine.decide_blocking(&deleted)?.action, Action::Destroy);
    Ok(())
}

#[test]
fn stable_disk_names_example_keeps_sdb_pending() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    engine.load(&example("stable-disk-names"), PolicySource::File)?;
    let (_, mut new_pool) = msp_policy_engine::validate::conformance_observations()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no cases"))?;
    new_pool.pool.spec_disks = vec!["/dev/sdb".into()];
    let d = engine.decide_blocking(&new_pool)?;
    assert_eq!(d.action, Action::None);
    assert!(d.reason.contains("/dev/disk/by-id"), "{}", d.reason);
    Ok(())
}

#[test]
fn same_module_is_compiled_once() -> anyhow::Result<()> {
    let limits = Limits::default();
    let bytes = example("retain");
    let a = msp_policy_engine::check(&bytes, PolicySource::File, &limits)?;
    let b = msp_policy_engine::check(&bytes, PolicySource::File, &limits)?;
    assert!(std::sync::Arc::ptr_eq(a.compiled(), b.compiled()));
    Ok(())
}
