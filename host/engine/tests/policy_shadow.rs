//! Shadow mode in the engine: off until a candidate is loaded, each offer
//! decided by the candidate and compared field by field, a failing candidate
//! a disagreement in `error`, a full queue dropping offers instead of waiting.

use std::time::Duration;

use msp_policy_engine::compare::Field;
use msp_policy_engine::shadow::{Offer, Shadow, Verdict};
use msp_policy_engine::{Limits, PolicyEngine, PolicySource, bundled, validate};
use msp_policy_sdk::model::{Action, Observation};
use tokio::sync::mpsc;

fn case(name: &str) -> anyhow::Result<Observation> {
    validate::conformance_case(name).ok_or_else(|| anyhow::anyhow!("no conformance case {name}"))
}

/// A shadow whose verdicts arrive on a channel.
fn shadow(capacity: usize) -> anyhow::Result<(Shadow, mpsc::UnboundedReceiver<Verdict>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (shadow, task) = Shadow::new(PolicyEngine::new(Limits::default())?, capacity, {
        move |verdict| {
            let _ = tx.send(verdict);
        }
    });
    tokio::spawn(task);
    Ok((shadow, rx))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Verdict>) -> anyhow::Result<Verdict> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("shadow task ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_disagreements_are_named_by_field() -> anyhow::Result<()> {
    let live = PolicyEngine::new(Limits::default())?;
    let (shadow, mut verdicts) = shadow(16)?;
    let mut deleted = case("deleted")?;
    deleted.in_ledger = true;
    let decision = live.decide(&deleted).await?;
    assert_eq!(decision.action, Action::Destroy);

    // Only the bundled default in the candidate engine: off, nothing queued.
    assert_eq!(shadow.offer(&deleted, Ok(&decision)), Offer::Off);

    shadow
        .candidate()
        .load(&bundled::read_built("retain")?, PolicySource::ConfigMap)?;
    assert!(shadow.sync());
    assert_eq!(shadow.offer(&deleted, Ok(&decision)), Offer::Queued);
    let verdict = next(&mut verdicts).await?;
    assert_eq!(verdict.policy.name, "msp-retain");
    assert_eq!(verdict.live.as_ref().map(|d| d.action), Ok(Action::Destroy));
    assert_eq!(
        verdict.candidate.as_ref().map(|d| d.action).ok(),
        Some(Action::Retain)
    );
    assert!(
        verdict.differs.contains(&Field::Action) && verdict.differs.contains(&Field::Reason),
        "{verdict:?}"
    );
    assert!(!verdict.differs.contains(&Field::State), "{verdict:?}");

    // Where retain is the default, it agrees.
    let new_pool = case("new pool")?;
    let decision = live.decide(&new_pool).await?;
    shadow.offer(&new_pool, Ok(&decision));
    assert!(next(&mut verdicts).await?.differs.is_empty());

    // A live failure the candidate does not share is a disagreement too.
    shadow.offer(&new_pool, Err("trap"));
    assert_eq!(next(&mut verdicts).await?.differs, [Field::Error]);

    // Back to the bundled default: off again.
    shadow.candidate().reset_to_bundled();
    assert!(!shadow.sync());
    assert_eq!(shadow.offer(&deleted, Ok(&decision)), Offer::Off);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_an_error_disagreement() -> anyhow::Result<()> {
    let live = PolicyEngine::new(Limits::default())?;
    let (shadow, mut verdicts) = shadow(16)?;
    shadow.candidate().load(
        &bundled::read_built("hostile-misbehave")?,
        PolicySource::ConfigMap,
    )?;
    shadow.sync();
    for (name, kind) in [
        ("hostile-panic", "trap"),
        ("hostile-loop", "fuel-exhausted"),
    ] {
        let mut obs = case("new pool")?;
        obs.pool.name = name.into();
        let decision = live.decide(&obs).await?;
        assert_eq!(shadow.offer(&obs, Ok(&decision)), Offer::Queued);
        let verdict = next(&mut verdicts).await?;
        assert_eq!(verdict.differs, [Field::Error], "{verdict:?}");
        assert_eq!(
            verdict.candidate.as_ref().map_err(|e| e.kind()).err(),
            Some(kind)
        );
    }
    // The live engine is untouched by the candidate's failures.
    assert!(live.counters().decision_failures.is_empty());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_offers_instead_of_waiting() -> anyhow::Result<()> {
    let live = PolicyEngine::new(Limits::default())?;
    let (shadow, mut verdicts) = shadow(2)?;
    shadow
        .candidate()
        .load(&bundled::read_built("retain")?, PolicySource::ConfigMap)?;
    shadow.sync();
    let obs = case("new pool")?;
    let decision = live.decide(&obs).await?;
    // On a single-threaded runtime the shadow task cannot run between these.
    let offers: Vec<Offer> = (0..5).map(|_| shadow.offer(&obs, Ok(&decision))).collect();
    assert_eq!(
        offers,
        [
            Offer::Queued,
            Offer::Queued,
            Offer::Dropped,
            Offer::Dropped,
            Offer::Dropped
        ]
    );
    assert_eq!(shadow.dropped(), 3);
    next(&mut verdicts).await?;
    next(&mut verdicts).await?;
    assert!(verdicts.try_recv().is_err());
    Ok(())
}
