//! A policy within its per-call limits cannot take the operator down by
//! deciding for many pools at once (issue 23, item 10): all policy instances
//! share one memory budget and heavy decisions run a few at a time. Its own
//! test binary: the process's RSS is what is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use msp_policy_engine::{Limits, PolicyEngine, PolicySource, bundled, sandbox, validate};

/// The operator pod's memory limit (deploy/base).
const POD_LIMIT: usize = 256 << 20;

/// The process's resident set, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS")
        * 1024
}

/// 32 pools decide at once with a module that touches 24 MiB per decision
/// and burns past the inline fuel (as after a reload, every pool at once).
/// Before: every decision ran at once on the blocking pool with its own
/// 24 MiB, and up to 16 such instances stayed idle: the process went far
/// past the pod's 256 MiB. Now the RSS stays under it, every decision is
/// made, and what all instances hold never passes the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_heavy_decisions_at_once_stay_within_the_pods_memory() {
    // The default limits but a deadline for a shared, loaded CI machine:
    // memory is what is measured here, not time.
    let limits = Limits {
        deadline: Duration::from_secs(2),
        ..Limits::default()
    };
    let engine = PolicyEngine::new(limits).expect("engine");
    let module = bundled::read_built("hostile-misbehave").unwrap_or_else(|e| panic!("{e}"));
    engine
        .load(&module, PolicySource::File)
        .unwrap_or_else(|e| panic!("the hostile module passes the self-test: {e}"));
    let mut obs = validate::conformance_observations().remove(0).1;
    obs.pool.name = "hostile-hog".into();
    let expected = msp_policy::decide(&obs);

    let baseline = rss();
    let peak = Arc::new(AtomicUsize::new(baseline));
    let peak_reserved = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, peak_reserved, done) = (peak.clone(), peak_reserved.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss(), Ordering::SeqCst);
                peak_reserved.fetch_max(sandbox::memory_reserved(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = std::time::Instant::now();
    let decisions: Vec<_> = (0..32)
        .map(|_| {
            let (engine, obs) = (engine.clone(), obs.clone());
            tokio::spawn(async move { engine.decide(&obs).await })
        })
        .collect();
    let mut results = Vec::new();
    for decision in decisions {
        results.push(decision.await.expect("task"));
    }
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let (peak, peak_reserved) = (
        peak.load(Ordering::SeqCst),
        peak_reserved.load(Ordering::SeqCst),
    );
    let after = rss();
    println!(
        "32 heavy decisions in {took:?}: RSS {} MiB before, peak {} MiB, {} MiB after; \
         policy memory peak {} MiB of a {} MiB budget",
        baseline >> 20,
        peak >> 20,
        after >> 20,
        peak_reserved >> 20,
        limits.total_memory_bytes >> 20
    );
    assert!(
        peak < POD_LIMIT,
        "RSS peaked at {} MiB, over the pod's {} MiB",
        peak >> 20,
        POD_LIMIT >> 20
    );
    assert!(
        peak_reserved <= limits.total_memory_bytes,
        "policy instances held {peak_reserved} bytes, over the budget"
    );
    // Every decision is made: queued, not failed.
    for decision in &results {
        assert_eq!(decision.as_ref(), Ok(&expected), "{decision:?}");
    }
    // Nothing large stays idle.
    assert!(
        sandbox::memory_reserved() <= sandbox::IDLE_MAX_BYTES * 16,
        "{} bytes still held after the decisions",
        sandbox::memory_reserved()
    );
}
