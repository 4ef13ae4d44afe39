//! `msp-operator run`: wiring only. As a standby: the probes, the
//! Registration server, the Node cache and the election; once the lease is
//! ours, [`leading::lead`] starts the leader's work; on shutdown or a lost
//! lease, everything stops.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::lifecycle::election::{Elector, Lost};
use crate::lifecycle::fence::Fence;
use crate::lifecycle::http::{Readiness, Role};
use crate::lifecycle::leading::{self, Leading};
use crate::lifecycle::shutdown::Shutdown;
use crate::lifecycle::{fence, http};
use crate::metrics::Metrics;
use crate::nodes::registry;
use crate::nodes::registry::NodeRegistry;
use crate::nodes::registry::admission::Admission;
use crate::nodes::registry::service::{Gate, Leadership, RegistrationService};
use crate::state::cache;
use crate::state::crd::MayastorPool;
use crate::state::events;

pub use crate::lifecycle::flags::RunArgs;

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
            metrics: http::bind(args.metrics_addr)
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
    crate::lifecycle::telemetry::init(args.log_format);
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
        if let Err(err) = http::serve(listeners.metrics, m, r, stop).await {
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
    let admission = Admission::new(nodes.clone(), args.admission_settings());
    let gate = Gate {
        admission: admission.clone(),
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
    let leading = leading::lead(
        &args,
        Leading {
            client,
            pools_api,
            registry,
            nodes,
            admission,
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
    mut holder: tokio::sync::watch::Receiver<crate::lifecycle::election::Holder>,
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
