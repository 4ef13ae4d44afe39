//! `msp-policy bench`: what one decision of a policy costs on the
//! operator's own path: the module loaded into a [`PolicyEngine`] and each
//! decision made with `PolicyEngine::decide` on a tokio runtime like the
//! operator's (conversion, sandboxed call, decision check).

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use msp_policy_engine::percentile::percentile;
use msp_policy_engine::sample::{self, Rng};
use msp_policy_engine::{Limits, PolicyEngine, PolicySource};
use msp_policy_sdk::model::Observation;

/// Distinct generated observations the decisions cycle through.
pub const OBSERVATIONS: usize = 1_000;
/// Decisions made before timing starts (instance pool, caches).
pub const WARM_UP: usize = 200;

/// Runs `iterations` timed decisions and formats the report.
pub fn run(
    bytes: &[u8],
    source: PolicySource,
    where_from: &str,
    iterations: usize,
    seed: u64,
) -> anyhow::Result<String> {
    let limits = Limits::default();
    let engine = PolicyEngine::new(limits).context("starting the policy engine")?;
    let active = engine
        .load(bytes, source)
        .with_context(|| format!("{where_from}: the operator would refuse this module"))?;
    let mut rng = Rng::new(seed);
    let observations: Vec<Observation> = (0..OBSERVATIONS)
        .map(|_| sample::observation(&mut rng))
        .collect();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let iterations = iterations.max(1);
    let (mut times, failures, total) = runtime.block_on(async {
        for obs in observations.iter().cycle().take(WARM_UP) {
            let _ = engine.decide(obs).await;
        }
        let mut times = Vec::with_capacity(iterations);
        let mut failures: Vec<(&'static str, usize)> = Vec::new();
        let started = Instant::now();
        for obs in observations.iter().cycle().take(iterations) {
            let t = Instant::now();
            let result = engine.decide(obs).await;
            times.push(t.elapsed());
            if let Err(e) = result {
                match failures.iter_mut().find(|(k, _)| *k == e.kind()) {
                    Some((_, n)) => *n += 1,
                    None => failures.push((e.kind(), 1)),
                }
            }
        }
        (times, failures, started.elapsed())
    });
    times.sort();

    let mut out = String::new();
    writeln!(
        out,
        "policy bench: {} {} ({where_from}) through PolicyEngine::decide",
        active.name, active.version
    )?;
    writeln!(
        out,
        "{iterations} decisions over {} generated observations (seed {seed}), after {WARM_UP} warm-up; {}",
        OBSERVATIONS.min(iterations),
        if engine.decides_inline() {
            "on the async worker (inline fuel)"
        } else {
            "on the blocking pool (needs more than the inline fuel)"
        }
    )?;
    for (label, d) in [
        ("p50", percentile(&times, 50.0).unwrap_or_default()),
        ("p99", percentile(&times, 99.0).unwrap_or_default()),
        ("mean", total / iterations as u32),
        ("max", times.last().copied().unwrap_or_default()),
    ] {
        writeln!(out, "  {label:<5}{:>10.2} µs", d.as_secs_f64() * 1e6)?;
    }
    if failures.is_empty() {
        writeln!(out, "  failed decisions: none")?;
    } else {
        let list: Vec<String> = failures.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(out, "  failed decisions: {}", list.join(", "))?;
    }
    Ok(out)
}
