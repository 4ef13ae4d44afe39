//! The ledger against a real API server: concurrent entries of one node share
//! writes (group commit) and each is durable when its caller is answered;
//! entries recorded ahead for a node's other new pools go in the first write
//! and make their own records free;
//! nodes do not wait on each other; a node's ledger is filled exactly to the
//! API server's ConfigMap limit and the entry past it is refused, with
//! nothing lost or truncated.

use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use msp_operator::state::ledger::{
    CONFIGMAP_DATA_LIMIT, FIELD_MANAGER, Ledger, LedgerEntry, LedgerError, configmap_name,
};
use msp_tests::control_plane::requests::{grown, writes_so_far};
use msp_tests::operator::{ledger_pools, start_cluster};

const NAMESPACE: &str = "mayastor";

fn entry(node: &str, pool: &str) -> LedgerEntry {
    LedgerEntry {
        pool: pool.into(),
        namespace: NAMESPACE.into(),
        uid: format!("uid-{pool}"),
        node: node.into(),
        disks: vec![format!("/dev/disk/by-id/{pool}")],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_one_node_share_writes_and_each_is_durable_when_answered() -> anyhow::Result<()>
{
    let (_cp, admin) = start_cluster().await?;
    let ledger = Ledger::empty(admin.clone(), NAMESPACE);

    // Five pools created together, each caller saying four more are coming:
    // one write.
    let before = writes_so_far(&admin).await?;
    let results = join_all((0..5).map(|i| {
        let ledger = ledger.clone();
        async move { ledger.record(entry("node-a", &format!("a{i}")), 4).await }
    }))
    .await;
    for r in results {
        r?;
    }
    let after = writes_so_far(&admin).await?;
    assert_eq!(grown(&before, &after, "APPLY configmaps"), 1.0);
    let mut on_server = ledger_pools(&admin, "node-a").await?;
    on_server.sort();
    assert_eq!(on_server, ["a0", "a1", "a2", "a3", "a4"]);

    // 40 entries on one node and 40 spread over 8 others, nobody announcing
    // the others: entries that arrive while a write is in flight share the
    // next one, and each is on the API server when its caller hears back.
    let before = writes_so_far(&admin).await?;
    let calls = (0..80).map(|i| {
        let (ledger, admin) = (ledger.clone(), admin.clone());
        let node = if i < 40 {
            "node-b".to_string()
        } else {
            format!("node-c{}", i % 8)
        };
        async move {
            let pool = format!("p{i}");
            ledger.record(entry(&node, &pool), 0).await?;
            let durable = ledger_pools(&admin, &node).await?.contains(&pool);
            anyhow::ensure!(durable, "{pool} answered before it was on the API server");
            anyhow::Ok(())
        }
    });
    for r in join_all(calls).await {
        r?;
    }
    let after = writes_so_far(&admin).await?;
    let writes = grown(&before, &after, "APPLY configmaps");
    println!("80 entries on 9 nodes: {writes} ConfigMap writes");
    assert!(
        (9.0..80.0).contains(&writes),
        "{writes} writes for 80 entries on 9 nodes: no grouping, or a node never written"
    );
    assert_eq!(ledger_pools(&admin, "node-b").await?.len(), 40);

    // A node's removals group too, and the reloaded ledger agrees.
    let results = join_all((0..40).map(|i| {
        let ledger = ledger.clone();
        async move { ledger.remove("node-b", &format!("p{i}")).await }
    }))
    .await;
    for r in results {
        r?;
    }
    assert!(ledger_pools(&admin, "node-b").await?.is_empty());
    let reloaded = Ledger::load(admin.clone(), NAMESPACE).await?;
    let mut all: Vec<String> = reloaded.all().into_iter().map(|e| e.pool).collect();
    all.sort();
    let mut expected: Vec<String> = (0..5)
        .map(|i| format!("a{i}"))
        .chain((40..80).map(|i| format!("p{i}")))
        .collect();
    expected.sort();
    assert_eq!(all, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_recorded_ahead_share_the_first_write_and_their_own_record_writes_nothing()
-> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let ledger = Ledger::empty(admin.clone(), NAMESPACE);

    // The first new pool of a node records the other four ahead: one write,
    // all five durable when it is answered; one of another node is left out.
    let before = writes_so_far(&admin).await?;
    let ahead: Vec<LedgerEntry> = (1..5)
        .map(|i| entry("node-d", &format!("d{i}")))
        .chain([entry("node-e", "e0")])
        .collect();
    ledger.record_with(entry("node-d", "d0"), ahead, 0).await?;
    let after = writes_so_far(&admin).await?;
    assert_eq!(grown(&before, &after, "APPLY configmaps"), 1.0);
    let mut on_server = ledger_pools(&admin, "node-d").await?;
    on_server.sort();
    assert_eq!(on_server, ["d0", "d1", "d2", "d3", "d4"]);
    assert!(ledger_pools(&admin, "node-e").await?.is_empty());

    // Their own reconciles record the same entries: nothing is written; an
    // entry that differs (the disks were edited before the create) is.
    let before = writes_so_far(&admin).await?;
    for i in 1..5 {
        ledger.record(entry("node-d", &format!("d{i}")), 0).await?;
    }
    assert_eq!(
        grown(&before, &writes_so_far(&admin).await?, "APPLY configmaps"),
        0.0
    );
    let mut edited = entry("node-d", "d4");
    edited.disks = vec!["/dev/disk/by-id/other".into()];
    ledger.record(edited.clone(), 0).await?;
    assert_eq!(
        grown(&before, &writes_so_far(&admin).await?, "APPLY configmaps"),
        1.0
    );
    let reloaded = Ledger::load(admin.clone(), NAMESPACE).await?;
    assert_eq!(reloaded.get("node-d", "d4"), Some(edited));
    assert_eq!(reloaded.on_node("node-d").len(), 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_ledger_refuses_the_next_entry_and_keeps_every_other() -> anyhow::Result<()> {
    let (_cp, admin) = start_cluster().await?;
    let ledger = Ledger::empty(admin.clone(), NAMESPACE);
    let node = "node-full";

    // Entries of about 100 KiB (a long disk path) until the next would not
    // fit, then one sized to fill the ConfigMap to the byte.
    // The API server counts the values only: each entry as the ledger stores it.
    let size = |e: &LedgerEntry| msp_operator::state::ledger::entry_json(e).map_or(0, |s| s.len());
    let mut used = 0;
    let mut count = 0;
    loop {
        let mut e = entry(node, &format!("pool-{count}"));
        e.disks = vec![format!("/dev/{}", "d".repeat(100 * 1024))];
        if used + size(&e) > CONFIGMAP_DATA_LIMIT {
            break;
        }
        used += size(&e);
        ledger.record(e, 0).await?;
        count += 1;
    }
    let mut last = entry(node, "pool-last");
    last.disks = vec!["/dev/".into()];
    let fill = CONFIGMAP_DATA_LIMIT - used - size(&last);
    last.disks = vec![format!("/dev/{}", "e".repeat(fill))];
    assert_eq!(used + size(&last), CONFIGMAP_DATA_LIMIT, "test arithmetic");
    ledger.record(last, 0).await?;
    count += 1;

    // One byte more is refused, by the ledger, saying what to do.
    let started = Instant::now();
    let refused = ledger.record(entry(node, "x"), 0).await;
    match &refused {
        Err(err @ LedgerError::Full { pool, limit, .. }) => {
            assert_eq!((pool.as_str(), *limit), ("x", CONFIGMAP_DATA_LIMIT));
            let text = err.to_string();
            assert!(text.contains("ledger of node node-full is full"), "{text}");
            assert!(text.contains("delete pools on this node"), "{text}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without a write"
    );

    // Everything recorded before is on the API server, whole.
    let reloaded = Ledger::load(admin.clone(), NAMESPACE).await?;
    let on_server = reloaded.all();
    assert_eq!(on_server.len(), count);
    assert!(
        on_server
            .iter()
            .all(|e| ledger.get(node, &e.pool).as_ref() == Some(e))
    );

    // The limit is the API server's own: one byte over, it refuses the
    // ConfigMap itself (so the ledger refuses nothing the server would take).
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let mut data = api
        .get(&configmap_name(node))
        .await?
        .data
        .unwrap_or_default();
    data.insert("y".into(), "1".into());
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(configmap_name(node)),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let over = api
        .patch(
            &configmap_name(node),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await;
    let Err(kube::Error::Api(status)) = over else {
        panic!(
            "the API server took a ConfigMap over its limit (answer: {})",
            over.map_or_else(|e| e.to_string(), |_| "ok".into())
        );
    };
    assert_eq!(status.code, 422, "{status:?}");
    Ok(())
}
