//! The operator in a real single-node Kubernetes (`msp_tests::cluster`),
//! installed from `deploy/` the way a user installs it, driving the real
//! Mayastor io-engine running as the DaemonSet pod of the `io-engine` overlay
//! (hugepages, `/dev`, `/run/udev`), exercised with the real kubectl and loop
//! devices attached on the host.
//!
//! Starting a cluster costs about half a minute, so the engine's scenarios
//! run in order in one test against one cluster, each leaving the cluster as
//! it found it (the operator installed, no pools of its own).
//!
//! On the engine: the seed's lifecycle (the pool gone from the engine, asked
//! over gRPC), an ext4 disk left alone, the operator's logs and metrics, the
//! leader pod deleted, a rollout restart under churn, the engine pod deleted
//! (offline, re-registered, imported, data intact), the custom-policy overlay.
//! Last, the io-engine DaemonSet removed and the `stand-in` overlay
//! installed: the one thing no engine scenario can show is that this overlay,
//! which `tests/demo.sh --cluster --stand-in` installs, runs and serves the
//! seed's lifecycle.
//!
//! A leader frozen (SIGSTOP) while it holds the engine's registration
//! connection, in a cluster of its own: the node's pools stay online, a new
//! one comes online under the standby that took over, and the resumed leader
//! steps down without a write.
//!
//! A third test, in a cluster of its own: docs/uninstall.md's keep-data
//! commands, run as written, keep the pools on their disks; then the Helm
//! chart with the real helm (`tests/helm/build.sh`): install, the seed's
//! lifecycle, an upgrade with five pools online that writes nothing,
//! rollback, uninstall that leaves pools, resources and CRD.
//!
//! ```sh
//! tests/io-engine/build.sh            # the io-engine binary (setup.sh does it)
//! cargo build -p msp-operator --bin msp-operator
//! cargo test -p msp-tests --test cluster -- --nocapture   # as root
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use msp_operator::state::crd::PoolState;
use msp_tests::cluster::{Binaries, Cluster, INSTALL_NAMESPACE as NS, NODE_IP, relative_path};
use msp_tests::control_plane::run;
use msp_tests::io_engine::{host, require_io_engine};
use msp_tests::loopdev::pattern;
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{node_pools, pool_status, wait_for, wait_pool};

/// A pod starting, a pool reaching a state: the cluster is slower than the
/// in-process tests (images, probes, DNS).
const WAIT: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// The seed example's pool manifest with its disk replaced by `disk`.
fn seed_pool_on(disk: &str) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(repo("deploy/overlays/seed-example/pool.yaml"))?;
    anyhow::ensure!(
        manifest.contains("/dev/loop0"),
        "the seed example no longer uses /dev/loop0"
    );
    Ok(manifest.replace("/dev/loop0", disk))
}

/// `kubectl apply -f -` of `manifest`.
async fn kubectl_apply(cluster: &Cluster, manifest: &str) -> anyhow::Result<()> {
    static APPLIED: AtomicUsize = AtomicUsize::new(0);
    let n = APPLIED.fetch_add(1, Ordering::Relaxed);
    let path = cluster.dir().join(format!("manifest-{n}.yaml"));
    std::fs::write(&path, manifest)?;
    cluster
        .kubectl_ok(|k| {
            k.args(["apply", "-f"]).arg(&path);
        })
        .await?;
    Ok(())
}

/// `kubectl -n mayastor get msp NAME -o jsonpath=...`.
async fn msp_field(cluster: &Cluster, name: &str, path: &str) -> Option<String> {
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "msp", name, "-o"])
                .arg(format!("jsonpath={path}"));
        })
        .await
        .ok()
}

/// The storage node's gRPC endpoint (hostNetwork, on the node's address),
/// forwarded to a loopback port of this process: the engine asked directly.
struct NodeApi {
    forward: msp_tests::cluster::Forward,
}

impl NodeApi {
    fn new(cluster: &Cluster) -> anyhow::Result<NodeApi> {
        let target = SocketAddr::new(NODE_IP.parse()?, 10124);
        Ok(NodeApi {
            forward: cluster.forward(target)?,
        })
    }

    async fn pools(&self) -> anyhow::Result<Vec<String>> {
        node_pools(self.forward.local()).await
    }
}

/// The binaries of a cluster with the io-engine, or None when one is
/// missing (which fails the test under CI, saying which).
async fn cluster_binaries() -> Option<Binaries> {
    if !require_loop_devices() || !require_io_engine() {
        return None;
    }
    let operator = msp_tests::replicas::operator_binary();
    if !msp_tests::require(
        "the msp-operator binary (cargo build -p msp-operator)",
        operator.is_some(),
    ) || !msp_tests::require(
        "the cluster's node components (tests/cluster/build.sh)",
        Cluster::binaries_available().await,
    ) {
        return None;
    }
    Some(Binaries {
        operator: operator.unwrap_or_default(),
        storage_node: PathBuf::from(env!("CARGO_BIN_EXE_storage-node")),
        io_engine: Some(msp_tests::io_engine::binary()),
    })
}

#[tokio::test(flavor = "current_thread")]
async fn operator_and_io_engine_as_pods_installed_from_deploy() -> anyhow::Result<()> {
    let Some(binaries) = cluster_binaries().await else {
        return Ok(());
    };

    let started = Instant::now();
    let cluster = Cluster::start(&binaries).await?;
    eprintln!(
        "cluster: started in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    install_engine_overlay(&cluster).await?;
    let node = NodeApi::new(&cluster)?;

    let scenarios = async {
        seed_lifecycle(&cluster, &node).await?;
        disk_holding_ext4_stays_pending(&cluster, &node).await?;
        logs_are_json_with_the_pool_name(&cluster).await?;
        metrics_through_the_service_from_a_pod(&cluster).await?;
        operator_pod_replaced(&cluster, &node).await?;
        operator_rollout_restart_under_churn(&cluster, &node).await?;
        io_engine_pod_replaced(&cluster, &node).await?;
        custom_policy_overlay_retains(&cluster, &node).await?;
        stand_in_overlay_serves_the_seed(&cluster, &node).await
    };
    if let Err(err) = scenarios.await {
        eprintln!("{}", diagnosis(&cluster).await);
        return Err(err);
    }

    cluster.stop()?;
    Ok(())
}

/// A leader frozen (SIGSTOP, not killed) in a cluster of its own: the
/// engine's heartbeats stay on the frozen pod's connection, yet the pools
/// of the healthy node stay online and a new resource comes online under
/// the standby that took over; resumed, the old leader steps down without
/// a write.
#[tokio::test(flavor = "current_thread")]
async fn a_frozen_leader_keeps_the_nodes_pools_online() -> anyhow::Result<()> {
    let Some(binaries) = cluster_binaries().await else {
        return Ok(());
    };
    let started = Instant::now();
    let cluster = Cluster::start(&binaries).await?;
    eprintln!(
        "cluster: started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let scenario = async {
        install_engine_overlay(&cluster).await?;
        let node = NodeApi::new(&cluster)?;
        frozen_leader_keeps_pools_online(&cluster, &node).await
    };
    if let Err(err) = scenario.await {
        eprintln!("{}", diagnosis(&cluster).await);
        return Err(err);
    }
    cluster.stop()?;
    Ok(())
}

/// `kubectl apply -k deploy/overlays/io-engine`, until the engine registered.
async fn install_engine_overlay(cluster: &Cluster) -> anyhow::Result<()> {
    let applied = Instant::now();
    cluster.install(&repo("deploy/overlays/io-engine")).await?;
    wait_for("the io-engine registered", WAIT, || async {
        match leader_pod(cluster, None).await {
            Ok(leader) => registrations(cluster, &leader).await > 0,
            Err(_) => false,
        }
    })
    .await?;
    eprintln!(
        "cluster: kubectl apply -k deploy/overlays/io-engine -> io-engine registered in {:.1}s",
        applied.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The host pid of the operator process of pod `pod` (the container's
/// environment names its pod: `POD_NAME`, from the downward API).
fn operator_pid(pod: &str) -> anyhow::Result<i32> {
    let wanted = format!("POD_NAME={pod}");
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "msp-operator" {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("no msp-operator process of pod {pod} found in /proc")
}

/// A process stopped with SIGSTOP, continued when dropped (a failing test
/// must not leave it frozen).
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> anyhow::Result<Frozen> {
        // SAFETY: kill(2) with a pid and a signal; no memory is shared.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            anyhow::bail!("SIGSTOP {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// How long the leader stays frozen: past the lease (15 s), the takeover,
/// the new leader's startup grace (10 s) and the heartbeat deadline (10 s).
const FREEZE: Duration = Duration::from_secs(35);

/// How soon a resource created under the new leader is online.
const CREATE_IN: Duration = Duration::from_secs(10);

/// The leader's process stopped for [`FREEZE`]: the standby takes over
/// while the engine's heartbeats still go to the frozen pod over their
/// established connection. An online pool never leaves online, a resource
/// created after the takeover comes online within [`CREATE_IN`], before
/// the old leader resumes;
/// resumed, the old leader loses the lease (its container restarts) and
/// neither pool's status is written by it.
async fn frozen_leader_keeps_pools_online(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    // The kubelet kills a process that misses three liveness probes (30 s):
    // a frozen leader killed is the pod deletion above; this one is to
    // resume, so the probe here waits six.
    let rolled = Instant::now();
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "patch", "deployment", "msp-operator", "--type=json", "-p"])
                .arg(r#"[{"op":"replace","path":"/spec/template/spec/containers/0/livenessProbe/failureThreshold","value":6}]"#);
        })
        .await?;
    cluster
        .kubectl_ok(|k| {
            k.args([
                "-n",
                NS,
                "rollout",
                "status",
                "deployment/msp-operator",
                "--timeout=180s",
            ]);
        })
        .await?;
    eprintln!(
        "cluster: liveness threshold 6 rolled out in {:.1}s",
        rolled.elapsed().as_secs_f64()
    );
    let (disk, new_disk) = (LoopDevice::create(64 * MIB)?, LoopDevice::create(64 * MIB)?);
    create_online(cluster, &admin, "survives-freeze", &disk).await?;
    // Both replicas ready: the standby knows the leader.
    wait_for("two ready operator pods", WAIT, || async {
        let pods = pods(cluster, "msp-operator").await;
        pods.len() == 2 && pods.iter().all(|(_, ready)| *ready)
    })
    .await?;
    let old = engine_on_the_leader(cluster).await?;
    let restarts_before = restarts(cluster, &old).await;
    let frozen = Frozen::new(operator_pid(&old)?)?;
    let t0 = Instant::now();
    let mut took_over = None;
    let mut created = None;
    let mut new_online = None;
    let mut states = Vec::new();
    while t0.elapsed() < FREEZE {
        let state = pool_status(&admin, "survives-freeze").await?.state;
        if states.last().is_none_or(|(_, s)| *s != state) {
            states.push((t0.elapsed().as_secs_f64(), state));
        }
        if took_over.is_none() && lease_holder(cluster).await.is_some_and(|h| h != old) {
            took_over = Some(t0.elapsed());
            kubectl_apply(
                cluster,
                &pool_manifest("created-frozen", &new_disk.path_str()),
            )
            .await?;
            created = Some(t0.elapsed());
        }
        if created.is_some() && new_online.is_none() {
            let status = pool_status(&admin, "created-frozen").await?;
            if status.state == Some(PoolState::Online) {
                new_online = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let version = |name: &'static str| msp_field(cluster, name, "{.metadata.resourceVersion}");
    let (before_resume, new_before_resume) = (
        version("survives-freeze").await,
        version("created-frozen").await,
    );
    drop(frozen);
    let resumed = Instant::now();
    eprintln!(
        "cluster: leader {old} frozen {:.0}s: the standby led after {:?}; the online pool was {states:?} (s, state); a resource created at {:?} online at {:?}",
        FREEZE.as_secs_f64(),
        took_over.map(|d| d.as_secs_f64()),
        created.map(|d| d.as_secs_f64()),
        new_online.map(|d| d.as_secs_f64()),
    );
    anyhow::ensure!(took_over.is_some(), "the standby never took the lease");
    anyhow::ensure!(
        states.iter().all(|(_, s)| *s == Some(PoolState::Online)),
        "the online pool of a healthy node left online during the freeze: {states:?}"
    );
    // Within a create's time, not whenever the engine's own HTTP/2
    // keepalive gives up on the frozen pod (about 20 s after the takeover).
    let pending = new_online
        .zip(created)
        .map(|(online, created)| online - created);
    anyhow::ensure!(
        pending.is_some_and(|p| p < CREATE_IN),
        "the resource created after the takeover was not online within {CREATE_IN:?} (pending {pending:?}) while the old leader was frozen"
    );
    // Resumed, the old leader finds its lease gone and exits; its container
    // restarts as a standby.
    wait_for("the resumed leader's container restarted", WAIT, || async {
        restarts(cluster, &old).await > restarts_before
    })
    .await?;
    let new = lease_holder(cluster).await.unwrap_or_default();
    anyhow::ensure!(new != old, "the resumed replica holds the lease again");
    wait_for("two ready operator pods again", WAIT, || async {
        let pods = pods(cluster, "msp-operator").await;
        pods.len() == 2 && pods.iter().all(|(_, ready)| *ready)
    })
    .await?;
    // Nothing written since the resume: the resumed replica's writes (had
    // it sent any) would show as new versions of the pools.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        version("survives-freeze").await,
        before_resume,
        "the online pool was written after the resume"
    );
    assert_eq!(
        version("created-frozen").await,
        new_before_resume,
        "the new pool was written after the resume"
    );
    eprintln!(
        "cluster: resumed, {old} restarted as standby in {:.1}s; {new} leads; no write after the resume",
        resumed.elapsed().as_secs_f64()
    );
    delete_pool(cluster, node, "created-frozen").await?;
    delete_pool(cluster, node, "survives-freeze").await
}

/// The leader pod, once the engine's registration connection is on it
/// (the scenario is the leader holding it): while it is on the standby, the
/// leader pod is deleted, so that the standby, with the connection, leads.
async fn engine_on_the_leader(cluster: &Cluster) -> anyhow::Result<String> {
    for _ in 0..3 {
        let leader = leader_pod(cluster, None).await?;
        let standby_ips: Vec<Ipv4Addr> = pod_ips(cluster)
            .await
            .into_iter()
            .filter(|(pod, _)| *pod != leader)
            .map(|(_, ip)| ip)
            .collect();
        // Established on the Registration port from other than the standby
        // (whose forwards would come from its own address): the engine.
        let peers = registration_peers(operator_pid(&leader)?)?;
        if peers.iter().any(|p| !standby_ips.contains(p)) {
            return Ok(leader);
        }
        eprintln!(
            "cluster: the engine's connection is on the standby; deleting the leader {leader}"
        );
        cluster
            .kubectl_ok(|k| {
                k.args(["-n", NS, "delete", "pod", &leader, "--wait=false"]);
            })
            .await?;
        leader_pod(cluster, Some(&leader)).await?;
        wait_for("two ready operator pods", WAIT, || async {
            let pods = pods(cluster, "msp-operator").await;
            pods.len() == 2 && pods.iter().all(|(p, ready)| *ready && *p != leader)
        })
        .await?;
    }
    anyhow::bail!("the engine's registration connection never was on the leader")
}

/// Name and IP of each operator pod.
async fn pod_ips(cluster: &Cluster) -> Vec<(String, Ipv4Addr)> {
    let out = cluster
        .kubectl_ok(|k| {
            k.args([
                "-n",
                NS,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=msp-operator",
                "-o",
            ])
            .arg(r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#);
        })
        .await
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let (pod, ip) = l.split_once(' ')?;
            Some((pod.to_string(), ip.trim().parse().ok()?))
        })
        .collect()
}

/// The remote addresses of the connections established to the Registration
/// port (50051) in the network namespace of process `pid` (its pod's).
fn registration_peers(pid: i32) -> anyhow::Result<Vec<Ipv4Addr>> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let port = u16::from_str_radix(local.split_once(':')?.1, 16).ok()?;
            // 01: ESTABLISHED; addresses in hex, in the host's byte order.
            if port != 50051 || *state != "01" {
                return None;
            }
            let ip = u32::from_str_radix(remote.split_once(':')?.0, 16).ok()?;
            Some(Ipv4Addr::from(ip.to_ne_bytes()))
        })
        .collect())
}

/// The restart count of pod `pod`'s container.
async fn restarts(cluster: &Cluster, pod: &str) -> u32 {
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "pod", pod, "-o"])
                .arg("jsonpath={.status.containerStatuses[0].restartCount}");
        })
        .await
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The Helm chart and docs/uninstall.md in a cluster of their own (the
/// cluster lock runs it after the other test, never beside it): the
/// uninstall page's keep-data commands, then the chart's install, upgrade
/// with pools online, rollback and uninstall.
#[tokio::test(flavor = "current_thread")]
async fn helm_chart_and_the_uninstall_page() -> anyhow::Result<()> {
    let Some(binaries) = cluster_binaries().await else {
        return Ok(());
    };
    let Some(helm) = msp_tests::go_tools::required_go_tool("helm").await else {
        return Ok(());
    };
    let started = Instant::now();
    let cluster = Cluster::start(&binaries).await?;
    eprintln!(
        "cluster: started in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let node = NodeApi::new(&cluster)?;
    let scenarios = async {
        uninstall_as_the_docs_say_keeps_the_pools(&cluster).await?;
        helm_install_upgrade_rollback_uninstall(&cluster, &node, &helm).await
    };
    if let Err(err) = scenarios.await {
        eprintln!("{}", diagnosis(&cluster).await);
        return Err(err);
    }
    cluster.stop()?;
    Ok(())
}

/// What the cluster looked like when a scenario failed: pods, recent Events,
/// the node's conditions and allocatable resources.
async fn diagnosis(cluster: &Cluster) -> String {
    let mut out = String::new();
    for args in [
        &["get", "pods", "-A", "-o", "wide"][..],
        &["-n", NS, "get", "events", "--sort-by=.lastTimestamp"],
        &["describe", "node", "node1"],
        &["-n", NS, "describe", "pods"],
    ] {
        let text = cluster
            .kubectl_ok(|k| {
                k.args(args);
            })
            .await
            .unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("$ kubectl {}\n{text}\n", args.join(" ")));
    }
    out
}

/// The seed's create and delete with kubectl: `get msp` shows the pool
/// online, the storage node (asked over gRPC) has it; after the delete it has
/// not. `what` names the storage node in the figures printed.
async fn seed_lifecycle(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    seed_lifecycle_on(cluster, node, "the io-engine").await
}

async fn seed_lifecycle_on(cluster: &Cluster, node: &NodeApi, what: &str) -> anyhow::Result<()> {
    let disk = LoopDevice::create(64 * MIB)?;
    let created = Instant::now();
    kubectl_apply(cluster, &seed_pool_on(&disk.path_str())?).await?;
    let online = wait_for(
        "kubectl -n mayastor get msp shows my-new-pool online",
        WAIT,
        || async {
            cluster
                .kubectl_ok(|k| {
                    k.args(["-n", NS, "get", "msp"]);
                })
                .await
                .is_ok_and(|out| {
                    out.lines().any(|l| {
                        l.split_whitespace().next() == Some("my-new-pool")
                            && l.split_whitespace().any(|w| w == "online")
                    })
                })
        },
    )
    .await;
    if let Err(err) = online {
        // What the admin would read: the state and its reason.
        let status = msp_field(cluster, "my-new-pool", "{.status.state}: {.status.reason}").await;
        return Err(err.context(format!("my-new-pool status: {status:?}")));
    }
    eprintln!(
        "cluster: create -> online on {what} in {:.2}s",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(node.pools().await?, vec!["my-new-pool".to_string()]);
    assert_eq!(
        msp_field(cluster, "my-new-pool", "{.status.state}")
            .await
            .as_deref(),
        Some("online")
    );

    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "msp", "my-new-pool"]);
        })
        .await?;
    wait_for("my-new-pool destroyed on the node", WAIT, || async {
        node.pools().await.is_ok_and(|p| p.is_empty())
    })
    .await?;
    let mut get = cluster.kubectl();
    get.args(["-n", NS, "get", "msp", "-o", "name"]);
    assert_eq!(run(get).await?.trim(), "");
    Ok(())
}

/// A MayastorPool `name` on the cluster's node with `disk`.
fn pool_manifest(name: &str, disk: &str) -> String {
    format!(
        "apiVersion: openebs.io/v1alpha1\nkind: MayastorPool\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  node: node1\n  disks: [\"{disk}\"]\n"
    )
}

async fn create_online(
    cluster: &Cluster,
    admin: &kube::Client,
    name: &str,
    disk: &LoopDevice,
) -> anyhow::Result<()> {
    kubectl_apply(cluster, &pool_manifest(name, &disk.path_str())).await?;
    wait_pool(admin, name, WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    Ok(())
}

async fn delete_pool(cluster: &Cluster, node: &NodeApi, name: &str) -> anyhow::Result<()> {
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "msp", name]);
        })
        .await?;
    wait_for(&format!("{name} destroyed on the node"), WAIT, || async {
        node.pools()
            .await
            .is_ok_and(|p| !p.iter().any(|n| n == name))
    })
    .await
}

/// Name and readiness of the pods with `app.kubernetes.io/name=APP`.
async fn pods(cluster: &Cluster, app: &str) -> Vec<(String, bool)> {
    let out = cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "pods", "-l"])
                .arg(format!("app.kubernetes.io/name={app}"))
                .arg("-o")
                .arg(r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}"#);
        })
        .await
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let ready = f.next() == Some("True");
            // A pod being deleted counts as not ready.
            Some((name, ready && f.next().is_none()))
        })
        .collect()
}

/// Waits until exactly one pod of `app` is ready and it is not `old`; its name.
async fn wait_replaced(cluster: &Cluster, app: &str, old: &str) -> anyhow::Result<String> {
    let name = std::cell::RefCell::new(String::new());
    wait_for(&format!("a new ready {app} pod"), WAIT, || async {
        match pods(cluster, app).await.as_slice() {
            [(pod, true)] if pod != old => {
                *name.borrow_mut() = pod.clone();
                true
            }
            _ => false,
        }
    })
    .await?;
    Ok(name.into_inner())
}

async fn only_pod(cluster: &Cluster, app: &str) -> anyhow::Result<String> {
    match pods(cluster, app).await.as_slice() {
        [(pod, _)] => Ok(pod.clone()),
        other => anyhow::bail!("expected one {app} pod, found {other:?}"),
    }
}

async fn operator_logs(cluster: &Cluster, pod: &str) -> anyhow::Result<String> {
    Ok(cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "logs", pod]);
        })
        .await?)
}

/// The holder of the operator's Lease, as `kubectl get lease` shows it.
async fn lease_holder(cluster: &Cluster) -> Option<String> {
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "lease", "msp-operator", "-o"])
                .arg("jsonpath={.spec.holderIdentity}");
        })
        .await
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Waits until the Lease holder is a ready operator pod other than `not`;
/// its name (the holder identity is the pod name).
async fn leader_pod(cluster: &Cluster, not: Option<&str>) -> anyhow::Result<String> {
    let name = std::cell::RefCell::new(String::new());
    wait_for("an operator pod holding the Lease", WAIT, || async {
        let Some(holder) = lease_holder(cluster).await else {
            return false;
        };
        let ready = pods(cluster, "msp-operator")
            .await
            .iter()
            .any(|(pod, ready)| *pod == holder && *ready);
        let found = ready && Some(holder.as_str()) != not;
        if found {
            *name.borrow_mut() = holder;
        }
        found
    })
    .await?;
    Ok(name.into_inner())
}

/// `kubectl logs` of the operator pod: every line JSON, the reconcile span of
/// a pool carrying its name (the seed's pool, created just before).
async fn logs_are_json_with_the_pool_name(cluster: &Cluster) -> anyhow::Result<()> {
    let pod = leader_pod(cluster, None).await?;
    let logs = operator_logs(cluster, &pod).await?;
    let lines = msp_tests::operator::json_log_lines(&logs)?;
    let pool_span = msp_tests::operator::in_reconcile_span(&lines, "my-new-pool");
    assert!(
        pool_span,
        "no log line in the reconcile span of my-new-pool:\n{logs}"
    );
    Ok(())
}

/// `/metrics` scraped through the operator's Service by name from a pod (the
/// operator's image, on Debian slim here, has bash, whose /dev/tcp is the
/// HTTP client).
async fn metrics_through_the_service_from_a_pod(cluster: &Cluster) -> anyhow::Result<()> {
    let image = &cluster.images().get("operator")?.reference;
    let script = "exec 3<>/dev/tcp/msp-operator.mayastor.svc/8080 && printf 'GET /metrics HTTP/1.0\\r\\nHost: msp-operator\\r\\n\\r\\n' >&3 && cat <&3";
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: metrics-scrape, namespace: {NS}}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: scrape
    image: {image}
    imagePullPolicy: Never
    command: ["bash", "-c", {script:?}]
"#
    );
    kubectl_apply(cluster, &manifest).await?;
    cluster
        .kubectl_ok(|k| {
            k.args([
                "-n",
                NS,
                "wait",
                "--for=jsonpath={.status.phase}=Succeeded",
                "pod/metrics-scrape",
                "--timeout=60s",
            ]);
        })
        .await?;
    let scraped = operator_logs(cluster, "metrics-scrape").await?;
    let status_line = scraped.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.") && status_line.contains(" 200 "),
        "{scraped}"
    );
    assert!(scraped.contains("msp_"), "no msp_ metrics in:\n{scraped}");
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "pod", "metrics-scrape"]);
        })
        .await?;
    Ok(())
}

/// `kubectl delete pod` of the leader: the standby takes over (the leader
/// releases the Lease on SIGTERM), the storage node registers with it, an
/// online pool stays online without a status write, and the Deployment's new
/// pod joins as the standby.
async fn operator_pod_replaced(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let disk = LoopDevice::create(64 * MIB)?;
    create_online(cluster, &admin, "survives-operator", &disk).await?;
    // Settled: the operator's last write (status, then nothing) is done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let version = msp_field(cluster, "survives-operator", "{.metadata.resourceVersion}").await;
    anyhow::ensure!(version.is_some(), "no resourceVersion read");
    let old = leader_pod(cluster, None).await?;
    let standby: Vec<String> = pods(cluster, "msp-operator")
        .await
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| *p != old)
        .collect();
    let deleted = Instant::now();
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "pod", &old, "--wait=false"]);
        })
        .await?;
    let new = leader_pod(cluster, Some(&old)).await?;
    eprintln!(
        "cluster: leader pod deleted -> {new} leads in {:.1}s",
        deleted.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        standby.contains(&new),
        "the new leader {new} is not the standby {standby:?}"
    );
    // Adopted from the registration record, or registered if its Register
    // came first.
    wait_for("the storage node known to the new leader", WAIT, || async {
        operator_logs(cluster, &new).await.is_ok_and(|l| {
            l.contains("storage node registered") || l.contains("storage node adopted")
        })
    })
    .await?;
    // Past the startup grace (10 s by default) and a node sync: the new
    // leader has looked at the pool and found nothing to write.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let status = pool_status(&admin, "survives-operator").await?;
    assert_eq!(status.state, Some(PoolState::Online));
    // No status write: the startup grace holds the pool until its node has
    // registered and listed its pools, and then nothing differs.
    let after = msp_field(cluster, "survives-operator", "{.metadata.resourceVersion}").await;
    assert_eq!(
        version, after,
        "the new leader wrote the status of an online pool"
    );
    // The Deployment's replacement joins as the standby.
    wait_for("two ready operator pods", WAIT, || async {
        let pods = pods(cluster, "msp-operator").await;
        pods.len() == 2 && pods.iter().all(|(p, ready)| *ready && *p != old)
    })
    .await?;
    assert_eq!(lease_holder(cluster).await.as_deref(), Some(new.as_str()));
    delete_pool(cluster, node, "survives-operator").await
}

/// `kubectl rollout restart` of the operator while pools are created and
/// deleted: both pods are replaced one at a time (a new one up before an old
/// one goes), a leader is there throughout, every pool converges, and the
/// pool that was online before is never written to.
async fn operator_rollout_restart_under_churn(
    cluster: &Cluster,
    node: &NodeApi,
) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let disks: Vec<LoopDevice> = (0..3)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    create_online(cluster, &admin, "survives-rollout", &disks[0]).await?;
    create_online(cluster, &admin, "churn-deleted", &disks[1]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let version = msp_field(cluster, "survives-rollout", "{.metadata.resourceVersion}").await;
    anyhow::ensure!(version.is_some(), "no resourceVersion read");
    let old: Vec<String> = pods(cluster, "msp-operator")
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let restarted = Instant::now();
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "rollout", "restart", "deployment/msp-operator"]);
        })
        .await?;
    // Churn while the pods are replaced; and a leader at every look.
    kubectl_apply(
        cluster,
        &pool_manifest("churn-created", &disks[2].path_str()),
    )
    .await?;
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "msp", "churn-deleted", "--wait=false"]);
        })
        .await?;
    let mut leaderless = Duration::ZERO;
    let mut last_leader = Instant::now();
    let new = loop {
        let holder = lease_holder(cluster).await;
        let live = pods(cluster, "msp-operator").await;
        if holder
            .as_ref()
            .is_some_and(|h| live.iter().any(|(p, ready)| p == h && *ready))
        {
            last_leader = Instant::now();
        } else {
            leaderless = leaderless.max(last_leader.elapsed());
        }
        if live.len() == 2 && live.iter().all(|(p, ready)| *ready && !old.contains(p)) {
            break live.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(180),
            "the rollout did not finish within 180 s: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let leader = leader_pod(cluster, None).await?;
    eprintln!(
        "cluster: rollout restart -> two new pods in {:.1}s, {leader} leads; longest look without a ready leader {:.1}s",
        restarted.elapsed().as_secs_f64(),
        leaderless.as_secs_f64()
    );
    anyhow::ensure!(
        new.contains(&leader),
        "the leader {leader} is not a new pod {new:?}"
    );
    // Leaderless at most the lease duration (15 s) plus a look.
    anyhow::ensure!(
        leaderless < Duration::from_secs(17),
        "no ready leader for {leaderless:?} during the rollout"
    );
    wait_pool(&admin, "churn-created", WAIT, "online", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    wait_for("churn-deleted destroyed on the node", WAIT, || async {
        node.pools()
            .await
            .is_ok_and(|p| !p.iter().any(|n| n == "churn-deleted"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        pool_status(&admin, "survives-rollout").await?.state,
        Some(PoolState::Online)
    );
    let after = msp_field(cluster, "survives-rollout", "{.metadata.resourceVersion}").await;
    assert_eq!(
        version, after,
        "an operator wrote the status of an online pool during the rollout"
    );
    delete_pool(cluster, node, "churn-created").await?;
    delete_pool(cluster, node, "survives-rollout").await
}

/// When the container of the pod of `app` that is not `old` started running.
async fn container_started_at(
    cluster: &Cluster,
    app: &str,
    old: &str,
) -> anyhow::Result<std::time::SystemTime> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(cluster.client().await?, NS);
    let selector = format!("app.kubernetes.io/name={app}");
    let pods = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    pods.items
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() != Some(old))
        .find_map(|p| {
            p.status?
                .container_statuses?
                .first()?
                .state
                .as_ref()?
                .running
                .as_ref()?
                .started_at
                .clone()
        })
        .map(|t| t.0.into())
        .ok_or_else(|| anyhow::anyhow!("no running {app} pod besides {old}"))
}

/// How often the io-engine has registered anew (a new instance) with the
/// operator pod `pod`, by its logs.
async fn registrations(cluster: &Cluster, pod: &str) -> usize {
    operator_logs(cluster, pod)
        .await
        .map(|l| l.matches("storage node registered").count())
        .unwrap_or(0)
}

/// Deleting the io-engine's pod (SIGTERM: it deregisters): within 15 s its
/// pools are offline, or pending while the DaemonSet's new pod (registered
/// before the old one's absence was final) imports them; then online again
/// with the data written before intact.
async fn io_engine_pod_replaced(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let disk = LoopDevice::create(64 * MIB)?;
    create_online(cluster, &admin, "survives-engine", &disk).await?;
    // In the pool's unallocated clusters (the last MiB): no pool operation
    // writes there, so an import that formatted the disk shows here.
    let data = pattern(7, MIB as usize);
    let offset = 63 * MIB;
    msp_tests::loopdev::write_at(disk.path(), offset, &data)?;
    let leader = leader_pod(cluster, None).await?;
    let registered_before = registrations(cluster, &leader).await;

    let old = only_pod(cluster, "msp-io-engine").await?;
    let deleted = Instant::now();
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "pod", &old, "--wait=false"]);
        })
        .await?;
    // Offline once the engine is gone (its Deregister, or the heartbeat
    // deadline); when the DaemonSet's new engine registers first (it starts
    // in about 2 s with the image cached), pending while the new instance
    // imports the pool. Either way: not online while no engine has it.
    let left = wait_pool(
        &admin,
        "survives-engine",
        Duration::from_secs(15),
        "offline, or pending while the new engine imports it",
        |s| matches!(s.state, Some(PoolState::Offline | PoolState::Pending)),
    )
    .await?;
    let offline = deleted.elapsed();
    eprintln!(
        "cluster: io-engine pod deleted -> pool {:?}: {}",
        left.state,
        left.reason.unwrap_or_default()
    );
    // The new pod: seen, then registered (a new registration in the
    // leader's log), then the pool online.
    let new_pod = std::cell::RefCell::new(None);
    wait_for("the DaemonSet's new io-engine pod", WAIT, || async {
        let found = pods(cluster, "msp-io-engine")
            .await
            .into_iter()
            .any(|(pod, _)| pod != old);
        if found {
            *new_pod.borrow_mut() = Some(Instant::now());
        }
        found
    })
    .await?;
    let new_pod = new_pod.into_inner().unwrap_or_else(Instant::now);
    wait_for("the new io-engine registered", WAIT, || async {
        registrations(cluster, &leader).await > registered_before
    })
    .await?;
    let registered = new_pod.elapsed();
    let registered_at = std::time::SystemTime::now();
    wait_pool(&admin, "survives-engine", WAIT, "online again", |s| {
        s.state == Some(PoolState::Online)
    })
    .await?;
    // From the engine container's start (as the kubelet reports it, to the
    // second) to its registration seen in the leader's log.
    let started_at = container_started_at(cluster, "msp-io-engine", &old).await?;
    eprintln!(
        "cluster: io-engine pod deleted -> pool offline in {:.1}s; new pod seen -> registered in {:.1}s (container started -> registered {:.1}s); deleted -> online again in {:.1}s",
        offline.as_secs_f64(),
        registered.as_secs_f64(),
        registered_at
            .duration_since(started_at)
            .unwrap_or_default()
            .as_secs_f64(),
        deleted.elapsed().as_secs_f64()
    );
    wait_replaced(cluster, "msp-io-engine", &old).await?;
    assert_eq!(node.pools().await?, vec!["survives-engine".to_string()]);
    assert!(
        msp_tests::loopdev::read_at(disk.path(), offset, data.len())? == data,
        "the data written before the restart changed"
    );
    delete_pool(cluster, node, "survives-engine").await
}

/// A disk holding ext4, named by a resource: the engine would format it (it
/// creates a pool over anything that is not one); the operator asks the
/// engine which block devices it has (the engine reads the filesystem from
/// udev, through the pod's `/run/udev`) and keeps the pool pending, naming
/// the filesystem, without a byte of the disk changed.
async fn disk_holding_ext4_stays_pending(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let disk = LoopDevice::create(64 * MIB)?;
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(disk.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    host::retrigger(disk.path());
    let hash = disk.sha256_hex()?;
    kubectl_apply(cluster, &pool_manifest("holds-ext4", &disk.path_str())).await?;
    let status = wait_pool(
        &admin,
        "holds-ext4",
        WAIT,
        "pending, naming the filesystem",
        |s| {
            s.state == Some(PoolState::Pending)
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("filesystem (ext4)"))
        },
    )
    .await?;
    eprintln!("cluster: ext4 disk: {}", status.reason.unwrap_or_default());
    // A few more rounds of retries, then nothing may have changed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pool_status(&admin, "holds-ext4").await?.state,
        Some(PoolState::Pending)
    );
    assert_eq!(disk.sha256_hex()?, hash, "the ext4 disk was written");
    assert!(
        !node.pools().await?.iter().any(|p| p == "holds-ext4"),
        "the engine has a pool on the ext4 disk"
    );
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "msp", "holds-ext4"]);
        })
        .await?;
    assert_eq!(disk.sha256_hex()?, hash, "the ext4 disk was written");
    Ok(())
}

/// The `stand-in` overlay (what `tests/demo.sh --cluster --stand-in`
/// installs) in place of the io-engine's: its pod runs, registers and
/// serves the seed's lifecycle. The engine's pod goes first: both would
/// register as the same node.
async fn stand_in_overlay_serves_the_seed(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    cluster
        .kubectl_ok(|k| {
            k.args([
                "-n",
                NS,
                "delete",
                "daemonset",
                "msp-io-engine",
                "--wait=true",
            ]);
        })
        .await?;
    wait_for("the io-engine pod gone", WAIT, || async {
        pods(cluster, "msp-io-engine").await.is_empty()
    })
    .await?;
    cluster.install(&repo("deploy/overlays/stand-in")).await?;
    seed_lifecycle_on(cluster, node, "the stand-in").await
}

/// The `custom-policy` overlay with the `retain` example, applied as a user
/// would (on top of the installed base): a deleted resource's pool stays.
async fn custom_policy_overlay_retains(cluster: &Cluster, node: &NodeApi) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let retain = msp_policy_engine::bundled::built_component("retain")
        .ok_or_else(|| anyhow::anyhow!("the retain example was not built"))?;
    // The user's overlay, beside its module, next to the base it names.
    let overlay = cluster.dir().join("custom-policy");
    std::fs::create_dir_all(&overlay)?;
    let overlay = overlay.canonicalize()?;
    let kustomization =
        std::fs::read_to_string(repo("deploy/overlays/custom-policy/kustomization.yaml"))?;
    anyhow::ensure!(kustomization.contains("../../base"));
    let base = repo("deploy/base").canonicalize()?;
    std::fs::write(
        overlay.join("kustomization.yaml"),
        kustomization.replace(
            "../../base",
            &relative_path(&overlay, &base).display().to_string(),
        ),
    )?;
    std::fs::copy(retain, overlay.join("policy.wasm"))?;
    cluster.install(&overlay).await?;

    let disk = LoopDevice::create(64 * MIB)?;
    kubectl_apply(cluster, &pool_manifest("kept", &disk.path_str())).await?;
    wait_pool(&admin, "kept", WAIT, "online, decided by msp-retain", |s| {
        s.state == Some(PoolState::Online)
            && s.policy
                .as_deref()
                .is_some_and(|p| p.starts_with("msp-retain@"))
    })
    .await?;
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "msp", "kept"]);
        })
        .await?;
    // The deletion is processed at once (the watch sees it); a sweep later
    // it would be gone from the node if the policy had not kept it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(node.pools().await?, vec!["kept".to_string()]);
    // The documented roll back to the bundled default, for what follows.
    cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "delete", "configmap", "msp-policy"]);
        })
        .await?;
    Ok(())
}

/// The first ```sh block after `heading` in the page `path` of the repo.
fn docs_commands(path: &str, heading: &str) -> anyhow::Result<String> {
    let page = std::fs::read_to_string(repo(path))?;
    let section = page
        .split_once(heading)
        .map(|(_, s)| s)
        .ok_or_else(|| anyhow::anyhow!("{path}: no {heading:?}"))?;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, b)| b.split_once("```"))
        .map(|(b, _)| b.to_string())
        .ok_or_else(|| anyhow::anyhow!("{path}: no sh block under {heading:?}"))?;
    Ok(block)
}

/// `line` of a shell block run by bash in `dir`, its `kubectl` the admin's
/// real kubectl: (success, stdout, stderr).
async fn run_doc_line(
    cluster: &Cluster,
    dir: &std::path::Path,
    line: &str,
) -> anyhow::Result<(bool, String, String)> {
    let kubectl = format!(
        "kubectl() {{ '{}' --kubeconfig '{}' \"$@\"; }}",
        cluster.kubectl_path().display(),
        cluster.kubeconfig().display()
    );
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; {kubectl}; {line}"))
        .current_dir(dir)
        .env("KUBECACHEDIR", dir.join("kubectl-cache"))
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// docs/uninstall.md's "Keep the pools" commands, run as the page gives them
/// (its `deploy/base` being the installed kustomization: the stand-in
/// overlay, which holds the base, as the page says of the io-engine's), on
/// two online pools: the operator stops first, the backups hold the pools
/// and their ledger entries, everything installed goes (the CRD too), and
/// both pools stay on their disks (the stand-in's pool label, which a
/// DestroyPool erases, is still there).
async fn uninstall_as_the_docs_say_keeps_the_pools(cluster: &Cluster) -> anyhow::Result<()> {
    let overlay = cluster.install(&repo("deploy/overlays/stand-in")).await?;
    let admin = cluster.client().await?;
    let disks: Vec<LoopDevice> = (0..2)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    let names = ["kept-by-uninstall-0", "kept-by-uninstall-1"];
    for (name, disk) in names.iter().zip(&disks) {
        create_online(cluster, &admin, name, disk).await?;
    }
    let dir = cluster.dir().join("docs-uninstall");
    std::fs::create_dir_all(&dir)?;
    let block = docs_commands("docs/uninstall.md", "## Keep the pools")?;
    let started = Instant::now();
    let mut ran = 0;
    for line in block.lines() {
        let (command, comment) = match line.split_once(" #") {
            Some((c, comment)) => (c.trim(), comment.trim()),
            None => (line.trim(), ""),
        };
        if command.is_empty() {
            continue;
        }
        anyhow::ensure!(
            command.starts_with("kubectl "),
            "docs/uninstall.md: not a kubectl command: {command}"
        );
        let command = command.replace("deploy/base", &overlay.display().to_string());
        if comment.starts_with("wait until it lists none") {
            let what = format!("`{command}` listing none");
            wait_for(&what, WAIT, || async {
                run_doc_line(cluster, &dir, &command)
                    .await
                    .is_ok_and(|(ok, out, _)| ok && out.trim().is_empty())
            })
            .await?;
        } else {
            let (ok, _, err) = run_doc_line(cluster, &dir, &command).await?;
            anyhow::ensure!(ok, "docs/uninstall.md: `{command}` failed: {err}");
        }
        ran += 1;
    }
    anyhow::ensure!(ran >= 4, "docs/uninstall.md: only {ran} commands ran");
    eprintln!(
        "cluster: docs/uninstall.md keep-data path ({ran} commands) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let pools_backup = std::fs::read_to_string(dir.join("mayastorpools-backup.yaml"))?;
    let ledger_backup = std::fs::read_to_string(dir.join("ledger-backup.yaml"))?;
    for name in names {
        assert!(
            pools_backup.contains(&format!("name: {name}")),
            "{pools_backup}"
        );
        assert!(
            ledger_backup.contains(&format!("{name}:")),
            "{ledger_backup}"
        );
    }
    let crd = cluster
        .kubectl_ok(|k| {
            k.args(["get", "crd", "-o", "name"]);
        })
        .await?;
    assert!(!crd.contains("mayastorpools.openebs.io"), "{crd}");
    assert!(pods(cluster, "msp-operator").await.is_empty());
    for (name, disk) in names.iter().zip(&disks) {
        let head = msp_tests::loopdev::read_at(
            disk.path(),
            0,
            msp_tests::storage_node::label::LABEL_SIZE,
        )?;
        match msp_tests::storage_node::label::Label::decode(&head) {
            msp_tests::storage_node::label::LabelRead::Valid(label) => {
                assert_eq!(label.pool_name, *name)
            }
            other => anyhow::bail!("{name}: the pool is gone from its disk: {other:?}"),
        }
    }
    Ok(())
}

/// The chart with the real helm, as OpenEBS users install: `helm install`
/// (the io-engine on) → operator Ready, the seed's lifecycle; five pools
/// online; `helm upgrade` to the operator image of this same build under
/// another tag: the new pods lead, and neither a status nor the ledger is
/// written, the new leader makes no pool call; `helm rollback`: the same;
/// `helm uninstall`: the MayastorPools, the CRD and the ledger stay, and the
/// pools stay on the node (installed again, the engine imports all five,
/// their data intact).
async fn helm_install_upgrade_rollback_uninstall(
    cluster: &Cluster,
    node: &NodeApi,
    helm_bin: &std::path::Path,
) -> anyhow::Result<()> {
    let admin = cluster.client().await?;
    let helm_home = cluster.dir().join("helm");
    std::fs::create_dir_all(&helm_home)?;
    let helm = |args: &[&str]| {
        let mut command = std::process::Command::new(helm_bin);
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--namespace", NS])
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"));
        run(command)
    };
    let chart = repo("deploy/helm/msp-operator").display().to_string();
    let image = |role: &str| -> anyhow::Result<(String, String)> {
        let reference = &cluster.images().get(role)?.reference;
        let (name, tag) = reference
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("no tag in {reference}"))?;
        Ok((name.to_string(), tag.to_string()))
    };
    let (operator_repo, operator_tag) = image("operator")?;
    let (engine_repo, engine_tag) = image("io-engine")?;
    let values = [
        format!("image.repository={operator_repo}"),
        format!("image.tag={operator_tag}"),
        "image.pullPolicy=Never".to_string(),
        "ioEngine.enabled=true".to_string(),
        format!("ioEngine.image.repository={engine_repo}"),
        format!("ioEngine.image.tag={engine_tag}"),
        "ioEngine.image.pullPolicy=Never".to_string(),
    ];
    let mut install: Vec<&str> = vec!["install", "msp-operator", &chart, "--create-namespace"];
    for value in &values {
        install.extend(["--set", value]);
    }
    // The engine's reactor sleeps between polls (see the harness's overlay).
    install.extend([
        "--set-json",
        r#"ioEngine.extraEnv=[{"name":"MAYASTOR_DELAY","value":"1"}]"#,
    ]);

    let installed = Instant::now();
    let notes = helm(&install).await?;
    assert!(notes.contains("helm uninstall"), "NOTES: {notes}");
    cluster.wait_rolled_out().await?;
    let leader = leader_pod(cluster, None).await?;
    eprintln!(
        "cluster: helm install -> operator ready and leading in {:.1}s",
        installed.elapsed().as_secs_f64()
    );
    wait_for("the io-engine registered", WAIT, || async {
        registrations(cluster, &leader).await > 0
    })
    .await?;
    eprintln!(
        "cluster: helm install -> io-engine registered in {:.1}s",
        installed.elapsed().as_secs_f64()
    );
    seed_lifecycle_on(cluster, node, "the io-engine of the chart").await?;

    // Five pools online, data in each (in the last MiB, which no pool
    // operation writes).
    let disks: Vec<LoopDevice> = (0..5)
        .map(|_| LoopDevice::create(64 * MIB))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = (0..5).map(|i| format!("upgraded-{i}")).collect();
    let data = pattern(9, MIB as usize);
    let offset = 63 * MIB;
    for (name, disk) in names.iter().zip(&disks) {
        create_online(cluster, &admin, name, disk).await?;
        msp_tests::loopdev::write_at(disk.path(), offset, &data)?;
    }
    let versions = || async {
        let mut all = Vec::new();
        for name in &names {
            all.push(msp_field(cluster, name, "{.metadata.resourceVersion}").await);
        }
        let ledger = cluster
            .kubectl_ok(|k| {
                k.args(["-n", NS, "get", "configmap", "msp-ledger-node1", "-o"])
                    .arg("jsonpath={.metadata.resourceVersion}");
            })
            .await
            .ok();
        all.push(ledger);
        all
    };
    // The last status writes of the creates settle first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = versions().await;
    anyhow::ensure!(before.iter().all(Option::is_some), "{before:?}");

    // The upgrade: the same build under another tag.
    let upgraded_ref = cluster.tag_image("operator", "upgrade-same-build")?;
    let old: Vec<String> = pods(cluster, "msp-operator")
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let upgraded = Instant::now();
    helm(&[
        "upgrade",
        "msp-operator",
        &chart,
        "--reuse-values",
        "--set",
        "image.tag=upgrade-same-build",
    ])
    .await?;
    let (new, leader) = new_pods_leading(cluster, &old, upgraded).await?;
    eprintln!(
        "cluster: helm upgrade -> new pods {new:?}, {leader} leads, in {:.1}s",
        upgraded.elapsed().as_secs_f64()
    );
    let images = cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "pods", "-l"])
                .arg("app.kubernetes.io/name=msp-operator")
                .arg("-o")
                .arg("jsonpath={.items[*].spec.containers[0].image}");
        })
        .await?;
    assert!(
        images.split_whitespace().all(|i| i == upgraded_ref),
        "{images}"
    );
    leader_wrote_nothing(cluster, &leader, "the upgrade").await?;
    assert_eq!(
        versions().await,
        before,
        "a status or the ledger was written during the upgrade"
    );

    // The rollback: the first revision's image, the same promises.
    let old = new;
    let rolled_back = Instant::now();
    helm(&["rollback", "msp-operator", "1"]).await?;
    let (_, leader) = new_pods_leading(cluster, &old, rolled_back).await?;
    eprintln!(
        "cluster: helm rollback -> {leader} leads in {:.1}s",
        rolled_back.elapsed().as_secs_f64()
    );
    leader_wrote_nothing(cluster, &leader, "the rollback").await?;
    assert_eq!(
        versions().await,
        before,
        "a status or the ledger was written during the rollback"
    );

    // The uninstall: the operator and the engine go; the resources, the
    // CRD and the ledger stay.
    helm(&["uninstall", "msp-operator"]).await?;
    wait_for("the operator and io-engine pods gone", WAIT, || async {
        pods(cluster, "msp-operator").await.is_empty()
            && pods(cluster, "msp-io-engine").await.is_empty()
    })
    .await?;
    let left = cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "msp", "-o", "name"]);
        })
        .await?;
    assert_eq!(left.lines().count(), 5, "{left}");
    cluster
        .kubectl_ok(|k| {
            k.args(["get", "crd", "mayastorpools.openebs.io"]);
        })
        .await?;
    assert!(
        versions().await[5].is_some(),
        "the ledger went with the uninstall"
    );
    // The pools stayed on the node: installed again, the new engine has
    // none loaded until the operator imports all five (their status says
    // online all along: nobody wrote it since).
    let reinstalled = Instant::now();
    helm(&install).await?;
    cluster.wait_rolled_out().await?;
    wait_for(
        "the five pools imported by the new engine",
        WAIT,
        || async {
            node.pools().await.is_ok_and(|mut p| {
                p.sort();
                p == names
            })
        },
    )
    .await?;
    eprintln!(
        "cluster: helm install again -> the five pools imported in {:.1}s",
        reinstalled.elapsed().as_secs_f64()
    );
    for name in &names {
        wait_pool(&admin, name, WAIT, "online", |s| {
            s.state == Some(PoolState::Online)
        })
        .await?;
    }
    for (name, disk) in names.iter().zip(&disks) {
        assert!(
            msp_tests::loopdev::read_at(disk.path(), offset, data.len())? == data,
            "{name}: the data changed"
        );
    }
    for name in &names {
        delete_pool(cluster, node, name).await?;
    }
    helm(&["uninstall", "msp-operator"]).await?;
    Ok(())
}

/// Waits until the operator's pods are two, ready, none of `old`, and one
/// of them holds the Lease: (the new pods, the leader).
async fn new_pods_leading(
    cluster: &Cluster,
    old: &[String],
    since: Instant,
) -> anyhow::Result<(Vec<String>, String)> {
    loop {
        let live = pods(cluster, "msp-operator").await;
        let holder = lease_holder(cluster).await;
        if live.len() == 2 && live.iter().all(|(p, ready)| *ready && !old.contains(p)) {
            let new: Vec<String> = live.into_iter().map(|(p, _)| p).collect();
            if let Some(leader) = holder.filter(|h| new.contains(h)) {
                return Ok((new, leader));
            }
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(180),
            "no two new ready pods with a leader within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Once the new `leader`'s startup grace is over, with a few pool list
/// periods: its own metrics count no status write and no pool call.
async fn leader_wrote_nothing(cluster: &Cluster, leader: &str, what: &str) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(15)).await;
    let ip = cluster
        .kubectl_ok(|k| {
            k.args(["-n", NS, "get", "pod", leader, "-o"])
                .arg("jsonpath={.status.podIP}");
        })
        .await?;
    let forward = cluster.forward(SocketAddr::new(ip.trim().parse()?, 8080))?;
    let (code, metrics) = msp_tests::operator::http_get(forward.local(), "/metrics").await?;
    anyhow::ensure!(code == 200, "{leader} /metrics: {code}");
    let writes = msp_tests::operator::metric_value(&metrics, "msp_status_writes_total");
    assert_eq!(writes, Some(0.0), "{what}: status writes of {leader}");
    let calls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("msp_node_operations_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(calls, 0.0, "{what}: pool calls of {leader}:\n{metrics}");
    Ok(())
}
