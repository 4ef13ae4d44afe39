//! The leader's work, started once the lease is ours: the ledger, the
//! policy engine and its ConfigMap watch (and the shadow candidate's), the
//! MayastorPool cache, the sweep and the controller, until the controller
//! stops.

use std::sync::Arc;

use anyhow::Context as _;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::{self, Controller};
use kube::{Api, Client, ResourceExt};
use msp_policy_engine::{Limits, PolicyEngine};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::controller::{Context, Decider, Parts, on_error, reconcile, sweep};
use crate::lifecycle::flags::RunArgs;
use crate::lifecycle::http::Readiness;
use crate::lifecycle::shutdown::Shutdown;
use crate::metrics::Metrics;
use crate::nodes::registry::NodeRegistry;
use crate::nodes::registry::admission::Admission;
use crate::nodes::registry::record;
use crate::policy;
use crate::policy::reload::PolicyReloadReporter;
use crate::state::cache::{self, wait_synced};
use crate::state::crd::MayastorPool;
use crate::state::ledger::Ledger;

/// What the leader starts from: the fenced client and the parts made while
/// standing by.
pub(crate) struct Leading {
    pub(crate) client: Client,
    pub(crate) pools_api: Api<MayastorPool>,
    pub(crate) registry: NodeRegistry,
    pub(crate) nodes: kube::runtime::reflector::Store<Node>,
    /// The registration check (recorded registrations pass it too).
    pub(crate) admission: Admission,
    pub(crate) node_stream:
        futures::stream::BoxStream<'static, Result<Node, kube::runtime::watcher::Error>>,
    pub(crate) recorder: kube::runtime::events::Recorder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: Arc<Readiness>,
}

/// A Warning Event on each ledger ConfigMap holding entries of a newer
/// format than this version reads: they are kept as they are, and their
/// pools left alone (the reconcile of a live one says so on it too).
async fn announce_unread(
    ledger: &Ledger,
    recorder: &kube::runtime::events::Recorder,
    namespace: &str,
) {
    for unread in ledger.all_unread() {
        let configmap = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(crate::state::ledger::configmap_name(&unread.node)),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        };
        crate::state::events::publish(
            recorder,
            &configmap,
            true,
            crate::state::format::EVENT_REASON,
            &unread.too_new.to_string(),
            "LoadLedger",
        )
        .await;
    }
}

/// Adopts the nodes the previous leader recorded, once the Node cache (which
/// the registration check reads) is synced, then keeps the record.
async fn adopt_and_record(
    registry: NodeRegistry,
    record: record::Record,
    nodes: kube::runtime::reflector::Store<Node>,
    admission: Admission,
    stop: impl std::future::Future<Output = ()>,
) {
    let loaded = match record.load().await {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::warn!(error = %err, "reading the registration record failed: nodes are known once they register");
            Default::default()
        }
    };
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => return,
        synced = wait_synced(&nodes) => if !synced { return },
    }
    let adopted = registry.adopt(loaded.clone(), &admission).await;
    tracing::info!(
        recorded = loaded.len(),
        adopted = adopted.len(),
        "registration record read"
    );
    record::keep(registry, record, loaded, stop).await;
}

/// The leader's work: ledger, caches, policy, sweep and the controller,
/// until the controller stops. Built after the lease was taken, so the
/// startup grace of the context counts from becoming the leader.
pub(crate) async fn lead(
    args: &RunArgs,
    parts: Leading,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let Leading {
        client,
        pools_api,
        registry,
        nodes,
        admission,
        node_stream,
        recorder,
        metrics,
        ready,
    } = parts;
    let ledger = Ledger::load(client.clone(), &args.operator_namespace)
        .await
        .context("loading the ledger")?;
    announce_unread(&ledger, &recorder, &args.operator_namespace).await;
    tasks.spawn(registry.clone().run(shutdown.wait()));
    tasks.spawn(adopt_and_record(
        registry.clone(),
        record::Record::new(
            Api::namespaced(client.clone(), &args.operator_namespace),
            &args.lease_name,
        ),
        nodes.clone(),
        admission,
        shutdown.wait(),
    ));

    let Some((decider, policy_changes)) =
        start_policy(args, &client, &recorder, &metrics, &ready, tasks, shutdown).await?
    else {
        return Ok(());
    };

    // One watch of MayastorPools feeds the cache, the controller and the
    // sweep (woken on each deletion).
    let sweep_wake = Arc::new(Notify::new());
    let (wake, m) = (sweep_wake.clone(), metrics.clone());
    let (pools, pool_stream) = cache::watch_pools(pools_api, move |pool| {
        m.forget_pool(&pool.namespace().unwrap_or_default(), &pool.name_any());
        wake.notify_one();
    });

    let parts = Parts {
        recorder,
        client,
        pools: pools.clone(),
        nodes: nodes.clone(),
        registry: registry.clone(),
        ledger: Arc::new(ledger),
        decider,
        metrics,
    };
    let ctx = Arc::new(Context::new(parts, args.controller_settings()));

    let (p, n) = (pools.clone(), nodes.clone());
    tasks.spawn(async move {
        if wait_synced(p.store()).await && wait_synced(&n).await {
            ready.set_synced(true);
            tracing::info!("caches synced: ready");
        }
    });
    tasks.spawn(sweep::run(
        ctx.clone(),
        sweep_wake,
        args.sweep_period,
        shutdown.wait(),
    ));

    let reader = pools.clone();
    let node_mapper = move |node: Node| reader.refs_on(Some(&node.name_any()));
    Controller::for_stream(pool_stream, pools.store().clone())
        .watches_stream(node_stream, node_mapper)
        .reconcile_on(cache::node_triggers(&registry, pools))
        .reconcile_all_on(stream::unfold(policy_changes, |mut rx| async move {
            rx.recv().await.map(|()| ((), rx))
        }))
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown.wait())
        .run(reconcile, on_error, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller event");
            }
        })
        .await;
    Ok(())
}

/// The policy that decides: the bundled one until the policy ConfigMap
/// brings another, behind the trust Secret's check, with the shadow
/// candidate's watch if any; ready once the ConfigMap's first list is
/// applied. Each reload is sent on the returned channel (it wakes every
/// pool). `None` when shutdown came first.
async fn start_policy(
    args: &RunArgs,
    client: &Client,
    recorder: &kube::runtime::events::Recorder,
    metrics: &Arc<Metrics>,
    ready: &Readiness,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<(Arc<dyn Decider>, UnboundedReceiver<()>)>> {
    // The policy: the bundled one until the ConfigMap brings another; each
    // reload wakes every pool.
    let limits = Limits {
        module_bytes: args.policy_max_bytes,
        ..Limits::default()
    };
    let engine = PolicyEngine::new(limits).context("loading the bundled policy")?;
    // Which modules may decide: known before any ConfigMap is looked at.
    let trust = policy::trust::start(
        client.clone(),
        &args.operator_namespace,
        args.policy_trust_secret.clone(),
        tasks,
        shutdown.wait(),
    )
    .await;
    metrics.set_signed(!trust.borrow().is_unsigned());
    ready.set_policy_trust(trust.clone());
    let active = engine.active();
    metrics.set_policy(&active);
    let (policy_changed, policy_changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reporter = PolicyReloadReporter::new(
        metrics.clone(),
        recorder.clone(),
        &args.operator_namespace,
        &args.policy_configmap,
        policy_changed,
        trust.clone(),
    );
    let (settled, policy_settled) = tokio::sync::oneshot::channel();
    let watch = policy::watch::watch_settled(
        client.clone(),
        args.operator_namespace.clone(),
        args.policy_configmap.clone(),
        args.policy_key.clone(),
        engine.clone(),
        trust.clone(),
        reporter,
        Some(settled),
    );
    let stop = shutdown.wait();
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = watch => {} }
    });
    // Nothing is decided before the policy ConfigMap's first list is
    // applied: the bundled default would destroy the pool of a resource
    // deleted while the operator was down that the custom policy keeps.
    let mut policy_settled = std::pin::pin!(policy_settled);
    loop {
        tokio::select! {
            _ = &mut policy_settled => break,
            () = shutdown.wait() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => tracing::warn!(
                configmap = %args.policy_configmap,
                "waiting for the policy ConfigMap's first list before deciding anything"
            ),
        }
    }
    // Shadow mode: every decision also goes to the candidate, if any.
    let decider = policy::shadow::start(
        args.shadow_settings(),
        client,
        recorder,
        metrics,
        engine,
        trust,
        tasks,
        shutdown,
    )?;
    Ok(Some((decider, policy_changes)))
}
