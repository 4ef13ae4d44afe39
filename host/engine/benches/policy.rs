//! Policy decision cost: wasm vs native in the same run, instantiate cost,
//! compile time per module, and what a shadow candidate adds to the live
//! decision (none, the candidate awaited inline, or handed to the shadow's
//! queue as the operator does). Prints numbers; run with
//! `cargo bench -p msp-policy-engine --bench policy`. Target: `engine.decide`
//! (what every reconcile pays) p50 ≤ 10 µs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use msp_policy_engine::percentile::percentile;
use msp_policy_engine::sample::{self, Rng};
use msp_policy_engine::shadow::{self, Shadow};
use msp_policy_engine::{Limits, PolicyEngine, PolicySource, bundled, sandbox};
use msp_policy_sdk::model::Observation;

const CALLS: usize = 10_000;

/// Times `f` once per observation; returns (p50, p99, mean).
fn measure(
    observations: &[Observation],
    mut f: impl FnMut(&Observation),
) -> (Duration, Duration, Duration) {
    // Warm-up: caches, lazy instance creation.
    for obs in observations.iter().take(200) {
        f(obs);
    }
    let mut times = Vec::with_capacity(observations.len());
    let started = Instant::now();
    for obs in observations {
        let t = Instant::now();
        f(obs);
        times.push(t.elapsed());
    }
    let mean = started.elapsed() / observations.len() as u32;
    times.sort();
    (
        percentile(&times, 50.0).unwrap_or_default(),
        percentile(&times, 99.0).unwrap_or_default(),
        mean,
    )
}

/// What is attached to the live decision.
#[derive(Clone, Copy)]
enum Attached<'a> {
    Nothing,
    /// The candidate decides right after the live engine, awaited.
    Inline(&'a PolicyEngine),
    /// The live decision is offered to the shadow's queue (what the operator does).
    Queued(&'a Shadow),
}

/// One live decision and what is attached to it.
async fn decide_once(obs: &Observation, engine: &PolicyEngine, attached: Attached<'_>) {
    let decision = match engine.decide(obs).await {
        Ok(d) => d,
        Err(e) => panic!("engine.decide failed: {e}"),
    };
    match attached {
        Attached::Nothing => {}
        Attached::Inline(candidate) => {
            std::hint::black_box(candidate.decide(obs).await.ok());
        }
        Attached::Queued(shadow) => {
            std::hint::black_box(shadow.offer(obs, Ok(&decision)));
        }
    }
}

/// `measure` for `engine.decide` (and what is attached to it), awaited in
/// the runtime it runs on.
async fn measure_async(
    observations: &[Observation],
    engine: &PolicyEngine,
    attached: Attached<'_>,
) -> (Duration, Duration, Duration) {
    for obs in observations.iter().take(200) {
        decide_once(obs, engine, attached).await;
    }
    let mut times = Vec::with_capacity(observations.len());
    let started = Instant::now();
    for obs in observations {
        let t = Instant::now();
        decide_once(obs, engine, attached).await;
        times.push(t.elapsed());
    }
    let mean = started.elapsed() / observations.len() as u32;
    times.sort();
    (
        percentile(&times, 50.0).unwrap_or_default(),
        percentile(&times, 99.0).unwrap_or_default(),
        mean,
    )
}

fn us(d: Duration) -> String {
    format!("{:>9.2} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, (p50, p99, mean): (Duration, Duration, Duration)) {
    println!(
        "  {name:<44} p50 {}  p99 {}  mean {}",
        us(p50),
        us(p99),
        us(mean)
    );
}

/// The live decision with a shadow candidate (`retain` when built, else the
/// default's bytes loaded as a candidate) inline and queued, against `alone`.
fn shadow_cost(
    runtime: &tokio::runtime::Runtime,
    observations: &[Observation],
    engine: &PolicyEngine,
    limits: Limits,
    alone: (Duration, Duration, Duration),
) -> anyhow::Result<()> {
    let candidate_bytes = match bundled::built_component("retain") {
        Some(path) => std::fs::read(path)?,
        None => bundled::DEFAULT_COMPONENT.to_vec(),
    };
    let candidate = PolicyEngine::new(limits)?;
    let policy = candidate.load(&candidate_bytes, PolicySource::File)?;
    println!(
        "shadow candidate {}@{}: the live engine.decide path with and without it",
        policy.name, policy.version
    );
    row("live engine.decide alone", alone);
    let inline = runtime.block_on(measure_async(
        observations,
        engine,
        Attached::Inline(&candidate),
    ));
    row("live + candidate awaited inline", inline);
    let verdicts = Arc::new(AtomicU64::new(0));
    let counted = verdicts.clone();
    let (shadow, task) = runtime.block_on(async {
        let (shadow, decide) = Shadow::new(candidate.clone(), shadow::QUEUE, move |_verdict| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        (shadow, tokio::spawn(decide))
    });
    anyhow::ensure!(shadow.armed(), "the candidate did not arm the shadow");
    let queued = runtime.block_on(measure_async(
        observations,
        engine,
        Attached::Queued(&shadow),
    ));
    row("live + offer to the shadow queue", queued);
    let offered = observations.len() as u64 + 200;
    let dropped = shadow.dropped();
    drop(shadow);
    runtime.block_on(task)?;
    println!(
        "  queued: the candidate decided {} of {offered} offers (dropped, queue full: {dropped})",
        verdicts.load(Ordering::Relaxed)
    );
    let ratio = |with: (Duration, Duration, Duration)| {
        format!(
            "p50 {:.2}x  p99 {:.2}x",
            with.0.as_secs_f64() / alone.0.as_secs_f64().max(1e-9),
            with.1.as_secs_f64() / alone.1.as_secs_f64().max(1e-9)
        )
    };
    println!(
        "  ratio to the live decision alone: inline {}   queued {}",
        ratio(inline),
        ratio(queued)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let limits = Limits::default();
    let engine = PolicyEngine::new(limits)?;
    let mut rng = Rng::new(42);
    let observations: Vec<Observation> =
        (0..CALLS).map(|_| sample::observation(&mut rng)).collect();

    println!("policy decision, {CALLS} generated observations");
    let native = measure(&observations, |o| {
        std::hint::black_box(msp_policy::decide(std::hint::black_box(o)));
    });
    row("native decide", native);

    let wasm = measure(&observations, |o| {
        if let Err(e) = engine.decide_blocking(o) {
            panic!("wasm decide failed: {e}");
        }
    });
    row("wasm decide (pooled instance, checked)", wasm);

    // What a reconcile pays: `engine.decide` awaited on a runtime worker
    // (timed inside the runtime, as the controller calls it).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let wasm_async = runtime.block_on(measure_async(&observations, &engine, Attached::Nothing));
    row("engine.decide (what each reconcile pays)", wasm_async);
    anyhow::ensure!(
        engine.decides_inline(),
        "the bundled policy needed more than the inline fuel budget"
    );

    // A component of the first contract (0.1.0): the same call with the
    // observation adapted to 0.1 bindings.
    if let Some(path) = bundled::built_component("contract-0-1") {
        let old = PolicyEngine::new(limits)?;
        old.load(&std::fs::read(path)?, msp_policy_engine::PolicySource::File)?;
        let old_async = runtime.block_on(measure_async(&observations, &old, Attached::Nothing));
        row("engine.decide, 0.1 component (contract-0-1)", old_async);
    }
    shadow_cost(&runtime, &observations, &engine, limits, wasm_async)?;

    let compiled = sandbox::compile(bundled::DEFAULT_COMPONENT, &limits)?;
    let fresh_obs = &observations[..2_000];
    let fresh = measure(fresh_obs, |o| {
        compiled.drop_idle();
        if let Err(e) = msp_policy_engine::decide_with(&compiled, o, &limits) {
            panic!("fresh decide failed: {e}");
        }
    });
    row("wasm decide, fresh instance every call", fresh);
    let instantiate = measure(fresh_obs, |_| {
        if let Err(e) = compiled.instantiate_fresh(&limits) {
            panic!("instantiate failed: {e}");
        }
    });
    row("instantiate (store + instance from pre)", instantiate);

    println!(
        "  ratio engine.decide/native p50: {:.1}x   p99: {:.1}x   target engine.decide p50 <= 10 µs: {}",
        wasm_async.0.as_secs_f64() / native.0.as_secs_f64().max(1e-9),
        wasm_async.1.as_secs_f64() / native.1.as_secs_f64().max(1e-9),
        if wasm_async.0 <= Duration::from_micros(10) {
            "met"
        } else {
            "MISSED"
        }
    );

    println!("compile per module (uncached, cranelift)");
    let mut modules: Vec<(String, Vec<u8>)> = vec![(
        "default (bundled)".into(),
        bundled::DEFAULT_COMPONENT.to_vec(),
    )];
    for name in ["retain", "stable-disk-names", "contract-0-1"] {
        if let Some(path) = bundled::built_component(name) {
            modules.push((name.into(), std::fs::read(path)?));
        }
    }
    for (name, bytes) in modules {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            sandbox::compile_uncached(&bytes, &limits)?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "  {name:<20} {:>7} bytes   median {:>8.1} ms   min {:>8.1} ms",
            bytes.len(),
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    msp_policy_engine::check(
        bundled::DEFAULT_COMPONENT,
        msp_policy_engine::PolicySource::File,
        &limits,
    )?;
    println!(
        "  full check of a cached module (self-test): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
