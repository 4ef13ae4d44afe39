//! The default policy's transition table: each of the five states as the
//! starting point and each event that moves it, checked natively.

use msp_policy::decide::{self, BACKOFF_MAX_MS, decide};
use msp_policy_sdk::model::*;
use msp_policy_sdk::testing::{self, NOW_MS, observation as base, reported};

const NOW: u64 = NOW_MS;

fn failed(action: Action, kind: ErrorKind, failures: u32, ago_ms: u64) -> Option<LastOperation> {
    Some(testing::failed(action, kind, failures, ago_ms))
}

const ALL: [Option<PoolState>; 6] = [
    None,
    Some(PoolState::Pending),
    Some(PoolState::Online),
    Some(PoolState::Degraded),
    Some(PoolState::Faulted),
    Some(PoolState::Offline),
];

fn is_created(s: Option<PoolState>) -> bool {
    !matches!(s, None | Some(PoolState::Pending))
}

#[test]
fn node_missing_or_unlabelled_keeps_a_new_pool_pending() {
    for start in [None, Some(PoolState::Pending)] {
        let mut o = base(start);
        o.node.exists = false;
        let d = decide(&o);
        assert_eq!((d.action, d.state), (Action::None, PoolState::Pending));
        assert!(d.reason.contains("does not exist"), "{}", d.reason);

        let mut o = base(start);
        o.node.mayastor_enabled = false;
        let d = decide(&o);
        assert_eq!((d.action, d.state), (Action::None, PoolState::Pending));
        assert!(
            d.reason.contains("openebs.io/engine=mayastor"),
            "{}",
            d.reason
        );
    }
}

#[test]
fn storage_node_down_is_pending_before_creation_and_offline_after() {
    for start in ALL {
        type Case = (&'static str, fn(&mut Observation));
        let cases: [Case; 3] = [
            ("not registered", |o| {
                o.storage_node.registered = false;
                o.storage_node.heartbeat_age_ms = None;
            }),
            ("no heartbeat", |o| {
                o.storage_node.heartbeat_age_ms = Some(30_000)
            }),
            ("does not answer", |o| o.storage_node.reachable = false),
        ];
        for (needle, apply) in cases {
            let mut o = base(start);
            apply(&mut o);
            let d = decide(&o);
            // What a later look says is the same (no status write per look).
            let mut later = o.clone();
            later.now_ms += 5_000;
            if let Some(age) = &mut later.storage_node.heartbeat_age_ms {
                *age += 5_000;
            }
            assert_eq!(decide(&later).reason, d.reason, "{needle}");
            let want = if is_created(start) {
                PoolState::Offline
            } else {
                PoolState::Pending
            };
            assert_eq!(
                (d.action, d.state),
                (Action::None, want),
                "{start:?} {needle}"
            );
            assert!(d.reason.contains(needle), "{start:?}: {}", d.reason);
        }
    }
}

#[test]
fn the_hosts_heartbeat_deadline_decides_when_a_silent_node_is_offline() {
    // 15 s without a heartbeat: late for the default 10 s deadline, not for
    // a host running with --node-deadline=30s.
    let mut o = base(Some(PoolState::Online));
    o.storage_node.heartbeat_age_ms = Some(15_000);
    o.settings.heartbeat_deadline_ms = 30_000;
    let d = decide(&o);
    assert_eq!(
        (d.action, d.state),
        (Action::None, PoolState::Online),
        "{d:?}"
    );

    o.settings.heartbeat_deadline_ms = 10_000;
    let d = decide(&o);
    assert_eq!((d.action, d.state), (Action::None, PoolState::Offline));
    assert!(d.reason.contains("for over 10s"), "{}", d.reason);

    // Past the longer deadline too.
    o.settings.heartbeat_deadline_ms = 30_000;
    o.storage_node.heartbeat_age_ms = Some(31_000);
    assert_eq!(decide(&o).state, PoolState::Offline);
}

#[test]
fn new_pool_is_created_then_waits_for_the_list() {
    let o = base(None);
    let mut o = Observation {
        reported: None,
        ..o
    };
    let d = decide(&o);
    assert_eq!((d.action, d.state), (Action::Create, PoolState::Pending));

    // Created a moment ago, not listed yet: in progress, no second create.
    o.in_ledger = true;
    o.last_operation = Some(LastOperation {
        action: Action::Create,
        error: None,
        failures: 0,
        at_ms: NOW - 100,
    });
    o.pool.status_state = Some(PoolState::Pending);
    let d = decide(&o);
    assert_eq!(d.action, Action::None);
    assert!(d.reason.contains("in progress"), "{}", d.reason);
}

#[test]
fn reported_health_sets_the_state_from_any_start() {
    for start in ALL {
        for (rep, want) in [
            (ReportedState::Online, PoolState::Online),
            (ReportedState::Degraded, PoolState::Degraded),
            (ReportedState::Faulted, PoolState::Faulted),
            (ReportedState::Unknown, PoolState::Degraded),
        ] {
            let mut o = base(start);
            o.reported = Some(reported(rep));
            let d = decide(&o);
            assert_eq!(
                (d.action, d.state),
                (Action::None, want),
                "{start:?} {rep:?}"
            );
        }
    }
}

#[test]
fn each_create_error_kind_has_its_own_advice_and_backs_off() {
    let kinds = [
        (
            ErrorKind::FailedPrecondition,
            "failed-precondition: boom (fix what it names",
        ),
        (
            ErrorKind::InvalidArgument,
            "invalid-argument: boom (check spec.disks",
        ),
        (
            ErrorKind::AlreadyExists,
            "already-exists: boom (destroy the other pool",
        ),
        (
            ErrorKind::NotFound,
            "not-found: boom (check that the disk paths exist",
        ),
        (
            ErrorKind::Unavailable,
            "unavailable: boom (the call did not complete",
        ),
        (
            ErrorKind::DeadlineExceeded,
            "deadline-exceeded: boom (the call did not",
        ),
        (
            ErrorKind::ResourceExhausted,
            "resource-exhausted: boom (retrying",
        ),
        (ErrorKind::Internal, "internal: boom (retrying"),
        (ErrorKind::Other, "other: boom (retrying"),
    ];
    let mut reasons = std::collections::HashSet::new();
    for (kind, needle) in kinds {
        let mut o = base(Some(PoolState::Pending));
        o.reported = None;
        o.in_ledger = true;
        o.last_operation = failed(Action::Create, kind, 1, 10);
        let d = decide(&o);
        assert_eq!(
            (d.action, d.state),
            (Action::None, PoolState::Pending),
            "{kind:?}"
        );
        assert!(d.reason.contains(needle), "{kind:?}: {}", d.reason);
        // The node's text is the cause: no guess about disks' contents.
        assert!(!d.reason.contains("filesystem"), "{}", d.reason);
        assert_eq!(d.requeue_after_ms, Some(990));
        assert!(d.event.as_ref().is_some_and(|e| e.warning));
        reasons.insert(d.reason);
    }
    assert_eq!(
        reasons.len(),
        kinds.len(),
        "each kind is named in its reason"
    );
}

#[test]
fn repeated_failures_retry_with_capped_exponential_backoff() {
    assert_eq!(decide::backoff_ms(1), 1_000);
    assert_eq!(decide::backoff_ms(2), 2_000);
    assert_eq!(decide::backoff_ms(5), 16_000);
    assert_eq!(decide::backoff_ms(40), BACKOFF_MAX_MS);
    assert_eq!(decide::backoff_ms(u32::MAX), BACKOFF_MAX_MS);
    for failures in [1u32, 3, 12, 1000] {
        let mut o = base(None);
        o.reported = None;
        o.last_operation = failed(
            Action::Create,
            ErrorKind::Unavailable,
            failures,
            decide::backoff_ms(failures),
        );
        let d = decide(&o);
        assert_eq!(d.action, Action::Create, "retry due after {failures}");
        assert!(d.requeue_after_ms.is_some_and(|r| r <= BACKOFF_MAX_MS));
    }
}

#[test]
fn disks_claimed_by_another_pool_keep_a_new_pool_pending() {
    let mut o = base(None);
    o.reported = None;
    o.conflicts = vec!["pool-b".into()];
    let d = decide(&o);
    assert_eq!((d.action, d.state), (Action::None, PoolState::Pending));
    assert!(d.reason.contains("pool-b"));
    // A created pool keeps its disks: the conflict is the other pool's problem.
    let mut o = base(Some(PoolState::Online));
    o.conflicts = vec!["pool-b".into()];
    assert_eq!(decide(&o).state, PoolState::Online);
}

#[test]
fn storage_node_back_imports_a_created_pool_and_creates_a_new_one() {
    for start in ALL {
        let mut o = base(start);
        o.reported = None;
        let d = decide(&o);
        if is_created(start) {
            assert_eq!(
                (d.action, d.state),
                (Action::Import, PoolState::Pending),
                "{start:?}: the node runs, so not offline"
            );
        } else {
            assert_eq!(
                (d.action, d.state),
                (Action::Create, PoolState::Pending),
                "{start:?}"
            );
        }
    }
    // An import in progress on a running node: pending, and still created
    // (the cached placement says so) though the state is pending.
    let mut o = base(Some(PoolState::Pending));
    o.pool.status_node = Some("node1".into());
    o.pool.status_disks = Some(vec!["/dev/disk/by-id/disk-a".into()]);
    o.reported = None;
    let d = decide(&o);
    assert_eq!((d.action, d.state), (Action::Import, PoolState::Pending));
    assert!(d.reason.contains("importing it from"), "{}", d.reason);
    // Import failure the node answers for: faulted, with its text, retried
    // with backoff.
    o.last_operation = failed(Action::Import, ErrorKind::NotFound, 2, 100);
    let d = decide(&o);
    assert_eq!(
        (d.action, d.state, d.requeue_after_ms),
        (Action::None, PoolState::Faulted, Some(1_900))
    );
    assert!(d.reason.contains("not-found: boom"), "{}", d.reason);
    // A call that did not complete says nothing about the pool: pending.
    o.last_operation = failed(Action::Import, ErrorKind::Unavailable, 2, 100);
    assert_eq!(decide(&o).state, PoolState::Pending);
}

#[test]
fn deleted_resource_destroys_only_ledger_pools() {
    for start in ALL {
        let mut o = base(start);
        o.pool.deleted = true;
        o.in_ledger = true;
        let d = decide(&o);
        assert_eq!(d.action, Action::Destroy, "{start:?}");
        o.in_ledger = false;
        assert_eq!(decide(&o).action, Action::None, "{start:?}");
    }
    let mut o = base(Some(PoolState::Online));
    o.pool.deleted = true;
    o.last_operation = failed(Action::Destroy, ErrorKind::Unavailable, 1, 10);
    assert_eq!(decide(&o).action, Action::None);
    o.last_operation = failed(Action::Destroy, ErrorKind::Unavailable, 1, 5_000);
    assert_eq!(decide(&o).action, Action::Destroy);
    o.last_operation = Some(LastOperation {
        action: Action::Destroy,
        error: None,
        failures: 0,
        at_ms: NOW,
    });
    assert_eq!(decide(&o).action, Action::None);
    // Storage node down: wait for it rather than fail.
    let mut o = base(Some(PoolState::Offline));
    o.pool.deleted = true;
    o.storage_node.registered = false;
    assert_eq!(decide(&o).action, Action::None);
}

#[test]
fn spec_edited_after_creation_is_ignored_and_says_how_to_move() {
    for start in ALL.into_iter().filter(|s| is_created(*s)) {
        let mut o = base(start);
        o.pool.spec_node = "node2".into();
        o.pool.generation = 2;
        let d = decide(&o);
        assert!(
            d.reason.contains("ignored") && d.reason.contains("\"node1\""),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("delete this resource"));
        assert_ne!(d.action, Action::Create);
        let mut o = base(start);
        o.pool.spec_disks = vec!["/dev/disk/by-id/other".into()];
        o.reported = None;
        let d = decide(&o);
        assert_eq!(d.action, Action::Import);
        assert!(
            d.reason.contains("/dev/disk/by-id/disk-a") && d.reason.contains("ignored"),
            "{}",
            d.reason
        );
    }
}

#[test]
fn events_are_not_repeated_when_the_reason_is_unchanged() {
    let mut o = base(None);
    o.reported = None;
    o.conflicts = vec!["pool-b".into()];
    let d = decide(&o);
    assert!(d.event.is_some());
    o.pool.status_reason = Some(d.reason.clone());
    assert!(decide(&o).event.is_none());
}

#[test]
fn pool_list_unknown_waits_and_keeps_the_state() {
    for start in ALL {
        let mut o = base(start);
        o.pools_known = false;
        let d = decide(&o);
        assert_eq!(d.action, Action::None);
        assert_eq!(d.state, start.unwrap_or(PoolState::Pending));
        assert!(d.requeue_after_ms.is_some());
    }
}

#[test]
fn info_names_the_default_policy() {
    let i = decide::info();
    assert_eq!(i.name, "msp-default");
    assert!(!i.version.is_empty());
}

#[test]
fn label_removed_from_a_node_with_a_pool_says_so_while_online() {
    let mut o = base(Some(PoolState::Online));
    o.node.mayastor_enabled = false;
    let d = decide(&o);
    assert_eq!((d.action, d.state), (Action::None, PoolState::Online));
    assert!(
        d.reason
            .contains("no longer labelled openebs.io/engine=mayastor")
            && d.reason.contains("will go offline"),
        "{}",
        d.reason
    );
    let mut o = base(Some(PoolState::Online));
    o.node.exists = false;
    let d = decide(&o);
    assert_eq!(d.state, PoolState::Online);
    assert!(d.reason.contains("no longer exists"), "{}", d.reason);
    // Labelled again: the note goes.
    let d = decide(&base(Some(PoolState::Online)));
    assert_eq!(d.reason, "");
}
