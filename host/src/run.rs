//! `msp-operator run`: wiring only. Builds the parts (ledger, node registry,
//! policy engine, metrics, watch caches), starts the servers (Registration,
//! probes), the policy ConfigMap watch, the sweep and the controller, and
//! stops them all on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::runtime::controller::{self, Controller};
use kube::{Api, Client, ResourceExt};
use msp_policy_engine::{Limits, PolicyEngine};
use tokio::sync::Notify;

use crate::cache::{self, pools_on, wait_synced};
use crate::controller::{Context, Parts, on_error, reconcile, sweep};
use crate::crd::MayastorPool;
use crate::fence::Fence;
use crate::health::{Readiness, Role};
use crate::leader::{Elector, Lost};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::policy_reload::PolicyReloadReporter;
use crate::policy_watch;
use crate::registry::NodeRegistry;
use crate::registry::admission::Admission;
use crate::registry::service::{Gate, Leadership, RegistrationService};
use crate::shutdown::Shutdown;
use crate::{events, fence, health, registry};

pub use crate::flags::RunArgs;

/// The operator's two listening sockets, bound before it starts (so a caller
/// asking for port 0 learns the real ports).
pub struct Listeners {
    pub registration: tokio::net::TcpListener,
    pub metrics: tokio::net::TcpListener,
}

impl Listeners {
    pub async fn bind(args: &RunArgs) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            registration: registry::service::bind(args.registration_addr)
                .await
                .with_context(|| format!("binding {}", args.registration_addr))?,
            metrics: health::bind(args.metrics_addr)
                .await
                .with_context(|| format!("binding {}", args.metrics_addr))?,
        })
    }

    pub fn registration_addr(&self) -> std::io::Result<SocketAddr> {
        self.registration.local_addr()
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics.local_addr()
    }
}

/// Runs until SIGTERM/SIGINT, with the client from KUBECONFIG or in-cluster.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::telemetry::init(args.log_format);
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let client = Client::try_default()
        .await
        .context("connecting to the API server (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let listeners = Listeners::bind(&args).await?;
    run_until(args, client, listeners, shutdown).await
}

/// Runs until `shutdown` is triggered, or fails when the lease is lost.
///
/// A standby serves the probes and forwards registrations to the leader;
/// everything else (ledger, watch caches, controller, sweep, policy watch,
/// node monitor) starts once this replica holds the lease, with a kube
/// client and node clients whose every write or call checks the fence.
/// Losing the lease ends the process with an error: what was built as the
/// leader (registry, last operations, reported states) is then stale, and
/// a restart rebuilds it from the API server as a standby, the way a
/// container restart does (client-go's leaderelection exits too).
pub async fn run_until(
    args: RunArgs,
    client: Client,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pools_api: Api<MayastorPool> = Api::namespaced(client.clone(), &args.namespace);
    if let Err(err) = pools_api.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list MayastorPools in namespace {}: {err}\nIs the CRD installed? kubectl apply -f deploy/crd/mayastorpool.yaml",
            args.namespace
        );
    }
    let election = args
        .election_settings(listeners.registration_addr()?)
        .map_err(anyhow::Error::msg)?;
    let fence = Fence::closed();
    let registry = NodeRegistry::fenced(args.registry_settings(), fence.clone());
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::default());
    ready.set_role(Role::Standby { leader: None });
    tracing::info!(
        registration = %listeners.registration_addr()?,
        metrics = %listeners.metrics_addr()?,
        namespace = %args.namespace,
        identity = %election.identity,
        lease = %format!("{}/{}", election.namespace, election.lease_name),
        "msp-operator starting"
    );
    let mut tasks = tokio::task::JoinSet::new();
    let (m, r, stop) = (metrics.clone(), ready.clone(), shutdown.wait());
    tasks.spawn(async move {
        if let Err(err) = health::serve(listeners.metrics, m, r, stop).await {
            tracing::error!(error = %err, "metrics endpoint failed");
        }
    });
    let mut elector = Elector::new(client.clone(), election, fence.clone());
    tasks.spawn(show_role(
        elector.holder(),
        ready.clone(),
        metrics.clone(),
        shutdown.wait(),
    ));

    // The Node cache comes first: the registration check reads it.
    let (nodes, node_stream) = cache::watch_nodes(Api::all(client.clone()));
    // Writes through this client pass only while the fence is open; the
    // elector keeps the unfenced one (it writes before it leads).
    let client = fence::client(client, fence.clone());
    let recorder = events::recorder(client.clone());
    let gate = Gate {
        admission: Admission::new(nodes.clone(), args.admission_settings()),
        recorder: recorder.clone(),
        metrics: metrics.clone(),
    };
    let service =
        RegistrationService::new(registry.clone(), Some(gate)).with_leadership(Leadership {
            fence: fence.clone(),
            holder: elector.holder(),
        });
    let stop = shutdown.wait();
    tasks.spawn(async move {
        if let Err(err) = registry::service::serve(listeners.registration, service, stop).await {
            tracing::error!(error = %err, "registration server failed");
        }
    });

    // Standby until the lease is ours.
    if !elector.acquire(shutdown.wait()).await {
        while tasks.join_next().await.is_some() {}
        tracing::info!("msp-operator stopped (was standby)");
        return Ok(());
    }
    tracing::info!("leading: starting the controller");
    // Renewing; on shutdown the fence closes first, then the lease is
    // released so that the standby takes over at once. A task of its own:
    // the controller runs every reconcile in one task, and a busy one must
    // not delay a renew; aborted when `run_until` is dropped.
    let stop = shutdown.wait();
    let mut keeper = AbortOnDrop(tokio::spawn(async move {
        let lost = elector.keep(stop).await;
        if lost == Lost::Stopped {
            elector.release().await;
        }
        lost
    }));
    let leading = lead(
        &args,
        Leading {
            client,
            pools_api,
            registry,
            nodes,
            node_stream: node_stream.boxed(),
            recorder,
            metrics,
            ready,
        },
        &mut tasks,
        &shutdown,
    );
    let lost = tokio::select! {
        result = leading => {
            // The controller stopped (shutdown, its watch ended, or it could
            // not start): stop the rest, releasing the lease.
            shutdown.trigger();
            let _ = (&mut keeper.0).await;
            while tasks.join_next().await.is_some() {}
            result?;
            Lost::Stopped
        }
        // The controller future is dropped here: on shutdown its writes would
        // be fenced anyway, and a lost lease must stop it at once. A keeper
        // that panicked counts as lost.
        lost = &mut keeper.0 => lost.unwrap_or(Lost::Lost),
    };
    shutdown.trigger();
    if lost == Lost::Lost {
        tasks.abort_all();
        anyhow::bail!("lost the leader lease; exiting so that a restart comes back as a standby");
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("msp-operator stopped");
    Ok(())
}

/// A task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps `/readyz` and `msp_leader` in step with the lease holder.
async fn show_role(
    mut holder: tokio::sync::watch::Receiver<crate::leader::Holder>,
    ready: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let now = holder.borrow_and_update().clone();
        metrics.set_leader(now.me);
        ready.set_role(if now.me {
            Role::Leader
        } else {
            Role::Standby {
                leader: now.identity,
            }
        });
        tokio::select! {
            _ = &mut stop => return,
            changed = holder.changed() => if changed.is_err() { return },
        }
    }
}

/// What the leader starts from: the fenced client and the parts made while
/// standing by.
struct Leading {
    client: Client,
    pools_api: Api<MayastorPool>,
    registry: NodeRegistry,
    nodes: kube::runtime::reflector::Store<Node>,
    node_stream: futures::stream::BoxStream<'static, Result<Node, kube::runtime::watcher::Error>>,
    recorder: kube::runtime::events::Recorder,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

/// The leader's work: ledger, caches, policy, sweep and the controller,
/// until the controller stops. Built after the lease was taken, so the
/// startup grace of the context counts from becoming the leader.
async fn lead(
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
        node_stream,
        recorder,
        metrics,
        ready,
    } = parts;
    let ledger = Ledger::load(client.clone(), &args.operator_namespace)
        .await
        .context("loading the ledger")?;
    tasks.spawn(registry.clone().run(shutdown.wait()));

    // The policy: the bundled one until the ConfigMap brings another; each
    // reload wakes every pool.
    let engine = PolicyEngine::new(Limits::default()).context("loading the bundled policy")?;
    let active = engine.active();
    metrics.set_policy(&active.name, &active.version, &active.sha256);
    let (policy_changed, policy_changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let reporter = PolicyReloadReporter::new(
        metrics.clone(),
        recorder.clone(),
        &args.operator_namespace,
        &args.policy_configmap,
        policy_changed,
    );
    let watch = policy_watch::watch(
        client.clone(),
        args.operator_namespace.clone(),
        args.policy_configmap.clone(),
        args.policy_key.clone(),
        engine.clone(),
        reporter,
    );
    let stop = shutdown.wait();
    tasks.spawn(async move {
        tokio::select! { _ = stop => {} _ = watch => {} }
    });

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
        decider: Arc::new(engine),
        metrics,
    };
    let ctx = Arc::new(Context::new(parts, args.controller_settings()));

    let (p, n) = (pools.clone(), nodes.clone());
    tasks.spawn(async move {
        if wait_synced(&p).await && wait_synced(&n).await {
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
    let node_mapper = move |node: Node| pools_on(&reader, Some(&node.name_any()));
    Controller::for_stream(pool_stream, pools.clone())
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
