//! `storage-node`: a stand-in for the Mayastor io-engine, for tests and the
//! local demo. Serves the io-engine's gRPC pool API (v0 and v1) on real block
//! devices and registers with the control plane; see
//! `msp_tests::storage_node` for what it does and does not imitate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use msp_tests::storage_node::node::{NodeConfig, RunningNode};

/// A stand-in for the Mayastor io-engine (NOT the io-engine): serves the
/// v0 mayastor.Mayastor and v1 mayastor.v1.PoolRpc pool APIs on one port,
/// keeps pools on real block devices (several disks per pool allowed, unlike
/// the io-engine), and registers with the control plane every heartbeat.
#[derive(Debug, Parser)]
#[command(name = "storage-node", version)]
struct Args {
    /// Node name, sent as the registration id.
    #[arg(long, env = "MSP_NODE_NAME")]
    node_name: String,

    /// Address of the gRPC pool API (ip:port). In virtual-node mode only its
    /// port is used.
    #[arg(long, default_value = "127.0.0.1:10124")]
    grpc_endpoint: SocketAddr,

    /// Registration server to heartbeat to, e.g. http://127.0.0.1:50051 (a
    /// bare ip:port means http://).
    /// Without it the node does not register.
    #[arg(long)]
    registration_endpoint: Option<String>,

    /// Address to register instead of the listen address (needed when
    /// listening on 0.0.0.0, e.g. the pod IP in a DaemonSet).
    #[arg(long, env = "MSP_ADVERTISE_ADDRESS")]
    advertise_address: Option<IpAddr>,

    /// Seconds between registrations.
    #[arg(long, env = "MAYASTOR_HB_INTERVAL_SEC", default_value_t = 5)]
    heartbeat_secs: u64,

    /// Timeout of each registration call, in seconds.
    #[arg(long, env = "MAYASTOR_HB_TIMEOUT_SEC", default_value_t = 5)]
    heartbeat_timeout_secs: u64,

    /// Extra path prefix where disks may live besides /dev (tests only;
    /// repeatable).
    #[arg(long)]
    allow_path_prefix: Vec<PathBuf>,

    /// Do not consult libblkid (`wipefs`) in addition to the built-in signature probe.
    #[arg(long)]
    no_blkid: bool,

    /// Fault injection (tests): answer each CreatePool this many milliseconds
    /// after the pool was made, as a slow node would.
    #[arg(long, default_value_t = 0)]
    create_reply_delay_ms: u64,

    /// Append the method of every gRPC call received to this file, one a
    /// line (`/mayastor.v1.PoolRpc/ImportPool`): what tests count calls by.
    /// Not in virtual-node mode.
    #[arg(long)]
    call_log: Option<PathBuf>,

    /// Scale mode: run this many virtual nodes in this process, each on its
    /// own 127.0.x.y address with in-memory (malloc://) disks only, each
    /// registering on its own.
    #[arg(long, default_value_t = 0)]
    virtual_nodes: u32,

    /// Address of the first virtual node; the next ones count up from it.
    #[arg(long, default_value = "127.0.1.1")]
    virtual_base: Ipv4Addr,

    /// Virtual node names are this prefix followed by a number counting up
    /// from `--virtual-first-number`.
    #[arg(long, default_value = "vnode-")]
    virtual_name_prefix: String,

    /// Number in the first virtual node's name (several processes can share
    /// one naming: the second starts where the first ends).
    #[arg(long, default_value_t = 1)]
    virtual_first_number: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msp_tests::init_logging("info");
    let args = Args::parse();
    if args.heartbeat_secs == 0 {
        bail!("--heartbeat-secs must be at least 1");
    }
    let base = NodeConfig {
        node_name: args.node_name.clone(),
        listen: args.grpc_endpoint,
        registration_endpoint: args.registration_endpoint.clone(),
        advertise_address: args.advertise_address,
        heartbeat: Duration::from_secs(args.heartbeat_secs),
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_secs.max(1)),
        allowed_prefixes: std::iter::once(PathBuf::from("/dev"))
            .chain(args.allow_path_prefix.iter().cloned())
            .collect(),
        use_blkid: !args.no_blkid,
        create_reply_delay: Duration::from_millis(args.create_reply_delay_ms),
        call_log: args.call_log.clone(),
    };
    let configs = if args.virtual_nodes == 0 {
        vec![base]
    } else {
        let first = u32::from(args.virtual_base);
        (0..args.virtual_nodes)
            .map(|i| {
                let ip = Ipv4Addr::from(first.checked_add(i).context("virtual address overflow")?);
                if !ip.is_loopback() {
                    bail!("virtual node address {ip} is outside 127.0.0.0/8");
                }
                Ok(NodeConfig {
                    node_name: format!(
                        "{}{}",
                        args.virtual_name_prefix,
                        u64::from(args.virtual_first_number) + u64::from(i)
                    ),
                    listen: SocketAddr::new(IpAddr::V4(ip), args.grpc_endpoint.port()),
                    allowed_prefixes: Vec::new(),
                    advertise_address: None,
                    call_log: None,
                    ..base.clone()
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if configs.len() > 1 {
        // Each virtual node holds a listener, a registration connection and
        // the operator's connection: more than the usual 1024 descriptors.
        if !msp_tests::raise_fd_limit() {
            tracing::warn!("could not raise the open-files limit");
        }
    }
    let mut nodes = Vec::with_capacity(configs.len());
    for c in configs {
        let addr = c.listen;
        nodes.push(
            RunningNode::start(c)
                .await
                .with_context(|| format!("starting the node on {addr}"))?,
        );
    }
    if nodes.len() > 1 {
        tracing::info!(
            count = nodes.len(),
            "virtual nodes serving (in-memory disks only)"
        );
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: deregistering and stopping"),
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for SIGINT")?;
            tracing::info!("SIGINT: deregistering and stopping");
        }
    }
    let stops = nodes.into_iter().map(RunningNode::stop);
    for r in futures_join(stops).await {
        r?;
    }
    Ok(())
}

/// Stops all nodes concurrently (each deregisters on its own).
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
