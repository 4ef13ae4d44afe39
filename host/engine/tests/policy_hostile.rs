//! Hostile policy modules are contained: each fails with its own typed error,
//! nothing panics, and the engine keeps deciding with the running policy.

use std::time::Duration;

use msp_policy_engine::{
    Limits, PolicyEngine, PolicyError, PolicySource, bundled, sandbox, validate,
};
use msp_policy_sdk::model::Observation;

fn component(name: &str) -> Vec<u8> {
    bundled::read_built(name).unwrap_or_else(|e| panic!("{e}"))
}

fn new_pool() -> Observation {
    validate::conformance_observations().remove(0).1
}

fn named(name: &str) -> Observation {
    let mut o = new_pool();
    o.pool.name = name.to_string();
    o
}

/// The engine still decides, with the same policy, after a failure.
fn still_works(engine: &PolicyEngine, active: &msp_policy_engine::ActivePolicy) {
    assert_eq!(&engine.active(), active);
    let o = new_pool();
    match engine.decide_blocking(&o) {
        Ok(d) => assert_eq!(d, msp_policy::decide(&o)),
        Err(e) => panic!("engine broken after a hostile call: {e}"),
    }
}

fn hostile_engine(limits: Limits) -> (PolicyEngine, msp_policy_engine::ActivePolicy) {
    let engine = PolicyEngine::new(limits).unwrap_or_else(|e| panic!("engine: {e}"));
    let active = engine
        .load(&component("hostile-misbehave"), PolicySource::File)
        .unwrap_or_else(|e| panic!("the misbehaving module passes conformance: {e}"));
    (engine, active)
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let (engine, active) = hostile_engine(Limits::default());
    let err = engine.decide_blocking(&named("hostile-loop"));
    assert!(
        matches!(err, Err(PolicyError::FuelExhausted { .. })),
        "{err:?}"
    );
    still_works(&engine, &active);
}

#[test]
fn infinite_loop_with_unlimited_fuel_hits_the_epoch_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let (engine, active) = hostile_engine(limits);
    let started = std::time::Instant::now();
    let err = engine.decide_blocking(&named("hostile-loop"));
    assert!(
        matches!(err, Err(PolicyError::Deadline { ms: 50 })),
        "{err:?}"
    );
    eprintln!("deadline hit after {:?}", started.elapsed());
    still_works(&engine, &active);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    // Fuel and time are ample here: filling megabytes costs fuel, and on a
    // loaded machine more than the default 100 ms; the memory limit is what
    // must stop it.
    let (engine, active) = hostile_engine(Limits {
        memory_bytes: 8 << 20,
        fuel: u64::MAX / 2,
        deadline: std::time::Duration::from_secs(10),
        ..Limits::default()
    });
    let err = engine.decide_blocking(&named("hostile-alloc"));
    assert!(
        matches!(err, Err(PolicyError::MemoryLimit { limit }) if limit == 8 << 20),
        "{err:?}"
    );
    still_works(&engine, &active);
}

#[test]
fn deep_recursion_traps() {
    let (engine, active) = hostile_engine(Limits {
        fuel: u64::MAX / 2,
        ..Limits::default()
    });
    let err = engine.decide_blocking(&named("hostile-recurse"));
    assert!(matches!(err, Err(PolicyError::Trap(_))), "{err:?}");
    still_works(&engine, &active);
}

#[test]
fn panic_traps() {
    let (engine, active) = hostile_engine(Limits::default());
    let err = engine.decide_blocking(&named("hostile-panic"));
    assert!(matches!(err, Err(PolicyError::Trap(_))), "{err:?}");
    still_works(&engine, &active);
    assert_eq!(engine.counters().decision_failures.get("trap"), Some(&1));
}

#[test]
fn absurd_decisions_are_nonsense() {
    let (engine, active) = hostile_engine(Limits::default());
    for name in ["hostile-requeue", "hostile-destroy"] {
        let err = engine.decide_blocking(&named(name));
        assert!(
            matches!(err, Err(PolicyError::Nonsense(_))),
            "{name}: {err:?}"
        );
    }
    still_works(&engine, &active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_decide_contains_a_hostile_call_too() {
    let (engine, active) = hostile_engine(Limits::default());
    assert!(engine.decides_inline());
    // The loop exhausts the worker's small budget, then the full one on the
    // blocking pool, which is what it is charged with.
    let err = engine.decide(&named("hostile-loop")).await;
    let full = Limits::default().fuel;
    assert!(
        matches!(err, Err(PolicyError::FuelExhausted { budget }) if budget == full),
        "{err:?}"
    );
    assert!(
        !engine.decides_inline(),
        "a heavy policy moves off the worker"
    );
    assert_eq!(
        engine.decide(&new_pool()).await,
        Ok(msp_policy::decide(&new_pool()))
    );
    assert_eq!(engine.active(), active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_decide_of_an_endless_loop_with_unlimited_fuel_ends_at_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let (engine, _) = hostile_engine(limits);
    let err = engine.decide(&named("hostile-loop")).await;
    assert!(
        matches!(err, Err(PolicyError::Deadline { ms: 50 })),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_policy_decides_on_the_worker() {
    let engine = PolicyEngine::new(Limits::default()).unwrap_or_else(|e| panic!("engine: {e}"));
    let mut rng = msp_policy_engine::sample::Rng::new(7);
    for _ in 0..2_000 {
        let obs = msp_policy_engine::sample::observation(&mut rng);
        assert_eq!(engine.decide(&obs).await, Ok(msp_policy::decide(&obs)));
    }
    assert!(
        engine.decides_inline(),
        "the default policy needed more than the inline fuel budget"
    );
}

/// Each refused module: the error, and the running policy stays.
fn refused(bytes: &[u8], limits: Limits, want: impl Fn(&PolicyError) -> bool) {
    let engine = PolicyEngine::new(limits).unwrap_or_else(|e| panic!("engine: {e}"));
    let before = engine.active();
    match engine.load(bytes, PolicySource::ConfigMap) {
        Ok(p) => panic!("module accepted: {p:?}"),
        Err(e) => assert!(want(&e), "unexpected error: {e:?}"),
    }
    still_works(&engine, &before);
    assert_eq!(engine.counters().load_failures.values().sum::<u64>(), 1);
}

#[test]
fn wrong_contract_version_is_refused() {
    refused(
        &component("hostile-wrong-version"),
        Limits::default(),
        |e| matches!(e, PolicyError::UnknownVersion { found, .. } if found == "openebs:msp-policy/decider@1.0.0"),
    );
    let err = msp_policy_engine::check(
        &component("hostile-wrong-version"),
        PolicySource::File,
        &Limits::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("decider@1.0.0") && err.contains("0.1.x, 0.2.x, 0.3.x"),
        "the refusal names what was found and what the host runs: {err}"
    );
}

#[test]
fn wrong_world_is_refused() {
    refused(&component("hostile-wrong-world"), Limits::default(), |e| {
        matches!(e, PolicyError::WrongWorld { .. })
    });
}

#[test]
fn wasi_import_is_refused() {
    refused(
        &component("hostile-imports-wasi"),
        Limits::default(),
        |e| matches!(e, PolicyError::Imports(list) if list.iter().any(|i| i == "wasi:cli/environment@0.2.0")),
    );
}

#[test]
fn garbage_is_refused() {
    refused(b"definitely not wasm", Limits::default(), |e| {
        matches!(e, PolicyError::Garbage(_))
    });
    refused(b"", Limits::default(), |e| {
        matches!(e, PolicyError::Garbage(_))
    });
    let half = &bundled::DEFAULT_COMPONENT[..bundled::DEFAULT_COMPONENT.len() / 2];
    refused(half, Limits::default(), |e| {
        matches!(e, PolicyError::Garbage(_))
    });
    let mut flipped = bundled::DEFAULT_COMPONENT.to_vec();
    for b in flipped.iter_mut().skip(64).step_by(97) {
        *b ^= 0x5a;
    }
    refused(&flipped, Limits::default(), |e| {
        matches!(e, PolicyError::Garbage(_))
    });
}

#[test]
fn core_module_is_refused() {
    refused(b"\0asm\x01\0\0\0", Limits::default(), |e| {
        matches!(e, PolicyError::NotAComponent)
    });
}

#[test]
fn precompiled_bytes_are_refused() {
    let engine = sandbox::wasmtime_engine().unwrap_or_else(|e| panic!("{e}"));
    let cwasm = engine
        .precompile_component(bundled::DEFAULT_COMPONENT)
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&cwasm, Limits::default(), |e| {
        matches!(e, PolicyError::Precompiled)
    });
    refused(b"\x7fELF\x02\x01\x01\0", Limits::default(), |e| {
        matches!(e, PolicyError::Precompiled)
    });
}

#[test]
fn oversized_module_is_refused() {
    let limits = Limits {
        module_bytes: 1024,
        ..Limits::default()
    };
    // The bundled policy itself is loaded from the binary under these
    // limits too, so check through `check` rather than an engine.
    let err = msp_policy_engine::check(&component("retain"), PolicySource::File, &limits);
    assert!(
        matches!(err, Err(PolicyError::TooLarge { limit: 1024, .. })),
        "{err:?}"
    );
}

#[test]
fn a_policy_too_slow_for_the_budget_fails_its_self_test() {
    let limits = Limits {
        fuel: 500,
        ..Limits::default()
    };
    let err =
        msp_policy_engine::check(&component("stable-disk-names"), PolicySource::File, &limits);
    assert!(
        matches!(
            err.as_ref().map_err(PolicyError::root),
            Err(PolicyError::FuelExhausted { budget: 500 })
        ),
        "{err:?}"
    );
}
