//! A real single-node Kubernetes for tests and the demo: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy
//! and CoreDNS, running pods from images built by `tests/cluster/images.sh`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use msp_tests::cluster::Cluster;
//! use msp_tests::cluster::Binaries;
//! # let binaries = Binaries { operator: "x".into(), storage_node: "y".into(), io_engine: Some("z".into()) };
//! let cluster = Cluster::start(&binaries).await?;
//! // deploy/base and an overlay with its storage node, built images, as a user would
//! cluster.install(std::path::Path::new("deploy/overlays/io-engine")).await?;
//! let out = msp_tests::control_plane::run({
//!     let mut k = cluster.kubectl();
//!     k.args(["-n", "mayastor", "get", "pods"]);
//!     k
//! }).await?;
//! cluster.stop()?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! With the io-engine among its images, the harness gives the node what the
//! engine's DaemonSet needs of the host before the kubelet starts (which
//! counts hugepages only then): 2 MiB hugepages and a running udevd, as the
//! io-engine tests do (`crate::io_engine::host`), given back on stop.
//!
//! **The whole cluster lives in a network namespace the harness creates**
//! (`netns.rs`): the node IP, the pod bridge, pod and Service IPs, iptables
//! chains and `net.*` sysctls exist only there, and CoreDNS forwards nothing.
//! The test process reaches the API server through a loopback port forwarded
//! into it ([`Cluster::kubeconfig`] points there), and any other address inside
//! through [`Cluster::forward`].
//!
//! Certificates and client identities come from the control plane harness's
//! CA (`control_plane::pki`), processes are started the same way (own process
//! group, death signal). One cluster runs on a machine at a time (a lock), the
//! node is called `node1` like the seed's example. Dropping the [`Cluster`]
//! (also while a test panics) or [`Cluster::stop`] kills everything and undoes
//! what it changed outside its directory (`teardown.rs`); after a SIGKILL of
//! the test process the next start does that.

mod config;
mod images;
mod install;
mod netns;
mod teardown;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::control_plane::pki::{Ca, ServiceAccountKey};
use crate::control_plane::process::Guarded;
use crate::control_plane::{
    HarnessError, Identity, apiserver_healthy, issue_identity, mkdir, run, wait_healthy, write,
};
use crate::io_engine::host::{Hugepages, Udevd};
pub use images::{Image, Images};
pub use install::{INSTALL_NAMESPACE, relative_path};
pub use netns::{Forward, NODE_IP};

/// The node's name (the seed example's pool names it).
pub const NODE_NAME: &str = "node1";

const TEMP_PREFIX: &str = "msp-cluster-";
const LOCK_FILE: &str = "/run/lock/msp-cluster.lock";
const CLUSTER_BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/build.sh");
/// The node components `tests/cluster/build.sh` builds.
pub const BINARIES: [&str; 6] = [
    "kubelet",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "coredns",
    "pause",
];
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The host-built binaries the cluster's images are made of.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub operator: PathBuf,
    /// The stand-in storage node (`storage-node` of msp-tests).
    pub storage_node: PathBuf,
    /// The Mayastor io-engine (`crate::io_engine::binary()`); without it
    /// the cluster has no io-engine image and reserves no hugepages.
    pub io_engine: Option<PathBuf>,
}

/// A running single-node cluster, torn down on drop.
pub struct Cluster {
    /// In start order; stopped in reverse.
    processes: Vec<Guarded>,
    api: Option<Forward>,
    netns: netns::Netns,
    dir: PathBuf,
    state: teardown::HostState,
    kubectl: PathBuf,
    admin: Option<Identity>,
    images: Images,
    stopped: bool,
    // Given back after everything has stopped (fields drop after `drop`).
    _hugepages: Option<Hugepages>,
    _udevd: Option<Udevd>,
    _lock: File,
}

impl Cluster {
    /// Whether the node components can be had (cached or built with Go), for
    /// `msp_tests::require`. Builds them when needed.
    pub async fn binaries_available() -> bool {
        match crate::control_plane::assets::run_build_script(CLUSTER_BUILD_SCRIPT, &[]).await {
            Ok(dir) => BINARIES.iter().all(|b| dir.join(b).is_file()),
            Err(e) => {
                eprintln!("cluster binaries unavailable: {e}");
                false
            }
        }
    }

    /// Builds (or finds) the images of these host-built binaries, starts every
    /// component, and waits until the node is Ready and CoreDNS answers.
    pub async fn start(binaries: &Binaries) -> Result<Cluster, HarnessError> {
        let started = Instant::now();
        let lock = lock()?;
        teardown::sweep_dead_runs(TEMP_PREFIX);
        let control_plane_bin = crate::control_plane::assets::bin_dir().await?;
        let cluster_bin =
            crate::control_plane::assets::run_build_script(CLUSTER_BUILD_SCRIPT, &[]).await?;
        let images = Images::build(binaries, &cluster_bin).await?;
        tracing::info!(elapsed = ?started.elapsed(), "cluster images ready");

        let dir = tempfile::Builder::new()
            .prefix(&crate::leftovers::run_dir_prefix(TEMP_PREFIX))
            .tempdir()
            .map_err(|e| HarnessError::io("creating the cluster's dir", e))?
            .keep();
        let name = format!("{TEMP_PREFIX}{}", std::process::id());
        let state = teardown::HostState::record(&dir, &name)
            .map_err(|e| HarnessError::io("recording the host's state", e))?;
        let netns = match netns::Netns::create(&name) {
            Ok(netns) => netns,
            Err(e) => {
                teardown::teardown(&dir, &state);
                return Err(e);
            }
        };
        // From here on, dropping `cluster` undoes everything.
        let mut cluster = Cluster {
            processes: Vec::new(),
            api: None,
            netns,
            dir,
            state,
            kubectl: control_plane_bin.join("kubectl"),
            admin: None,
            images,
            stopped: false,
            _hugepages: None,
            _udevd: None,
            _lock: lock,
        };
        if binaries.io_engine.is_some() {
            cluster.prepare_for_io_engine()?;
        }
        cluster.boot(&control_plane_bin, &cluster_bin).await?;
        if binaries.io_engine.is_some() {
            cluster.check_hugepages_allocatable().await?;
        }
        tracing::info!(elapsed = ?started.elapsed(), "cluster up");
        Ok(cluster)
    }

    async fn boot(&mut self, cp_bin: &Path, bin: &Path) -> Result<(), HarnessError> {
        let root = self.dir.clone();
        let pki = root.join("pki");
        for d in ["pki", "run", "cni/net.d", "cni/ipam", "pod-logs", "kubelet"] {
            mkdir(&root.join(d))?;
        }
        let api_target = SocketAddr::new(
            NODE_IP
                .parse()
                .map_err(|_| HarnessError::Setup("node IP".into()))?,
            config::API_PORT,
        );
        let api = Forward::start(&self.netns, api_target)?;
        let local_server = format!("https://{}", api.local());
        let node_server = format!("https://{api_target}");
        self.api = Some(api);

        let ca = Ca::new()?;
        write(&root.join("ca.crt"), &ca.cert_pem)?;
        write(&pki.join("ca.crt"), &ca.cert_pem)?;
        write(&pki.join("ca.key"), &ca.key_pem())?;
        let serving = ca.serving_for(
            "kube-apiserver",
            &[
                NODE_IP,
                config::API_SERVICE_IP,
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        write(&pki.join("apiserver.crt"), &serving.cert)?;
        write(&pki.join("apiserver.key"), &serving.key)?;
        let kubelet_serving = ca.serving_for(NODE_NAME, &[NODE_IP, NODE_NAME])?;
        write(&pki.join("kubelet.crt"), &kubelet_serving.cert)?;
        write(&pki.join("kubelet.key"), &kubelet_serving.key)?;
        let sa = ServiceAccountKey::new()?;
        write(&pki.join("sa.key"), &sa.private_pem)?;
        write(&pki.join("sa.pub"), &sa.public_pem)?;

        let admin = issue_identity(&ca, &root, &local_server, "admin", &["system:masters"], 0)?;
        let identity = |user: &str, groups: &[&str], n| {
            issue_identity(&ca, &root, &node_server, user, groups, n)
        };
        let kcm = identity("system:kube-controller-manager", &[], 1)?;
        let scheduler = identity("system:kube-scheduler", &[], 2)?;
        let node_user = format!("system:node:{NODE_NAME}");
        let kubelet = identity(&node_user, &["system:nodes"], 3)?;
        let proxy = identity("system:kube-proxy", &[], 4)?;
        let apiserver_client = identity("kube-apiserver-kubelet-client", &["system:masters"], 5)?;
        std::fs::copy(proxy.kubeconfig(), root.join("kube-proxy.kubeconfig"))
            .map_err(|e| HarnessError::io("copying kube-proxy's kubeconfig", e))?;
        let client_dir = apiserver_client
            .kubeconfig()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();

        let sandbox = self.images.get("pause")?.reference.clone();
        write(
            &root.join("containerd.toml"),
            &config::containerd(&root, &sandbox),
        )?;
        write(&root.join("cni/net.d/10-msp.conflist"), &config::cni(&root))?;
        write(&root.join("kubelet.yaml"), &config::kubelet(&root))?;
        write(
            &root.join("kube-proxy.yaml"),
            &config::kube_proxy(&root, NODE_NAME),
        )?;
        write(&root.join("resolv.conf"), config::RESOLV_CONF)?;

        let f = |p: &Path| p.display().to_string();
        let mut etcd = self.netns.command(cp_bin.join("etcd"));
        etcd.arg(format!("--data-dir={}", f(&root.join("etcd"))))
            .args([
                "--name=node1",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node1=http://127.0.0.1:2380",
                "--listen-metrics-urls=http://127.0.0.1:2381",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]);
        self.spawn("etcd", etcd)?;

        let mut apiserver = self.netns.command(cp_bin.join("kube-apiserver"));
        apiserver
            .arg("--etcd-servers=http://127.0.0.1:2379")
            .arg(format!("--advertise-address={NODE_IP}"))
            .arg("--bind-address=0.0.0.0")
            .arg(format!("--secure-port={}", config::API_PORT))
            .arg(format!("--tls-cert-file={}", f(&pki.join("apiserver.crt"))))
            .arg(format!(
                "--tls-private-key-file={}",
                f(&pki.join("apiserver.key"))
            ))
            .arg(format!("--client-ca-file={}", f(&pki.join("ca.crt"))))
            .arg(format!(
                "--service-cluster-ip-range={}",
                config::SERVICE_CIDR
            ))
            .arg(format!(
                "--service-account-key-file={}",
                f(&pki.join("sa.pub"))
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                f(&pki.join("sa.key"))
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg("--allow-privileged=true")
            .arg(format!(
                "--kubelet-client-certificate={}",
                f(&client_dir.join("client.crt"))
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                f(&client_dir.join("client.key"))
            ))
            .arg(format!(
                "--kubelet-certificate-authority={}",
                f(&pki.join("ca.crt"))
            ))
            .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
            .arg(format!("--cert-dir={}", f(&root.join("apiserver-certs"))));
        self.spawn("kube-apiserver", apiserver)?;
        let client = admin.client().await?;
        self.admin = Some(admin);
        let index = self.processes.len() - 1;
        wait_healthy(&mut self.processes[index], || apiserver_healthy(&client)).await?;

        let mut kcm_cmd = self.netns.command(bin.join("kube-controller-manager"));
        let kc = f(kcm.kubeconfig());
        kcm_cmd
            .arg(format!("--kubeconfig={kc}"))
            .arg(format!("--authentication-kubeconfig={kc}"))
            .arg(format!("--authorization-kubeconfig={kc}"))
            .arg(format!(
                "--service-account-private-key-file={}",
                f(&pki.join("sa.key"))
            ))
            .arg(format!("--root-ca-file={}", f(&pki.join("ca.crt"))))
            .arg("--use-service-account-credentials=true")
            .arg(format!(
                "--cluster-signing-cert-file={}",
                f(&pki.join("ca.crt"))
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                f(&pki.join("ca.key"))
            ))
            .arg("--allocate-node-cidrs=true")
            .arg(format!("--cluster-cidr={}", config::CLUSTER_CIDR))
            .arg("--node-cidr-mask-size=24")
            .arg(format!(
                "--service-cluster-ip-range={}",
                config::SERVICE_CIDR
            ))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--cert-dir={}", f(&root.join("kcm-certs"))));
        self.spawn("kube-controller-manager", kcm_cmd)?;

        let mut sched = self.netns.command(bin.join("kube-scheduler"));
        let sc = f(scheduler.kubeconfig());
        sched
            .arg(format!("--kubeconfig={sc}"))
            .arg(format!("--authentication-kubeconfig={sc}"))
            .arg(format!("--authorization-kubeconfig={sc}"))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1");
        self.spawn("kube-scheduler", sched)?;

        let mut containerd = self.netns.command("containerd");
        containerd.arg("--config").arg(root.join("containerd.toml"));
        self.spawn("containerd", containerd)?;
        let socket = self.containerd_socket();
        let index = self.processes.len() - 1;
        wait_healthy(&mut self.processes[index], || {
            let socket = socket.clone();
            async move {
                tokio::process::Command::new("ctr")
                    .arg("--address")
                    .arg(&socket)
                    .arg("version")
                    .output()
                    .await
                    .is_ok_and(|o| o.status.success())
            }
        })
        .await?;
        self.images.import(&socket)?;

        let mut kubelet_cmd = self.netns.command(bin.join("kubelet"));
        kubelet_cmd
            .arg(format!("--config={}", f(&root.join("kubelet.yaml"))))
            .arg(format!("--kubeconfig={}", f(kubelet.kubeconfig())))
            .arg(format!("--root-dir={}", f(&root.join("kubelet"))))
            .arg(format!("--cert-dir={}", f(&root.join("kubelet-certs"))))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"));
        self.spawn("kubelet", kubelet_cmd)?;

        let mut proxy_cmd = self.netns.command(bin.join("kube-proxy"));
        proxy_cmd.arg(format!("--config={}", f(&root.join("kube-proxy.yaml"))));
        self.spawn("kube-proxy", proxy_cmd)?;

        self.wait_node_ready(&client).await?;
        self.start_coredns().await?;
        Ok(())
    }

    /// Hugepages for one io-engine pod (recorded in the cluster's directory,
    /// so that the sweep of a killed run gives them back) and a udevd.
    fn prepare_for_io_engine(&mut self) -> Result<(), HarnessError> {
        self._hugepages = Some(Hugepages::reserve(crate::io_engine::HUGEPAGES, &self.dir)?);
        self._udevd = Some(Udevd::ensure(&self.dir.join("udevd.log"))?);
        Ok(())
    }

    /// The node offers the hugepages the io-engine DaemonSet requests (what
    /// `kubectl describe node` shows under Allocatable).
    async fn check_hugepages_allocatable(&self) -> Result<(), HarnessError> {
        let client = self.client().await?;
        let node = Api::<Node>::all(client)
            .get(NODE_NAME)
            .await
            .map_err(|e| HarnessError::Setup(format!("reading node {NODE_NAME}: {e}")))?;
        let allocatable = node
            .status
            .and_then(|s| s.allocatable)
            .and_then(|a| a.get("hugepages-2Mi").cloned());
        let wanted = crate::io_engine::HUGEPAGES * 2 * 1024 * 1024;
        let got = allocatable
            .as_ref()
            .and_then(|q| parse_binary_quantity(&q.0))
            .unwrap_or(0);
        if got < wanted {
            return Err(HarnessError::Setup(format!(
                "node {NODE_NAME} offers hugepages-2Mi {:?} ({got} bytes), the io-engine needs {wanted}",
                allocatable.map(|q| q.0)
            )));
        }
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, command: Command) -> Result<(), HarnessError> {
        let log = self.dir.join(format!("{name}.log"));
        self.processes.push(Guarded::spawn(name, command, &log)?);
        Ok(())
    }

    async fn wait_node_ready(&mut self, client: &kube::Client) -> Result<(), HarnessError> {
        let nodes: Api<Node> = Api::all(client.clone());
        let started = Instant::now();
        loop {
            self.check_running()?;
            let ready = nodes
                .get_opt(NODE_NAME)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if ready {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::Setup(format!(
                    "node {NODE_NAME} not Ready after {READY_TIMEOUT:?}; kubelet's last output:\n{}",
                    self.log_tail("kubelet")
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn start_coredns(&mut self) -> Result<(), HarnessError> {
        let manifest = self.dir.join("coredns.yaml");
        write(
            &manifest,
            &config::coredns(&self.images.get("coredns")?.reference),
        )?;
        let mut apply = self.kubectl();
        apply.arg("apply").arg("-f").arg(&manifest);
        run(apply).await?;
        let mut rollout = self.kubectl();
        rollout.args([
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=180s",
        ]);
        run(rollout).await?;
        // Ready in the API, and answering through the kube-dns Service
        // (kube-proxy's rules in place) from the node's namespace.
        let started = Instant::now();
        let dns = SocketAddr::new(
            config::DNS_SERVICE_IP
                .parse()
                .map_err(|_| HarnessError::Setup("dns IP".into()))?,
            53,
        );
        loop {
            let answer = netns::resolve(&self.netns, dns, "kubernetes.default.svc.cluster.local");
            if answer.as_deref() == Some(config::API_SERVICE_IP) {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::Setup(format!(
                    "CoreDNS does not answer at {dns} (last answer {answer:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `Err` with its log when a component has exited.
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        self.processes
            .iter_mut()
            .try_for_each(Guarded::check_running)
    }

    /// The last output of a component (etcd, kube-apiserver, kubelet, ...).
    pub fn log_tail(&self, name: &str) -> String {
        self.processes
            .iter()
            .find(|p| p.name() == name)
            .map(Guarded::log_tail)
            .unwrap_or_default()
    }

    /// The admin kubeconfig (through the forwarded loopback port).
    pub fn kubeconfig(&self) -> &Path {
        self.admin
            .as_ref()
            .map(Identity::kubeconfig)
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> Result<kube::Client, HarnessError> {
        match &self.admin {
            Some(admin) => admin.client().await,
            None => Err(HarnessError::Setup("the API server never started".into())),
        }
    }

    /// The real kubectl as admin.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.join("kubectl-cache"));
        command
    }

    /// The kubectl binary.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// The images the cluster has imported.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// The cluster's directory (configuration, certificates, logs, state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A loopback port in the test's namespace forwarded to `target` inside
    /// the cluster's (a hostNetwork pod's port on [`NODE_IP`], a pod IP).
    pub fn forward(&self, target: SocketAddr) -> Result<Forward, HarnessError> {
        Forward::start(&self.netns, target)
    }

    /// The name of the cluster's network namespace (`ip netns exec NAME ...`).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// Runs `program` inside the cluster's network namespace.
    pub fn command_inside(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.netns.command(program)
    }

    /// Gives the image of `role` (operator, storage-node, ...) a second
    /// reference with `tag` in the cluster's containerd: the same build under
    /// another tag, as an upgrade to a new release would name it. Returns
    /// the new reference.
    pub fn tag_image(&self, role: &str, tag: &str) -> Result<String, HarnessError> {
        let image = self.images.get(role)?;
        let (name, _) = image.reference.rsplit_once(':').ok_or_else(|| {
            HarnessError::Setup(format!(
                "image reference without a tag: {}",
                image.reference
            ))
        })?;
        let reference = format!("{name}:{tag}");
        let mut ctr = Command::new("ctr");
        ctr.arg("--address")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io", "images", "tag", "--force"])
            .arg(&image.reference)
            .arg(&reference);
        netns::run_quiet(ctr, &format!("ctr images tag {reference}"))?;
        Ok(reference)
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("run/containerd.sock")
    }

    /// Stops everything and checks that nothing is left: `Err` lists what is.
    pub fn stop(mut self) -> Result<(), HarnessError> {
        let problems = self.shut_down();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Setup(format!(
                "left behind: {}",
                problems.join("; ")
            )))
        }
    }

    fn shut_down(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        self.api = None;
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        teardown::teardown(&self.dir, &self.state)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let problems = self.shut_down();
        if !problems.is_empty() {
            eprintln!("cluster teardown left: {}", problems.join("; "));
        }
    }
}

/// Bytes of a Kubernetes quantity as the kubelet writes hugepages
/// (`2Gi`, `2048Mi`, `0`).
fn parse_binary_quantity(quantity: &str) -> Option<u64> {
    let (number, unit) = match quantity.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => quantity.split_at(at),
        None => (quantity, ""),
    };
    let number: u64 = number.parse().ok()?;
    let factor = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// One cluster per machine: kubelet's cgroups and the paths outside the
/// cluster's directory are machine-wide. Waits for another run's cluster.
fn lock() -> Result<File, HarnessError> {
    let file = File::create(LOCK_FILE)
        .map_err(|e| HarnessError::io(format!("creating {LOCK_FILE}"), e))?;
    // flock(2): the lock goes with the file (and the process).
    file.lock()
        .map_err(|e| HarnessError::io(format!("locking {LOCK_FILE}"), e))?;
    Ok(file)
}
