//! Running the operator in tests and the demo, plus the small helpers the
//! end-to-end tests share (nodes, pools, bounded waits).
//!
//! The operator runs **in-process**: [`Operator::start`] calls the same
//! `msp_operator::lifecycle::run::run_until` the binary's `run` subcommand calls, with a
//! kube client for the test's own control plane (tests run in parallel, each
//! against its own API server, so the process-wide KUBECONFIG cannot be used)
//! and listeners on free loopback ports. Stopping it is the graceful shutdown
//! SIGTERM triggers; starting it again starts from nothing but the API server
//! (ledger, resources), exactly like a restarted process: the registry, last
//! operations and caches are rebuilt.
//!
//! [`Scene`] is the opening most end-to-end tests share: a control plane, the
//! operator ready, a labelled Node and its storage node registered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use msp_operator::lifecycle::run::{Listeners, RunArgs, run_until};
use msp_operator::lifecycle::shutdown::Shutdown;
use msp_operator::state::crd::{MayastorPool, MayastorPoolSpec, MayastorPoolStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an end-to-end test waits for one step (the operator ready, a
/// pool's state) before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Settings that make tests fast: 1 s heartbeats (set on the storage node)
/// against a 3 s deadline (the policy calls a node down past it too, so it
/// tolerates two lost heartbeats on a loaded machine), pool lists refreshed every 300 ms, a sweep every second.
pub const FAST_FLAGS: &[&str] = &[
    "--node-deadline=3s",
    "--node-sync-period=300ms",
    "--probe-timeout=500ms",
    "--rpc-timeout=20s",
    "--sweep-period=1s",
    "--resync=10s",
    "--startup-grace=3s",
];

/// The operator, running in this process until stopped or dropped.
pub struct Operator {
    registration: SocketAddr,
    metrics: SocketAddr,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Operator {
    /// Starts the operator with [`FAST_FLAGS`], then `flags` (later ones
    /// win). Unless the flags say otherwise, both listeners take free ports
    /// on 127.0.0.1.
    pub async fn start(client: Client, flags: &[&str]) -> anyhow::Result<Operator> {
        let mut all: Vec<String> = vec![
            "--registration-addr=127.0.0.1:0".into(),
            "--metrics-addr=127.0.0.1:0".into(),
            "--namespace=mayastor".into(),
            "--operator-namespace=mayastor".into(),
        ];
        all.extend(FAST_FLAGS.iter().map(|s| s.to_string()));
        // A flag given by the caller replaces the default one.
        let name = |f: &str| f.split('=').next().unwrap_or(f).to_string();
        all.retain(|d| flags.iter().all(|f| name(f) != name(d)));
        all.extend(flags.iter().map(|s| s.to_string()));
        msp_operator::lifecycle::telemetry::init(
            msp_operator::lifecycle::telemetry::LogFormat::Text,
        );
        let args = RunArgs::from_flags(all)?;
        let listeners = Listeners::bind(&args).await?;
        let registration = listeners.registration_addr()?;
        let metrics = listeners.metrics_addr()?;
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run_until(args, client, listeners, shutdown.clone()));
        Ok(Operator {
            registration,
            metrics,
            shutdown,
            task: Some(task),
        })
    }

    /// Where storage nodes register: `http://127.0.0.1:PORT`.
    pub fn registration_endpoint(&self) -> String {
        format!("http://{}", self.registration)
    }

    /// The registration address (to start the operator again on the same port).
    pub fn registration_addr(&self) -> SocketAddr {
        self.registration
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// Graceful shutdown, as on SIGTERM; returns the operator's own result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .map_err(|_| anyhow::anyhow!("operator did not stop within 30 s"))??,
            None => Ok(()),
        }
    }

    /// GET `path` on the operations endpoint: (status code, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.metrics, path).await
    }

    /// The value of one series (`name` or `name{labels}`, as exposed) on
    /// `/metrics`; `None` when absent.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics").await.ok()?;
        metric_value(&body, series)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let waited = wait_for("operator /readyz", timeout, || async {
            matches!(self.http_get("/readyz").await, Ok((200, _)))
                || self.task.as_ref().is_none_or(|t| t.is_finished())
        })
        .await;
        if self.task.as_ref().is_some_and(|t| t.is_finished())
            && let Some(task) = self.task.take()
        {
            task.await??;
            anyhow::bail!("operator stopped by itself");
        }
        waited
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The value of `series` (`name` or `name{labels}`, exactly as exposed) in a
/// Prometheus text exposition.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal HTTP/1.0 GET (the operations endpoint is plain HTTP).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `check` every 50 ms until it is true, or fails after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a Node object (no kubelet runs: it is only a record), labelled
/// `openebs.io/engine=mayastor` when `mayastor` is true.
pub async fn create_node(client: &Client, name: &str, mayastor: bool) -> anyhow::Result<()> {
    create_node_at(client, name, mayastor, "127.0.0.1").await
}

/// Creates Node `name` with `address` as its InternalIP: the address its
/// storage node advertises, which the operator's registration check requires.
pub async fn create_node_at(
    client: &Client,
    name: &str,
    mayastor: bool,
    address: &str,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = std::collections::BTreeMap::new();
    if mayastor {
        labels.insert("openebs.io/engine".to_string(), "mayastor".to_string());
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &node).await?;
    // Status is a subresource: written after the create, as a kubelet does.
    let status = serde_json::json!({
        "status": {"addresses": [{"type": "InternalIP", "address": address}]}
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Labels node `name` with `openebs.io/engine=mayastor`.
pub async fn label_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {"openebs.io/engine": "mayastor"}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Creates MayastorPool `name` in namespace mayastor.
pub async fn create_pool(
    client: &Client,
    name: &str,
    node: &str,
    disks: &[String],
) -> anyhow::Result<MayastorPool> {
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), "mayastor");
    let pool = MayastorPool::new(
        name,
        MayastorPoolSpec {
            node: node.into(),
            disks: disks.to_vec(),
        },
    );
    Ok(api.create(&PostParams::default(), &pool).await?)
}

/// The pool's status now (default when none yet).
pub async fn pool_status(client: &Client, name: &str) -> anyhow::Result<MayastorPoolStatus> {
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), "mayastor");
    Ok(api.get(name).await?.status.unwrap_or_default())
}

/// Waits until pool `name`'s status satisfies `pred`; the error shows the last status.
/// True when `status` says online.
pub fn online(status: &MayastorPoolStatus) -> bool {
    status.state == Some(msp_operator::state::crd::PoolState::Online)
}

pub async fn wait_pool(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&MayastorPoolStatus) -> bool,
) -> anyhow::Result<MayastorPoolStatus> {
    let api: Api<MayastorPool> = Api::namespaced(client.clone(), "mayastor");
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(pool) = api.get(name).await {
            let status = pool.status.unwrap_or_default();
            if pred(&status) {
                return Ok(status);
            }
            last = Some(status);
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "pool {name}: timed out after {timeout:?} waiting for {what}; last status: {last:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A control plane with the CRD and namespace `mayastor`, and its admin client.
pub async fn start_cluster() -> anyhow::Result<(crate::control_plane::ControlPlane, Client)> {
    let cp = crate::control_plane::ControlPlane::start().await?;
    cp.apply_crd().await?;
    let admin = cp.client().await?;
    ensure_namespace(&admin, "mayastor").await?;
    Ok((cp, admin))
}

/// Applies the shipped CRD with its disk pattern widened to also admit the
/// stand-in's in-memory disks, `malloc:///NAME?size_mb=N` (still one regex
/// per disk), for tests and benchmarks of many pools; nothing else differs.
pub async fn apply_crd_admitting_malloc(
    cp: &crate::control_plane::ControlPlane,
) -> anyhow::Result<()> {
    use msp_operator::state::crd::DISK_PATH_PATTERN;
    let shipped = std::fs::read_to_string(crate::control_plane::CRD_MANIFEST)?;
    let line = format!("pattern: {DISK_PATH_PATTERN}");
    anyhow::ensure!(
        shipped.matches(&line).count() == 1,
        "the CRD no longer has one `{line}`: update apply_crd_admitting_malloc"
    );
    let widened = format!(
        "pattern: '^({}|malloc:///[a-z0-9-]+[?]size_mb=[0-9]+)$'",
        DISK_PATH_PATTERN
            .trim_start_matches('^')
            .trim_end_matches('$')
    );
    let path = cp.dir().join("crd-admitting-malloc.yaml");
    std::fs::write(&path, shipped.replace(&line, &widened))?;
    cp.apply_crd_from(&path).await?;
    Ok(())
}

/// Starts the storage-node binary for `node`, heartbeating every second to
/// `registration` (an operator's [`Operator::registration_endpoint`]).
pub fn start_storage_node(
    binary: &str,
    node: &str,
    registration: &str,
) -> Result<
    crate::storage_node::process::StorageNodeProcess,
    crate::storage_node::process::ProcessError,
> {
    let mut options = crate::storage_node::process::StorageNodeOptions::new(node);
    options.registration_endpoint = Some(registration.to_string());
    options.heartbeat_secs = 1;
    crate::storage_node::process::StorageNodeProcess::start(binary, options)
}

/// The opening scene of an end-to-end test: a control plane, the operator
/// ready, Node `node` labelled `openebs.io/engine=mayastor`, and a storage
/// node for it heartbeating to the operator.
///
/// The fields are public so that a test can stop or restart one piece: move
/// it out (`scene.op.stop().await?`) and, if needed, put a new one back
/// (`scene.op = Operator::start(..).await?`). Keep the scene in one variable
/// rather than destructuring it: its fields drop in declaration order (the
/// storage node, the operator, then the control plane it talks to), while
/// destructured bindings would drop in reverse order of the pattern.
pub struct Scene {
    /// The storage node of `node`.
    pub sn: crate::storage_node::process::StorageNodeProcess,
    /// The operator, ready.
    pub op: Operator,
    /// A client with every right (the test's own, not the operator's).
    pub admin: Client,
    /// The control plane.
    pub cp: crate::control_plane::ControlPlane,
}

impl Scene {
    /// The scene on a new cluster ([`start_cluster`]), the operator running
    /// as admin with [`FAST_FLAGS`]; `storage_node_bin` is the test's
    /// `env!("CARGO_BIN_EXE_storage-node")`.
    pub async fn start(storage_node_bin: &str, node: &str) -> anyhow::Result<Scene> {
        // The operator gets the cluster's first admin client; the scene makes its own.
        let (cp, operator_client) = start_cluster().await?;
        Scene::start_on(cp, operator_client, storage_node_bin, node).await
    }

    /// The scene on a control plane the test has prepared (the CRD and
    /// namespace `mayastor` in place, RBAC applied, ...), the operator using
    /// `operator_client` (e.g. a ServiceAccount's).
    pub async fn start_on(
        cp: crate::control_plane::ControlPlane,
        operator_client: Client,
        storage_node_bin: &str,
        node: &str,
    ) -> anyhow::Result<Scene> {
        let admin = cp.client().await?;
        let mut op = Operator::start(operator_client, &[]).await?;
        op.wait_ready(WAIT).await?;
        create_node(&admin, node, true).await?;
        let sn = start_storage_node(storage_node_bin, node, &op.registration_endpoint())?;
        Ok(Scene { sn, op, admin, cp })
    }
}

/// An operator started again, ready, on `registration` (the registration
/// address of the one stopped, so that the storage node's heartbeats reach
/// it), with the production startup grace (10 s: the node's next 1 s
/// heartbeat lands inside it even on a loaded machine).
pub async fn operator_again(client: &Client, registration: SocketAddr) -> anyhow::Result<Operator> {
    let reg = format!("--registration-addr={registration}");
    let mut op = Operator::start(client.clone(), &[&reg, "--startup-grace=10s"]).await?;
    op.wait_ready(WAIT).await?;
    Ok(op)
}

/// The pools the storage node at `endpoint` has loaded (v1 ListPools), by name.
pub async fn node_pools(endpoint: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut client =
        msp_proto::v1::pool_rpc_client::PoolRpcClient::connect(format!("http://{endpoint}"))
            .await?;
    let reply = client
        .list_pools(msp_proto::v1::ListPoolOptions::default())
        .await?
        .into_inner();
    Ok(reply.pools.into_iter().map(|p| p.name).collect())
}

/// Reasons of the events recorded about pool `name`, oldest first.
pub async fn pool_event_reasons(client: &Client, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(pool_events(client, name)
        .await?
        .into_iter()
        .map(|(reason, _)| reason)
        .collect())
}

/// (reason, note) of each Event about pool `name`, oldest first.
pub async fn pool_events(client: &Client, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "mayastor");
    let mut events: Vec<_> = api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(events
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// Waits until an Event with `reason` about pool `name` is stored. The
/// operator writes the status first and publishes the event after it, so a
/// test that has seen the status must wait for the event, not look once.
pub async fn wait_event(client: &Client, name: &str, reason: &str) -> anyhow::Result<()> {
    let what = format!("a {reason} event about {name}");
    let waited = wait_for(&what, WAIT, || async {
        pool_event_reasons(client, name)
            .await
            .is_ok_and(|reasons| reasons.iter().any(|r| r == reason))
    })
    .await;
    if let Err(e) = waited {
        let seen = pool_event_reasons(client, name).await.unwrap_or_default();
        return Err(e.context(format!("events seen: {seen:?}")));
    }
    Ok(())
}

/// Pool names recorded in the ledger ConfigMap of `node` (empty when it has none).
pub async fn ledger_pools(client: &Client, node: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "mayastor");
    Ok(api
        .get_opt(&msp_operator::state::ledger::configmap_name(node))
        .await?
        .and_then(|cm| cm.data)
        .map(|d| d.into_keys().collect())
        .unwrap_or_default())
}

/// The operator's JSON log lines (`--log-format=json`); an error names the
/// first text that is not JSON.
pub fn json_log_lines(logs: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    logs.lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a log line is not JSON ({e}):\n{logs}"))
}

/// Whether one of `lines` was logged in the reconcile span of pool `pool`.
pub fn in_reconcile_span(lines: &[serde_json::Value], pool: &str) -> bool {
    lines.iter().any(|l| {
        l["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["name"] == "reconcile" && s["pool"] == pool)
        })
    })
}

/// kubectl as admin with `args` and `input` on standard input; its stdout.
pub fn kubectl_stdin(
    cp: &crate::control_plane::ControlPlane,
    args: &[&str],
    input: &str,
) -> anyhow::Result<String> {
    use std::io::Write;
    let mut kubectl = cp.kubectl();
    kubectl
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = kubectl.spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("kubectl has no stdin"))?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
