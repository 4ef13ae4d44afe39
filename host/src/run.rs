//! `msp-operator run`: wires the parts together: the watches (MayastorPools,
//! Nodes), the node registry and its Registration server, the controller, the
//! deletion sweeper, the operations endpoint, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::controller::{Context, ControllerSettings, Decider, error_policy, reconcile};
use crate::crd::MayastorPool;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::controller::observe::effective_node;
use crate::policy::configmap::{ReloadOutcome, watch as policy_watch};
use crate::policy::{Limits, PolicyEngine};
use crate::registry::{NodeChange, NodeRegistry, RegistrySettings};
use crate::shutdown::Shutdown;
use crate::telemetry::LogFormat;
use crate::controller::sweep;
use crate::{health, registry};

/// Parses a duration: `500ms`, `10s`, `2m`, or a number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Flags of `msp-operator run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Namespace whose MayastorPools are managed.
    #[arg(long, env = "MSP_NAMESPACE", default_value = "mayastor")]
    pub namespace: String,
    /// The operator's own namespace (ledger ConfigMaps, policy ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mayastor")]
    pub operator_namespace: String,
    /// Address of the v1 Registration gRPC service storage nodes call.
    #[arg(long, alias = "registration-listen", default_value = "0.0.0.0:50051")]
    pub registration_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, alias = "http-listen", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Heartbeats older than this start a probe; a failed probe makes the node offline.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub node_deadline: Duration,
    /// How often each node's pool list is refreshed.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub node_sync_period: Duration,
    /// Deadline of a ListPools probe.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub probe_timeout: Duration,
    /// Deadline of CreatePool, ImportPool and DestroyPool.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub rpc_timeout: Duration,
    /// How often the ledger is swept for pools of deleted resources (deletions
    /// seen by the watch are swept at once).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub sweep_period: Duration,
    /// Requeue of a pool when nothing asks for an earlier look.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub resync: Duration,
    /// After a start, how long a created pool whose node has not registered
    /// yet keeps its status (nodes re-register within a heartbeat).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub startup_grace: Duration,
    /// Reconciles run at once (0: unbounded).
    #[arg(long, default_value_t = 0)]
    pub concurrency: u16,
    /// ConfigMap (in the operator namespace) holding a custom policy.
    #[arg(long, default_value = "msp-policy")]
    pub policy_configmap: String,
    /// Key of the policy module in that ConfigMap.
    #[arg(long, default_value = "policy.wasm")]
    pub policy_key: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The defaults, with `flags` as on the command line (for tests and the demo).
    pub fn from_flags<I, T>(flags: I) -> Result<RunArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("run"))
            .chain(flags.into_iter().map(Into::into));
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
    }
}

/// Waits until `store` has its first complete list. `Store::wait_until_ready`
/// wakes only the last of several concurrent waiters (one shared oneshot
/// receiver), so each waiter here looks again every 50 ms.
pub async fn wait_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(50), store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_) => continue,
        }
    }
}

/// The pools whose (cached or spec) node is `node`; all pools when `None`.
pub fn pools_on(store: &Store<MayastorPool>, node: Option<&str>) -> Vec<ObjectRef<MayastorPool>> {
    store
        .state()
        .iter()
        .filter(|p| node.is_none_or(|n| effective_node(p) == n))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The pools a registry change matters to.
pub fn pools_for(store: &Store<MayastorPool>, change: &NodeChange) -> Vec<ObjectRef<MayastorPool>> {
    match &change.pools {
        None => pools_on(store, Some(&change.node)),
        Some(names) => store
            .state()
            .iter()
            .filter(|p| {
                effective_node(p) == change.node && names.iter().any(|n| *n == p.name_any())
            })
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect(),
    }
}

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

/// Runs until `shutdown` is triggered.
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
    let ledger = Arc::new(
        Ledger::load(client.clone(), &args.operator_namespace)
            .await
            .context("loading the ledger")?,
    );
    let registry = NodeRegistry::new(RegistrySettings {
        deadline: args.node_deadline,
        sync_period: args.node_sync_period,
        probe_timeout: args.probe_timeout,
        rpc_timeout: args.rpc_timeout,
        connect_timeout: args.probe_timeout,
    });
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));

    let Listeners {
        registration: registration_listener,
        metrics: health_listener,
    } = listeners;
    tracing::info!(
        registration = %registration_listener.local_addr()?,
        metrics = %health_listener.local_addr()?,
        namespace = %args.namespace,
        "msp-operator starting"
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let (metrics, ready, stop) = (metrics.clone(), ready.clone(), shutdown.wait());
        async move {
            if let Err(err) = health::serve(health_listener, metrics, ready, stop).await {
                tracing::error!(error = %err, "metrics endpoint failed");
            }
        }
    });
    tasks.spawn({
        let (registry, stop) = (registry.clone(), shutdown.wait());
        async move {
            if let Err(err) = registry::service::serve(registration_listener, registry, stop).await {
                tracing::error!(error = %err, "registration server failed");
            }
        }
    });
    tasks.spawn(registry.clone().run(shutdown.wait()));

    let engine = PolicyEngine::new(Limits::default()).context("loading the bundled policy")?;
    let decider: Arc<dyn Decider> = Arc::new(engine.clone());
    // The info metric follows the active policy: set here, and by the
    // ConfigMap watch's reporter on each swap.
    let active = engine.active();
    metrics.set_policy(&active.name, &active.version, &active.sha256);

    // The policy ConfigMap: each outcome is logged, counted, a Warning event
    // when refused, and every pool is looked at again under the new policy.
    let (policy_changed_tx, policy_changed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tasks.spawn({
        let (client, namespace) = (client.clone(), args.operator_namespace.clone());
        let (name, key) = (args.policy_configmap.clone(), args.policy_key.clone());
        let (metrics, stop) = (metrics.clone(), shutdown.wait());
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "msp-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            ..Default::default()
        };
        let reporter = move |outcome: &ReloadOutcome| {
            let (label, warning, note) = match outcome {
                ReloadOutcome::Loaded(active) => (
                    "loaded",
                    false,
                    format!(
                        "policy {}@{} ({}) loaded",
                        active.name, active.version, active.sha256
                    ),
                ),
                ReloadOutcome::Refused { error, kept } => (
                    "refused",
                    true,
                    format!(
                        "policy module refused, {}@{} keeps deciding: {error}",
                        kept.name, kept.version
                    ),
                ),
                ReloadOutcome::Bundled { active, why } => (
                    "bundled",
                    false,
                    format!(
                        "{why}: bundled policy {}@{} decides",
                        active.name, active.version
                    ),
                ),
            };
            if warning {
                tracing::warn!(%note, "policy reload");
            } else {
                tracing::info!(%note, "policy reload");
            }
            metrics.policy_reload(label);
            if let ReloadOutcome::Loaded(active) | ReloadOutcome::Bundled { active, .. } = outcome {
                metrics.set_policy(&active.name, &active.version, &active.sha256);
            }
            let _ = policy_changed_tx.send(());
            if label == "bundled" {
                // No module (or none any more): nothing about the ConfigMap to tell.
                return;
            }
            let (recorder, reference) = (recorder.clone(), reference.clone());
            tokio::spawn(async move {
                let event = kube::runtime::events::Event {
                    type_: if warning {
                        kube::runtime::events::EventType::Warning
                    } else {
                        kube::runtime::events::EventType::Normal
                    },
                    reason: if warning {
                        "PolicyRefused".into()
                    } else {
                        "PolicyLoaded".into()
                    },
                    note: Some(crate::controller::report::truncate(&note, 1024)),
                    action: "LoadPolicy".into(),
                    secondary: None,
                };
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %err, "publishing a policy event failed");
                }
            });
        };
        let watch = policy_watch(client, namespace, name, key, engine.clone(), reporter);
        async move {
            tokio::select! {
                _ = stop => {}
                _ = watch => {}
            }
        }
    });
    let policy_triggers = stream::unfold(policy_changed_rx, |mut rx| async move {
        rx.recv().await.map(|()| ((), rx))
    });

    // One watch of MayastorPools feeds the cache, the controller and the
    // sweeper (woken on each deletion).
    let (pool_reader, pool_writer) = reflector::store();
    let sweep_wake = Arc::new(Notify::new());
    let pool_stream = {
        let (wake, metrics) = (sweep_wake.clone(), metrics.clone());
        watcher(pools_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(pool_writer)
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(pool)) = event {
                    metrics.forget_pool(&pool.namespace().unwrap_or_default(), &pool.name_any());
                    wake.notify_one();
                }
            })
            .applied_objects()
    };
    let (node_reader, node_writer) = reflector::store();
    let node_stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "msp-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            pool_reader.clone(),
            node_reader.clone(),
            registry.clone(),
            ledger,
            decider,
            recorder,
            metrics.clone(),
            ControllerSettings {
                resync: args.resync,
                ..Default::default()
            },
        )
        .with_startup_grace(Instant::now(), args.startup_grace),
    );

    // A registry change (register, deregister, deadline, new pool list)
    // wakes the pools of that node; a lagged receiver wakes all pools.
    let node_triggers = {
        let reader = pool_reader.clone();
        stream::unfold(registry.subscribe(), move |mut rx| {
            let reader = reader.clone();
            async move {
                use tokio::sync::broadcast::error::RecvError;
                match rx.recv().await {
                    Ok(change) => Some((pools_for(&reader, &change), rx)),
                    Err(RecvError::Lagged(_)) => Some((pools_on(&reader, None), rx)),
                    Err(RecvError::Closed) => None,
                }
            }
        })
        .flat_map(stream::iter)
    };

    tasks.spawn({
        let (pools, nodes, ready) = (pool_reader.clone(), node_reader.clone(), ready.clone());
        async move {
            if wait_synced(&pools).await && wait_synced(&nodes).await {
                ready.store(true, Ordering::Release);
                tracing::info!("caches synced: ready");
            }
        }
    });
    tasks.spawn(sweep::run(
        ctx.clone(),
        sweep_wake,
        args.sweep_period,
        shutdown.wait(),
    ));

    let node_mapper = {
        let reader = pool_reader.clone();
        move |node: Node| pools_on(&reader, Some(&node.name_any()))
    };
    Controller::for_stream(pool_stream, pool_reader)
        .watches_stream(node_stream, node_mapper)
        .reconcile_on(node_triggers)
        .reconcile_all_on(policy_triggers)
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(shutdown.wait())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller event");
            }
        })
        .await;

    // The controller stopped (shutdown, or its watch ended): stop the rest.
    shutdown.trigger();
    while tasks.join_next().await.is_some() {}
    tracing::info!("msp-operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
