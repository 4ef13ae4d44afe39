//! Contract versions side by side: components built against the frozen 0.1.0
//! and 0.2.0 WIT (`policy/examples/contract-0-1` and `contract-0-2`,
//! wit-bindgen without the SDK) load on this host, report their contract, and
//! decide by their own rule on observations of the current contract (0.3.0),
//! with what later versions added dropped; current components keep running
//! beside them. (A contract the host does not run is refused:
//! `policy_hostile::wrong_contract_version_is_refused`.)

use msp_policy_engine::sample::{self, Rng};
use msp_policy_engine::{Contract, Limits, PolicyEngine, PolicySource, bundled, check, validate};
use msp_policy_sdk::model::{Action, Decision, Observation, PoolState};

fn component(name: &str) -> Vec<u8> {
    bundled::read_built(name).unwrap_or_else(|e| panic!("{e}"))
}

fn case(name: &str) -> Observation {
    validate::conformance_case(name).unwrap_or_else(|| panic!("no conformance case {name}"))
}

/// What the 0.1 component's documented rule says.
fn expect(action: Action, state: PoolState, why: &str, requeue: Option<u64>) -> Decision {
    Decision {
        action,
        state,
        reason: format!("contract-0.1: {why}"),
        requeue_after_ms: requeue,
        event: None,
    }
}

#[test]
fn a_0_1_component_loads_and_reports_its_contract() -> anyhow::Result<()> {
    let report = check(
        &component("contract-0-1"),
        PolicySource::File,
        &Limits::default(),
    )?;
    assert_eq!(report.policy.name, "contract-0-1");
    assert_eq!(report.policy.contract, "0.1.0");
    assert_eq!(report.compiled().contract, Contract::V0_1);
    assert_eq!(
        report.cases.len(),
        validate::conformance_observations().len()
    );
    // The bundled default is built by the SDK against the current contract.
    let bundled = check(
        bundled::DEFAULT_COMPONENT,
        PolicySource::Bundled,
        &Limits::default(),
    )?;
    assert_eq!(bundled.policy.contract, Contract::CURRENT.as_str());
    assert_eq!(bundled.compiled().contract, Contract::V0_3);
    // And a 0.2 component, beside both.
    let two = check(
        &component("contract-0-2"),
        PolicySource::File,
        &Limits::default(),
    )?;
    assert_eq!(
        (two.policy.name.as_str(), two.policy.contract.as_str()),
        ("contract-0-2", "0.2.0")
    );
    assert_eq!(two.compiled().contract, Contract::V0_2);
    Ok(())
}

#[test]
fn a_0_2_component_decides_by_its_own_rule_on_0_3_observations() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let active = engine.load(&component("contract-0-2"), PolicySource::ConfigMap)?;
    assert_eq!(active.contract, "0.2.0");
    let expect = |action, state, why: &str, requeue| Decision {
        action,
        state,
        reason: format!("contract-0.2: {why}"),
        requeue_after_ms: requeue,
        event: None,
    };
    // What 0.2 added reaches it (the host's deadline, the labels); what 0.3
    // added (the replica count) is dropped on the way, and it decides alike.
    let mut labelled = case("online");
    labelled.pool.labels.insert("team".into(), "storage".into());
    let mut holding = labelled.clone();
    if let Some(p) = holding.reported.as_mut() {
        p.replicas = Some(3);
    }
    let mut late = case("online");
    late.storage_node.heartbeat_age_ms = Some(15_000);
    late.settings.heartbeat_deadline_ms = 30_000;
    let mut later = late.clone();
    later.storage_node.heartbeat_age_ms = Some(31_000);
    let mut deleted = case("deleted");
    deleted.in_ledger = true;
    let cases = [
        (
            "labelled",
            labelled,
            expect(
                Action::None,
                PoolState::Online,
                "listed online, team storage",
                None,
            ),
        ),
        (
            "labelled, holding 3 replicas",
            holding,
            expect(
                Action::None,
                PoolState::Online,
                "listed online, team storage",
                None,
            ),
        ),
        (
            "heartbeat 15 s, host deadline 30 s",
            late,
            expect(Action::None, PoolState::Online, "listed online", None),
        ),
        (
            "heartbeat 31 s, host deadline 30 s",
            later,
            expect(Action::None, PoolState::Offline, "storage node down", None),
        ),
        (
            "new pool",
            case("new pool"),
            expect(
                Action::Create,
                PoolState::Pending,
                "not listed, creating",
                Some(1_000),
            ),
        ),
        (
            "deleted",
            deleted,
            expect(
                Action::Destroy,
                PoolState::Pending,
                "deleted, destroying",
                None,
            ),
        ),
    ];
    for (name, obs, want) in &cases {
        assert_eq!(&engine.decide_blocking(obs)?, want, "{name}");
    }
    Ok(())
}

#[test]
fn a_0_1_component_decides_by_its_own_rule_on_current_observations() -> anyhow::Result<()> {
    let engine = PolicyEngine::new(Limits::default())?;
    let active = engine.load(&component("contract-0-1"), PolicySource::ConfigMap)?;
    assert_eq!(active.contract, "0.1.0");

    let mut deleted = case("deleted");
    deleted.in_ledger = true;
    // 15 s without a heartbeat on a host that allows 30 s, on a labelled
    // pool: the 0.1 policy sees neither the deadline nor the labels and
    // goes by its own 10 s; the current default uses the host's deadline.
    let mut late = case("online");
    late.storage_node.heartbeat_age_ms = Some(15_000);
    late.settings.heartbeat_deadline_ms = 30_000;
    late.pool.labels.insert("team".into(), "storage".into());
    late.pool
        .annotations
        .insert("example.com/retain".into(), "true".into());
    let mut unlisted = case("online");
    unlisted.reported = None;

    let cases = [
        (
            "new pool",
            case("new pool"),
            expect(
                Action::Create,
                PoolState::Pending,
                "not listed, creating",
                Some(1_000),
            ),
        ),
        (
            "online",
            case("online"),
            expect(Action::None, PoolState::Online, "listed online", None),
        ),
        (
            "faulted",
            case("faulted"),
            expect(Action::None, PoolState::Faulted, "listed faulted", None),
        ),
        (
            "node missing",
            case("node missing"),
            expect(Action::None, PoolState::Pending, "node not usable", None),
        ),
        (
            "deleted",
            deleted,
            // A deleted resource has no state (it is known from the ledger).
            expect(
                Action::Destroy,
                PoolState::Pending,
                "deleted, destroying",
                None,
            ),
        ),
        (
            "heartbeat 15 s, host deadline 30 s",
            late.clone(),
            expect(Action::None, PoolState::Offline, "storage node down", None),
        ),
        (
            "created, not listed",
            unlisted,
            expect(
                Action::Import,
                PoolState::Pending,
                "not listed, importing",
                Some(1_000),
            ),
        ),
    ];
    for (name, obs, want) in &cases {
        assert_eq!(&engine.decide_blocking(obs)?, want, "{name}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (name, obs, want) = &cases[0];
    assert_eq!(
        &runtime.block_on(engine.decide(obs))?,
        want,
        "{name} (async)"
    );

    // The same observation on the bundled current default: online, by the
    // host's deadline.
    engine.reset_to_bundled();
    let d = engine.decide_blocking(&late)?;
    assert_eq!(
        (d.action, d.state),
        (Action::None, PoolState::Online),
        "{d:?}"
    );
    assert_eq!(d, msp_policy::decide(&late));
    Ok(())
}

#[test]
fn components_of_every_contract_decide_side_by_side() -> anyhow::Result<()> {
    let one = PolicyEngine::new(Limits::default())?;
    one.load(&component("contract-0-1"), PolicySource::File)?;
    let two = PolicyEngine::new(Limits::default())?;
    two.load(&component("contract-0-2"), PolicySource::File)?;
    let new = PolicyEngine::new(Limits::default())?;
    new.load(&component("retain"), PolicySource::File)?;
    assert_eq!(
        (
            one.active().contract.as_str(),
            two.active().contract.as_str(),
            new.active().contract.as_str()
        ),
        ("0.1.0", "0.2.0", "0.3.0")
    );
    let mut rng = Rng::new(0x0102);
    for i in 0..2_000 {
        let obs = sample::observation(&mut rng);
        for (engine, prefix) in [(&one, "contract-0.1: "), (&two, "contract-0.2: ")] {
            let d = engine
                .decide_blocking(&obs)
                .map_err(|e| anyhow::anyhow!("{prefix}observation {i}: {e}\n{obs:#?}"))?;
            assert!(d.reason.starts_with(prefix), "{i}: {d:?}");
        }
        new.decide_blocking(&obs)
            .map_err(|e| anyhow::anyhow!("0.3, observation {i}: {e}\n{obs:#?}"))?;
    }
    // Swaps between contracts in one engine, every way.
    one.load(&component("retain"), PolicySource::File)?;
    assert_eq!(one.active().contract, "0.3.0");
    one.load(&component("contract-0-2"), PolicySource::File)?;
    assert_eq!(one.active().contract, "0.2.0");
    one.load(&component("contract-0-1"), PolicySource::File)?;
    assert_eq!(one.active().contract, "0.1.0");
    Ok(())
}
